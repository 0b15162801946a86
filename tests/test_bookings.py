"""Bookings: slots from opening hours, bays and durations in the store's time zone; every refusal
a member can meet; capacity that holds under concurrent attempts; cancel and reschedule rules; the
staff day sheet. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from db.models import AuditLog, Booking
from db.session import Database
from domain import bookings
from domain.errors import BookingUnavailable, NotFound
from domain.shop import BookingConfig, BookingRules, load_shop_config
from tests.support.builders import add_car, main_store, new_members

RULES = BookingRules()
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 09:00 in Shanghai
MON, TUE, SUN = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 8)


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=SHANGHAI)


async def book(
    db: Database, member_id: int, store_id: int, service: str, starts_at: datetime, **kw: object
) -> Booking:
    async with db.transaction() as session:
        return await bookings.reserve(
            session, member_id, store_id, service, starts_at, NOW, RULES, **kw
        )


async def day_slots(db: Database, store_id: int, service: str, day: date) -> list[bookings.Slot]:
    async with db.read() as session:
        return await bookings.slots(session, store_id, service, day, NOW, RULES)


def starts(found: list[bookings.Slot]) -> list[str]:
    return [s.starts_at.strftime("%H:%M") for s in found]


def test_booking_config_defaults_and_grid_validation() -> None:
    assert load_shop_config(None).booking_rules == BookingRules(30, 14, 2, 30)
    assert BookingConfig(slot_minutes=20).slot_minutes == 20
    assert BookingConfig(slot_minutes=45).slot_minutes == 45
    with pytest.raises(ValidationError, match="must divide 60"):
        BookingConfig(slot_minutes=25)


async def test_slot_grid_follows_opening_hours(db: Database) -> None:
    store_id = await main_store(db)
    today = await day_slots(db, store_id, "wash", MON)
    # 09:00 now + 30 min lead: the first start is 09:30, the last wash ends at 18:00 closing.
    assert starts(today)[0] == "09:30" and starts(today)[-1] == "17:30"
    assert len(today) == 17
    assert all(s.remaining == 3 for s in today)
    oil = await day_slots(db, store_id, "oil_service", TUE)
    assert starts(oil)[0] == "09:00" and starts(oil)[-1] == "17:00"
    sunday = await day_slots(db, store_id, "wash", SUN)
    assert starts(sunday)[0] == "10:00" and starts(sunday)[-1] == "15:30"
    # A 3-hour detailing must end by the 16:00 Sunday closing: no start after 13:00.
    detailing = await day_slots(db, store_id, "detailing", SUN)
    assert starts(detailing)[-1] == "13:00"
    assert all(s.ends_at <= local(SUN, 16) for s in detailing)
    # A 4-hour repair in a split day fits only the long range.
    await main_store(db, opening_hours={"tue": ["09:00-12:00", "13:00-18:00"]})
    assert starts(await day_slots(db, store_id, "repair", TUE)) == ["13:00", "13:30", "14:00"]


async def test_available_days_skip_closed_and_finished_days(db: Database) -> None:
    store_id = await main_store(db)
    async with db.read() as session:
        days = await bookings.available_days(session, store_id, NOW, RULES)
    assert days == [MON + timedelta(days=n) for n in range(14)]
    hours = {d: ["09:00-18:00"] for d in ("mon", "wed", "thu", "fri", "sat", "sun")}
    await main_store(db, opening_hours=hours)
    late = datetime(2026, 3, 2, 9, 45, tzinfo=UTC)  # Monday 17:45: nothing left today
    async with db.read() as session:
        days = await bookings.available_days(session, store_id, late, RULES)
    assert MON not in days and TUE not in days and date(2026, 3, 10) not in days
    assert days[0] == date(2026, 3, 4) and days[-1] == date(2026, 3, 15) and len(days) == 11


async def test_times_are_stored_in_utc_and_shown_in_the_store_zone(db: Database) -> None:
    store_id = await main_store(db, opening_hours={"tue": ["06:00-18:00"]})
    (member_id,) = await new_members(db, 1)
    first = (await day_slots(db, store_id, "wash", TUE))[2]
    assert first.starts_at == local(TUE, 7)
    assert first.starts_at.utcoffset() == timedelta(hours=8)
    # 07:00 on Tuesday in Shanghai is still Monday in UTC.
    booking = await book(db, member_id, store_id, "wash", datetime(2026, 3, 2, 23, 0, tzinfo=UTC))
    async with db.read() as session:
        stored = await session.get(Booking, booking.id)
        tuesday = await bookings.day_sheet(session, store_id, TUE)
        monday = await bookings.day_sheet(session, store_id, MON)
    assert stored is not None
    assert stored.starts_at == datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    assert stored.starts_at.tzinfo is not None and stored.starts_at.utcoffset() == timedelta(0)
    assert [line.booking.id for line in tuesday] == [booking.id]
    assert tuesday[0].starts_local.strftime("%Y-%m-%d %H:%M") == "2026-03-03 07:00"
    assert monday == []


@pytest.mark.parametrize(
    ("service", "starts_at", "reason"),
    [
        ("wash", local(MON, 8), "past"),
        ("wash", local(MON, 9, 15), "too_soon"),
        ("oil_service", local(MON, 17, 30), "outside_hours"),
        ("wash", local(TUE, 8, 30), "outside_hours"),
        ("wash", local(TUE, 10, 10), "not_on_grid"),
        ("wash", local(date(2026, 3, 16), 10), "too_far"),
        ("no_such", local(TUE, 10), "unknown_service"),
    ],
)
async def test_refusals(db: Database, service: str, starts_at: datetime, reason: str) -> None:
    store_id = await main_store(db)
    (member_id,) = await new_members(db, 1)
    with pytest.raises(BookingUnavailable) as caught:
        await book(db, member_id, store_id, service, starts_at)
    assert caught.value.reason == reason
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Booking)) == 0


async def test_closed_day_and_other_members_car_are_refused(db: Database) -> None:
    store_id = await main_store(db, opening_hours={"mon": ["09:00-18:00"]})
    owner, other = await new_members(db, 2)
    with pytest.raises(BookingUnavailable) as caught:
        await book(db, owner, store_id, "wash", local(TUE, 10))
    assert caught.value.reason == "store_closed"
    car_id = await add_car(db, other, "沪A12345")
    with pytest.raises(BookingUnavailable) as caught:
        await book(db, owner, store_id, "wash", local(MON, 10), vehicle_id=car_id)
    assert caught.value.reason == "not_your_car"
    mine = await book(db, other, store_id, "wash", local(MON, 10), vehicle_id=car_id)
    assert mine.vehicle_id == car_id


async def test_overlapping_bookings_reduce_remaining(db: Database) -> None:
    store_id = await main_store(db)
    a, b, c, d = await new_members(db, 4)
    await book(db, a, store_id, "detailing", local(TUE, 10))  # 10:00-13:00
    await book(db, b, store_id, "detailing", local(TUE, 10))
    remaining = {
        s.starts_at.strftime("%H:%M"): s.remaining
        for s in await day_slots(db, store_id, "wash", TUE)
    }
    assert remaining["09:30"] == 3 and remaining["13:00"] == 3
    assert all(remaining[f"{h}:{m}"] == 1 for h in (10, 11, 12) for m in ("00", "30"))
    oil = {
        s.starts_at.strftime("%H:%M"): s.remaining
        for s in await day_slots(db, store_id, "oil_service", TUE)
    }
    assert oil["09:00"] == 3 and oil["09:30"] == 1 and oil["12:30"] == 1
    await book(db, c, store_id, "wash", local(TUE, 11))
    full = [s for s in await day_slots(db, store_id, "wash", TUE) if s.remaining == 0]
    assert starts(full) == ["11:00"]
    with pytest.raises(BookingUnavailable) as caught:
        await book(db, d, store_id, "wash", local(TUE, 11))
    assert caught.value.reason == "full"
    # The member with the detailing cannot be in two bays at once.
    with pytest.raises(BookingUnavailable) as caught:
        await book(db, a, store_id, "wash", local(TUE, 12, 30))
    assert caught.value.reason == "overlap"
    # Back-to-back is not an overlap.
    after = await book(db, a, store_id, "wash", local(TUE, 13))
    assert after.status == "booked"


async def test_twenty_concurrent_attempts_fill_exactly_three_bays(db: Database) -> None:
    store_id = await main_store(db, bays=3)
    member_ids = await new_members(db, 20)

    async def attempt(member_id: int) -> str:
        try:
            await book(db, member_id, store_id, "oil_service", local(TUE, 10))
            return "booked"
        except BookingUnavailable as exc:
            return exc.reason

    outcomes = await asyncio.gather(*(attempt(m) for m in member_ids))
    assert outcomes.count("booked") == 3
    assert outcomes.count("full") == 17
    async with db.read() as session:
        count = await session.scalar(
            select(func.count()).where(Booking.store_id == store_id, Booking.status == "booked")
        )
    assert count == 3
    (slot,) = [
        s
        for s in await day_slots(db, store_id, "oil_service", TUE)
        if s.starts_at == local(TUE, 10)
    ]
    assert slot.remaining == 0


async def test_a_retried_request_books_once(db: Database) -> None:
    store_id = await main_store(db)
    (member_id,) = await new_members(db, 1)
    first = await book(db, member_id, store_id, "wash", local(TUE, 10), key="chat:42")
    again = await book(db, member_id, store_id, "wash", local(TUE, 10), key="chat:42")
    assert again.id == first.id

    async def retry() -> int:
        booking = await book(db, member_id, store_id, "oil_service", local(TUE, 14), key="chat:43")
        assert booking.id is not None
        return booking.id

    ids = await asyncio.gather(*(retry() for _ in range(6)))
    assert len(set(ids)) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Booking)) == 2


async def test_cancel_respects_cut_off_and_owner(db: Database) -> None:
    store_id = await main_store(db)
    owner, other = await new_members(db, 2)
    booking = await book(db, owner, store_id, "wash", local(TUE, 10))
    too_late = local(TUE, 8, 30)  # 90 minutes before, cut-off is 2 hours
    async with db.transaction() as session:
        with pytest.raises(BookingUnavailable) as caught:
            await bookings.cancel(
                session, booking.id, member_id=owner, now=too_late, rules=RULES, actor="chat"
            )
    assert caught.value.reason == "too_late"
    async with db.transaction() as session:
        with pytest.raises(NotFound):
            await bookings.cancel(
                session, booking.id, member_id=other, now=NOW, rules=RULES, actor="chat"
            )
    for _ in range(2):  # the second cancel is a no-op
        async with db.transaction() as session:
            cancelled = await bookings.cancel(
                session, booking.id, member_id=owner, now=NOW, rules=RULES, actor="chat"
            )
        assert cancelled.status == "cancelled" and cancelled.cancelled_at == NOW
    async with db.read() as session:
        assert await bookings.upcoming_for_member(session, owner, NOW) == []
        actions = (await session.scalars(select(AuditLog.action).order_by(AuditLog.id))).all()
    assert actions == ["booking.reserve", "booking.cancel"]
    freed = [s for s in await day_slots(db, store_id, "wash", TUE) if s.starts_at == local(TUE, 10)]
    assert freed[0].remaining == 3


async def test_reschedule_keeps_the_old_booking_when_the_new_slot_is_full(db: Database) -> None:
    store_id = await main_store(db, bays=1)
    mover, blocker = await new_members(db, 2)
    old = await book(db, mover, store_id, "oil_service", local(TUE, 10))
    await book(db, blocker, store_id, "oil_service", local(TUE, 14))
    async with db.transaction() as session:
        with pytest.raises(BookingUnavailable) as caught:
            await bookings.reschedule(
                session,
                old.id,
                member_id=mover,
                starts_at=local(TUE, 14),
                now=NOW,
                rules=RULES,
                actor="chat",
            )
        # The caller even commits after the refusal: nothing may have changed.
    assert caught.value.reason == "full"
    async with db.read() as session:
        mine = await bookings.upcoming_for_member(session, mover, NOW)
    assert [(line.booking.id, line.booking.status) for line in mine] == [(old.id, "booked")]
    # Moving half an hour later overlaps only the booking being moved: allowed with one bay.
    async with db.transaction() as session:
        moved = await bookings.reschedule(
            session,
            old.id,
            member_id=mover,
            starts_at=local(TUE, 10, 30),
            now=NOW,
            rules=RULES,
            actor="chat",
        )
    async with db.read() as session:
        mine = await bookings.upcoming_for_member(session, mover, NOW)
        previous = await session.get(Booking, old.id)
    assert [line.booking.id for line in mine] == [moved.id]
    assert mine[0].starts_local == local(TUE, 10, 30)
    assert previous is not None and previous.status == "cancelled"


async def test_day_sheet_lists_the_days_bookings_in_time_order(db: Database) -> None:
    store_id = await main_store(db)
    a, b, c = await new_members(db, 3)
    await book(db, a, store_id, "oil_service", local(TUE, 11))
    await book(db, b, store_id, "wash", local(TUE, 9, 30), source="staff")
    gone = await book(db, c, store_id, "wash", local(TUE, 10))
    await book(db, c, store_id, "wash", local(date(2026, 3, 4), 10))
    async with db.transaction() as session:
        await bookings.cancel(session, gone.id, member_id=c, now=NOW, rules=RULES, actor="chat")
    async with db.read() as session:
        sheet = await bookings.day_sheet(session, store_id, TUE)
    assert [
        (line.starts_local.strftime("%H:%M"), line.member_name, line.service_name_en)
        for line in sheet
    ] == [("09:30", "车主1", "Car wash"), ("11:00", "车主0", "Oil service")]
    assert sheet[0].booking.source == "staff"
