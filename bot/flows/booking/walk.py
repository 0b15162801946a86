"""Booking bay time, one inline keyboard per step: store → service → day → time → car →
confirm. Rescheduling (started from the member's list, see `manage`) walks day → time →
confirm for the same store and service.

The store step is skipped when the chain has one open store, the car step when the member has
at most one car. Each step checks its button (`checks`), asks `domain.member_bookings` one
question and renders the answer (`replies`). The choice is re-checked against what the domain
offers now: a day that passed or a time that filled gets a fresh keyboard, not a booking.
Confirming books under an idempotency key made of the walk's token and the chosen time, so a
double tap books once; the domain still has the last word on capacity.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from bot.conversation import Stale, Turn
from bot.flows.booking import replies
from bot.flows.booking.checks import (
    MOVE,
    NAME,
    NEW,
    a_day,
    a_page,
    a_time,
    an_id,
    check_step,
    day_key,
    expect,
    gone_is_stale,
    picked,
    rules,
    walk_of,
)
from domain import member_bookings
from domain.errors import BookingUnavailable, NotFound
from domain.member_bookings import Choice, TimePick
from domain.outgoing import Reply

# Refusals that concern the booking being moved, not the time picked: new times won't help.
_NOT_ABOUT_THE_TIME = frozenset({"too_late", "not_active"})


async def book(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Start a booking: the stores, or straight to the services when there is one store."""
    async with turn.read() as session:
        offer = await member_bookings.offer(session)
    if not offer.stores or not offer.services:
        return [turn.say("booking_closed", turn.menu())]
    data: dict[str, Any] = {"tok": secrets.token_hex(4), "mode": NEW}
    if len(offer.stores) == 1:
        data["store"] = offer.stores[0].id
        await turn.save_state(NAME, data)
        return [replies.services_reply(turn, data["tok"], offer.stores[0], offer.services)]
    await turn.save_state(NAME, data)
    return [replies.stores_reply(turn, data["tok"], offer.stores)]


async def pick_store(turn: Turn, args: Sequence[str]) -> list[Reply]:
    expect(args, 2)
    data = walk_of(turn, args[0])
    store_id = an_id(args[1])
    if data.get("mode") != NEW:
        raise Stale("a reschedule keeps its store")
    async with gone_is_stale(turn.read()) as session:
        store, services = await member_bookings.services_at(session, store_id)
    await turn.save_state(NAME, {"tok": data["tok"], "mode": NEW, "store": store.id})
    return [replies.services_reply(turn, data["tok"], store, services)]


async def pick_service(turn: Turn, args: Sequence[str]) -> list[Reply]:
    expect(args, 2)
    data = walk_of(turn, args[0])
    service_id = an_id(args[1])
    if data.get("mode") != NEW or "store" not in data:
        raise Stale("no store chosen")
    async with gone_is_stale(turn.read()) as session:
        found = await member_bookings.days_for_service(
            session, data["store"], service_id, turn.now, rules(turn)
        )
    code = found.choice.service.code
    data = {"tok": data["tok"], "mode": NEW, "store": data["store"], "svc": code}
    await turn.save_state(NAME, data)
    return [replies.days_reply(turn, data, found.choice, found.days)]


