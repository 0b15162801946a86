"""The points ledger.

Positive entries are lots with an expiry date; negative entries (redeem, expire, negative
adjustment) consume the lots that expire soonest first. Nothing is ever updated in place, so the
state at any moment can be derived from the entries alone:

* balance = sum of all entries;
* points of lots expiring on or before day D that are still unspent
  = max(0, sum of lots expiring on or before D − sum of all debits).

The second line is what makes expiry set-based and exact: expiring at D writes one entry for
that amount, after which every lot expiring by D is fully consumed. Lots without an expiry date
sort after every dated lot.

Where a rule is also needed in SQL, for set-based work over many rows (the CSV import earns the
points of a whole chunk of visits in one INSERT … SELECT), its SQL version stands right after
the Python original, named for it with `_sql`, and a test holds the two equal
(tests/test_points.py). Change one, change both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Date,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, PointsEntry, PointsKind
from db.session import upsert_insert
from db.types import UTCDateTime, utcnow
from domain import audit, ledger
from domain.errors import InsufficientPoints, InvalidInput
from domain.limits import MAX_POINTS
from domain.shop import LoyaltyRules

EARN, OPENING, REDEEM = PointsKind.EARN, PointsKind.OPENING, PointsKind.REDEEM
EXPIRE, ADJUST, OFFSET = PointsKind.EXPIRE, PointsKind.ADJUST, PointsKind.OFFSET


@dataclass(frozen=True)
class PointsSummary:
    """What a member is shown: the balance and what will lapse soon if not used."""

    balance: int
    expiring_soon: int
    expiring_by: date
    next_expiry: date | None


def add_months(day: date, months: int) -> date:
    """`day` plus whole months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def points_for_spend(amount_cents: int, rules: LoyaltyRules, multiplier_permille: int) -> int:
    """Points for a payment: whole yuan × earn rate × tier multiplier, rounded down."""
    whole_yuan = amount_cents // 100
    exact = Decimal(whole_yuan) * rules.earn_per_yuan * Decimal(multiplier_permille) / 1000
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))


def points_for_spend_sql(amount_cents: Any, multiplier_permille: Any, rules: LoyaltyRules) -> Any:
    """SQL twin of points_for_spend: whole yuan × earn rate × multiplier, rounded down.

    The earn rate is an exact fraction p/q, so integer arithmetic (which truncates, i.e. rounds
    down for these non-negative values) gives exactly the Decimal result. BIGINT because
    PostgreSQL's INTEGER would overflow on large amounts.
    """
    p, q = rules.earn_per_yuan.as_integer_ratio()
    whole_yuan = cast(amount_cents, BigInteger) // 100
    return whole_yuan * p * multiplier_permille // (q * 1000)


def lot_expiry(occurred_on: date, rules: LoyaltyRules) -> date:
    return add_months(occurred_on, rules.expiry_months)


def lot_expiry_sql(day: Any, rules: LoyaltyRules, dialect: str) -> Any:
    """SQL twin of lot_expiry: `day` plus the expiry months, clamped to the month's end
    (31 Jan + 1 month = 28/29 Feb) like add_months."""
    months = rules.expiry_months
    if dialect == "postgresql":
        return cast(day + func.make_interval(0, months), Date)
    # SQLite rolls an overflowing day into the next month (31 Jan + 1 month = 2/3 Mar); then
    # the day of the month changes, and the answer is the target month's last day instead.
    shifted = func.date(day, f"+{months} months")
    month_end = func.date(day, "start of month", f"+{months + 1} months", "-1 day")
    same_day = func.strftime("%d", shifted) == func.strftime("%d", day)
    return case((same_day, shifted), else_=month_end)


async def balance(session: AsyncSession, member_id: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
            PointsEntry.member_id == member_id
        )
    )
    return int(total or 0)


def _lots_minus_debits(day: date | BindParameter[date]):  # type: ignore[no-untyped-def]
    """SQL, per member: lots expiring on or before `day` minus every debit. Where positive, it is
    exactly what of those lots is still unspent."""
    lots_by_day = func.coalesce(
        func.sum(
            case(
                (and_(PointsEntry.points > 0, PointsEntry.expires_on <= day), PointsEntry.points),
                else_=0,
            )
        ),
        0,
    )
    return lots_by_day - _debits()


def _debits():  # type: ignore[no-untyped-def]
    """SQL, per member: every point ever taken out (redeemed, expired, adjusted down)."""
    return func.coalesce(func.sum(case((PointsEntry.points < 0, -PointsEntry.points), else_=0)), 0)


def unspent_by(day: date | BindParameter[date]):  # type: ignore[no-untyped-def]
    """SQL, per member: what of the lots expiring on or before `day` is still unspent.

    Public because chain reports (domain.reports) group the whole ledger by member with the
    same rule, and the rule must live in one place.
    """
    gap = _lots_minus_debits(day)
    return case((gap > 0, gap), else_=literal(0))


