"""When a car is next due for each maintenance service: for one member's own view in Python,
and for the daily reminders in set-based SQL, side by side so the two stay one rule.

The rule: a service falls due by time (its interval in months after the car's last visit with
it) or by mileage (its interval in km after the odometer reading of that visit, the odometer
projected at the car's own average km per day between its first and latest readings),
whichever comes first.

* `due_for` / `next_due` read one member's few cars and give each service's next due date.
* `due_by_time` / `due_by_mileage` build the statements that find, among a million cars at
  once, those falling due on a day; the scheduler's maintenance selector
  (`scheduler.selectors.maintenance`) adds who may be told and what to say.

`tests/test_maintenance.py` holds the pair together: the cars the reminders pick on a day are
due on that day by `next_due` too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, and_, cast, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import Member, MileageReading, Service, Vehicle, Visit
from domain.points import add_months
from domain.queries import date_literal, days_between, json_list_has_any

# A car's last service is looked for this far back when its service has no month interval.
KM_ONLY_LOOKBACK_DAYS = 3 * 365


@dataclass(frozen=True)
class Due:
    """One service's next due date for one car, and what makes it due."""

    service_code: str
    name_zh: str
    name_en: str
    due_on: date
    by: str  # "time" or "mileage"
    last_service_on: date


def km_per_day(readings: list[tuple[date, int]]) -> float | None:
    """The car's average daily distance between its first and latest readings; None with
    fewer than two readings on different days, or an odometer that did not move forward."""
    if len(readings) < 2:
        return None
    (first_on, first_km), (last_on, last_km) = min(readings), max(readings)
    days = (last_on - first_on).days
    if days <= 0 or last_km <= first_km:
        return None
    return (last_km - first_km) / days


def due_for(
    service: Service,
    last_on: date,
    km_at_service: int | None,
    readings: list[tuple[date, int]],
) -> Due | None:
    """The earlier of the time and mileage due dates after the last service, if any."""
    candidates: list[tuple[date, str]] = []
    if service.interval_months:
        candidates.append((add_months(last_on, service.interval_months), "time"))
    rate = km_per_day(readings)
    if service.interval_km and km_at_service is not None and rate:
        latest_on, latest_km = max(readings)
        km_left = km_at_service + service.interval_km - latest_km
        # The first day the projected odometer reaches the mark, as the reminders count it.
        days = max(0, math.ceil(km_left / rate))
        candidates.append((latest_on + timedelta(days=days), "mileage"))
    if not candidates:
        return None
    due_on, by = min(candidates)
    return Due(service.code, service.name_zh, service.name_en, due_on, by, last_on)


async def next_due(session: AsyncSession, member_id: int) -> dict[int, list[Due]]:
    """Per car of the member: every maintenance service it has had, with its next due date,
    soonest first. A service the car never had is not guessed at."""
    services = {
        s.code: s
        for s in (
            await session.scalars(
                select(Service).where(
                    Service.active.is_(True),
                    (Service.interval_months.is_not(None)) | (Service.interval_km.is_not(None)),
                )
            )
        ).all()
    }
    cars = list(
        (await session.scalars(select(Vehicle.id).where(Vehicle.member_id == member_id))).all()
    )
    if not services or not cars:
        return {car: [] for car in cars}
    visits = (
        await session.execute(
            select(Visit.vehicle_id, Visit.visited_on, Visit.mileage_km, Visit.services)
            .where(Visit.member_id == member_id, Visit.vehicle_id.in_(cars))
            .order_by(Visit.visited_on, Visit.id)
        )
    ).all()
    readings: dict[int, list[tuple[date, int]]] = {car: [] for car in cars}
    for car, read_on, km in (
        await session.execute(
            select(MileageReading.vehicle_id, MileageReading.read_on, MileageReading.km).where(
                MileageReading.vehicle_id.in_(cars)
            )
        )
    ).all():
        readings[car].append((read_on, km))
    last: dict[tuple[int, str], tuple[date, int | None]] = {}
    for car, visited_on, km, codes in visits:
        for code in codes or []:
            if code in services:
                last[(car, code)] = (visited_on, km)  # ordered by day: the latest wins
    found: dict[int, list[Due]] = {car: [] for car in cars}
    for (car, code), (visited_on, km) in last.items():
        due = due_for(services[code], visited_on, km, readings[car])
        if due is not None:
            found[car].append(due)
    for dues in found.values():
        dues.sort(key=lambda due: (due.due_on, due.service_code))
    return found


async def cars_due(session: AsyncSession, member_id: int) -> list[tuple[Vehicle, list[Due]]]:
    """The member's cars, oldest on file first, each with `next_due`'s services for it."""
    cars = await session.scalars(
        select(Vehicle).where(Vehicle.member_id == member_id).order_by(Vehicle.id)
    )
    dues = await next_due(session, member_id)
    return [(car, dues.get(int(car.id or 0), [])) for car in cars.all()]


# ------------------------------------------------------------------- the same rule in SQL


