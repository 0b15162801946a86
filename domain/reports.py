"""How the chain as a whole stands: its stores, its members' activity and tiers, its points
ledger and the other loyalty ledgers (coupons, stored value, punch cards), and what falls due
soon.

The demo's closing summary asks these questions today; the chat's staff flows and the manager
reports will ask the same ones, so they are answered once, here. Each answer is a few set-based
statements (never a loop over members) and comes back as plain values: rows, names, dates and
numbers. Nothing is masked or formatted here, because what may be shown depends on who is
looking and where (a clerk's screen, a manager's report, a log line): that is the adapter's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from db.models import (
    Coupon,
    Member,
    PointsEntry,
    PunchCard,
    PunchEntry,
    Store,
    StoredValueEntry,
    Tier,
    Vehicle,
    Visit,
)
from domain import points
from domain.queries import tally

# A member whose last visit is at most this many days old is active; older than LOST_DAYS, lost;
# in between, lapsing: the moment a win-back message still has a good chance.
ACTIVE_DAYS = 90
LOST_DAYS = 180


@dataclass(frozen=True)
class StoreOverview:
    """An active store: members who call it home, and its visits and revenue in the last 12
    months (today and the 364 days before it)."""

    code: str
    name: str
    bays: int
    members: int
    visits_12m: int
    revenue_12m_cents: int


@dataclass(frozen=True)
class ChainSize:
    """Members (erased ones not counted), their cars and every visit on record."""

    members: int
    vehicles: int
    visits: int


@dataclass(frozen=True)
class Activity:
    """Members (erased ones not counted) by the day of their last visit."""

    active: int
    lapsing: int
    lost: int
    never: int


@dataclass(frozen=True)
class TierCount:
    """A tier and how many members (erased ones not counted) hold it, empty tiers included."""

    code: str
    name_en: str
    name_zh: str
    members: int


@dataclass(frozen=True)
class LedgerTotals:
    """Every point ever credited, every point that lapsed, and what members hold now."""

    issued: int
    expired: int
    outstanding: int


@dataclass(frozen=True)
class CouponCount:
    """Coupons from one source (a reward, a birthday, a campaign...): how many were issued, how
    many are used, and how many are still usable today."""

    source: str
    issued: int
    used: int
    valid: int


@dataclass(frozen=True)
class LoyaltyTotals:
    """What members hold and have spent beyond points earned: coupons by source, prepaid money
    owed to members, punch cards still usable, and points spent on rewards or on bills."""

    coupons: list[CouponCount]
    stored_value_cents: int
    stored_value_members: int
    punch_cards_active: int
    punch_uses_left: int
    points_redeemed: int
    points_offset: int

    @property
    def coupons_issued(self) -> int:
        return sum(c.issued for c in self.coupons)

    @property
    def coupons_used(self) -> int:
        return sum(c.used for c in self.coupons)

    @property
    def coupons_valid(self) -> int:
        return sum(c.valid for c in self.coupons)


@dataclass(frozen=True)
class MemberExpiring:
    """A member's points that lapse within the window, and the first day one of them does."""

    member: Member
    points: int
    first_expiry: date


@dataclass(frozen=True)
class ExpiringPoints:
    """Members with points lapsing within the window: how many, how many points in all, and
    those losing the most (the ones worth a reminder first)."""

    members: int
    points: int
    largest: list[MemberExpiring]


@dataclass(frozen=True)
class CarDue:
    """A car, the day its insurance or inspection falls due, and whose car it is (to remind)."""

    vehicle: Vehicle
    due_on: date
    member: Member


@dataclass(frozen=True)
class CarsDue:
    """Cars of current members with a date falling within the window: how many, and the first
    few by date."""

    count: int
    first: list[CarDue]


async def store_overview(session: AsyncSession, today: date) -> list[StoreOverview]:
    """Active stores, oldest first, in one statement over two grouped subqueries."""
    since = today - timedelta(days=364)
    homes = (
        select(Member.home_store_id, func.count().label("n"))
        .where(Member.erased_at.is_(None))
        .group_by(Member.home_store_id)
        .subquery()
    )
    recent = (
        select(
            Visit.store_id,
            func.count().label("n"),
            func.coalesce(func.sum(Visit.amount_cents), 0).label("cents"),
        )
        .where(Visit.visited_on >= since, Visit.visited_on <= today)
        .group_by(Visit.store_id)
        .subquery()
    )
    rows = await session.execute(
        select(Store, homes.c.n, recent.c.n, recent.c.cents)
        .outerjoin(homes, homes.c.home_store_id == Store.id)
        .outerjoin(recent, recent.c.store_id == Store.id)
        .where(Store.active.is_(True))
        .order_by(Store.id)
    )
    return [
        StoreOverview(s.code, s.name, s.bays, members or 0, visits or 0, int(cents or 0))
        for s, members, visits, cents in rows.all()
    ]


