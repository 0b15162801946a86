"""Booking bay time from the chat, and looking after the bookings a member already has.

`book` walks store → service → day → time → car → confirm, one inline keyboard per step. The
store step is skipped when the chain has one open store, the car step when the member has at
most one car. `bookings` lists what is coming up, each booking with a reschedule and a cancel
button; rescheduling walks day → time → confirm for the same store and service.

Everything chosen so far is the chat's saved flow state (`booking`), never kept in memory, so a
restart or another worker carries on from the next tap. Each walk gets a random token; every
button of the walk carries it plus what it chooses, and a button whose token is not the saved
state's (an old keyboard, a lapsed walk, a forged callback) is `Stale`. The choice itself is
re-checked against what the domain offers now: a day that passed or a time that filled gets a
fresh keyboard, not a booking. Confirming books under an idempotency key made of the token and
the chosen time, so a double tap books once; the domain still has the last word on capacity.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation import Flow, Stale, Turn
from db.models import Booking, Service, Store, Vehicle
from domain import bookings
from domain.bookings import BookingLine, Slot
from domain.errors import BookingUnavailable, DomainError, NotFound
from domain.locales import localized
from domain.outgoing import Button, Reply
from domain.shop import BookingRules

NAME = "booking"
NEW, MOVE = "new", "move"
SLOTS_PER_PAGE = 12
SLOTS_PER_ROW = 3
DAYS_PER_ROW = 3
LISTED_MAX = 10
# Refusals that concern the booking being moved, not the time picked: new times won't help.
_NOT_ABOUT_THE_TIME = frozenset({"too_late", "not_active"})

_TOKEN = re.compile(r"[0-9a-f]{8}")
_DAY = re.compile(r"\d{8}")
_HHMM = re.compile(r"([01]\d|2[0-3])[0-5]\d")
_ID = re.compile(r"[1-9]\d{0,17}")
_PAGE = re.compile(r"\d{1,2}")


# ---------------------------------------------------------------- checking what a button says


def _expect(args: Sequence[str], count: int) -> None:
    if len(args) != count:
        raise Stale("unexpected number of button arguments")


def _int(text: str) -> int:
    if not _ID.fullmatch(text):
        raise Stale("not an id")
    return int(text)


def _day(text: str) -> date:
    if not _DAY.fullmatch(text):
        raise Stale("not a day")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:
        raise Stale("not a day") from exc


def _hhmm(text: str) -> str:
    if not _HHMM.fullmatch(text):
        raise Stale("not a time of day")
    return text


def _page(text: str) -> int:
    if not _PAGE.fullmatch(text):
        raise Stale("not a page")
    return int(text)


def _walk(turn: Turn, token: str, *, finished: bool = False) -> dict[str, Any]:
    """The saved walk this button belongs to, or `Stale`. A finished walk (booked) answers
    only its own confirm button, so a second tap shows the booking instead of a new one."""
    state = turn.state
    if (
        not _TOKEN.fullmatch(token)
        or state is None
        or state.flow != NAME
        or state.data.get("tok") != token
    ):
        raise Stale("no booking walk for this button")
    data = dict(state.data)
    if data.get("done") and not finished:
        raise Stale("this walk already booked")
    return data


# ---------------------------------------------------------------- reading what the walk needs


def _rules(turn: Turn) -> BookingRules:
    return turn.config.booking_rules


def _key(value: date) -> str:
    return value.strftime("%Y%m%d")


def _local_hhmm(moment: datetime, store: Store) -> str:
    return moment.astimezone(ZoneInfo(store.timezone)).strftime("%H%M")


def _service_name(turn: Turn, service: Service) -> str:
    return localized(turn.locale, service.name_zh, service.name_en)


def _line_service(turn: Turn, line: BookingLine) -> str:
    return localized(turn.locale, line.service_name_zh, line.service_name_en)


async def _chosen(session: AsyncSession, data: dict[str, Any]) -> tuple[Store, Service]:
    """The walk's store and service as they are now; gone or closed ones end the walk."""
    store = next(
        (s for s in await bookings.open_stores(session) if s.id == data.get("store")), None
    )
    service = next(
        (s for s in await bookings.bookable_services(session) if s.code == data.get("svc")), None
    )
    if store is None or service is None:
        raise Stale("store or service no longer bookable")
    return store, service


