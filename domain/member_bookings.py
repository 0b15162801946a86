"""A member's own bookings, step by step: choosing a new one (store → service → day → time →
car → confirm) and changing one they have (cancel, move to another time).

One use case per step of a chat's booking flow, each answering with what that step shows. A
walk names what was picked by ids and codes (`Picked`), as a button or a chat's saved state
carries them, and every step looks them up again as they are now:

* a store no longer open, a service no longer bookable, a car or a booking that is not the
  member's, is `NotFound` (a chat treats it as an old button);
* a day that passed, a day that filled up or a time that filled up is part of the answer
  (`Times.day_refusal`, `TimePick.slot`), so the member is offered what is free instead;
* a booking too close to its start (or no longer active) to change is `BookingUnavailable`,
  before the member picks a new time rather than after.

Reads take the caller's session. `place` and `cancel_listed` write in the session of the
caller's one unit of work; `domain.bookings` has the last word on every rule (capacity, lead
time, opening hours, the cut-off), whatever a walk showed earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Booking, Service, Store, Vehicle
from domain import bookings
from domain.bookings import BookingLine, Slot
from domain.errors import InvalidInput, NotFound
from domain.shop import BookingRules

# Why a picked day offers no time: no longer bookable (passed, beyond the horizon, closed), or
# every time of it is full.
DAY_GONE, DAY_FULL = "gone", "full"


@dataclass(frozen=True)
class Picked:
    """What a walk has picked so far. `hhmm` is a wall-clock time at the store ("0930");
    `moving_id` names the booking a reschedule moves (it keeps its store, service and car)."""

    store_id: int
    service_code: str
    day: date | None = None
    hhmm: str | None = None
    vehicle_id: int | None = None
    moving_id: int | None = None

    @property
    def car_open(self) -> bool:
        """A new booking whose car is not picked yet (a reschedule keeps its car)."""
        return self.moving_id is None and self.vehicle_id is None


@dataclass(frozen=True)
class Offer:
    """What members may book now: the open stores and the bookable services, in stable order."""

    stores: list[Store]
    services: list[Service]


@dataclass(frozen=True)
class Choice:
    """A walk's store and service, both still bookable."""

    store: Store
    service: Service


@dataclass(frozen=True)
class Days:
    """The days of the booking horizon with opening hours left, for a store and service."""

    choice: Choice
    days: list[date]


@dataclass(frozen=True)
class Times:
    """A picked day: the bookable days around it and, if it is one, its times with a bay still
    free (full times are left out)."""

    choice: Choice
    day: date
    days: list[date]
    free: list[Slot]

    @property
    def day_refusal(self) -> str:
        """`DAY_GONE`, `DAY_FULL`, or "" when the day has a free time."""
        if self.day not in self.days:
            return DAY_GONE
        return "" if self.free else DAY_FULL

    def at(self, hhmm: str | None) -> Slot | None:
        """The free time starting at wall-clock `hhmm` at the store, if there is one."""
        store = self.choice.store
        return next((s for s in self.free if local_hhmm(s.starts_at, store) == hhmm), None)


@dataclass(frozen=True)
class TimePick:
    """A picked time as it is now (`slot` None: not free any more) and the car it is for.

    A new booking by a member with several cars needs one picked (`needs_car`); with one car
    that car is `car`; a reschedule keeps the moved booking's car (`car` None here)."""

    times: Times
    slot: Slot | None
    cars: list[Vehicle]
    car: Vehicle | None
    needs_car: bool


@dataclass(frozen=True)
class Ready:
    """A walk about to be confirmed; `booked` is the booking it already made (a second tap)."""

    choice: Choice
    booked: Booking | None


@dataclass(frozen=True)
class Move:
    """The start of a reschedule: the booking to move and the days it may move to."""

    booking: Booking
    days: Days


@dataclass(frozen=True)
class Cancelled:
    """A cancelled booking and how it read in the member's list just before; `line` is None
    when it was no longer listed (cancelled already: a second tap)."""

    booking: Booking
    line: BookingLine | None


