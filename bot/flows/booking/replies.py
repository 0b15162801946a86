"""The booking flow's replies: each step's text and keyboard, and the plain values the
`chat/booking_*` templates read.

Button data built here is what `checks` parses and what members keep on old keyboards: its
formats never change. Lists are cut to fit one chat message: times come a page at a time,
the member's bookings at most `LISTED_MAX` at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from bot.conversation import Turn
from bot.flows.booking.checks import MOVE, NAME, day_key, rules
from db.models import Booking, Service, Store, Vehicle
from domain import bookings
from domain.bookings import BookingLine, Slot
from domain.errors import DomainError
from domain.locales import localized
from domain.member_bookings import Cancelled, Choice, Times, local_hhmm
from domain.outgoing import Button, Reply

SLOTS_PER_PAGE = 12
SLOTS_PER_ROW = 3
DAYS_PER_ROW = 3
LISTED_MAX = 10


# ---------------------------------------------------------------- what the templates read


def service_name(turn: Turn, service: Service) -> str:
    return localized(turn.locale, service.name_zh, service.name_en)


def store_context(store: Store) -> dict[str, Any]:
    return {
        "code": store.code,
        "name": store.name,
        "address": store.address,
        "timezone": store.timezone,
    }


def booking_context(
    turn: Turn, choice: Choice, starts_at: datetime, booking: Booking | None
) -> dict[str, Any]:
    return {
        "ref": bookings.reference(booking) if booking is not None else "",
        "service": service_name(turn, choice.service),
        "store_name": choice.store.name,
        "starts_at": starts_at,
    }


def line_context(turn: Turn, line: BookingLine, number: int = 0) -> dict[str, Any]:
    """A booking of a list: its local day and time are given as such, because one list can
    span stores in different time zones while a template knows one store zone."""
    return {
        "n": number,
        "ref": line.ref,
        "service": localized(turn.locale, line.service_name_zh, line.service_name_en),
        "store_name": line.store_name,
        "day": line.starts_local.date(),
        "time": line.starts_local.strftime("%H:%M"),
    }


def moving(data: dict[str, Any]) -> dict[str, Any] | None:
    """The booking a reschedule walk moves, as its replies mention it."""
    if data.get("mode") != MOVE:
        return None
    return {"starts_at": datetime.fromisoformat(data["old"])}


def _rows(buttons: Sequence[Button], per_row: int) -> list[list[Button]]:
    return [list(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]


def _leave_row(turn: Turn) -> list[Button]:
    return [turn.button("cancel", "go:cancel")]


# ---------------------------------------------------------------- the walk


def stores_reply(turn: Turn, token: str, stores: Sequence[Store]) -> Reply:
    buttons = [[Button(store.name, f"{NAME}:store:{token}:{store.id}")] for store in stores]
    return turn.say(
        "booking_store",
        [*buttons, _leave_row(turn)],
        stores=[store_context(store) for store in stores],
    )


def services_reply(turn: Turn, token: str, store: Store, services: Sequence[Service]) -> Reply:
    buttons = [
        Button(service_name(turn, service), f"{NAME}:svc:{token}:{service.id}")
        for service in services
    ]
    listed = [
        {
            "name": service_name(turn, service),
            "minutes": service.duration_min,
            "price_cents": service.list_price_cents,
        }
        for service in services
    ]
    return turn.say(
        "booking_service",
        [*_rows(buttons, 2), _leave_row(turn)],
        store=store_context(store),
        services=listed,
    )


def days_reply(
    turn: Turn, data: dict[str, Any], choice: Choice, days: Sequence[date], note: str = ""
) -> Reply:
    """The days to pick from; `note` says why the days are shown again ("gone", "full")."""
    store, token = choice.store, data["tok"]
    about = {
        "store": store_context(store),
        "service": service_name(turn, choice.service),
        "moving": moving(data),
    }
    if not days:
        return turn.say("booking_days", turn.menu(), note="none", **about)
    buttons = [
        Button(
            turn.text("booking_button", kind="day", day=day),
            f"{NAME}:day:{token}:{store.id}:{day_key(day)}:0",
        )
        for day in days
    ]
    return turn.say(
        "booking_days", [*_rows(buttons, DAYS_PER_ROW), _leave_row(turn)], note=note, **about
    )


def slots_reply(
    turn: Turn, data: dict[str, Any], times: Times, page: int = 0, note: str = ""
) -> Reply:
    """One page of the day's free times, "10:30 · 余2"; full times are left out."""
    store, token, day, free = times.choice.store, data["tok"], times.day, times.free
    pages = max(1, -(-len(free) // SLOTS_PER_PAGE))
    page = min(page, pages - 1)
    shown = free[page * SLOTS_PER_PAGE : (page + 1) * SLOTS_PER_PAGE]
    store_ctx = store_context(store)
    buttons = [
        Button(
            turn.text(
                "booking_button",
                kind="slot",
                at=slot.starts_at,
                left=slot.remaining,
                store=store_ctx,
            ),
            f"{NAME}:slot:{token}:{store.id}:{day_key(day)}:{local_hhmm(slot.starts_at, store)}",
        )
        for slot in shown
    ]
    day_data = f"{NAME}:day:{token}:{store.id}:{day_key(day)}"
    paging: list[Button] = []
    if page > 0:
        paging.append(Button(turn.label("booking.earlier"), f"{day_data}:{page - 1}"))
    if page < pages - 1:
        paging.append(Button(turn.label("booking.later"), f"{day_data}:{page + 1}"))
    return turn.say(
        "booking_slots",
        [
            *_rows(buttons, SLOTS_PER_ROW),
            paging,
            [turn.button("booking.other_day", f"{NAME}:days:{token}"), *_leave_row(turn)],
        ],
        store=store_ctx,
        service=service_name(turn, times.choice.service),
        day=day,
        page=page + 1,
        pages=pages,
        note=note,
        moving=moving(data),
    )


def cars_reply(turn: Turn, token: str, cars: Sequence[Vehicle]) -> Reply:
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


def summary_reply(
    turn: Turn, data: dict[str, Any], choice: Choice, slot: Slot, car: Vehicle | None
) -> Reply:
    token, day, hhmm = data["tok"], data["day"], data["at"]
    buttons = [
        [
            turn.button("confirm", f"{NAME}:ok:{token}:{day}:{hhmm}"),
            turn.button("booking.change_time", f"{NAME}:day:{token}:{choice.store.id}:{day}:0"),
        ],
        _leave_row(turn),
    ]
    return turn.say(
        "booking_confirm",
        buttons,
        store=store_context(choice.store),
        booking=booking_context(turn, choice, slot.starts_at, None),
        car=car.plate if car is not None else "",
        price_cents=choice.service.list_price_cents,
        moving=moving(data),
    )


def done_reply(turn: Turn, data: dict[str, Any], choice: Choice, booking: Booking) -> Reply:
    buttons = [[turn.button("bookings"), turn.button("menu")]]
    return turn.say(
        "booking_done",
        buttons,
        store=store_context(choice.store),
        booking=booking_context(turn, choice, booking.starts_at, booking),
        moved=data.get("mode") == MOVE,
        cutoff=rules(turn).change_cutoff_hours,
    )


def error_reply(turn: Turn, exc: DomainError) -> Reply:
    """The shared refusal text (`chat/error`), without the menu: fresh choices follow it."""
    return turn.say("error", error=exc.template_context())


# ---------------------------------------------------------------- the member's bookings


def list_reply(turn: Turn, lines: Sequence[BookingLine]) -> Reply:
    """What is coming up, each with reschedule and cancel one tap away."""
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
    return turn.say(
        "booking_list",
        [*rows, [turn.button("book"), turn.button("menu")]],
        items=[line_context(turn, line, n) for n, line in enumerate(listed, start=1)],
        more=len(lines) - len(listed),
        cutoff=rules(turn).change_cutoff_hours,
    )


def cancel_ask_reply(turn: Turn, line: BookingLine) -> Reply:
    booking_id = line.booking.id
    buttons = [
        [
            turn.button("booking.confirm_cancel", f"{NAME}:cancelok:{booking_id}"),
            turn.button("booking.keep", "go:bookings"),
        ]
    ]
    return turn.say("booking_cancel_confirm", buttons, booking=line_context(turn, line))


def cancelled_reply(turn: Turn, cancelled: Cancelled) -> Reply:
    buttons = [[turn.button("book"), turn.button("bookings")], [turn.button("menu")]]
    line = cancelled.line
    return turn.say(
        "booking_cancelled",
        buttons,
        ref=bookings.reference(cancelled.booking),
        booking=line_context(turn, line) if line is not None else None,
    )
