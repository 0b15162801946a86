"""A member's own view of when each car is next due for maintenance agrees with the daily
maintenance reminders: the car the reminders pick on a day is due on that day here too, and the
set-based SQL beside the Python rule in domain.maintenance picks what the Python rule names."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Service, Vehicle
from db.session import Database
from domain import maintenance
from domain.shop import ShopConfig
from tests.support.rules_chain import DAY, build_chain

OIL = Service(
    code="oil_service",
    name_zh="小保养",
    name_en="Oil service",
    category="maintenance",
    duration_min=60,
    price_cents=48_000,
    interval_months=6,
    interval_km=5_000,
)


def test_time_alone_without_readings() -> None:
    due = maintenance.due_for(OIL, date(2026, 5, 24), 30_000, [(date(2026, 5, 24), 30_000)])
    assert due is not None and (due.due_on, due.by) == (date(2026, 11, 24), "time")


def test_mileage_first_when_the_car_is_driven_hard() -> None:
    readings = [(date(2026, 9, 1), 10_000), (date(2026, 10, 1), 13_000)]  # 100 km a day
    due = maintenance.due_for(OIL, date(2026, 9, 1), 10_000, readings)
    assert due is not None and (due.due_on, due.by) == (date(2026, 10, 21), "mileage")


def test_an_odometer_that_went_backwards_is_not_extrapolated() -> None:
    readings = [(date(2026, 9, 1), 10_000), (date(2026, 10, 1), 9_000)]
    assert maintenance.km_per_day(readings) is None
    due = maintenance.due_for(OIL, date(2026, 9, 1), 10_000, readings)
    assert due is not None and due.by == "time"


async def test_agrees_with_the_reminders(db: Database, shop_config: ShopConfig) -> None:
    chain = await build_chain(db, shop_config)
    async with db.read() as session:
        by_time = await maintenance.next_due(session, chain.ids["oil_by_time"])
        by_km = await maintenance.next_due(session, chain.ids["oil_by_km"])
        earlier = await maintenance.next_due(session, chain.ids["oil_by_km_earlier"])
        nothing = await maintenance.next_due(session, chain.ids["booker"])
    [time_due] = by_time[chain.cars["time_car"]]
    assert (time_due.service_code, time_due.due_on, time_due.by) == ("oil_service", DAY, "time")
    [km_due] = by_km[chain.cars["km_car"]]
    assert (km_due.due_on, km_due.by) == (DAY, "mileage")
    # Driven a little harder: it crossed the mark before the day, so it is already due.
    [overdue] = earlier[chain.cars["km_car_2"]]
    assert overdue.due_on < DAY - timedelta(days=1) and overdue.by == "mileage"
    assert all(dues == [] for dues in nothing.values())


async def test_the_sql_picks_the_cars_the_python_rule_says_are_due(
    db: Database, shop_config: ShopConfig
) -> None:
    chain = await build_chain(db, shop_config)
    async with db.read() as session:
        picked = await picked_by_sql(session, DAY)
        named: set[tuple[int, str, str]] = set()
        for member_id in chain.ids.values():
            for car, dues in (await maintenance.next_due(session, member_id)).items():
                named |= {(car, due.service_code, due.by) for due in dues if due.due_on == DAY}
    expected = {
        (chain.cars["time_car"], "oil_service", "time"),
        (chain.cars["km_car"], "oil_service", "mileage"),
    }
    assert picked == named == expected


async def picked_by_sql(session: AsyncSession, day: date) -> set[tuple[int, str, str]]:
    """(car, service, by) of every car the reminders' statements find due on `day`."""
    dialect = session.bind.dialect.name
    car = [Vehicle.id.label("vehicle_id")]
    picked: set[tuple[int, str, str]] = set()
    for service in (await session.scalars(select(Service).where(Service.active))).all():
        statements: list[tuple[str, Select[Any] | None]] = []
        if service.interval_months:
            by_time = maintenance.due_by_time(
                car, service.code, service.interval_months,
                day=day, catch_up_days=0, dialect=dialect,
            )  # fmt: skip
            statements.append(("time", by_time))
        if service.interval_km:
            by_km = maintenance.due_by_mileage(
                car, service.code, service.interval_km, service.interval_months,
                day=day, catch_up_days=0, min_span_days=30, dialect=dialect,
            )  # fmt: skip
            statements.append(("mileage", by_km))
        for by, statement in statements:
            if statement is not None:
                cars = (await session.scalars(statement)).all()
                picked |= {(vehicle_id, service.code, by) for vehicle_id in cars}
    return picked
