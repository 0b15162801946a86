"""`memberbot chat`: a member's conversation in the terminal, over the same core as Telegram.

The operator picks the member (by phone, plate or member number, or the demo's sample member);
the console session is bound to that member directly, which only the console channel allows and
the audit log records.
"""

from __future__ import annotations

from bot.channels.console import ConsoleSession
from db.models import Member
from db.types import utcnow
from domain import binding, members
from memberbot.runtime import Runtime

# What the demo plays when there is no terminal to talk in: the things members come for.
TOUR = (
    "我的积分",
    "等级",
    "优惠券",
    "预约",  # then: the first store, the first service, the second day, its first time, confirm
    "1",
    "1",
    "2",
    "1",
    "1",
    "我的预约",
)


async def find_member(rt: Runtime, query: str) -> Member:
    async with rt.db.read() as session:
        return await members.find(session, query, rt.settings.default_region)


async def first_member(rt: Runtime, preferred_ref: str | None = None) -> Member | None:
    """The member a demo session speaks for: the showcase member, else the first one."""
    async with rt.db.read() as session:
        return await members.sample(session, preferred_ref)


async def open_session(rt: Runtime, member: Member, *, actor: str = "cli") -> ConsoleSession:
    """A console session bound to the member; the same member keeps the same session (and any
    half-finished flow) from one run to the next."""
    address = f"member-{member.id}"
    async with rt.db.transaction() as session:
        await binding.bind_console(session, address, int(member.id or 0), utcnow(), actor=actor)
    return ConsoleSession(rt.chat(), address, phone=member.phone or "")
