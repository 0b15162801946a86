"""Booking bay time from the chat, and looking after the bookings a member already has.

`book` walks store → service → day → time → car → confirm, one inline keyboard per step
(`walk`). `bookings` lists what is coming up, each booking with a reschedule and a cancel
button; rescheduling walks day → time → confirm for the same store and service (`manage`
starts it, `walk` finishes it). Every handler checks its button (`checks`), asks
`domain.member_bookings` (or `domain.bookings`) one question and renders the answer
(`replies`).

Everything chosen so far is the chat's saved flow state (`booking`), never kept in memory, so a
restart or another worker carries on from the next tap. Each walk gets a random token; every
button of the walk carries it plus what it chooses, and a button whose token is not the saved
state's (an old keyboard, a lapsed walk, a forged callback) is `Stale`. The choice itself is
re-checked against what the domain offers now: a day that passed or a time that filled gets a
fresh keyboard, not a booking. Confirming books under an idempotency key made of the token and
the chosen time, so a double tap books once; the domain still has the last word on capacity.
"""

from __future__ import annotations

from bot.conversation import Flow
from bot.flows.booking.checks import NAME
from bot.flows.booking.manage import ask_cancel, cancel_confirmed, my_bookings, start_move
from bot.flows.booking.walk import (
    book,
    confirm,
    pick_car,
    pick_day,
    pick_service,
    pick_slot,
    pick_store,
    show_days,
)

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

__all__ = ["FLOW", "NAME"]
