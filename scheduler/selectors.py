"""Who each lifecycle rule speaks to on a day: one set-based SELECT per rule kind (a few for
maintenance and win-back), never a Python loop over the members.

Each selector returns `Query`s: a statement the caller streams in chunks, and a function turning
one result row into `Candidate`s (usually one; a booking yields one per reminder offset). A
candidate carries the member, the occurrence that makes its idempotency key stable, the member's
locale and the template context (plain values: dates stay dates until the outbox stores them).

Events are picked on the day they happen (a visit `days_after` days ago, a birthday, an expiry
exactly N days ahead, the day a member turns pre-churn or goes quiet for 180 days), so every
run, the first included, selects one day's worth; catch-up windows, where a rule has one, are
small and the idempotency key absorbs the overlap.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Float,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    extract,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import (
    Booking,
    Coupon,
    Member,
    MileageReading,
    OutboxMessage,
    PointsEntry,
    Service,
    Store,
    SurveyResponse,
    Tier,
    TierChange,
    Vehicle,
    Visit,
)
from domain import feedback, points, segments
from domain.messages import resolve_locale
from domain.points import add_months
from domain.tiers import UPGRADE, window_start
from scheduler.outbox import MARKETING
from scheduler.ruleconfig import CouponSpec, Rule

# A car's last service is looked for this far back when its service has no month interval.
KM_ONLY_LOOKBACK_DAYS = 3 * 365
# How a first win-back offer's key ends: stage 1, then the lapse's last visit day (LIKE pattern).
FIRST_OFFER = ":1:____-__-__"


@dataclass(frozen=True)
class Candidate:
    """One message a rule wants to send: to whom, about which occurrence, in what words."""

    member_id: int
    member_ref: str
    occurrence: str
    locale: str
    context: dict[str, Any]
    not_before: datetime | None = None  # None: the start of the day (see Env.not_before)
    coupon: CouponSpec | None = None


Mapper = Callable[[Row[Any]], list[Candidate]]


@dataclass(frozen=True)
class Query:
    statement: Select[Any]
    rows: Mapper


@dataclass(frozen=True)
class ServiceInfo:
    code: str
    name_zh: str
    name_en: str
    interval_months: int | None
    interval_km: int | None

    def name(self, locale: str) -> str:
        return self.name_en if locale == "en" else self.name_zh


@dataclass(frozen=True)
class TierInfo:
    code: str
    rank: int
    name_zh: str
    name_en: str
    threshold_cents: int
    privileges_zh: tuple[str, ...]
    privileges_en: tuple[str, ...]


@dataclass
class Env:
    """What every selector needs to know about the day and the chain, loaded once per run."""

    day: date
    now: datetime
    zone: ZoneInfo
    dialect: str
    stores: dict[int, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    tiers: list[TierInfo] = field(default_factory=list)

    def start_of(self, day: date, zone: ZoneInfo | None = None) -> datetime:
        """The first instant of `day` in `zone` (the chain's by default), in UTC."""
        return datetime.combine(day, time(), tzinfo=zone or self.zone).astimezone(UTC)

    @property
    def not_before(self) -> datetime:
        """Messages about the day are due from its start, or now for a day already begun."""
        return max(self.now, self.start_of(self.day))

    def store(self, store_id: int | None) -> dict[str, Any]:
        if store_id is not None and store_id in self.stores:
            return self.stores[store_id]
        return next(iter(self.stores.values()))

    def service_name(self, code: str, locale: str) -> str:
        info = self.services.get(code)
        return info.name(locale) if info else code


async def load_env(session: AsyncSession, day: date, now: datetime, zone: ZoneInfo) -> Env:
    env = Env(day=day, now=now, zone=zone, dialect=session.bind.dialect.name)
    for store in (await session.scalars(select(Store).order_by(Store.id))).all():
        env.stores[int(store.id or 0)] = {
            "code": store.code,
            "name": store.name,
            "address": store.address,
            "timezone": store.timezone,
        }
    for service in (await session.scalars(select(Service).order_by(Service.id))).all():
        env.services[service.code] = ServiceInfo(
            service.code,
            service.name_zh,
            service.name_en,
            service.interval_months if service.active else None,
            service.interval_km if service.active else None,
        )
    env.tiers = [
        TierInfo(
            t.code,
            t.rank,
            t.name_zh,
            t.name_en,
            t.threshold_cents,
            tuple(t.privileges_zh),
            tuple(t.privileges_en),
        )
        for t in (await session.scalars(select(Tier).order_by(Tier.rank))).all()
    ]
    return env


# ------------------------------------------------------------------------------ SQL helpers


def _days_between(env: Env, later: Any, earlier: Any) -> Any:
    """Whole days from `earlier` to `later` (two date expressions), as an integer."""
    if env.dialect == "postgresql":
        return type_coerce(later - earlier, Integer)
    return cast(func.julianday(later) - func.julianday(earlier), Integer)


def _day(value: date) -> Any:
    return literal(value, Date)


def _json_has_any(env: Env, column: Any, values: Sequence[str]) -> Any:
    """The JSON list of codes in `column` holds one of `values`.

    Matched on the stored text (`"code"` with its quotes): service and category codes are ASCII
    letters, digits, `_` and `-` (shop.yaml's pattern), which JSON writes verbatim, so the match
    is exact, and a text search is many times cheaper than unpacking JSON on every visit."""
    text = cast(column, String)
    find = func.strpos if env.dialect == "postgresql" else func.instr
    return or_(*(find(text, f'"{value}"') > 0 for value in values))


def _iso(env: Env, expression: Any) -> Any:
    """A date expression as 'YYYY-MM-DD' text, for building keys in SQL."""
    if env.dialect == "postgresql":
        return func.to_char(expression, "YYYY-MM-DD")
    return func.date(expression)


MEMBER_COLUMNS = (
    Member.id.label("member_id"),
    Member.member_ref.label("member_ref"),
    Member.name.label("member_name"),
    Member.locale.label("member_locale"),
    Member.birthday.label("member_birthday"),
    Member.home_store_id.label("home_store_id"),
)
VEHICLE_COLUMNS = (
    Vehicle.id.label("vehicle_id"),
    Vehicle.plate.label("plate"),
    Vehicle.make.label("make"),
    Vehicle.model.label("model"),
    Vehicle.inspection_due.label("inspection_due"),
    Vehicle.insurance_expiry.label("insurance_expiry"),
)


def _live(rule: Rule) -> list[Any]:
    """Members a rule may select: never the erased; for marketing, only who agreed to it."""
    conditions: list[Any] = [Member.erased_at.is_(None)]
    if rule.category == MARKETING:
        conditions.append(Member.marketing_consent.is_(True))
    return conditions


# --------------------------------------------------------------------------- context pieces


def _locale(row: Row[Any]) -> str:
    return resolve_locale(row.member_locale)


def _base(row: Row[Any], env: Env, locale: str, store_id: int | None = None) -> dict[str, Any]:
    return {
        "member": {
            "name": row.member_name,
            "member_ref": row.member_ref,
            "locale": locale,
            "birthday": row.member_birthday,
        },
        "store": env.store(store_id if store_id is not None else row.home_store_id),
        "today": env.day,
    }


def _vehicle(row: Row[Any]) -> dict[str, Any]:
    return {
        "plate": row.plate,
        "make": row.make,
        "model": row.model,
        "inspection_due": row.inspection_due,
        "insurance_expiry": row.insurance_expiry,
    }


def _visit(row: Row[Any], env: Env, locale: str) -> dict[str, Any]:
    return {
        "id": row.visit_id,
        "visited_on": row.visited_on,
        "store_name": env.store(row.visit_store_id)["name"] if row.visit_store_id else None,
        "services": [env.service_name(code, locale) for code in (row.services or [])],
    }


def _candidate(
    row: Row[Any], occurrence: str, locale: str, context: dict[str, Any], **extra: Any
) -> Candidate:
    return Candidate(
        member_id=int(row.member_id),
        member_ref=row.member_ref,
        occurrence=occurrence,
        locale=locale,
        context=context,
        **extra,
    )


VISIT_COLUMNS = (
    Visit.id.label("visit_id"),
    Visit.visited_on.label("visited_on"),
    Visit.store_id.label("visit_store_id"),
    Visit.services.label("services"),
)


# -------------------------------------------------------------------------------- selectors


def survey_buttons(visit_id: int) -> list[list[dict[str, str]]]:
    """The 0-10 answer buttons as the template context holds them (rows of label and data)."""
    return [
        [{"label": label, "data": data} for label, data in row]
        for row in feedback.score_buttons(visit_id)
    ]


def visit_survey(rule: Any, env: Env) -> list[Query]:
    """Visits `days_after` days ago not yet scored, one survey each."""
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .where(
            Visit.visited_on == _day(env.day - timedelta(days=rule.days_after)),
            Visit.satisfaction.is_(None),
            ~exists().where(SurveyResponse.visit_id == Visit.id),
            *_live(rule),
        )
        .order_by(Visit.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        context = _base(row, env, locale, row.visit_store_id)
        context["visit"] = _visit(row, env, locale)
        context["buttons"] = survey_buttons(int(row.visit_id))
        return [_candidate(row, str(row.visit_id), locale, context)]

    return [Query(statement, rows)]


def visit_care(rule: Any, env: Env) -> list[Query]:
    """Visits `days_after` days ago with a service of the rule's categories, one message each."""
    conditions = [Visit.visited_on == _day(env.day - timedelta(days=rule.days_after))]
    if rule.categories:
        conditions.append(_json_has_any(env, Visit.categories, rule.categories))
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS, *VEHICLE_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .outerjoin(Vehicle, Vehicle.id == Visit.vehicle_id)
        .where(*conditions, *_live(rule))
        .order_by(Visit.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        context = _base(row, env, locale, row.visit_store_id)
        context["visit"] = _visit(row, env, locale)
        if row.vehicle_id is not None:
            context["vehicle"] = _vehicle(row)
        return [_candidate(row, str(row.visit_id), locale, context)]

    return [Query(statement, rows)]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def birthday(rule: Any, env: Env) -> list[Query]:
    """Birthdays on the day; 29 February ones on 28 February in common years."""
    month, day = env.day.month, env.day.day
    on_day = and_(
        extract("month", Member.birthday) == month, extract("day", Member.birthday) == day
    )
    if (month, day) == (2, 28) and not _is_leap(env.day.year):
        on_day = or_(
            on_day,
            and_(extract("month", Member.birthday) == 2, extract("day", Member.birthday) == 29),
        )
    statement = (
        select(*MEMBER_COLUMNS)
        .where(Member.birthday.is_not(None), on_day, *_live(rule))
        .order_by(Member.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        return [_candidate(row, str(env.day.year), locale, _base(row, env, locale))]

    return [Query(statement, rows)]


def _car_dates(rule: Any, env: Env, column: Any) -> list[Query]:
    targets = {env.day + timedelta(days=n): n for n in rule.days_before}
    statement = (
        select(*MEMBER_COLUMNS, *VEHICLE_COLUMNS)
        .join(Member, Member.id == Vehicle.member_id)
        .where(column.in_([_day(d) for d in sorted(targets)]), *_live(rule))
        .order_by(Vehicle.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        due: date = getattr(row, column.key)
        context = _base(row, env, locale)
        context["vehicle"] = _vehicle(row)
        occurrence = f"{row.vehicle_id}:{due.isoformat()}:{targets[due]}d"
        return [_candidate(row, occurrence, locale, context)]

    return [Query(statement, rows)]


def insurance_renewal(rule: Any, env: Env) -> list[Query]:
    """Cars whose insurance runs out exactly `days_before` days after the day."""
    return _car_dates(rule, env, Vehicle.insurance_expiry)


def inspection_due(rule: Any, env: Env) -> list[Query]:
    """Cars whose annual inspection falls due exactly `days_before` days after the day."""
    return _car_dates(rule, env, Vehicle.inspection_due)


def booking_reminder(rule: Any, env: Env) -> list[Query]:
    """Bookings starting on the day or the next (in their store's time zone), one reminder per
    offset whose instant falls on or after the day's start (earlier ones were due yesterday)."""
    windows = []
    starts = {}
    for store_id, store in env.stores.items():
        zone = ZoneInfo(store["timezone"])
        start = env.start_of(env.day, zone)
        starts[store_id] = start
        end = env.start_of(env.day + timedelta(days=2), zone)
        windows.append(
            and_(Booking.store_id == store_id, Booking.starts_at >= start, Booking.starts_at < end)
        )
    if not windows:
        return []
    statement = (
        select(
            *MEMBER_COLUMNS,
            *VEHICLE_COLUMNS,
            Booking.id.label("booking_id"),
            Booking.store_id.label("booking_store_id"),
            Booking.service_code.label("service_code"),
            Booking.starts_at.label("starts_at"),
        )
        .join(Member, Member.id == Booking.member_id)
        .outerjoin(Vehicle, Vehicle.id == Booking.vehicle_id)
        .where(Booking.status == "booked", or_(*windows), *_live(rule))
        .order_by(Booking.starts_at, Booking.id)
    )
    offsets = sorted(set(rule.hours_before), reverse=True)

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        starts_at: datetime = row.starts_at
        if starts_at.tzinfo is None:
            starts_at = starts_at.replace(tzinfo=UTC)
        store = env.store(row.booking_store_id)
        found = []
        for hours in offsets:
            at = starts_at - timedelta(hours=hours)
            if at < starts[row.booking_store_id]:
                continue
            context = _base(row, env, locale, row.booking_store_id)
            context["booking"] = {
                "ref": f"B{int(row.booking_id):06d}",
                "service": env.service_name(row.service_code, locale),
                "starts_at": starts_at,
                "store_name": store["name"],
            }
            context["reminder"] = {"hours_before": hours}
            if row.vehicle_id is not None:
                context["vehicle"] = _vehicle(row)
            occurrence = f"{row.booking_id}:{hours}h"
            found.append(_candidate(row, occurrence, locale, context, not_before=at))
        return found

    return [Query(statement, rows)]


def points_expiring(rule: Any, env: Env) -> list[Query]:
    """Members with a lot expiring exactly `days_before` days ahead, some of it unspent.

    The amount is what lapses on that day by the ledger rule of domain.points (lots expiring
    by then minus every debit, less the same for the day before), so a member told about an
    earlier lot is not told about it again here."""
    expiring_on = env.day + timedelta(days=rule.days_before)
    holders = (
        select(PointsEntry.member_id)
        .where(PointsEntry.points > 0, PointsEntry.expires_on == _day(expiring_on))
        .distinct()
    )
    on_day = points.unspent_by(_day(expiring_on)) - points.unspent_by(
        _day(expiring_on - timedelta(days=1))
    )
    debits = func.coalesce(
        func.sum(case((PointsEntry.points < 0, -PointsEntry.points), else_=0)), 0
    )
    ledger = (
        select(
            PointsEntry.member_id.label("member_id"),
            func.coalesce(func.sum(PointsEntry.points), 0).label("balance"),
            on_day.label("expiring"),
            debits.label("debits"),
        )
        .where(PointsEntry.member_id.in_(holders))
        .group_by(PointsEntry.member_id)
        .subquery("ledger")
    )
    lots = (
        select(
            PointsEntry.member_id.label("member_id"),
            PointsEntry.expires_on.label("expires_on"),
            func.sum(PointsEntry.points)
            .over(partition_by=PointsEntry.member_id, order_by=PointsEntry.expires_on)
            .label("running"),
        )
        .where(
            PointsEntry.member_id.in_(holders),
            PointsEntry.points > 0,
            PointsEntry.expires_on.is_not(None),
        )
        .subquery("lots")
    )
    first_unspent = (
        select(lots.c.member_id, func.min(lots.c.expires_on).label("first"))
        .join(ledger, ledger.c.member_id == lots.c.member_id)
        .where(lots.c.running > ledger.c.debits)
        .group_by(lots.c.member_id)
        .subquery("first_unspent")
    )
    statement = (
        select(*MEMBER_COLUMNS, ledger.c.balance, ledger.c.expiring, first_unspent.c.first)
        .join(ledger, ledger.c.member_id == Member.id)
        .outerjoin(first_unspent, first_unspent.c.member_id == Member.id)
        .where(ledger.c.expiring > 0, *_live(rule))
        .order_by(Member.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        context = _base(row, env, locale)
        first = row.first
        context["points"] = {
            "balance": int(row.balance),
            "expiring": int(row.expiring),
            "expiring_on": expiring_on,
            "next_expiry": max(first, env.day) if first is not None else expiring_on,
        }
        return [_candidate(row, expiring_on.isoformat(), locale, context)]

    return [Query(statement, rows)]


def tier_upgrade(rule: Any, env: Env) -> list[Query]:
    """Upgrades recorded from `within_days` before the day through the day, for members who
    still hold the tier they were raised to."""
    before, after = aliased(Tier), aliased(Tier)
    spend = (
        select(func.coalesce(func.sum(Visit.amount_cents), 0))
        .where(
            Visit.member_id == Member.id,
            Visit.visited_on >= _day(window_start(env.day)),
            Visit.visited_on <= _day(env.day),
        )
        .scalar_subquery()
    )
    statement = (
        select(
            *MEMBER_COLUMNS,
            TierChange.id.label("change_id"),
            TierChange.to_tier.label("to_tier"),
            spend.label("spend"),
        )
        .join(Member, Member.id == TierChange.member_id)
        .join(before, before.code == TierChange.from_tier)
        .join(after, after.code == TierChange.to_tier)
        .where(
            after.rank > before.rank,
            TierChange.reason == UPGRADE,  # not history an import brought in
            TierChange.created_at >= env.start_of(env.day - timedelta(days=rule.within_days)),
            TierChange.created_at < env.start_of(env.day + timedelta(days=1)),
            Member.tier_code == TierChange.to_tier,
            *_live(rule),
        )
        .order_by(TierChange.id)
    )
    tiers = {t.code: t for t in env.tiers}

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        tier = tiers[row.to_tier]
        higher = [t for t in env.tiers if t.rank > tier.rank]
        following = higher[0] if higher else None
        english = locale == "en"
        context = _base(row, env, locale)
        context["tier"] = {
            "code": tier.code,
            "name": tier.name_en if english else tier.name_zh,
            "next_name": (following.name_en if english else following.name_zh)
            if following
            else None,
            "missing_cents": max(0, following.threshold_cents - int(row.spend)) if following else 0,
            "privileges": list(tier.privileges_en if english else tier.privileges_zh),
        }
        return [_candidate(row, str(row.change_id), locale, context)]

    return [Query(statement, rows)]


def wake_up(rule: Any, env: Env) -> list[Query]:
    """Members whose last visit was exactly `after_days` days before the day."""
    last_day = env.day - timedelta(days=rule.after_days)
    later = aliased(Visit)
    same_day = aliased(Visit)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .where(
            Visit.visited_on == _day(last_day),
            ~exists().where(
                later.member_id == Visit.member_id,
                later.visited_on > _day(last_day),
                later.visited_on <= _day(env.day),
            ),
            # One message per member: the day's last visit speaks for the others.
            ~exists().where(
                same_day.member_id == Visit.member_id,
                same_day.visited_on == Visit.visited_on,
                same_day.id > Visit.id,
            ),
            *_live(rule),
        )
        .order_by(Member.id)
    )

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        context = _base(row, env, locale)
        context["visit"] = _visit(row, env, locale)
        return [_candidate(row, last_day.isoformat(), locale, context)]

    return [Query(statement, rows)]


# ------------------------------------------------------------------------------ maintenance


def _last_service_dates(months: int, first: date, last: date) -> tuple[date, date] | None:
    """The service days L whose due day add_months(L, months) lies in [first, last]."""
    probe = add_months(first, -months) - timedelta(days=4)
    days = [probe + timedelta(days=i) for i in range((last - first).days + 9)]
    inside = [d for d in days if first <= add_months(d, months) <= last]
    return (inside[0], inside[-1]) if inside else None


def _latest_service(env: Env, code: str) -> list[Any]:
    """The visit is the car's latest with service `code` up to the day."""
    later = aliased(Visit)
    return [
        Visit.vehicle_id.is_not(None),
        _json_has_any(env, Visit.services, [code]),
        ~exists().where(
            later.member_id == Visit.member_id,
            later.vehicle_id == Visit.vehicle_id,
            later.visited_on <= _day(env.day),
            or_(
                later.visited_on > Visit.visited_on,
                and_(later.visited_on == Visit.visited_on, later.id > Visit.id),
            ),
            _json_has_any(env, later.services, [code]),
        ),
    ]


def maintenance_due(rule: Any, env: Env) -> list[Query]:
    """Per service with an interval: cars falling due by time on the day (or in the catch-up
    days), and cars crossing the km interval by their projected odometer, not yet due by time."""
    queries: list[Query] = []
    for info in env.services.values():
        if info.interval_months:
            queries += _due_by_time(rule, env, info)
        if info.interval_km:
            queries += _due_by_km(rule, env, info)
    return queries


def _maintenance_rows(rule: Any, env: Env, info: ServiceInfo, due_by: str) -> Mapper:
    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        last: date = row.visited_on
        context = _base(row, env, locale, row.visit_store_id)
        context["vehicle"] = _vehicle(row)
        context["service"] = {"code": info.code, "name": info.name(locale)}
        estimated = getattr(row, "estimated_km", None)
        at_service = row.mileage_km
        context["maintenance"] = {
            "due_by": due_by,
            "last_service_on": last,
            "interval_months": info.interval_months,
            "interval_km": info.interval_km,
            "estimated_km": int(estimated) if estimated is not None else None,
            "km_since_service": int(estimated - at_service)
            if estimated is not None and at_service is not None
            else None,
        }
        occurrence = f"{row.vehicle_id}:{info.code}:{last.isoformat()}"
        return [_candidate(row, occurrence, locale, context)]

    return rows


def _service_columns() -> tuple[Any, ...]:
    return (
        *MEMBER_COLUMNS,
        *VEHICLE_COLUMNS,
        Visit.id.label("visit_id"),
        Visit.visited_on.label("visited_on"),
        Visit.store_id.label("visit_store_id"),
        Visit.mileage_km.label("mileage_km"),
    )


def _due_by_time(rule: Any, env: Env, info: ServiceInfo) -> list[Query]:
    assert info.interval_months
    span = _last_service_dates(
        info.interval_months, env.day - timedelta(days=rule.catch_up_days), env.day
    )
    if span is None:
        return []
    statement = (
        select(*_service_columns())
        .join(Vehicle, Vehicle.id == Visit.vehicle_id)
        .join(Member, Member.id == Vehicle.member_id)
        .where(
            Visit.visited_on >= _day(span[0]),
            Visit.visited_on <= _day(span[1]),
            *_latest_service(env, info.code),
            *_live(rule),
        )
        .order_by(Visit.vehicle_id)
    )
    return [Query(statement, _maintenance_rows(rule, env, info, "time"))]


def _due_by_km(rule: Any, env: Env, info: ServiceInfo) -> list[Query]:
    """Cars whose projected odometer passes (km at the service + interval) between the day
    before the catch-up window and the day.

    Driven from the readings, not the visits: every car's line is fitted in one pass over
    mileage_reading, and a service can only be crossing now if the car has a reading (the one
    its service visit left) inside the narrow band (before_km - interval, today_km - interval].
    Only those few readings are then matched to their visit, which must hold the service and be
    the car's latest with it."""
    assert info.interval_km
    first = env.day - timedelta(days=KM_ONLY_LOOKBACK_DAYS)
    if info.interval_months:
        # Services already due by time were reminded then (the same cycle, the same key).
        span = _last_service_dates(
            info.interval_months, env.day - timedelta(days=rule.catch_up_days), env.day
        )
        first = (span[1] if span else add_months(env.day, -info.interval_months)) + timedelta(
            days=1
        )
    fitted = _fitted_odometers(rule, env).cte("fitted")
    at_service = aliased(MileageReading)
    band = (
        select(
            fitted.c.vehicle_id,
            fitted.c.today_km,
            at_service.read_on.label("read_on"),
            at_service.km.label("km"),
        )
        .join(at_service, at_service.vehicle_id == fitted.c.vehicle_id)
        .where(
            at_service.km > fitted.c.before_km - info.interval_km,
            at_service.km <= fitted.c.today_km - info.interval_km,
            at_service.read_on >= _day(first),
            at_service.read_on < _day(env.day),
        )
        # DISTINCT keeps SQLite from flattening the band into the join below and checking
        # every visit of every car before the band has thrown nearly all of them out.
        .distinct()
        .subquery("band")
    )
    statement = (
        select(*_service_columns(), band.c.today_km.label("estimated_km"))
        .select_from(band)
        .join(Vehicle, Vehicle.id == band.c.vehicle_id)
        .join(Member, Member.id == Vehicle.member_id)
        .join(
            Visit,
            and_(
                Visit.member_id == Vehicle.member_id,
                Visit.visited_on == band.c.read_on,
                Visit.vehicle_id == band.c.vehicle_id,
                Visit.mileage_km == band.c.km,
            ),
        )
        .where(*_latest_service(env, info.code), *_live(rule))
        .order_by(band.c.vehicle_id)
    )
    return [Query(statement, _maintenance_rows(rule, env, info, "mileage"))]


def _fitted_odometers(rule: Any, env: Env) -> Select[Any]:
    """Per car with readings spanning at least `min_span_days` and rising: its odometer
    projected to the day and to the day before the catch-up window, at the car's own average
    km/day between its first and latest reading.

    The average over the whole span rather than a least-squares fit: odometers only go up, so
    it needs nothing but min and max per car (no date arithmetic per reading), which keeps one
    pass over millions of readings cheap."""
    r = (
        select(
            MileageReading.vehicle_id.label("vehicle_id"),
            func.min(MileageReading.read_on).label("first_on"),
            func.max(MileageReading.read_on).label("last_on"),
            func.min(MileageReading.km).label("first_km"),
            func.max(MileageReading.km).label("last_km"),
        )
        .where(MileageReading.read_on <= _day(env.day))
        .group_by(MileageReading.vehicle_id)
        .having(func.count() >= 2, func.max(MileageReading.km) > func.min(MileageReading.km))
        .subquery("readings")
    )
    span = _days_between(env, r.c.last_on, r.c.first_on)
    since = _days_between(env, _day(env.day), r.c.last_on)
    rate = cast(r.c.last_km - r.c.first_km, Float) / span
    before = rule.catch_up_days + 1
    return select(
        r.c.vehicle_id,
        (r.c.last_km + rate * since).label("today_km"),
        (r.c.last_km + rate * (since - before)).label("before_km"),
    ).where(span >= rule.min_span_days)


# --------------------------------------------------------------------------------- win-back


async def chain_median_interval(session: AsyncSession, env: Env) -> float:
    """The chain's median of members' average days between visits, as domain.segments has it
    (members not erased with two or more visits up to the day)."""
    days = _days_between(env, func.max(Visit.visited_on), func.min(Visit.visited_on))
    intervals = (
        select(cast(days, Float) / (func.count() - 1))
        .join(Member, Member.id == Visit.member_id)
        .where(Visit.visited_on <= _day(env.day), Member.erased_at.is_(None))
        .group_by(Visit.member_id)
        .having(func.count() >= 2)
    )
    values: list[float] = []
    stream = await session.stream_scalars(intervals.execution_options(yield_per=20_000))
    async for partition in stream.partitions():
        values.extend(float(v) for v in partition)
    return statistics.median(values) if values else segments.FALLBACK_CADENCE_DAYS


def _recent_first_offer(rule: Any, env: Env) -> Any:
    """The member got a first offer of this rule within the last `every_days` days."""
    return exists().where(
        OutboxMessage.member_id == Member.id,
        OutboxMessage.rule == rule.key,
        OutboxMessage.idempotency_key.like(f"{rule.key}:member:%{FIRST_OFFER}"),
        OutboxMessage.not_before >= env.start_of(env.day - timedelta(days=rule.every_days - 1)),
    )


def _last_rated(env: Env, member: Any) -> Any:
    rated = aliased(Visit)
    return (
        select(rated.satisfaction)
        .where(
            rated.member_id == member,
            rated.visited_on <= _day(env.day),
            rated.satisfaction.is_not(None),
        )
        .order_by(rated.visited_on.desc(), rated.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _win_back_rows(rule: Any, env: Env, stage: int) -> Mapper:
    coupon = rule.coupon if stage == 1 else rule.second_coupon

    def rows(row: Row[Any]) -> list[Candidate]:
        locale = _locale(row)
        context = _base(row, env, locale)
        context["visit"] = _visit(row, env, locale)
        context["stage"] = stage
        occurrence = f"{stage}:{row.visited_on.isoformat()}"
        return [_candidate(row, occurrence, locale, context, coupon=coupon)]

    return rows


async def win_back(session: AsyncSession, rule: Any, env: Env) -> list[Query]:
    """First offers to members who turned pre-churn within `within_days`; second offers to
    those who ignored a first one sent `second_after_days` ago."""
    median = await chain_median_interval(session, env)
    return [
        *_turned_by_cadence(rule, env, median),
        *_turned_by_score(rule, env),
        *_second_offers(rule, env),
    ]


def _latest_visit(env: Env, visit: Any) -> Any:
    """`visit` is its member's latest up to the day (the latest id among same-day visits)."""
    later = aliased(Visit)
    return ~exists().where(
        later.member_id == visit.member_id,
        later.visited_on <= _day(env.day),
        or_(
            later.visited_on > visit.visited_on,
            and_(later.visited_on == visit.visited_on, later.id > visit.id),
        ),
    )


def _turned_by_cadence(rule: Any, env: Env, median: float) -> list[Query]:
    """Gone longer than their rhythm allows today, but not `within_days` days ago: the same
    comparison as domain.segments.stickiness, on the same numbers."""
    n = func.count()
    gap = _days_between(env, func.max(Visit.visited_on), func.min(Visit.visited_on))
    recency = _days_between(env, _day(env.day), func.max(Visit.visited_on))
    average = cast(gap, Float) / (n - 1)
    own = segments.PRE_CHURN_CADENCE_FACTOR * case(
        (average > segments.MIN_CADENCE_DAYS, average), else_=segments.MIN_CADENCE_DAYS
    )
    allowed = case((n >= 2, own), else_=literal(segments.NEW_CADENCE_FACTOR * median, Float))
    lapsed = (
        select(Visit.member_id.label("member_id"), func.max(Visit.visited_on).label("last"))
        .where(Visit.visited_on <= _day(env.day))
        .group_by(Visit.member_id)
        .having(recency > allowed, recency - rule.within_days <= allowed)
        .subquery("lapsed")
    )
    score = _last_rated(env, Member.id)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(lapsed)
        .join(Member, Member.id == lapsed.c.member_id)
        .join(Visit, and_(Visit.member_id == lapsed.c.member_id, Visit.visited_on == lapsed.c.last))
        .where(
            _latest_visit(env, Visit),
            *_live(rule),
            or_(score.is_(None), score > segments.PRE_CHURN_SATISFACTION),
            ~_recent_first_offer(rule, env),
        )
        .order_by(Member.id)
    )
    return [Query(statement, _win_back_rows(rule, env, 1))]


def _turned_by_score(rule: Any, env: Env) -> list[Query]:
    """A detractor's score (PRE_CHURN_SATISFACTION or less) on their latest rated visit, given
    within `within_days`: pre-churn from that visit on."""
    rated = aliased(Visit)
    newer = aliased(Visit)
    low = (
        select(rated.member_id.label("member_id"))
        .where(
            rated.visited_on > _day(env.day - timedelta(days=rule.within_days)),
            rated.visited_on <= _day(env.day),
            rated.satisfaction <= segments.PRE_CHURN_SATISFACTION,
            ~exists().where(
                newer.member_id == rated.member_id,
                newer.satisfaction.is_not(None),
                newer.visited_on <= _day(env.day),
                or_(
                    newer.visited_on > rated.visited_on,
                    and_(newer.visited_on == rated.visited_on, newer.id > rated.id),
                ),
            ),
        )
        .subquery("low")
    )
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(low)
        .join(Member, Member.id == low.c.member_id)
        .join(Visit, Visit.member_id == low.c.member_id)
        .where(
            Visit.visited_on <= _day(env.day),
            _latest_visit(env, Visit),
            *_live(rule),
            ~_recent_first_offer(rule, env),
        )
        .order_by(Member.id)
    )
    return [Query(statement, _win_back_rows(rule, env, 1))]


def _second_offers(rule: Any, env: Env) -> list[Query]:
    """First offers sent `second_after_days` ago (within the catch-up window), with no visit
    since the lapse they were about and their coupon, if any, unused."""
    if rule.second_coupon is None:
        return []
    first = OutboxMessage
    prefix = f"{rule.key}:member:"
    sent_from = env.start_of(
        env.day - timedelta(days=rule.second_after_days + rule.within_days - 1)
    )
    sent_until = env.start_of(env.day - timedelta(days=rule.second_after_days - 1))
    # The first offer's key ends with the lapse's last visit day ("...:1:2026-05-01").
    lapse_day = func.substr(first.idempotency_key, func.length(first.idempotency_key) - 9)
    used = aliased(Coupon)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(first)
        .join(Member, Member.id == first.member_id)
        .join(Visit, Visit.member_id == first.member_id)
        .where(
            first.idempotency_key >= prefix,
            first.idempotency_key < prefix[:-1] + ";",
            first.rule == rule.key,
            first.idempotency_key.like(f"{prefix}%{FIRST_OFFER}"),
            first.not_before >= sent_from,
            first.not_before < sent_until,
            _iso(env, Visit.visited_on) == lapse_day,
            _latest_visit(env, Visit),
            ~exists().where(
                used.key == literal("rule:") + first.idempotency_key, used.used_at.is_not(None)
            ),
            *_live(rule),
        )
        .order_by(Member.id)
    )
    return [Query(statement, _win_back_rows(rule, env, 2))]


# ------------------------------------------------------------------------------- dispatcher

Selector = Callable[[Any, Env], list[Query]]
SELECTORS: dict[str, Selector] = {
    "visit_survey": visit_survey,
    "visit_care": visit_care,
    "birthday": birthday,
    "maintenance_due": maintenance_due,
    "insurance_renewal": insurance_renewal,
    "inspection_due": inspection_due,
    "booking_reminder": booking_reminder,
    "points_expiring": points_expiring,
    "tier_upgrade": tier_upgrade,
    "wake_up": wake_up,
}


async def queries_for(session: AsyncSession, rule: Rule, env: Env) -> list[Query]:
    """The statements that select `rule`'s members on `env.day`."""
    if rule.kind == "win_back":
        return await win_back(session, rule, env)
    return SELECTORS[rule.kind](rule, env)