async def summary(
    session: AsyncSession, member_id: int, today: date, rules: LoyaltyRules
) -> PointsSummary:
    """Balance, points expiring within the notice window, and the next expiry date.

    The chat's most frequent read (bench/bench_balance.py holds it to p99 <= 5 ms at 5M ledger
    rows): one statement, one row back however long the member's ledger is.
    """
    horizon = today + timedelta(days=rules.expiring_notice_days)
    params = {"member_id": member_id, "horizon": horizon, "overdue_by": today - timedelta(days=1)}
    row = (await session.execute(_summary_sql(), params)).one()
    total, by_horizon, already_due, first_unspent = int(row[0]), int(row[1]), int(row[2]), row[3]
    next_expiry = None
    if total > 0 and first_unspent is not None:
        next_expiry = max(first_unspent, today)  # lapsed but not yet expired: it goes today
    return PointsSummary(
        balance=total,
        expiring_soon=max(0, by_horizon - already_due),
        expiring_by=horizon,
        next_expiry=next_expiry,
    )


@cache
def _summary_sql() -> Select[Any]:
    """Built once, with bind parameters: composing this statement costs more than running it."""
    member_id = bindparam("member_id", type_=Integer)
    totals = (
        select(
            func.coalesce(func.sum(PointsEntry.points), 0).label("balance"),
            unspent_by(bindparam("horizon", type_=Date)).label("by_horizon"),
            unspent_by(bindparam("overdue_by", type_=Date)).label("already_due"),
            _debits().label("debits"),
        )
        .where(PointsEntry.member_id == member_id)
        .subquery("totals")
    )
    return select(
        totals.c.balance,
        totals.c.by_horizon,
        totals.c.already_due,
        _first_unspent_expiry(member_id, totals.c.debits),
    )


def _first_unspent_expiry(member_id: Any, debits: Any):  # type: ignore[no-untyped-def]
    """SQL: the expiry date of the first dated lot the debits have not used up.

    Debits consume lots in expiry order, so that lot is the first whose running total of lots
    exceeds all debits. Lots expiring on the same day share one running total (the window's
    default frame), which names the same day as walking them one by one would.
    """
    lots = (
        select(
            PointsEntry.expires_on.label("expires_on"),
            func.sum(PointsEntry.points).over(order_by=PointsEntry.expires_on).label("running"),
        )
        .where(
            PointsEntry.member_id == member_id,
            PointsEntry.points > 0,
            PointsEntry.expires_on.is_not(None),
        )
        .subquery("lots")
    )
    return select(func.min(lots.c.expires_on)).where(lots.c.running > debits).scalar_subquery()


