"""Bookings: bay time at a store, offered on a grid inside the opening hours.

A store can serve as many cars at once as it has bays. Capacity holds under concurrency because
every reservation locks the store row first (PostgreSQL) or runs in the single SQLite write
transaction (`BEGIN IMMEDIATE`), then recounts the overlapping bookings before inserting.

Times: `starts_at`/`ends_at` are stored as aware UTC; opening hours and the slot grid are wall
clock times in the store's own time zone. Callers always pass `now`; nothing here reads the
clock, so reminders, tests and replays see the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Booking,
    BookingStatus,
    Member,
    OutboxMessage,
    OutboxStatus,
    Service,
    Store,
    Vehicle,
)
from db.session import lock_member
from domain import audit
from domain.errors import BookingUnavailable, InvalidInput, NotFound
from domain.shop import WEEKDAYS, BookingRules

BOOKED, CANCELLED = BookingStatus.BOOKED, BookingStatus.CANCELLED
COMPLETED, NO_SHOW = BookingStatus.COMPLETED, BookingStatus.NO_SHOW
SOURCES = ("chat", "staff", "cli")


@dataclass(frozen=True)
class Slot:
    """A start time a member may pick; `remaining` 0 means full (shown, but not bookable)."""

    starts_at: datetime
    ends_at: datetime
    remaining: int


@dataclass(frozen=True)
class BookingLine:
    """A booking with the names a person reads it by (staff day sheet, "my bookings")."""

    booking: Booking
    starts_local: datetime
    store_name: str
    member_name: str
    service_name_zh: str
    service_name_en: str
    member_ref: str = ""
    member_phone: str | None = None  # personal data: mask it wherever it is shown
    vehicle_plate: str | None = None  # personal data: mask it wherever it is shown

    @property
    def ref(self) -> str:
        return reference(self.booking)


# ---------------------------------------------------------------- opening hours and the grid


def opening_ranges(store: Store, day: date) -> list[tuple[int, int]]:
    """The day's opening ranges as (start, end) minutes after local midnight; [] = closed."""
    ranges: list[tuple[int, int]] = []
    for text in (store.opening_hours or {}).get(WEEKDAYS[day.weekday()], []):
        opens, closes = text.split("-")
        ranges.append((_minutes(opens), _minutes(closes)))
    return sorted(ranges)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _zone(store: Store) -> ZoneInfo:
    return ZoneInfo(store.timezone)


