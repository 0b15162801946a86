"""Maintenance reminders: cars falling due for a service, by time or by estimated mileage.

The same rule as a member's own view (`domain.maintenance`): due by time (the interval in months
after the car's last visit with the service) or by mileage (the interval in km after that
visit's odometer reading, the odometer projected at the car's own average km per day),
whichever comes first. A car is reminded once per service cycle: the occurrence is (car,
service, day of the last service), the same whether it fell due by time or by mileage.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, and_, cast, exists, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import aliased

from db.models import Member, MileageReading, Vehicle, Visit
from domain.points import add_months
from domain.queries import date_literal, days_between, json_list_has_any
from scheduler.ruleconfig import MaintenanceDue
from scheduler.selectors.query import (
    MEMBER_COLUMNS,
    VEHICLE_COLUMNS,
    Candidate,
    CandidateQuery,
    ChainDay,
    RowToCandidates,
    ServiceInfo,
    candidate,
    common_context,
    member_may_receive,
    row_locale,
    vehicle_context,
)

# A car's last service is looked for this far back when its service has no month interval.
KM_ONLY_LOOKBACK_DAYS = 3 * 365


def _last_service_dates(months: int, first: date, last: date) -> tuple[date, date] | None:
    """The service days L whose due day add_months(L, months) lies in [first, last]."""
    probe = add_months(first, -months) - timedelta(days=4)
    days = [probe + timedelta(days=i) for i in range((last - first).days + 9)]
    inside = [d for d in days if first <= add_months(d, months) <= last]
    return (inside[0], inside[-1]) if inside else None


def _latest_service(chain: ChainDay, code: str) -> list[ColumnElement[bool]]:
    """The visit is the car's latest with service `code` up to the day."""
    later = aliased(Visit)
    return [
        Visit.vehicle_id.is_not(None),
        json_list_has_any(chain.dialect, Visit.services, [code]),
        ~exists().where(
            later.member_id == Visit.member_id,
            later.vehicle_id == Visit.vehicle_id,
            later.visited_on <= date_literal(chain.day),
            or_(
                later.visited_on > Visit.visited_on,
                and_(later.visited_on == Visit.visited_on, later.id > Visit.id),
            ),
            json_list_has_any(chain.dialect, later.services, [code]),
        ),
    ]


def maintenance_due(rule: MaintenanceDue, chain: ChainDay) -> list[CandidateQuery]:
    """Per service with an interval: cars falling due by time on the day (or in the catch-up
    days), and cars crossing the km interval by their projected odometer, not yet due by time."""
    queries: list[CandidateQuery] = []
    for info in chain.services.values():
        if info.interval_months:
            queries += _due_by_time(rule, chain, info)
        if info.interval_km:
            queries += _due_by_km(rule, chain, info)
    return queries


def _maintenance_candidates(chain: ChainDay, info: ServiceInfo, due_by: str) -> RowToCandidates:
    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        last: date = row.visited_on
        context = common_context(row, chain, locale, row.visit_store_id)
        context["vehicle"] = vehicle_context(row)
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
        return [candidate(row, occurrence, locale, context)]

    return to_candidates


# The columns a maintenance reminder reads: the owner, the car and the last service visit.
SERVICE_COLUMNS = (
    *MEMBER_COLUMNS,
    *VEHICLE_COLUMNS,
    Visit.id.label("visit_id"),
    Visit.visited_on.label("visited_on"),
    Visit.store_id.label("visit_store_id"),
    Visit.mileage_km.label("mileage_km"),
)


def _due_by_time(rule: MaintenanceDue, chain: ChainDay, info: ServiceInfo) -> list[CandidateQuery]:
    assert info.interval_months
    span = _last_service_dates(
        info.interval_months, chain.day - timedelta(days=rule.catch_up_days), chain.day
    )
    if span is None:
        return []
    statement = (
        select(*SERVICE_COLUMNS)
        .join(Vehicle, Vehicle.id == Visit.vehicle_id)
        .join(Member, Member.id == Vehicle.member_id)
        .where(
            Visit.visited_on >= date_literal(span[0]),
            Visit.visited_on <= date_literal(span[1]),
            *_latest_service(chain, info.code),
            *member_may_receive(rule),
        )
        .order_by(Visit.vehicle_id)
    )
    return [CandidateQuery(statement, _maintenance_candidates(chain, info, "time"))]


def _due_by_km(rule: MaintenanceDue, chain: ChainDay, info: ServiceInfo) -> list[CandidateQuery]:
    """Cars whose projected odometer passes (km at the service + interval) between the day
    before the catch-up window and the day.

    Driven from the readings, not the visits: every car's line is fitted in one pass over
    mileage_reading, and a service can only be crossing now if the car has a reading (the one
    its service visit left) inside the narrow band (before_km - interval, today_km - interval].
    Only those few readings are then matched to their visit, which must hold the service and be
    the car's latest with it."""
    assert info.interval_km
    first = chain.day - timedelta(days=KM_ONLY_LOOKBACK_DAYS)
    if info.interval_months:
        # Services already due by time were reminded then (the same cycle, the same key).
        span = _last_service_dates(
            info.interval_months, chain.day - timedelta(days=rule.catch_up_days), chain.day
        )
        first = (span[1] if span else add_months(chain.day, -info.interval_months)) + timedelta(
            days=1
        )
    fitted = _projected_odometers(rule, chain).cte("fitted")
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
            at_service.read_on >= date_literal(first),
            at_service.read_on < date_literal(chain.day),
        )
        # DISTINCT keeps SQLite from flattening the band into the join below and checking
        # every visit of every car before the band has thrown nearly all of them out.
        .distinct()
        .subquery("band")
    )
    statement = (
        select(*SERVICE_COLUMNS, band.c.today_km.label("estimated_km"))
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
        .where(*_latest_service(chain, info.code), *member_may_receive(rule))
        .order_by(band.c.vehicle_id)
    )
    return [CandidateQuery(statement, _maintenance_candidates(chain, info, "mileage"))]


def _projected_odometers(rule: MaintenanceDue, chain: ChainDay) -> Select[Any]:
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
        .where(MileageReading.read_on <= date_literal(chain.day))
        .group_by(MileageReading.vehicle_id)
        .having(func.count() >= 2, func.max(MileageReading.km) > func.min(MileageReading.km))
        .subquery("readings")
    )
    span = days_between(chain.dialect, r.c.last_on, r.c.first_on)
    since = days_between(chain.dialect, date_literal(chain.day), r.c.last_on)
    rate = cast(r.c.last_km - r.c.first_km, Float) / span
    before = rule.catch_up_days + 1
    return select(
        r.c.vehicle_id,
        (r.c.last_km + rate * since).label("today_km"),
        (r.c.last_km + rate * (since - before)).label("before_km"),
    ).where(span >= rule.min_span_days)
