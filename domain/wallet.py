"""Stored value (储值): money a member paid in advance and spends at the counter, in cents.

A ledger like points: top-ups are positive lines, spends negative ones, the balance is their sum
and can never go below zero, however many counters charge the same member at once.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import StoredValueEntry, StoredValueKind
from domain import audit, ledger
from domain.errors import InsufficientBalance, InvalidInput
from domain.limits import MAX_AMOUNT_CENTS, MAX_AMOUNT_YUAN

TOP_UP, SPEND = StoredValueKind.TOP_UP, StoredValueKind.SPEND


async def balance(session: AsyncSession, member_id: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(StoredValueEntry.amount_cents), 0)).where(
            StoredValueEntry.member_id == member_id
        )
    )
    return int(total or 0)


def _positive(amount_cents: int) -> None:
    """Above 0 and at most one payment's cap (domain.limits)."""
    if amount_cents <= 0:
        raise InvalidInput("amount must be positive", amount_cents=amount_cents)
    if amount_cents > MAX_AMOUNT_CENTS:
        raise InvalidInput(
            f"an amount is at most {MAX_AMOUNT_YUAN:,} yuan", amount_cents=amount_cents
        )


async def _audit(session: AsyncSession, written: ledger.Written[StoredValueEntry]) -> None:
    """One audit line per entry actually written; a replayed retry already has its line."""
    if not written.new:
        return
    entry = written.entry
    await audit.record(
        session,
        actor=entry.actor or "system",
        action=f"wallet.{entry.kind}",
        entity="member",
        entity_id=entry.member_id,
        detail={
            "amount_cents": entry.amount_cents,
            "store_id": entry.store_id,
            "entry_id": entry.id,
        },
    )


async def top_up(
    session: AsyncSession,
    member_id: int,
    amount_cents: int,
    *,
    actor: str,
    store_id: int | None = None,
    key: str | None = None,
    reason: str | None = None,
) -> StoredValueEntry:
    """Credit money the member paid in. With a `key`, a retried request credits only once."""
    _positive(amount_cents)
    written = await ledger.put(
        session,
        member_id,
        model=StoredValueEntry,
        key=key,
        entry=lambda: StoredValueEntry(
            member_id=member_id,
            kind=TOP_UP,
            amount_cents=amount_cents,
            store_id=store_id,
            key=key,
            reason=reason,
            actor=actor,
        ),
    )
    await _audit(session, written)
    return written.entry


async def spend(
    session: AsyncSession,
    member_id: int,
    amount_cents: int,
    *,
    actor: str,
    store_id: int | None = None,
    key: str | None = None,
    reason: str | None = None,
) -> StoredValueEntry:
    """Pay from the balance, never below zero. With a `key`, a retried request pays only once."""
    _positive(amount_cents)
    written = await ledger.take(
        session,
        member_id,
        amount_cents,
        model=StoredValueEntry,
        key=key,
        balance=balance,
        refuse=lambda needed, available: InsufficientBalance(
            "stored value too low", needed_cents=needed, available_cents=available
        ),
        entry=lambda: StoredValueEntry(
            member_id=member_id,
            kind=SPEND,
            amount_cents=-amount_cents,
            store_id=store_id,
            key=key,
            reason=reason,
            actor=actor,
        ),
    )
    await _audit(session, written)
    return written.entry


async def history(session: AsyncSession, member_id: int, limit: int = 10) -> list[StoredValueEntry]:
    """The member's latest stored-value lines, newest first."""
    result = await session.scalars(
        select(StoredValueEntry)
        .where(StoredValueEntry.member_id == member_id)
        .order_by(StoredValueEntry.created_at.desc(), StoredValueEntry.id.desc())
        .limit(limit)
    )
    return list(result.all())