def _at(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """Local wall-clock time `minute` minutes after midnight of `day` (24:00 is next midnight)."""
    return datetime.combine(day, time(0), tzinfo=zone) + timedelta(minutes=minute)


def _local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return _at(day, 0, zone).astimezone(UTC), _at(day + timedelta(days=1), 0, zone).astimezone(UTC)


def _last_bookable_day(now: datetime, zone: ZoneInfo, rules: BookingRules) -> date:
    return now.astimezone(zone).date() + timedelta(days=rules.horizon_days - 1)


def _peak(bookings: Sequence[Booking], start: datetime, end: datetime) -> int:
    """The most bookings that overlap one another at any moment of [start, end).

    The count can only rise where the interval begins or where a booking begins, so only those
    instants need checking.
    """
    inside = [b for b in bookings if b.starts_at < end and b.ends_at > start]
    instants = {start, *(b.starts_at for b in inside if b.starts_at > start)}
    return max(
        (sum(1 for b in inside if b.starts_at <= t < b.ends_at) for t in instants), default=0
    )


# ---------------------------------------------------------------- lookups


async def _store(session: AsyncSession, store_id: int) -> Store:
    store = await session.get(Store, store_id)
    if store is None:
        raise NotFound("no such store", store_id=store_id)
    return store


async def _service(session: AsyncSession, code: str) -> Service:
    service = await session.scalar(
        select(Service).where(Service.code == code, Service.active.is_(True))
    )
    if service is None:
        raise BookingUnavailable("unknown service", reason="unknown_service", service=code)
    return service


async def _booked_between(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    store_id: int | None = None,
    member_id: int | None = None,
    exclude_id: int | None = None,
) -> list[Booking]:
    """Active bookings overlapping [start, end) at one store or of one member: one query."""
    query = select(Booking).where(
        Booking.status == BOOKED, Booking.starts_at < end, Booking.ends_at > start
    )
    if store_id is not None:
        query = query.where(Booking.store_id == store_id)
    if member_id is not None:
        query = query.where(Booking.member_id == member_id)
    if exclude_id is not None:
        query = query.where(Booking.id != exclude_id)
    return list((await session.scalars(query)).all())


async def _lock_store(session: AsyncSession, store_id: int) -> None:
    """Serialize reservations at one store until the transaction ends (see module docstring)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(Store.id).where(Store.id == store_id).with_for_update())


# ---------------------------------------------------------------- what can be booked


def reference(booking: Booking) -> str:
    """The short reference a member quotes at the counter ("B000123"): the same in the chat,
    reminders and the staff day sheet."""
    if booking.id is None:
        raise InvalidInput("an unsaved booking has no reference")
    return f"B{booking.id:06d}"


async def open_stores(session: AsyncSession) -> list[Store]:
    """The stores members may book at, in a stable order."""
    query = select(Store).where(Store.active.is_(True)).order_by(Store.id)
    return list((await session.scalars(query)).all())


async def store_by_code(session: AsyncSession, code: str) -> Store:
    store = await session.scalar(select(Store).where(Store.code == code))
    if store is None:
        raise NotFound("no such store", store_code=code)
    return store


async def bookable_services(session: AsyncSession) -> list[Service]:
    """The services members may book, in the order the shop configured them."""
    query = select(Service).where(Service.active.is_(True)).order_by(Service.id)
    return list((await session.scalars(query)).all())


async def member_vehicles(session: AsyncSession, member_id: int) -> list[Vehicle]:
    """The cars a member may book for, oldest on file first."""
    query = select(Vehicle).where(Vehicle.member_id == member_id).order_by(Vehicle.id)
    return list((await session.scalars(query)).all())


def ensure_changeable(booking: Booking, now: datetime, rules: BookingRules) -> None:
    """Raise the refusal a cancel or reschedule of `booking` would meet now, so a channel can
    say so before the member picks a new time rather than after."""
    _check_changeable(booking, now, rules)


# ---------------------------------------------------------------- reading


async def available_days(
    session: AsyncSession, store_id: int, now: datetime, rules: BookingRules
) -> list[date]:
    """The open days from today through the booking horizon, skipping a day whose last opening
    range ends before the earliest bookable start."""
    store = await _store(session, store_id)
    if not store.active:
        return []
    zone = _zone(store)
    earliest = now + timedelta(minutes=rules.min_lead_minutes)
    today = now.astimezone(zone).date()
    days = []
    for offset in range(rules.horizon_days):
        day = today + timedelta(days=offset)
        ranges = opening_ranges(store, day)
        if ranges and _at(day, ranges[-1][1], zone) > earliest:
            days.append(day)
    return days


async def slots(
    session: AsyncSession,
    store_id: int,
    service_code: str,
    day: date,
    now: datetime,
    rules: BookingRules,
) -> list[Slot]:
    """Every grid start on `day` where the whole service fits inside one opening range and
    that is far enough ahead, with how many bays stay free throughout."""
    store = await _store(session, store_id)
    service = await _service(session, service_code)
    zone = _zone(store)
    if not store.active or day > _last_bookable_day(now, zone, rules):
        return []
    earliest = now + timedelta(minutes=rules.min_lead_minutes)
    day_start, day_end = _local_day_bounds(day, zone)
    booked = await _booked_between(session, day_start, day_end, store_id=store_id)
    step, duration = rules.slot_minutes, timedelta(minutes=service.duration_min)
    found: list[Slot] = []
    for opens, closes in opening_ranges(store, day):
        minute = -(-opens // step) * step
        while minute + service.duration_min <= closes:
            start = _at(day, minute, zone)
            if start >= earliest:
                end = start + duration
                remaining = max(0, store.bays - _peak(booked, start, end))
                found.append(Slot(starts_at=start, ends_at=end, remaining=remaining))
            minute += step
    return found


async def get(session: AsyncSession, booking_id: int, *, member_id: int) -> Booking:
    """A member's own booking; another member's is reported as missing, not as forbidden."""
    booking = await session.get(Booking, booking_id)
    if booking is None or booking.member_id != member_id:
        raise NotFound("no such booking", booking_id=booking_id)
    return booking


async def upcoming_for_member(
    session: AsyncSession, member_id: int, now: datetime
) -> list[BookingLine]:
    """A member's active bookings that have not ended yet, soonest first ("my bookings")."""
    query = _lines().where(
        Booking.member_id == member_id, Booking.status == BOOKED, Booking.ends_at > now
    )
    return await _run_lines(session, query)


async def day_sheet(
    session: AsyncSession, store_id: int, day: date, *, include_cancelled: bool = False
) -> list[BookingLine]:
    """The store's bookings starting on its local `day`, in time order, for the counter."""
    store = await _store(session, store_id)
    day_start, day_end = _local_day_bounds(day, _zone(store))
    query = _lines().where(
        Booking.store_id == store_id, Booking.starts_at >= day_start, Booking.starts_at < day_end
    )
    if not include_cancelled:
        query = query.where(Booking.status != CANCELLED)
    return await _run_lines(session, query)


def _lines():  # type: ignore[no-untyped-def]
    return (
        select(
            Booking,
            Store,
            Member.name,
            Service.name_zh,
            Service.name_en,
            Member.member_ref,
            Member.phone,
            Vehicle.plate,
        )
        .join(Store, Store.id == Booking.store_id)
        .join(Member, Member.id == Booking.member_id)
        .outerjoin(Service, Service.code == Booking.service_code)
        .outerjoin(Vehicle, Vehicle.id == Booking.vehicle_id)
        .order_by(Booking.starts_at, Booking.id)
    )


async def _run_lines(session: AsyncSession, query) -> list[BookingLine]:  # type: ignore[no-untyped-def]
    rows = (await session.execute(query)).all()
    return [
        BookingLine(
            booking=booking,
            starts_local=booking.starts_at.astimezone(_zone(store)),
            store_name=store.name,
            member_name=member_name,
            service_name_zh=name_zh or booking.service_code,
            service_name_en=name_en or booking.service_code,
            member_ref=member_ref,
            member_phone=phone,
            vehicle_plate=plate,
        )
        for booking, store, member_name, name_zh, name_en, member_ref, phone, plate in rows
    ]


# ---------------------------------------------------------------- writing


async def reserve(
    session: AsyncSession,
    member_id: int,
    store_id: int,
    service_code: str,
    starts_at: datetime,
    now: datetime,
    rules: BookingRules,
    *,
    vehicle_id: int | None = None,
    key: str | None = None,
    source: str = "chat",
    note: str | None = None,
) -> Booking:
    """Book a slot, never beyond the store's bays, even with many members racing for it.

    With a `key`, a retried request returns the first booking instead of booking twice.
    """
    await _lock_store(session, store_id)
    await lock_member(session, member_id)
    if key is not None:
        earlier = await session.scalar(select(Booking).where(Booking.key == key))
        if earlier is not None:
            if earlier.member_id != member_id:
                raise InvalidInput("booking key already used", key=key)
            return earlier
    booking = await _checked_booking(
        session, member_id, store_id, service_code, starts_at, now, rules, vehicle_id=vehicle_id
    )
    booking.key, booking.source, booking.note = key, _source(source), note
    session.add(booking)
    await session.flush()
    await audit.record(
        session,
        actor=f"{booking.source}:member:{member_id}",
        action="booking.reserve",
        entity="booking",
        entity_id=booking.id,
        detail={"store_id": store_id, "service": service_code},
    )
    return booking


async def cancel(
    session: AsyncSession,
    booking_id: int,
    *,
    member_id: int,
    now: datetime,
    rules: BookingRules,
    actor: str,
) -> Booking:
    """Cancel a member's own booking, no later than the cut-off; cancelling again is a no-op."""
    booking = await _own_for_change(session, booking_id, member_id)
    if booking.status == CANCELLED:
        return booking
    _check_changeable(booking, now, rules)
    booking.status, booking.cancelled_at = CANCELLED, now
    session.add(booking)
    await session.flush()
    await _drop_reminders(session, booking)
    await audit.record(
        session, actor=actor, action="booking.cancel", entity="booking", entity_id=booking.id
    )
    return booking


async def reschedule(
    session: AsyncSession,
    booking_id: int,
    *,
    member_id: int,
    starts_at: datetime,
    now: datetime,
    rules: BookingRules,
    actor: str,
    store_id: int | None = None,
    key: str | None = None,
) -> Booking:
    """Move a booking to another slot (same service and car). The new booking is checked and
    written before the old one is cancelled, so a refusal leaves the old booking untouched even
    if the caller goes on to commit."""
    current = await _own_for_change(session, booking_id, member_id)
    if key is not None:
        earlier = await session.scalar(select(Booking).where(Booking.key == key))
        if earlier is not None:
            if earlier.member_id != member_id:
                raise InvalidInput("booking key already used", key=key)
            return earlier
    _check_changeable(current, now, rules)
    target_store = store_id if store_id is not None else current.store_id
    await _lock_store(session, target_store)
    await lock_member(session, member_id)
    moved = await _checked_booking(
        session,
        member_id,
        target_store,
        current.service_code,
        starts_at,
        now,
        rules,
        vehicle_id=current.vehicle_id,
        exclude_id=current.id,
    )
    moved.key, moved.source, moved.note = key, current.source, current.note
    session.add(moved)
    current.status, current.cancelled_at = CANCELLED, now
    session.add(current)
    await session.flush()
    await _drop_reminders(session, current)
    await audit.record(
        session,
        actor=actor,
        action="booking.reschedule",
        entity="booking",
        entity_id=moved.id,
        detail={"from_booking_id": current.id, "store_id": target_store},
    )
    return moved


async def mark_attendance(
    session: AsyncSession, booking_id: int, *, arrived: bool, now: datetime, actor: str
) -> Booking:
    """The member came (completed) or did not (no-show): either frees the bays for what is
    left of the slot, since only booked rows count. A no-show is only said once the slot has
    begun; marking the same twice is a no-op, and one may be corrected to the other."""
    booking = await session.scalar(
        select(Booking)
        .where(Booking.id == booking_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    target = COMPLETED if arrived else NO_SHOW
    if booking.status == target:
        return booking
    if booking.status == CANCELLED:
        raise BookingUnavailable("booking is not active", reason="not_active")
    if not arrived and now < booking.starts_at:
        raise BookingUnavailable("the booked time has not come yet", reason="not_started")
    before, booking.status = booking.status, target
    session.add(booking)
    await session.flush()
    await _drop_reminders(session, booking)
    await audit.record(
        session,
        actor=actor,
        action="booking.arrive" if arrived else "booking.no_show",
        entity="booking",
        entity_id=booking.id,
        detail={"store_id": booking.store_id, "member_id": booking.member_id, "before": before},
    )
    return booking


async def no_shows(session: AsyncSession, member_id: int) -> int:
    """How often the member booked and did not come: the staff page shows it."""
    count = await session.scalar(
        select(func.count()).where(Booking.member_id == member_id, Booking.status == NO_SHOW)
    )
    return int(count or 0)


async def _drop_reminders(session: AsyncSession, booking: Booking) -> None:
    """A cancelled (or moved) booking's queued reminders must not go out. The reminder rules
    name their occurrence `<booking id>:<hours>h` (see scheduler.selectors); rows already being
    sent are left to finish."""
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.member_id == booking.member_id,
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.idempotency_key.like(f"%:member:{booking.member_id}:{booking.id}:%h"),
        )
        .values(status="skipped", last_error="booking_cancelled")
        .execution_options(synchronize_session=False)
    )


async def _own_for_change(session: AsyncSession, booking_id: int, member_id: int) -> Booking:
    """The member's booking, row-locked (PostgreSQL) so two changes of it cannot interleave."""
    booking = await session.scalar(
        select(Booking)
        .where(Booking.id == booking_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if booking is None or booking.member_id != member_id:
        raise NotFound("no such booking", booking_id=booking_id)
    return booking


def _check_changeable(booking: Booking, now: datetime, rules: BookingRules) -> None:
    if booking.status != BOOKED:
        raise BookingUnavailable("booking is not active", reason="not_active")
    if now > booking.starts_at - timedelta(hours=rules.change_cutoff_hours):
        raise BookingUnavailable(
            "too late to change this booking", reason="too_late", hours=rules.change_cutoff_hours
        )


def _source(source: str) -> str:
    if source not in SOURCES:
        raise InvalidInput("unknown booking source", source=source)
    return source


async def _checked_booking(
    session: AsyncSession,
    member_id: int,
    store_id: int,
    service_code: str,
    starts_at: datetime,
    now: datetime,
    rules: BookingRules,
    *,
    vehicle_id: int | None,
    exclude_id: int | None = None,
) -> Booking:
    """A new, unsaved booking after every rule has agreed; the caller holds the store lock."""
    if starts_at.tzinfo is None:
        raise InvalidInput("naive datetime given where an aware time is required")
    store = await _store(session, store_id)
    service = await _service(session, service_code)
    zone = _zone(store)
    local = starts_at.astimezone(zone)
    if starts_at <= now:
        raise BookingUnavailable("that time has passed", reason="past")
    if starts_at < now + timedelta(minutes=rules.min_lead_minutes):
        raise BookingUnavailable(
            "too soon to book", reason="too_soon", minutes=rules.min_lead_minutes
        )
    if local.date() > _last_bookable_day(now, zone, rules):
        raise BookingUnavailable("too far ahead", reason="too_far", days=rules.horizon_days)
    ranges = opening_ranges(store, local.date())
    if not store.active or not ranges:
        raise BookingUnavailable("the store is closed that day", reason="store_closed")
    minute = local.hour * 60 + local.minute
    if local.second or local.microsecond or minute % rules.slot_minutes:
        raise BookingUnavailable("not a slot start time", reason="not_on_grid")
    if not any(
        opens <= minute and minute + service.duration_min <= closes for opens, closes in ranges
    ):
        raise BookingUnavailable("outside opening hours", reason="outside_hours")
    if vehicle_id is not None:
        vehicle = await session.get(Vehicle, vehicle_id)
        if vehicle is None or vehicle.member_id != member_id:
            raise BookingUnavailable("not the member's car", reason="not_your_car")
    start = starts_at.astimezone(UTC)
    end = start + timedelta(minutes=service.duration_min)
    mine = await _booked_between(session, start, end, member_id=member_id, exclude_id=exclude_id)
    if mine:
        raise BookingUnavailable("member already has a booking then", reason="overlap")
    others = await _booked_between(session, start, end, store_id=store_id, exclude_id=exclude_id)
    if _peak(others, start, end) >= store.bays:
        raise BookingUnavailable("slot is full", reason="full")
    return Booking(
        member_id=member_id,
        store_id=store_id,
        service_code=service.code,
        vehicle_id=vehicle_id,
        starts_at=start,
        ends_at=end,
        status=BOOKED,
        created_at=now,
    )