async def show_days(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Back from the times to the days ("another day")."""
    expect(args, 1)
    data = walk_of(turn, args[0])
    if "svc" not in data:
        raise Stale("no service chosen")
    async with gone_is_stale(turn.read()) as session:
        found = await member_bookings.days(session, picked(data), turn.now, rules(turn))
    return [replies.days_reply(turn, data, found.choice, found.days)]


async def pick_day(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """A day (or another page of its times): the free times as they are now."""
    expect(args, 4)
    data = walk_of(turn, args[0])
    store_id, day, page = an_id(args[1]), a_day(args[2]), a_page(args[3])
    check_step(data, store_id)
    data["day"] = day_key(day)
    data.pop("at", None)
    data.pop("car", None)
    async with gone_is_stale(turn.read()) as session:
        times = await member_bookings.times(session, picked(data), turn.now, rules(turn))
    if times.day_refusal:
        return [replies.days_reply(turn, data, times.choice, times.days, times.day_refusal)]
    await turn.save_state(NAME, data)
    return [replies.slots_reply(turn, data, times, page)]


async def pick_slot(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """A time: offered only if it is still free; then the car (if there is a choice) or the
    summary to confirm."""
    expect(args, 4)
    data = walk_of(turn, args[0])
    store_id, day, hhmm = an_id(args[1]), a_day(args[2]), a_time(args[3])
    check_step(data, store_id)
    data.update(day=day_key(day), at=hhmm)
    data.pop("car", None)
    async with gone_is_stale(turn.read()) as session:
        chosen = await member_bookings.pick(
            session, turn.member_id, picked(data), turn.now, rules(turn)
        )
    if refused := _time_refused(turn, data, chosen):
        return refused
    if chosen.needs_car:
        await turn.save_state(NAME, data)
        return [replies.cars_reply(turn, data["tok"], chosen.cars)]
    return await _to_summary(turn, data, chosen)


async def pick_car(turn: Turn, args: Sequence[str]) -> list[Reply]:
    expect(args, 2)
    data = walk_of(turn, args[0])
    data["car"] = an_id(args[1])
    if data.get("mode") != NEW or "at" not in data:
        raise Stale("no time chosen")
    async with gone_is_stale(turn.read()) as session:
        chosen = await member_bookings.pick(
            session, turn.member_id, picked(data), turn.now, rules(turn)
        )
    return _time_refused(turn, data, chosen) or await _to_summary(turn, data, chosen)


async def confirm(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Book (or move) the chosen time. The key is the walk's token and time, so a second tap,
    even one racing the first, returns the same booking."""
    expect(args, 3)
    data = walk_of(turn, args[0], finished=True)
    if data.get("day") != args[1] or data.get("at") != args[2]:
        raise Stale("confirm of a time no longer chosen")
    async with gone_is_stale(turn.read()) as session:
        ready = await member_bookings.ready(
            session, turn.member_id, picked(data), booked_id=data.get("done")
        )
    if ready.booked is not None:  # a second tap: the same booking, shown again
        return [replies.done_reply(turn, data, ready.choice, ready.booked)]
    return await _book(turn, data, ready.choice)


# ---------------------------------------------------------------- the steps' common ends


def _time_refused(turn: Turn, data: dict[str, Any], chosen: TimePick) -> list[Reply] | None:
    """The days again when the picked day is gone or full; its times again when the picked
    time is taken."""
    times = chosen.times
    if times.day_refusal:
        return [replies.days_reply(turn, data, times.choice, times.days, times.day_refusal)]
    if chosen.slot is None:
        return [replies.slots_reply(turn, data, times, note="gone")]
    return None


async def _to_summary(turn: Turn, data: dict[str, Any], chosen: TimePick) -> list[Reply]:
    """The summary to confirm a time still free; the walk saved with it (and its car)."""
    assert chosen.slot is not None
    if chosen.car is not None:
        data["car"] = chosen.car.id
    await turn.save_state(NAME, data)
    return [replies.summary_reply(turn, data, chosen.times.choice, chosen.slot, chosen.car)]


async def _book(turn: Turn, data: dict[str, Any], choice: Choice) -> list[Reply]:
    key = f"chat:{turn.member_id}:{data['tok']}:{data['day']}{data['at']}"
    try:
        async with turn.write() as session:
            booking = await member_bookings.place(
                session,
                turn.member_id,
                choice,
                picked(data),
                turn.now,
                rules(turn),
                key=key,
                actor=turn.actor,
            )
    except BookingUnavailable as exc:
        return await _refused(turn, data, choice, exc)
    except NotFound as exc:
        if data.get("mode") != MOVE:
            raise
        raise Stale("the booking being moved is gone") from exc
    data["done"] = booking.id
    await turn.save_state(NAME, data)
    return [replies.done_reply(turn, data, choice, booking)]


async def _refused(
    turn: Turn, data: dict[str, Any], choice: Choice, exc: BookingUnavailable
) -> list[Reply]:
    """The domain said no: say why, then offer what is free now (the time filled meanwhile,
    the member overlaps another booking...)."""
    if exc.reason in _NOT_ABOUT_THE_TIME:
        await turn.clear_state()
        return [turn.say("error", turn.menu(), error=exc.template_context())]
    async with turn.read() as session:
        times = await member_bookings.times_for(
            session, choice, a_day(data["day"]), turn.now, rules(turn)
        )
    data.pop("at", None)
    await turn.save_state(NAME, data)
    if times.free:
        return [replies.error_reply(turn, exc), replies.slots_reply(turn, data, times)]
    return [replies.error_reply(turn, exc), replies.days_reply(turn, data, choice, times.days)]