async def _count(session: AsyncSession, model: type, *where: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def chain_size(session: AsyncSession) -> ChainSize:
    return ChainSize(
        members=await _count(session, Member, Member.erased_at.is_(None)),
        vehicles=await _count(session, Vehicle),
        visits=await _count(session, Visit),
    )


async def activity(session: AsyncSession, today: date) -> Activity:
    """One grouped query over each member's last visit."""
    last = (
        select(Visit.member_id, func.max(Visit.visited_on).label("day"))
        .group_by(Visit.member_id)
        .subquery()
    )

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    active_since = today - timedelta(days=ACTIVE_DAYS)
    lost_before = today - timedelta(days=LOST_DAYS)
    row = (
        await session.execute(
            select(
                count(last.c.day >= active_since),
                count(and_(last.c.day < active_since, last.c.day >= lost_before)),
                count(last.c.day < lost_before),
                count(last.c.day.is_(None)),
            )
            .select_from(Member)
            .outerjoin(last, last.c.member_id == Member.id)
            .where(Member.erased_at.is_(None))
        )
    ).one()
    active, lapsing, lost, never = (int(value) for value in row)
    return Activity(active=active, lapsing=lapsing, lost=lost, never=never)


async def tier_distribution(session: AsyncSession) -> list[TierCount]:
    """Lowest tier first."""
    rows = await session.execute(
        select(Tier.code, Tier.name_en, Tier.name_zh, func.count(Member.id))
        .outerjoin(Member, and_(Member.tier_code == Tier.code, Member.erased_at.is_(None)))
        .group_by(Tier.rank, Tier.code, Tier.name_en, Tier.name_zh)
        .order_by(Tier.rank)
    )
    return [TierCount(code, en, zh, int(n)) for code, en, zh, n in rows.all()]


async def ledger_totals(session: AsyncSession) -> LedgerTotals:
    positive = case((PointsEntry.points > 0, PointsEntry.points), else_=0)
    lapsed = case((PointsEntry.kind == points.EXPIRE, -PointsEntry.points), else_=0)
    issued, expired, outstanding = (
        await session.execute(
            select(
                func.coalesce(func.sum(positive), 0),
                func.coalesce(func.sum(lapsed), 0),
                func.coalesce(func.sum(PointsEntry.points), 0),
            )
        )
    ).one()
    return LedgerTotals(int(issued), int(expired), int(outstanding))


async def expiring_points(
    session: AsyncSession, today: date, days: int, *, limit: int
) -> ExpiringPoints:
    """Points lapsing from today through `days` ahead, by the ledger rule of domain.points (what
    a member's own summary calls `expiring_soon`); the `limit` members losing the most, most
    first. The counts include erased members' ledgers; the list names only current members."""
    horizon = today + timedelta(days=days)
    soon = points.unspent_by(horizon) - points.unspent_by(today - timedelta(days=1))
    first = func.min(
        case(
            (
                and_(
                    PointsEntry.points > 0,
                    PointsEntry.expires_on >= today,
                    PointsEntry.expires_on <= horizon,
                ),
                PointsEntry.expires_on,
            )
        )
    )
    per_member = (
        select(PointsEntry.member_id, soon.label("soon"), first.label("first"))
        .group_by(PointsEntry.member_id)
        .having(soon > 0)
        .subquery()
    )
    count, total = (
        await session.execute(select(func.count(), func.coalesce(func.sum(per_member.c.soon), 0)))
    ).one()
    top = await session.execute(
        select(Member, per_member.c.soon, per_member.c.first)
        .join(per_member, per_member.c.member_id == Member.id)
        .where(Member.erased_at.is_(None))
        .order_by(per_member.c.soon.desc(), Member.member_ref)
        .limit(limit)
    )
    largest = [MemberExpiring(member, int(n), day) for member, n, day in top.all()]
    return ExpiringPoints(members=int(count), points=int(total), largest=largest)


async def insurance_due(session: AsyncSession, today: date, days: int, *, limit: int) -> CarsDue:
    """Insurance policies running out from today through `days` ahead: renewals to offer."""
    return await _cars_due(session, Vehicle.insurance_expiry, today, days, limit)


async def inspections_due(session: AsyncSession, today: date, days: int, *, limit: int) -> CarsDue:
    """Annual inspections falling due from today through `days` ahead."""
    return await _cars_due(session, Vehicle.inspection_due, today, days, limit)


async def _cars_due(
    session: AsyncSession,
    column: InstrumentedAttribute[date | None],
    today: date,
    days: int,
    limit: int,
) -> CarsDue:
    window = and_(column >= today, column <= today + timedelta(days=days))
    live = and_(window, Member.erased_at.is_(None))
    count = await session.scalar(select(func.count()).select_from(Vehicle).join(Member).where(live))
    rows = await session.execute(
        select(Vehicle, Member).join(Member).where(live).order_by(column, Vehicle.id).limit(limit)
    )
    first = [CarDue(car, getattr(car, column.key), member) for car, member in rows.all()]
    return CarsDue(count=int(count or 0), first=first)


async def loyalty_totals(session: AsyncSession, today: date) -> LoyaltyTotals:
    """Coupons, stored value, punch cards and points spent across the chain, as of `today`.

    Four set-based statements, one per ledger. Like `ledger_totals`, erased members' ledgers
    count: their prepaid money is still owed and their coupons were still issued.
    """
    redeemed, offset = await _points_spent(session)
    held, holders = await _stored_value_held(session)
    cards, uses = await _punch_cards_active(session, today)
    return LoyaltyTotals(
        coupons=await _coupons_by_source(session, today),
        stored_value_cents=held,
        stored_value_members=holders,
        punch_cards_active=cards,
        punch_uses_left=uses,
        points_redeemed=redeemed,
        points_offset=offset,
    )


async def _coupons_by_source(session: AsyncSession, today: date) -> list[CouponCount]:
    """Most issued first; `valid` means what `coupons.valid_for_member` would list today."""
    usable = and_(Coupon.used_at.is_(None), Coupon.valid_from <= today, Coupon.valid_until >= today)
    rows = await session.execute(
        select(Coupon.source, func.count(), tally(Coupon.used_at.is_not(None)), tally(usable))
        .group_by(Coupon.source)
        .order_by(func.count().desc(), Coupon.source)
    )
    return [CouponCount(source, int(n), int(used), int(valid)) for source, n, used, valid in rows]


async def _stored_value_held(session: AsyncSession) -> tuple[int, int]:
    """Prepaid money members have not spent yet, and how many members hold some."""
    per_member = (
        select(func.sum(StoredValueEntry.amount_cents).label("cents"))
        .group_by(StoredValueEntry.member_id)
        .subquery()
    )
    held, holders = (
        await session.execute(
            select(func.coalesce(func.sum(per_member.c.cents), 0), tally(per_member.c.cents > 0))
        )
    ).one()
    return int(held), int(holders)


async def _punch_cards_active(session: AsyncSession, today: date) -> tuple[int, int]:
    """Cards usable today (not expired, uses left) and the uses left on them: what
    `punchcards.cards_of` would show, over every member."""
    per_card = (
        select(func.sum(PunchEntry.uses).label("left"))
        .join(PunchCard, PunchCard.id == PunchEntry.card_id)
        .where(or_(PunchCard.expires_on.is_(None), PunchCard.expires_on >= today))
        .group_by(PunchEntry.card_id)
        .subquery()
    )
    live = per_card.c.left > 0
    cards, uses = (
        await session.execute(
            select(
                tally(live),
                func.coalesce(func.sum(case((live, per_card.c.left), else_=0)), 0),
            )
        )
    ).one()
    return int(cards), int(uses)


async def _points_spent(session: AsyncSession) -> tuple[int, int]:
    """Points bought rewards with, and points paid towards bills at the counter."""

    def spent(kind: str) -> ColumnElement[int]:
        return func.coalesce(
            func.sum(case((PointsEntry.kind == kind, -PointsEntry.points), else_=0)), 0
        )

    redeemed, offset = (
        await session.execute(select(spent(points.REDEEM), spent(points.OFFSET)))
    ).one()
    return int(redeemed), int(offset)