def local_hhmm(moment: datetime, store: Store) -> str:
    """The wall-clock time ("0930") of `moment` at `store`: how a walk names a time."""
    return moment.astimezone(ZoneInfo(store.timezone)).strftime("%H%M")


# ---------------------------------------------------------------- choosing


async def offer(session: AsyncSession) -> Offer:
    """What a new booking may choose from; nothing to choose means booking is closed."""
    return Offer(
        stores=await bookings.open_stores(session),
        services=await bookings.bookable_services(session),
    )


async def services_at(session: AsyncSession, store_id: int) -> tuple[Store, list[Service]]:
    """An open store, by id, and the services that may be booked there."""
    store = await _open_store(session, store_id)
    return store, await bookings.bookable_services(session)


async def choose(session: AsyncSession, picked: Picked) -> Choice:
    """The walk's store and service as they are now."""
    store = await _open_store(session, picked.store_id)
    service = await session.scalar(
        select(Service).where(Service.code == picked.service_code, Service.active.is_(True))
    )
    if service is None:
        raise NotFound("no such bookable service", service=picked.service_code)
    return Choice(store, service)


async def days(session: AsyncSession, picked: Picked, now: datetime, rules: BookingRules) -> Days:
    """The days the walk's store and service may be booked on."""
    choice = await choose(session, picked)
    return Days(choice, await bookings.available_days(session, picked.store_id, now, rules))


async def days_for_service(
    session: AsyncSession, store_id: int, service_id: int, now: datetime, rules: BookingRules
) -> Days:
    """The days for a service picked by id at an open store."""
    service = await session.get(Service, service_id)
    if service is None or not service.active:
        raise NotFound("no such bookable service", service_id=service_id)
    return await days(session, Picked(store_id, service.code), now, rules)


async def times(session: AsyncSession, picked: Picked, now: datetime, rules: BookingRules) -> Times:
    """The walk's picked day, with its free times."""
    if picked.day is None:
        raise InvalidInput("no day picked")
    return await times_for(session, await choose(session, picked), picked.day, now, rules)


async def times_for(
    session: AsyncSession, choice: Choice, day: date, now: datetime, rules: BookingRules
) -> Times:
    """`day`'s free times for a choice already looked up (after a refusal, say)."""
    store_id = choice.store.id
    assert store_id is not None
    found = await bookings.available_days(session, store_id, now, rules)
    if day not in found:
        return Times(choice, day, found, [])
    slots = await bookings.slots(session, store_id, choice.service.code, day, now, rules)
    return Times(choice, day, found, [slot for slot in slots if slot.remaining > 0])


async def pick(
    session: AsyncSession, member_id: int, picked: Picked, now: datetime, rules: BookingRules
) -> TimePick:
    """The walk's picked time, and its car: the picked one (`NotFound` unless it is the
    member's), else the member's only car for a new booking."""
    found = await times(session, picked, now, rules)
    cars = await bookings.member_vehicles(session, member_id)
    if picked.vehicle_id is not None:
        car = next((c for c in cars if c.id == picked.vehicle_id), None)
        if car is None:
            raise NotFound("not the member's car", vehicle_id=picked.vehicle_id)
    else:
        car = cars[0] if picked.car_open and len(cars) == 1 else None
    return TimePick(found, found.at(picked.hhmm), cars, car, picked.car_open and len(cars) > 1)


async def ready(
    session: AsyncSession, member_id: int, picked: Picked, *, booked_id: int | None
) -> Ready:
    """The walk as it is confirmed: its choice still bookable, its car picked where the member
    has several (`NotFound` otherwise) and, when it already booked, that booking, still booked
    (`NotFound` once it was cancelled or moved)."""
    if picked.car_open and len(await bookings.member_vehicles(session, member_id)) > 1:
        raise NotFound("no car picked", member_id=member_id)
    choice = await choose(session, picked)
    if booked_id is None:
        return Ready(choice, None)
    booking = await bookings.get(session, booked_id, member_id=member_id)
    if booking.status != bookings.BOOKED:
        raise NotFound("the booking was changed since", booking_id=booked_id)
    return Ready(choice, booking)


