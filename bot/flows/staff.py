"""The staff side of the chat: a chat bound to a staff account (`domain.staffchats`) gets the
staff menu, today's bookings at its store and the complaints waiting for it. `/staff` and
`/member` switch a chat that speaks for a member too. Every list comes from `domain.staffdesk`,
which authorises it by role and store again; this module only words it.

The switch and binding intents are public (a member's chat asks `/staff` and learns it is no
staff chat); the lists are staff flows (`Flow.staff`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from bot.conversation import Flow, Turn
from db.models import Staff
from domain import staffchats, staffdesk
from domain.locales import localized
from domain.outgoing import Reply

NAME = "staff"


async def staff_menu(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """`/staff`: back to the staff menu (a chat of both), or why there is none."""
    if turn.staff is None:
        return [turn.say("staff_not_staff", turn.menu())]
    if turn.acting_as_member:
        async with turn.write() as session:
            await staffchats.act_as_member(session, turn.event.channel, turn.event.address, False)
        turn.acting_as_member = False
    return [turn.say("staff_menu", turn.menu(), staff=_who(turn, turn.staff))]


async def member_mode(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """`/member`: the member's own menu in a chat that speaks for a staff account too."""
    if turn.staff is None or turn.member is None:
        return [turn.say("staff_no_member", turn.menu())]
    async with turn.write() as session:
        await staffchats.act_as_member(session, turn.event.channel, turn.event.address, True)
    turn.acting_as_member = True
    return [turn.say("staff_member_mode", turn.menu())]


async def bookings(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    person = _person(turn)
    async with turn.read() as session:
        rows = await staffdesk.todays_bookings(session, person, turn.today())
    lines = [asdict(row) for row in rows]
    return [turn.say("staff_bookings", turn.menu(), bookings=lines, day=turn.today())]


async def complaints(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    person = _person(turn)
    async with turn.read() as session:
        rows = await staffdesk.waiting_complaints(session, person)
    lines = [asdict(row) for row in rows]
    return [turn.say("staff_complaints", turn.menu(), complaints=lines)]


def _person(turn: Turn) -> Staff:
    assert turn.staff is not None  # a staff flow runs only in a staff chat
    return turn.staff


def _who(turn: Turn, person: Staff) -> dict[str, str]:
    role = localized(turn.locale, "店长", "manager") if person.role == "manager" else ""
    return {
        "name": person.name,
        "role": role or localized(turn.locale, "店员", "staff"),
        "chain_wide": "yes" if person.store_id is None else "",
    }


FLOW = Flow(
    name=NAME,
    intents={"staff": staff_menu, "member_mode": member_mode},
    public=True,
)
DESK = Flow(
    name="staff_desk",
    intents={"staff_bookings": bookings, "staff_complaints": complaints},
    staff=True,
)