async def credit(
    session: AsyncSession,
    member_id: int,
    points: int,
    occurred_on: date,
    rules: LoyaltyRules,
    *,
    kind: str = EARN,
    key: str | None = None,
    visit_id: int | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> PointsEntry:
    """Add a lot of points that expires `rules.expiry_months` after `occurred_on`.

    With a `key`, a repeated call returns the first entry and adds nothing, even when two
    retries race: the member is locked before the key is looked up.
    """
    if points <= 0:
        raise InvalidInput("points to credit must be positive", points=points)
    written = await ledger.put(
        session,
        member_id,
        model=PointsEntry,
        key=key,
        entry=lambda: PointsEntry(
            member_id=member_id,
            kind=kind,
            points=points,
            occurred_on=occurred_on,
            expires_on=lot_expiry(occurred_on, rules),
            visit_id=visit_id,
            key=key,
            reason=reason,
            actor=actor,
        ),
    )
    return written.entry


async def debit(
    session: AsyncSession,
    member_id: int,
    points: int,
    today: date,
    *,
    kind: str = REDEEM,
    key: str | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> PointsEntry:
    """Spend points, never below zero, even with many concurrent callers.

    The member is locked first, so the balance read here is still true when the entry is
    written. With a `key`, a retried request returns the first entry instead of spending twice.
    """
    if points <= 0:
        raise InvalidInput("points to spend must be positive", points=points)
    written = await ledger.take(
        session,
        member_id,
        points,
        model=PointsEntry,
        key=key,
        balance=balance,
        refuse=lambda needed, available: InsufficientPoints(
            "not enough points", needed=needed, available=available
        ),
        entry=lambda: PointsEntry(
            member_id=member_id,
            kind=kind,
            points=-points,
            occurred_on=today,
            key=key,
            reason=reason,
            actor=actor,
        ),
    )
    return written.entry


def offset_value_cents(points: int, rules: LoyaltyRules) -> int:
    """What `points` take off a bill, rounded down to the cent."""
    if rules.offset_points_per_yuan <= 0:
        return 0
    return points * 100 // rules.offset_points_per_yuan


async def offset(
    session: AsyncSession,
    member_id: int,
    points: int,
    bill_cents: int,
    today: date,
    rules: LoyaltyRules,
    *,
    actor: str,
    key: str | None = None,
) -> int:
    """Pay part of a bill with points at the counter; returns the cents taken off.

    Refused when the shop has offsets switched off, when the points would be worth more than
    the bill (the member would lose the difference), or when the balance is short.
    """
    if rules.offset_points_per_yuan <= 0:
        raise InvalidInput("this shop does not take points as payment")
    if points <= 0 or bill_cents < 0:
        raise InvalidInput("points and bill must be positive", points=points, bill=bill_cents)
    value = offset_value_cents(points, rules)
    if value == 0:
        raise InvalidInput("too few points to take anything off", points=points)
    if value > bill_cents:
        raise InvalidInput("points worth more than the bill", value=value, bill=bill_cents)
    await debit(
        session,
        member_id,
        points,
        today,
        kind=OFFSET,
        key=key,
        reason=f"paid {value} cents of a {bill_cents}-cent bill",
        actor=actor,
    )
    return value


async def adjust(
    session: AsyncSession,
    member_id: int,
    delta: int,
    today: date,
    rules: LoyaltyRules,
    *,
    reason: str,
    actor: str,
    key: str | None = None,
) -> PointsEntry:
    """A manual correction by staff: needs a reason, is audited, and cannot overdraw.

    At most MAX_POINTS either way: a typed-in figure past it is a mistake, and a ledger line
    that large would overflow every sum over the member's ledger after it.
    """
    if not reason or not reason.strip():
        raise InvalidInput("an adjustment needs a reason")
    if delta == 0:
        raise InvalidInput("an adjustment of 0 points changes nothing")
    if abs(delta) > MAX_POINTS:
        raise InvalidInput(
            f"an adjustment is at most {MAX_POINTS:,} points either way", points=delta
        )
    if delta > 0:
        entry = await credit(
            session,
            member_id,
            delta,
            today,
            rules,
            kind=ADJUST,
            key=key,
            reason=reason,
            actor=actor,
        )
    else:
        entry = await debit(
            session, member_id, -delta, today, kind=ADJUST, key=key, reason=reason, actor=actor
        )
    await audit.record(
        session,
        actor=actor,
        action="points.adjust",
        entity="member",
        entity_id=member_id,
        detail={"delta": delta, "reason": reason.strip(), "entry_id": entry.id},
    )
    return entry


async def expire(session: AsyncSession, as_of: date, member_id: int | None = None) -> int:
    """Write one expiry entry per member whose lots lapsed before `as_of`; returns the total.

    Set-based: one INSERT … SELECT over the ledger. Keyed by member and day, so a rerun or a
    second process writes nothing more; on PostgreSQL the affected members are locked first so
    a redemption running at the same moment cannot spend points that are being expired.
    """
    due = _lots_minus_debits(as_of - timedelta(days=1))
    per_member = select(PointsEntry.member_id.label("member_id"), due.label("due")).group_by(
        PointsEntry.member_id
    )
    if member_id is not None:
        per_member = per_member.where(PointsEntry.member_id == member_id)
    per_member = per_member.having(due > 0)
    if session.bind.dialect.name == "postgresql":
        candidates = per_member.subquery()
        await session.execute(
            select(Member.id)
            .where(Member.id.in_(select(candidates.c.member_id)))
            .order_by(Member.id)
            .with_for_update()
        )
    lapsed = per_member.subquery()
    key = literal("expire:") + cast(lapsed.c.member_id, String) + literal(f":{as_of.isoformat()}")
    rows = select(
        lapsed.c.member_id,
        literal(EXPIRE),
        -lapsed.c.due,
        literal(as_of, Date),
        key,
        literal("points reached their expiry date"),
        literal("system"),
        literal(utcnow(), UTCDateTime),
    ).where(lapsed.c.due > 0)  # also keeps SQLite from reading ON CONFLICT as a join clause
    columns = ["member_id", "kind", "points", "occurred_on", "key", "reason", "actor", "created_at"]
    statement = (
        upsert_insert(session, PointsEntry)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(PointsEntry.points)
    )
    written = (await session.scalars(statement)).all()
    return -sum(written)


async def history(session: AsyncSession, member_id: int, limit: int = 10) -> list[PointsEntry]:
    """The member's latest ledger lines, newest first."""
    result = await session.scalars(
        select(PointsEntry)
        .where(PointsEntry.member_id == member_id)
        .order_by(PointsEntry.created_at.desc(), PointsEntry.id.desc())
        .limit(limit)
    )
    return list(result.all())
