"""A member's own bookings, step by step (domain/member_bookings.py): every step looks the walk
up as it is now; gone or foreign stores, services, cars and bookings are NotFound; a day that
passed or filled is part of the answer; changes meet the cut-off. The chat's walk over these
use cases is tests/test_chat_booking.py. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from db.models import Service, Vehicle
from db.session import Database
from domain import bookings, member_bookings, members
from domain.errors import BookingUnavailable, NotFound
from domain.member_bookings import DAY_FULL, DAY_GONE, Picked
from domain.shop import BookingRules
from tests.support.builders import main_store

RULES = BookingRules()
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # Tuesday 09:00 in Shanghai
MON, WED = date(2026, 11, 30), date(2026, 12, 2)


async def member(db: Database, n: int, plates: tuple[str, ...] = ()) -> tuple[int, list[int]]:
    async with db.transaction() as session:
        found = await members.create(
            session, member_ref=f"M{n}", name=f"车主{n}", phone=f"1381234{n:04d}"
        )
        assert found.id is not None
        cars = [Vehicle(member_id=found.id, plate=plate) for plate in plates]
        session.add_all(cars)
        await session.flush()
        return found.id, [int(car.id or 0) for car in cars]


async def place(db: Database, member_id: int, picked: Picked, key: str) -> int:
    async with db.transaction() as session:
        choice = await member_bookings.choose(session, picked)
        booking = await member_bookings.place(
            session, member_id, choice, picked, NOW, RULES, key=key, actor="test"
        )
        assert booking.id is not None
        return booking.id


async def test_a_walk_is_looked_up_as_it_is_now(db: Database) -> None:
    store_id = await main_store(db)
    async with db.read() as session:
        offer = await member_bookings.offer(session)
        wash = await session.scalar(select(Service).where(Service.code == "wash"))
        assert wash is not None and wash.id is not None
        days = await member_bookings.days_for_service(session, store_id, wash.id, NOW, RULES)
        with pytest.raises(NotFound):
            await member_bookings.services_at(session, store_id + 100)
        with pytest.raises(NotFound):
            await member_bookings.choose(session, Picked(store_id, "no_such_service"))
        with pytest.raises(NotFound):
            await member_bookings.days_for_service(session, store_id, 999_999, NOW, RULES)
    assert [s.code for s in offer.stores] == ["main"] and "wash" in [s.code for s in offer.services]
    assert days.choice.service.code == "wash" and days.days[:2] == [date(2026, 12, 1), WED]

    await main_store(db, active=False)
    async with db.read() as session:
        assert (await member_bookings.offer(session)).stores == []
        with pytest.raises(NotFound):
            await member_bookings.choose(session, Picked(store_id, "wash"))


async def test_a_day_that_passed_or_filled_is_part_of_the_answer(db: Database) -> None:
    store_id = await main_store(db, bays=1, opening_hours={"wed": ["09:00-09:30"]})
    member_id, _cars = await member(db, 1)
    walk = Picked(store_id, "wash", day=WED, hhmm="0900")
    async with db.read() as session:
        past = await member_bookings.times(session, replace(walk, day=MON), NOW, RULES)
        open_ = await member_bookings.times(session, walk, NOW, RULES)
    assert past.day_refusal == DAY_GONE and past.free == []
    assert open_.day_refusal == "" and open_.at("0900") is not None and open_.at("0930") is None

    await place(db, member_id, walk, key="first")
    async with db.read() as session:
        full = await member_bookings.times(session, walk, NOW, RULES)
    assert full.day_refusal == DAY_FULL and full.at("0900") is None


async def test_the_car_of_a_picked_time(db: Database) -> None:
    store_id = await main_store(db)
    two, (first, second) = await member(db, 1, ("沪A12345", "沪B67890"))
    one, (only,) = await member(db, 2, ("沪C11111",))
    walk = Picked(store_id, "wash", day=WED, hhmm="1000")
    async with db.read() as session:
        open_choice = await member_bookings.pick(session, two, walk, NOW, RULES)
        picked = await member_bookings.pick(
            session, two, replace(walk, vehicle_id=second), NOW, RULES
        )
        single = await member_bookings.pick(session, one, walk, NOW, RULES)
        moving = await member_bookings.pick(session, one, replace(walk, moving_id=1), NOW, RULES)
        with pytest.raises(NotFound):
            await member_bookings.pick(session, one, replace(walk, vehicle_id=first), NOW, RULES)
        with pytest.raises(NotFound):  # several cars, none picked: not ready to confirm
            await member_bookings.ready(session, two, walk, booked_id=None)
    assert open_choice.needs_car and open_choice.car is None and len(open_choice.cars) == 2
    assert not picked.needs_car and picked.car is not None and picked.car.id == second
    assert single.car is not None and single.car.id == only and not single.needs_car
    assert moving.car is None and not moving.needs_car
    assert open_choice.slot is not None and open_choice.slot.remaining == 3


async def test_changing_a_booking_checks_whose_it_is_and_the_cut_off(db: Database) -> None:
    store_id = await main_store(db)
    owner, _cars = await member(db, 1)
    other, _cars = await member(db, 2)
    walk = Picked(store_id, "wash", day=WED, hhmm="1000")
    booking_id = await place(db, owner, walk, key="k1")
    async with db.read() as session:
        line = await member_bookings.changeable(session, owner, booking_id, NOW, RULES)
        move = await member_bookings.start_move(session, owner, booking_id, NOW, RULES)
        ready = await member_bookings.ready(session, owner, walk, booked_id=booking_id)
        with pytest.raises(NotFound):
            await member_bookings.changeable(session, other, booking_id, NOW, RULES)
        late = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)  # 09:00, an hour before; cut-off 2 h
        with pytest.raises(BookingUnavailable, match="too late"):
            await member_bookings.changeable(session, owner, booking_id, late, RULES)
    assert line.booking.id == booking_id and line.ref == f"B{booking_id:06d}"
    assert move.booking.id == booking_id and WED in move.days.days
    assert ready.booked is not None and ready.booked.id == booking_id

    async with db.transaction() as session:
        with pytest.raises(NotFound):
            await member_bookings.cancel_listed(session, other, booking_id, NOW, RULES, actor="t")
    async with db.transaction() as session:
        first = await member_bookings.cancel_listed(
            session, owner, booking_id, NOW, RULES, actor="t"
        )
    async with db.transaction() as session:
        again = await member_bookings.cancel_listed(
            session, owner, booking_id, NOW, RULES, actor="t"
        )
    assert first.booking.status == bookings.CANCELLED and first.line is not None
    assert again.booking.status == bookings.CANCELLED and again.line is None
    async with db.read() as session:
        with pytest.raises(BookingUnavailable, match="not active"):
            await member_bookings.changeable(session, owner, booking_id, NOW, RULES)
        with pytest.raises(NotFound):  # the walk's booking was cancelled since
            await member_bookings.ready(session, owner, walk, booked_id=booking_id)
