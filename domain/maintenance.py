"""When a member's car is next due for each maintenance service, for the member's own view.

The same rule as the daily maintenance reminders (`scheduler.selectors.maintenance`): a
service falls due by time (its interval in months after the car's last visit with it) or by
mileage (its interval in km after the odometer reading of that visit, the odometer projected
at the car's own average km per day between its first and latest readings), whichever comes
first. The reminders select a million cars at once in SQL; this reads one member's few cars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MileageReading, Service, Vehicle, Visit
from domain.points import add_months


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
