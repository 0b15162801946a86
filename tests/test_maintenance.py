"""A member's own view of when each car is next due for maintenance agrees with the daily
maintenance reminders: the car the reminders pick on a day is due on that day here too."""

from __future__ import annotations

from datetime import date, timedelta

from db.models import Service
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
