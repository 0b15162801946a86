"""What every member ledger (points, stored value) does the same way when money or points leave it.

Taking out is the one dangerous move: two requests that both read a balance of 100 must not both
spend 80. So the member is locked first, a retried request (same key) gets its first answer back,
and only then is the balance read and the debit written, all in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member
from db.session import lock_member
from domain.errors import DomainError, NotFound


class Keyed(Protocol):
    """A row that a client-supplied idempotency key can name."""

    key: str | None


E = TypeVar("E", bound=Keyed)


@dataclass(frozen=True)
class Written(Generic[E]):
    """The entry a call produced, and whether it is new (False: a retry got the first one back)."""

    entry: E
    new: bool


async def replay(session: AsyncSession, model: type[E], key: str | None) -> E | None:
    """The row an earlier request with this key wrote, if any."""
    if key is None:
        return None
    column: Any = model.key  # type: ignore[attr-defined]
    return await session.scalar(select(model).where(column == key))


async def lock_existing_member(session: AsyncSession, member_id: int) -> None:
    """Refuse unknown members, then hold the member's ledgers until the transaction ends."""
    if await session.get(Member, member_id) is None:
        raise NotFound("no such member", member_id=member_id)
    await lock_member(session, member_id)


async def append(session: AsyncSession, entry: E) -> E:
    session.add(entry)
    await session.flush()
    return entry


async def put(
    session: AsyncSession,
    member_id: int,
    *,
    model: type[E],
    key: str | None,
    entry: Callable[[], E],
) -> Written[E]:
    """Add to a member's ledger once per key, even when two retries race each other."""
    await lock_existing_member(session, member_id)
    if (previous := await replay(session, model, key)) is not None:
        return Written(previous, new=False)
    return Written(await append(session, entry()), new=True)


async def take(
    session: AsyncSession,
    member_id: int,
    amount: int,
    *,
    model: type[E],
    key: str | None,
    balance: Callable[[AsyncSession, int], Awaitable[int]],
    refuse: Callable[[int, int], DomainError],
    entry: Callable[[], E],
) -> Written[E]:
    """Take `amount` out of a member's ledger, never below zero, at most once per key.

    `balance` reads the ledger; `refuse(needed, available)` builds the error for a shortfall;
    `entry` builds the debit line. Nothing is written when the balance is short.
    """
    await lock_existing_member(session, member_id)
    if (previous := await replay(session, model, key)) is not None:
        return Written(previous, new=False)
    available = await balance(session, member_id)
    if available < amount:
        raise refuse(amount, available)
    return Written(await append(session, entry()), new=True)