def last_service_dates(months: int, first: date, last: date) -> tuple[date, date] | None:
    """The service days L whose due day add_months(L, months) lies in [first, last]."""
    probe = add_months(first, -months) - timedelta(days=4)
    days = [probe + timedelta(days=i) for i in range((last - first).days + 9)]
    inside = [d for d in days if first <= add_months(d, months) <= last]
    return (inside[0], inside[-1]) if inside else None


def latest_with_service(dialect: str, day: date, code: str) -> list[ColumnElement[bool]]:
    """Conditions on `Visit`: it is its car's latest visit with service `code` up to `day`."""
    later = aliased(Visit)
    return [
        Visit.vehicle_id.is_not(None),
        json_list_has_any(dialect, Visit.services, [code]),
        ~exists().where(
            later.member_id == Visit.member_id,
            later.vehicle_id == Visit.vehicle_id,
            later.visited_on <= date_literal(day),
            or_(
                later.visited_on > Visit.visited_on,
                and_(later.visited_on == Visit.visited_on, later.id > Visit.id),
            ),
            json_list_has_any(dialect, later.services, [code]),
        ),
    ]


def due_by_time(
    columns: Sequence[Any],
    code: str,
    interval_months: int,
    *,
    day: date,
    catch_up_days: int,
    dialect: str,
) -> Select[Any] | None:
    """`columns` of the cars whose service `code` falls due by time on `day` or in the
    `catch_up_days` before it, one row per car, by car; None when no service day can.

    The statement joins `Visit` (the car's last visit with the service), `Vehicle` (its car) and
    `Member` (its owner), so `columns` and any further condition may name all three."""
    span = last_service_dates(interval_months, day - timedelta(days=catch_up_days), day)
    if span is None:
        return None
    return (
        select(*columns)
        .select_from(Visit)
        .join(Vehicle, Vehicle.id == Visit.vehicle_id)
        .join(Member, Member.id == Vehicle.member_id)
        .where(
            Visit.visited_on >= date_literal(span[0]),
            Visit.visited_on <= date_literal(span[1]),
            *latest_with_service(dialect, day, code),
        )
        .order_by(Visit.vehicle_id)
    )


def due_by_mileage(
    columns: Sequence[Any],
    code: str,
    interval_km: int,
    interval_months: int | None,
    *,
    day: date,
    catch_up_days: int,
    min_span_days: int,
    dialect: str,
) -> Select[Any]:
    """`columns` and `estimated_km` (the odometer projected to `day`) of the cars whose
    projected odometer passes (km at the service + interval) between the day before the
    catch-up window and `day`, and which were not due by time first; one row per car, by car.

    Driven from the readings, not the visits: every car's line is fitted in one pass over
    mileage_reading, and a service can only be crossing now if the car has a reading (the one
    its service visit left) inside the narrow band (before_km - interval, today_km - interval].
    Only those few readings are then matched to their visit, which must hold the service and be
    the car's latest with it. Joins as `due_by_time`."""
    first = day - timedelta(days=KM_ONLY_LOOKBACK_DAYS)
    if interval_months:
        # Services already due by time were reminded then (the same cycle, the same key).
        span = last_service_dates(interval_months, day - timedelta(days=catch_up_days), day)
        first = (span[1] if span else add_months(day, -interval_months)) + timedelta(days=1)
    fitted = projected_odometers(
        day=day, catch_up_days=catch_up_days, min_span_days=min_span_days, dialect=dialect
    ).cte("fitted")
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
            at_service.km > fitted.c.before_km - interval_km,
            at_service.km <= fitted.c.today_km - interval_km,
            at_service.read_on >= date_literal(first),
            at_service.read_on < date_literal(day),
        )
        # DISTINCT keeps SQLite from flattening the band into the join below and checking
        # every visit of every car before the band has thrown nearly all of them out.
        .distinct()
        .subquery("band")
    )
    return (
        select(*columns, band.c.today_km.label("estimated_km"))
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
        .where(*latest_with_service(dialect, day, code))
        .order_by(band.c.vehicle_id)
    )


def projected_odometers(
    *, day: date, catch_up_days: int, min_span_days: int, dialect: str
) -> Select[Any]:
    """Per car with readings spanning at least `min_span_days` and rising: its odometer
    projected to `day` (`today_km`) and to the day before the catch-up window (`before_km`),
    at the car's own average km/day between its first and latest reading, as `km_per_day`.

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
        .where(MileageReading.read_on <= date_literal(day))
        .group_by(MileageReading.vehicle_id)
        .having(func.count() >= 2, func.max(MileageReading.km) > func.min(MileageReading.km))
        .subquery("readings")
    )
    span = days_between(dialect, r.c.last_on, r.c.first_on)
    since = days_between(dialect, date_literal(day), r.c.last_on)
    rate = cast(r.c.last_km - r.c.first_km, Float) / span
    before = catch_up_days + 1
    return select(
        r.c.vehicle_id,
        (r.c.last_km + rate * since).label("today_km"),
        (r.c.last_km + rate * (since - before)).label("before_km"),
    ).where(span >= min_span_days)