def _store_context(store: Store) -> dict[str, Any]:
    return {
        "code": store.code,
        "name": store.name,
        "address": store.address,
        "timezone": store.timezone,
    }


def _booking_context(
    turn: Turn, store: Store, service: Service, starts_at: datetime, booking: Booking | None
) -> dict[str, Any]:
    return {
        "ref": bookings.reference(booking) if booking is not None else "",
        "service": _service_name(turn, service),
        "store_name": store.name,
        "starts_at": starts_at,
    }


def _line_context(turn: Turn, line: BookingLine, number: int = 0) -> dict[str, Any]:
    """A booking of a list: its local day and time are given as such, because one list can
    span stores in different time zones while a template knows one store zone."""
    return {
        "n": number,
        "ref": line.ref,
        "service": _line_service(turn, line),
        "store_name": line.store_name,
        "day": line.starts_local.date(),
        "time": line.starts_local.strftime("%H:%M"),
    }


# ---------------------------------------------------------------- replies of the walk


def _rows(buttons: Sequence[Button], per_row: int) -> list[list[Button]]:
    return [list(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]


def _leave_row(turn: Turn) -> list[Button]:
    return [turn.button("cancel", "go:cancel")]


def _stores_reply(turn: Turn, token: str, stores: Sequence[Store]) -> Reply:
    buttons = [[Button(store.name, f"{NAME}:store:{token}:{store.id}")] for store in stores]
    return turn.say(
        "booking_store",
        [*buttons, _leave_row(turn)],
        stores=[_store_context(store) for store in stores],
    )


def _services_reply(turn: Turn, token: str, store: Store, services: Sequence[Service]) -> Reply:
    buttons = [
        Button(_service_name(turn, service), f"{NAME}:svc:{token}:{service.id}")
        for service in services
    ]
    listed = [
        {
            "name": _service_name(turn, service),
            "minutes": service.duration_min,
            "price_cents": service.list_price_cents,
        }
        for service in services
    ]
    return turn.say(
        "booking_service",
        [*_rows(buttons, 2), _leave_row(turn)],
        store=_store_context(store),
        services=listed,
    )


def _days_reply(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    days: Sequence[date],
    note: str = "",
) -> Reply:
    token = data["tok"]
    if not days:
        return turn.say(
            "booking_days",
            turn.menu(),
            store=_store_context(store),
            service=_service_name(turn, service),
            note="none",
            moving=_moving(data),
        )
    buttons = [
        Button(
            turn.text("booking_button", kind="day", day=day),
            f"{NAME}:day:{token}:{store.id}:{_key(day)}:0",
        )
        for day in days
    ]
    return turn.say(
        "booking_days",
        [*_rows(buttons, DAYS_PER_ROW), _leave_row(turn)],
        store=_store_context(store),
        service=_service_name(turn, service),
        note=note,
        moving=_moving(data),
    )


def _moving(data: dict[str, Any]) -> dict[str, Any] | None:
    if data.get("mode") != MOVE:
        return None
    return {"starts_at": datetime.fromisoformat(data["old"])}


def _slots_reply(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    day: date,
    free: Sequence[Slot],
    page: int = 0,
    note: str = "",
) -> Reply:
    """One page of the day's free times, "10:30 · 余2"; full times are left out."""
    token = data["tok"]
    pages = max(1, -(-len(free) // SLOTS_PER_PAGE))
    page = min(page, pages - 1)
    shown = free[page * SLOTS_PER_PAGE : (page + 1) * SLOTS_PER_PAGE]
    store_ctx = _store_context(store)
    buttons = [
        Button(
            turn.text(
                "booking_button",
                kind="slot",
                at=slot.starts_at,
                left=slot.remaining,
                store=store_ctx,
            ),
            f"{NAME}:slot:{token}:{store.id}:{_key(day)}:{_local_hhmm(slot.starts_at, store)}",
        )
        for slot in shown
    ]
    paging: list[Button] = []
    if page > 0:
        paging.append(
            Button(
                turn.label("booking.earlier"),
                f"{NAME}:day:{token}:{store.id}:{_key(day)}:{page - 1}",
            )
        )
    if page < pages - 1:
        paging.append(
            Button(
                turn.label("booking.later"), f"{NAME}:day:{token}:{store.id}:{_key(day)}:{page + 1}"
            )
        )
    return turn.say(
        "booking_slots",
        [
            *_rows(buttons, SLOTS_PER_ROW),
            paging,
            [turn.button("booking.other_day", f"{NAME}:days:{token}"), *_leave_row(turn)],
        ],
        store=store_ctx,
        service=_service_name(turn, service),
        day=day,
        page=page + 1,
        pages=pages,
        note=note,
        moving=_moving(data),
    )


def _cars_reply(turn: Turn, token: str, cars: Sequence[Vehicle]) -> Reply:
    buttons = [
        [
            Button(
                turn.text("booking_button", kind="car", plate=car.plate, model=_car_model(car)),
                f"{NAME}:car:{token}:{car.id}",
            )
        ]
        for car in cars
    ]
    return turn.say("booking_car", [*buttons, _leave_row(turn)])


def _car_model(car: Vehicle) -> str:
    return " ".join(part for part in (car.make, car.model) if part)


def _summary_reply(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    slot: Slot,
    car: Vehicle | None,
) -> Reply:
    token, day, hhmm = data["tok"], data["day"], data["at"]
    buttons = [
        [
            turn.button("confirm", f"{NAME}:ok:{token}:{day}:{hhmm}"),
            turn.button("booking.change_time", f"{NAME}:day:{token}:{store.id}:{day}:0"),
        ],
        _leave_row(turn),
    ]
    return turn.say(
        "booking_confirm",
        buttons,
        store=_store_context(store),
        booking=_booking_context(turn, store, service, slot.starts_at, None),
        car=car.plate if car is not None else "",
        price_cents=service.list_price_cents,
        moving=_moving(data),
    )


def _done_reply(
    turn: Turn, data: dict[str, Any], store: Store, service: Service, booking: Booking
) -> Reply:
    buttons = [[turn.button("bookings"), turn.button("menu")]]
    return turn.say(
        "booking_done",
        buttons,
        store=_store_context(store),
        booking=_booking_context(turn, store, service, booking.starts_at, booking),
        moved=data.get("mode") == MOVE,
        cutoff=_rules(turn).change_cutoff_hours,
    )


def _error_reply(turn: Turn, exc: DomainError) -> Reply:
    """The shared refusal text (`chat/error`), without the menu: fresh choices follow it."""
    return turn.say("error", error=exc.template_context())


# ---------------------------------------------------------------- the walk, step by step


async def book(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Start a booking: the stores, or straight to the services when there is one store."""
    token = secrets.token_hex(4)
    async with turn.read() as session:
        stores = await bookings.open_stores(session)
        services = await bookings.bookable_services(session)
    if not stores or not services:
        return [turn.say("booking_closed", turn.menu())]
    if len(stores) == 1:
        await turn.save_state(NAME, {"tok": token, "mode": NEW, "store": stores[0].id})
        return [_services_reply(turn, token, stores[0], services)]
    await turn.save_state(NAME, {"tok": token, "mode": NEW})
    return [_stores_reply(turn, token, stores)]


async def pick_store(turn: Turn, args: Sequence[str]) -> list[Reply]:
    _expect(args, 2)
    data = _walk(turn, args[0])
    store_id = _int(args[1])
    if data.get("mode") != NEW:
        raise Stale("a reschedule keeps its store")
    async with turn.read() as session:
        store = next((s for s in await bookings.open_stores(session) if s.id == store_id), None)
        services = await bookings.bookable_services(session)
    if store is None:
        raise Stale("not an open store")
    await turn.save_state(NAME, {"tok": data["tok"], "mode": NEW, "store": store.id})
    return [_services_reply(turn, data["tok"], store, services)]


async def pick_service(turn: Turn, args: Sequence[str]) -> list[Reply]:
    _expect(args, 2)
    data = _walk(turn, args[0])
    service_id = _int(args[1])
    if data.get("mode") != NEW or "store" not in data:
        raise Stale("no store chosen")
    async with turn.read() as session:
        services = await bookings.bookable_services(session)
        service = next((s for s in services if s.id == service_id), None)
        if service is None:
            raise Stale("not a bookable service")
        data = {"tok": data["tok"], "mode": NEW, "store": data["store"], "svc": service.code}
        store, service = await _chosen(session, data)
        days = await bookings.available_days(session, store.id, turn.now, _rules(turn))
    await turn.save_state(NAME, data)
    return [_days_reply(turn, data, store, service, days)]


async def show_days(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Back from the times to the days ("another day")."""
    _expect(args, 1)
    data = _walk(turn, args[0])
    if "svc" not in data:
        raise Stale("no service chosen")
    async with turn.read() as session:
        store, service = await _chosen(session, data)
        days = await bookings.available_days(session, store.id, turn.now, _rules(turn))
    return [_days_reply(turn, data, store, service, days)]


async def pick_day(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """A day (or another page of its times): the free times as they are now."""
    _expect(args, 4)
    data = _walk(turn, args[0])
    store_id, day, page = _int(args[1]), _day(args[2]), _page(args[3])
    _check_step(data, store_id)
    async with turn.read() as session:
        store, service = await _chosen(session, data)
        days, free = await _free_times(turn, session, store, service, day)
    if refused := _day_refused(turn, data, store, service, day, days, free):
        return refused
    data["day"] = _key(day)
    data.pop("at", None)
    data.pop("car", None)
    await turn.save_state(NAME, data)
    return [_slots_reply(turn, data, store, service, day, free, page)]


def _check_step(data: dict[str, Any], store_id: int) -> None:
    """A day or time button belongs to this walk's store, once a service was chosen."""
    if store_id != data.get("store") or "svc" not in data:
        raise Stale("button of another store or step")


def _day_refused(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    day: date,
    days: list[date],
    free: list[Slot],
) -> list[Reply] | None:
    """The days again, saying why, when the chosen day is no longer bookable or is full."""
    if day not in days:
        return [_days_reply(turn, data, store, service, days, note="gone")]
    if not free:
        return [_days_reply(turn, data, store, service, days, note="full")]
    return None


async def _free_times(
    turn: Turn, session: AsyncSession, store: Store, service: Service, day: date
) -> tuple[list[date], list[Slot]]:
    """The bookable days and, if `day` is one, its times with a bay still free."""
    rules = _rules(turn)
    days = await bookings.available_days(session, store.id, turn.now, rules)
    if day not in days:
        return days, []
    found = await bookings.slots(session, store.id, service.code, day, turn.now, rules)
    return days, [slot for slot in found if slot.remaining > 0]


async def pick_slot(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """A time: offered only if it is still free; then the car (if there is a choice) or the
    summary to confirm."""
    _expect(args, 4)
    data = _walk(turn, args[0])
    store_id, day, hhmm = _int(args[1]), _day(args[2]), _hhmm(args[3])
    _check_step(data, store_id)
    async with turn.read() as session:
        store, service = await _chosen(session, data)
        days, free = await _free_times(turn, session, store, service, day)
        cars = await bookings.member_vehicles(session, turn.member_id)
    if refused := _day_refused(turn, data, store, service, day, days, free):
        return refused
    slot = next((s for s in free if _local_hhmm(s.starts_at, store) == hhmm), None)
    if slot is None:
        return [_slots_reply(turn, data, store, service, day, free, note="gone")]
    data.update(day=_key(day), at=hhmm)
    data.pop("car", None)
    car: Vehicle | None = None
    if data.get("mode") == NEW and len(cars) > 1:
        await turn.save_state(NAME, data)
        return [_cars_reply(turn, data["tok"], cars)]
    if data.get("mode") == NEW and cars:
        car = cars[0]
        data["car"] = car.id
    await turn.save_state(NAME, data)
    return [_summary_reply(turn, data, store, service, slot, car)]


async def pick_car(turn: Turn, args: Sequence[str]) -> list[Reply]:
    _expect(args, 2)
    data = _walk(turn, args[0])
    car_id = _int(args[1])
    if data.get("mode") != NEW or "at" not in data:
        raise Stale("no time chosen")
    async with turn.read() as session:
        store, service = await _chosen(session, data)
        car = next(
            (c for c in await bookings.member_vehicles(session, turn.member_id) if c.id == car_id),
            None,
        )
        day = _day(data["day"])
        days, free = await _free_times(turn, session, store, service, day)
    if car is None:
        raise Stale("not the member's car")
    slot = next((s for s in free if _local_hhmm(s.starts_at, store) == data["at"]), None)
    if slot is None:
        if not free:
            note = "full" if day in days else "gone"
            return [_days_reply(turn, data, store, service, days, note=note)]
        return [_slots_reply(turn, data, store, service, day, free, note="gone")]
    data["car"] = car.id
    await turn.save_state(NAME, data)
    return [_summary_reply(turn, data, store, service, slot, car)]


async def confirm(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Book (or move) the chosen time. The key is the walk's token and time, so a second tap,
    even one racing the first, returns the same booking."""
    _expect(args, 3)
    data = _walk(turn, args[0], finished=True)
    if data.get("day") != args[1] or data.get("at") != args[2]:
        raise Stale("confirm of a time no longer chosen")
    if data.get("mode") == NEW and "car" not in data:
        async with turn.read() as session:
            if len(await bookings.member_vehicles(session, turn.member_id)) > 1:
                raise Stale("no car chosen")
    async with turn.read() as session:
        store, service = await _chosen(session, data)
        done = data.get("done")
        if done is not None:
            return [await _booked_again(turn, session, data, store, service, done)]
    day = _day(data["day"])
    hour, minute = int(data["at"][:2]), int(data["at"][2:])
    starts_at = datetime(
        day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(store.timezone)
    )
    key = f"chat:{turn.member_id}:{data['tok']}:{data['day']}{data['at']}"
    try:
        booking = await _write_booking(turn, data, store, service, starts_at, key)
    except BookingUnavailable as exc:
        return await _refused(turn, data, store, service, day, exc)
    data["done"] = booking.id
    await turn.save_state(NAME, data)
    return [_done_reply(turn, data, store, service, booking)]


async def _write_booking(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    starts_at: datetime,
    key: str,
) -> Booking:
    rules = _rules(turn)
    async with turn.write() as session:
        if data.get("mode") == MOVE:
            try:
                return await bookings.reschedule(
                    session,
                    int(data["bid"]),
                    member_id=turn.member_id,
                    starts_at=starts_at,
                    now=turn.now,
                    rules=rules,
                    actor=turn.actor,
                    key=key,
                )
            except NotFound as exc:
                raise Stale("the booking being moved is gone") from exc
        return await bookings.reserve(
            session,
            turn.member_id,
            store.id,  # type: ignore[arg-type]
            service.code,
            starts_at,
            turn.now,
            rules,
            vehicle_id=data.get("car"),
            key=key,
            source="chat",
        )


async def _booked_again(
    turn: Turn,
    session: AsyncSession,
    data: dict[str, Any],
    store: Store,
    service: Service,
    booking_id: int,
) -> Reply:
    """A second tap on a confirm that already booked: the same booking, shown again."""
    try:
        booking = await bookings.get(session, int(booking_id), member_id=turn.member_id)
    except NotFound as exc:
        raise Stale("the booking is gone") from exc
    if booking.status != bookings.BOOKED:
        raise Stale("the booking was changed since")
    return _done_reply(turn, data, store, service, booking)


async def _refused(
    turn: Turn,
    data: dict[str, Any],
    store: Store,
    service: Service,
    day: date,
    exc: BookingUnavailable,
) -> list[Reply]:
    """The domain said no: say why, then offer what is free now (the time filled meanwhile,
    the member overlaps another booking...)."""
    if exc.reason in _NOT_ABOUT_THE_TIME:
        await turn.clear_state()
        return [turn.say("error", turn.menu(), error=exc.template_context())]
    async with turn.read() as session:
        days, free = await _free_times(turn, session, store, service, day)
    data.pop("at", None)
    await turn.save_state(NAME, data)
    if free:
        return [_error_reply(turn, exc), _slots_reply(turn, data, store, service, day, free)]
    return [_error_reply(turn, exc), _days_reply(turn, data, store, service, days)]


# ---------------------------------------------------------------- the member's bookings


async def my_bookings(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """What is coming up, each with reschedule and cancel one tap away."""
    async with turn.read() as session:
        lines = await bookings.upcoming_for_member(session, turn.member_id, turn.now)
    listed = lines[:LISTED_MAX]
    rows = [
        [
            Button(
                turn.text("booking_button", kind="move", n=number),
                f"{NAME}:move:{line.booking.id}",
            ),
            Button(
                turn.text("booking_button", kind="cancel", n=number),
                f"{NAME}:cancel:{line.booking.id}",
            ),
        ]
        for number, line in enumerate(listed, start=1)
    ]
    return [
        turn.say(
            "booking_list",
            [*rows, [turn.button("book"), turn.button("menu")]],
            items=[_line_context(turn, line, n) for n, line in enumerate(listed, start=1)],
            more=len(lines) - len(listed),
            cutoff=_rules(turn).change_cutoff_hours,
        )
    ]


async def _own_upcoming(turn: Turn, session: AsyncSession, booking_id: int) -> BookingLine:
    """The member's own upcoming booking, or `Stale` (another member's, or long gone)."""
    lines = await bookings.upcoming_for_member(session, turn.member_id, turn.now)
    line = next((line for line in lines if line.booking.id == booking_id), None)
    if line is None:
        try:
            booking = await bookings.get(session, booking_id, member_id=turn.member_id)
        except NotFound as exc:
            raise Stale("not the member's booking") from exc
        # Cancelled, done or past: the domain's own refusal says which.
        bookings.ensure_changeable(booking, turn.now, _rules(turn))
        raise Stale("booking no longer upcoming")
    return line


async def ask_cancel(turn: Turn, args: Sequence[str]) -> list[Reply]:
    _expect(args, 1)
    booking_id = _int(args[0])
    async with turn.read() as session:
        line = await _own_upcoming(turn, session, booking_id)
    bookings.ensure_changeable(line.booking, turn.now, _rules(turn))
    buttons = [
        [
            turn.button("booking.confirm_cancel", f"{NAME}:cancelok:{booking_id}"),
            turn.button("booking.keep", "go:bookings"),
        ]
    ]
    return [turn.say("booking_cancel_confirm", buttons, booking=_line_context(turn, line))]


async def cancel_confirmed(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Cancel; a second tap finds it cancelled already and says so the same way."""
    _expect(args, 1)
    booking_id = _int(args[0])
    try:
        async with turn.write() as session:
            lines = await bookings.upcoming_for_member(session, turn.member_id, turn.now)
            line = next((line for line in lines if line.booking.id == booking_id), None)
            booking = await bookings.cancel(
                session,
                booking_id,
                member_id=turn.member_id,
                now=turn.now,
                rules=_rules(turn),
                actor=turn.actor,
            )
    except NotFound as exc:
        raise Stale("not the member's booking") from exc
    buttons = [[turn.button("book"), turn.button("bookings")], [turn.button("menu")]]
    return [
        turn.say(
            "booking_cancelled",
            buttons,
            ref=bookings.reference(booking),
            booking=_line_context(turn, line) if line is not None else None,
        )
    ]


async def start_move(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Reschedule: a new walk for the same store and service, starting at the day."""
    _expect(args, 1)
    booking_id = _int(args[0])
    async with turn.read() as session:
        line = await _own_upcoming(turn, session, booking_id)
        bookings.ensure_changeable(line.booking, turn.now, _rules(turn))
        data = {
            "tok": secrets.token_hex(4),
            "mode": MOVE,
            "bid": booking_id,
            "store": line.booking.store_id,
            "svc": line.booking.service_code,
            "old": line.booking.starts_at.isoformat(),
        }
        store, service = await _chosen(session, data)
        days = await bookings.available_days(session, store.id, turn.now, _rules(turn))
    await turn.save_state(NAME, data)
    return [_days_reply(turn, data, store, service, days)]


FLOW = Flow(
    name=NAME,
    intents={"book": book, "bookings": my_bookings},
    actions={
        "store": pick_store,
        "svc": pick_service,
        "days": show_days,
        "day": pick_day,
        "slot": pick_slot,
        "car": pick_car,
        "ok": confirm,
        "cancel": ask_cancel,
        "cancelok": cancel_confirmed,
        "move": start_move,
    },
)
