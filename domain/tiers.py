"""Tiers from rolling 12-month spend: upgraded at once, downgraded only at the periodic review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Date, Integer, Select, bindparam, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, Tier, TierChange, TierChangeReason, Visit
from db.types import UTCDateTime, utcnow
from domain.errors import NotFound

WINDOW_DAYS = 365

# Why a tier changed (TierChange.reason): a visit or review moved the member up, a review moved
# them down, or an import brought in history that had earned the tier long ago.
UPGRADE, REVIEW, IMPORTED = (
    TierChangeReason.UPGRADE,
    TierChangeReason.REVIEW,
    TierChangeReason.IMPORTED,
)


@dataclass(frozen=True)
class TierProgress:
    """Where a member stands: their tier, their 12-month spend and what the next tier needs."""

    tier: Tier
    spend_cents: int
    next_tier: Tier | None
    missing_cents: int


async def all_tiers(session: AsyncSession) -> list[Tier]:
    return list((await session.scalars(select(Tier).order_by(Tier.rank))).all())


def tier_for_spend(tiers: Sequence[Tier], spend_cents: int) -> Tier:
    """The highest tier whose threshold the spend reaches; `tiers` sorted by rank."""
    reached = [t for t in tiers if spend_cents >= t.threshold_cents]
    return reached[-1] if reached else tiers[0]


def window_start(as_of: date) -> date:
    return as_of - timedelta(days=WINDOW_DAYS - 1)


async def rolling_spend(session: AsyncSession, member_id: int, as_of: date) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(Visit.amount_cents), 0)).where(
            Visit.member_id == member_id,
            Visit.visited_on >= window_start(as_of),
            Visit.visited_on <= as_of,
        )
    )
    return int(total or 0)


def _member_spend_sql(first_day: Any, last_day: Any):  # type: ignore[no-untyped-def]
    """Per member (correlated): their spend from `first_day` to `last_day`, both included."""
    return (
        select(func.coalesce(func.sum(Visit.amount_cents), 0))
        .where(
            Visit.member_id == Member.id,
            Visit.visited_on >= first_day,
            Visit.visited_on <= last_day,
        )
        .scalar_subquery()
    )


@cache
def _standing_sql() -> Select[Any]:
    """A member's tier and rolling spend in one statement, built once with bind parameters:
    this runs on every balance read, where composing a statement costs more than running it."""
    spend = _member_spend_sql(bindparam("first_day", type_=Date), bindparam("as_of", type_=Date))
    return select(Member.tier_code, spend).where(Member.id == bindparam("member_id", type_=Integer))


async def progress(session: AsyncSession, member_id: int, as_of: date) -> TierProgress:
    params = {"member_id": member_id, "first_day": window_start(as_of), "as_of": as_of}
    row = (await session.execute(_standing_sql(), params)).one_or_none()
    if row is None:
        raise NotFound("no such member", member_id=member_id)
    tier_code, spend = row[0], int(row[1])
    tiers = await all_tiers(session)
    current = next(t for t in tiers if t.code == tier_code)
    higher = [t for t in tiers if t.rank > current.rank]
    next_tier = higher[0] if higher else None
    missing = max(0, next_tier.threshold_cents - spend) if next_tier else 0
    return TierProgress(tier=current, spend_cents=spend, next_tier=next_tier, missing_cents=missing)


async def upgrade_if_due(session: AsyncSession, member_id: int, as_of: date) -> TierChange | None:
    """Raise the member's tier at once when their spend crossed a threshold; never lowers it."""
    member = await session.get(Member, member_id)
    if member is None:
        raise NotFound("no such member", member_id=member_id)
    tiers = await all_tiers(session)
    ranks = {t.code: t.rank for t in tiers}
    target = tier_for_spend(tiers, await rolling_spend(session, member_id, as_of))
    if target.rank <= ranks[member.tier_code]:
        return None
    change = TierChange(
        member_id=member_id, from_tier=member.tier_code, to_tier=target.code, reason=UPGRADE
    )
    member.tier_code, member.tier_since = target.code, utcnow()
    session.add_all([member, change])
    await session.flush()
    return change


def _target_rank_sql(tiers: Sequence[Tier], as_of: date):  # type: ignore[no-untyped-def]
    """Per member (correlated): the rank of the tier their rolling spend reaches; the SQL twin of
    tier_for_spend (tests/test_members_visits_tiers.py holds them equal)."""
    spend = _member_spend_sql(window_start(as_of), as_of)
    whens = [(spend >= t.threshold_cents, literal(t.rank)) for t in reversed(tiers)]
    return case(*whens, else_=literal(tiers[0].rank))


async def review(
    session: AsyncSession,
    as_of: date,
    *,
    downgrade: bool = True,
    member_ids: Sequence[int] | Select[Any] | None = None,
    upgrade_reason: str = UPGRADE,
) -> int:
    """Move every member to the tier their spend earns; set-based. Returns how many moved.

    The periodic review (downgrade=True) moves both ways; after a bulk import it runs with
    downgrade=False, which applies only the upgrades a visit would have given at once.
    `member_ids` limits it to some members: a list, or a SELECT of ids (the import passes
    the members of the visits it inserted, however many). `upgrade_reason` names the moves up
    in the tier history: the import's are IMPORTED, old news no member is congratulated on.
    """
    tiers = await all_tiers(session)
    by_rank = {t.rank: t.code for t in tiers}
    target_rank = _target_rank_sql(tiers, as_of)
    current_rank = select(Tier.rank).where(Tier.code == Member.tier_code).scalar_subquery()
    target_code = case(*[(target_rank == r, literal(c)) for r, c in by_rank.items()])
    moved = target_rank > current_rank if not downgrade else target_rank != current_rank
    scope = [moved, Member.erased_at.is_(None)]
    if member_ids is not None:
        scope.append(Member.id.in_(member_ids))
    reason = case((target_rank > current_rank, literal(upgrade_reason)), else_=literal(REVIEW))
    changes = select(
        Member.id,
        Member.tier_code,
        target_code,
        reason,
        literal(utcnow(), UTCDateTime),
    ).where(*scope)
    result = await session.execute(
        insert(TierChange).from_select(
            ["member_id", "from_tier", "to_tier", "reason", "created_at"], changes
        )
    )
    count = result.rowcount or 0
    if count:
        await session.execute(
            update(Member)
            .where(*scope)
            .values(tier_code=target_code, tier_since=utcnow())
            .execution_options(synchronize_session=False)
        )
    return int(count)
