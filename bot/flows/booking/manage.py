"""The bookings a member already has: the list of what is coming up, cancelling one (asked
first, then confirmed) and the start of moving one to another time.

A list's buttons name a booking by id, so they are checked like any other: a booking that is
not the member's is `Stale`, one that can no longer be changed online (cancelled, past, inside
the cut-off) gets the domain's own refusal. Cancelling twice says "cancelled" twice; moving
starts a reschedule walk (see `walk`) at the day step, for the same store and service.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from bot.conversation import Turn
from bot.flows.booking import replies
from bot.flows.booking.checks import MOVE, NAME, booking_of, gone_is_stale, rules
from domain import bookings, member_bookings
from domain.outgoing import Reply


async def my_bookings(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """What is coming up, each with reschedule and cancel one tap away."""
    async with turn.read() as session:
        lines = await bookings.upcoming_for_member(session, turn.member_id, turn.now)
    return [replies.list_reply(turn, lines)]


async def ask_cancel(turn: Turn, args: Sequence[str]) -> list[Reply]:
    booking_id = booking_of(args)
    async with gone_is_stale(turn.read()) as session:
        line = await member_bookings.changeable(
            session, turn.member_id, booking_id, turn.now, rules(turn)
        )
    return [replies.cancel_ask_reply(turn, line)]


async def cancel_confirmed(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Cancel; a second tap finds it cancelled already and says so the same way."""
    booking_id = booking_of(args)
    async with gone_is_stale(turn.write()) as session:
        cancelled = await member_bookings.cancel_listed(
            session, turn.member_id, booking_id, turn.now, rules(turn), actor=turn.actor
        )
    return [replies.cancelled_reply(turn, cancelled)]


async def start_move(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Reschedule: a new walk for the same store and service, starting at the day."""
    booking_id = booking_of(args)
    async with gone_is_stale(turn.read()) as session:
        move = await member_bookings.start_move(
            session, turn.member_id, booking_id, turn.now, rules(turn)
        )
    data = {
        "tok": secrets.token_hex(4),
        "mode": MOVE,
        "bid": booking_id,
        "store": move.booking.store_id,
        "svc": move.booking.service_code,
        "old": move.booking.starts_at.isoformat(),
    }
    await turn.save_state(NAME, data)
    return [replies.days_reply(turn, data, move.days.choice, move.days.days)]