async def place(
    session: AsyncSession,
    member_id: int,
    choice: Choice,
    picked: Picked,
    now: datetime,
    rules: BookingRules,
    *,
    key: str,
    actor: str,
) -> Booking:
    """Book the picked time for the member, or move the booking being rescheduled to it, under
    `key` (the same key returns the same booking). `BookingUnavailable` says why not; a moved
    booking that is gone or not the member's is `NotFound`."""
    if picked.day is None or picked.hhmm is None:
        raise InvalidInput("no time picked")
    day, hhmm = picked.day, picked.hhmm
    starts_at = datetime(
        day.year,
        day.month,
        day.day,
        int(hhmm[:2]),
        int(hhmm[2:]),
        tzinfo=ZoneInfo(choice.store.timezone),
    )
    if picked.moving_id is not None:
        return await bookings.reschedule(
            session,
            picked.moving_id,
            member_id=member_id,
            starts_at=starts_at,
            now=now,
            rules=rules,
            actor=actor,
            key=key,
        )
    return await bookings.reserve(
        session,
        member_id,
        choice.store.id,  # type: ignore[arg-type]
        choice.service.code,
        starts_at,
        now,
        rules,
        vehicle_id=picked.vehicle_id,
        key=key,
        source="chat",
    )


# ---------------------------------------------------------------- changing a booking


async def changeable(
    session: AsyncSession, member_id: int, booking_id: int, now: datetime, rules: BookingRules
) -> BookingLine:
    """The member's own upcoming booking, as their list shows it, if it may still be changed.
    Another member's (or none) is `NotFound`; a cancelled, finished or too-soon one is the
    `BookingUnavailable` a change would meet."""
    line = await _listed(session, member_id, booking_id, now)
    if line is None:
        booking = await bookings.get(session, booking_id, member_id=member_id)
        # Cancelled, done or past: the refusal a change would meet says which.
        bookings.ensure_changeable(booking, now, rules)
        raise NotFound("booking no longer upcoming", booking_id=booking_id)
    bookings.ensure_changeable(line.booking, now, rules)
    return line


async def start_move(
    session: AsyncSession, member_id: int, booking_id: int, now: datetime, rules: BookingRules
) -> Move:
    """A reschedule's first step: the member's changeable booking and the days its store and
    service may move to."""
    line = await changeable(session, member_id, booking_id, now, rules)
    booking = line.booking
    moving = Picked(booking.store_id, booking.service_code, moving_id=booking_id)
    return Move(booking, await days(session, moving, now, rules))


async def cancel_listed(
    session: AsyncSession,
    member_id: int,
    booking_id: int,
    now: datetime,
    rules: BookingRules,
    *,
    actor: str,
) -> Cancelled:
    """Cancel the member's own booking (`bookings.cancel`: the cut-off holds, cancelling again
    is a no-op) and say how it was listed."""
    line = await _listed(session, member_id, booking_id, now)
    booking = await bookings.cancel(
        session, booking_id, member_id=member_id, now=now, rules=rules, actor=actor
    )
    return Cancelled(booking, line)


async def _open_store(session: AsyncSession, store_id: int) -> Store:
    store = await session.get(Store, store_id)
    if store is None or not store.active:
        raise NotFound("no such open store", store_id=store_id)
    return store


async def _listed(
    session: AsyncSession, member_id: int, booking_id: int, now: datetime
) -> BookingLine | None:
    """The booking as the member's list of upcoming bookings shows it, if it is there."""
    lines = await bookings.upcoming_for_member(session, member_id, now)
    return next((line for line in lines if line.booking.id == booking_id), None)
