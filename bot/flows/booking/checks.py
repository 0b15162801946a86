"""What a booking button says, checked: its arguments, the walk it belongs to, and what the walk
has picked so far, in the terms `domain.member_bookings` takes.

Button data is `booking:<action>:<args…>`; the formats below are what members may still have on
old keyboards, so they never change. Nothing a button carries is trusted: an argument of the
wrong shape, a button of another walk or of a lapsed one, and a store, service, car or booking
the domain no longer finds for this member (`NotFound`) are all `Stale`, which writes nothing
and shows the member the menu.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation import Stale, Turn
from domain.errors import NotFound
from domain.member_bookings import Picked
from domain.shop import BookingRules

NAME = "booking"
NEW, MOVE = "new", "move"

_TOKEN = re.compile(r"[0-9a-f]{8}")
_DAY = re.compile(r"\d{8}")
_HHMM = re.compile(r"([01]\d|2[0-3])[0-5]\d")
_ID = re.compile(r"[1-9]\d{0,17}")
_PAGE = re.compile(r"\d{1,2}")


def expect(args: Sequence[str], count: int) -> None:
    if len(args) != count:
        raise Stale("unexpected number of button arguments")


def an_id(text: str) -> int:
    if not _ID.fullmatch(text):
        raise Stale("not an id")
    return int(text)


def a_day(text: str) -> date:
    if not _DAY.fullmatch(text):
        raise Stale("not a day")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:
        raise Stale("not a day") from exc


def a_time(text: str) -> str:
    if not _HHMM.fullmatch(text):
        raise Stale("not a time of day")
    return text


def a_page(text: str) -> int:
    if not _PAGE.fullmatch(text):
        raise Stale("not a page")
    return int(text)


def booking_of(args: Sequence[str]) -> int:
    """The booking id a button of the member's list carries."""
    expect(args, 1)
    return an_id(args[0])


def day_key(value: date) -> str:
    """A day as a button and the saved walk carry it: "20261202"."""
    return value.strftime("%Y%m%d")


def walk_of(turn: Turn, token: str, *, finished: bool = False) -> dict[str, Any]:
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


def check_step(data: dict[str, Any], store_id: int) -> None:
    """A day or time button belongs to this walk's store, once a service was chosen."""
    if store_id != data.get("store") or "svc" not in data:
        raise Stale("button of another store or step")


def picked(data: dict[str, Any]) -> Picked:
    """What the saved walk (with a store and a service) has picked, for the domain."""
    return Picked(
        store_id=data["store"],
        service_code=data["svc"],
        day=a_day(data["day"]) if "day" in data else None,
        hhmm=data.get("at"),
        vehicle_id=data.get("car"),
        moving_id=int(data["bid"]) if data.get("mode") == MOVE else None,
    )


def rules(turn: Turn) -> BookingRules:
    return turn.config.booking_rules


@asynccontextmanager
async def gone_is_stale(
    unit: AbstractAsyncContextManager[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """`turn.read()` or `turn.write()`, in which the domain's `NotFound` (what the button names
    is gone, or is not this member's) is a `Stale` button."""
    try:
        async with unit as session:
            yield session
    except NotFound as exc:
        raise Stale("what the button names is gone") from exc
