"""Who may do a counter action, and the audit of those who may not.

Staff act for their own store, managers for theirs or, without one, for the whole chain; a
member, a deactivated account or staff of another store is refused (`staff.NotAllowed`). The
refusal rolls back the transaction it happened in, so `guarded` runs the use case in a
transaction and, when it is refused, records the attempt in a new one before re-raising.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Staff, Store
from db.session import Database
from domain import audit, staff
from domain.errors import NotFound
from domain.staff import NotAllowed

T = TypeVar("T")


async def at_store(
    session: AsyncSession,
    who: int | str,
    action: str,
    store_id: int | None = None,
    *,
    manager: bool = False,
) -> tuple[Staff, int | None]:
    """The account allowed to do `action` at `store_id` (default: the account's own store),
    and the store it acts at (None only for a chain-wide account that named none)."""
    person = await staff.acting(
        session, who, action=action, store_id=store_id, manager=manager, own_store=True
    )
    where = store_id if store_id is not None else person.store_id
    if where is not None:
        store = await session.get(Store, where)
        if store is None or not store.active:
            raise NotFound("no such store", store_id=where)
    return person, where


async def on_entity(
    session: AsyncSession, who: int | str, action: str, store_id: int | None
) -> Staff:
    """The account allowed to act on something that belongs to `store_id` (a visit, a
    booking): its store's staff, or a chain-wide account."""
    return await staff.acting(session, who, action=action, store_id=store_id)


async def guarded(
    db: Database,
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    who: int | str,
    action: str,
) -> T:
    """Run `work` in a transaction; if it is refused, audit the attempt in a fresh one (the
    refused transaction took everything it wrote with it) and raise the refusal again."""
    try:
        async with db.transaction() as session:
            return await work(session)
    except NotAllowed as refusal:
        params = refusal.params
        async with db.transaction() as session:
            await audit.refused(
                session,
                actor=str(params.get("actor") or f"unknown:{str(who).strip()[:40]}"),
                action=str(params.get("action") or action),
                reason=str(params.get("reason") or refusal),
                detail={"store_id": params.get("store_id"), "asked_as": str(who).strip()[:40]},
            )
        raise
