"""Chats that speak for staff accounts: invite codes, binding, the member/staff switch.

A staff account reaches the staff menu from a chat bound to it the way a member's chat is
bound: staff get a one-time code (`create_invite`, printed by `memberbot staff add` and
`memberbot staff invite`) and send it from their chat (`/start CODE`, the Telegram deep link,
or the code typed). Staff codes are 10 characters (50 bits) where a member's are 8, so the
length says which kind a typed code is; they expire, work once, only their hash is stored,
and a new code invalidates the account's unused ones. Wrong guesses count against the same
per-chat limit as members' codes (`binding.check_attempts`).

A chat may speak for a staff account and a member at once (a shop assistant who owns a car):
`as_member` says which it is acting as; `/staff` and `/member` switch. A chat bound only to a
staff account always acts as staff.

Deactivating an account unbinds its chats at once (`unbind_all`, called by
`staff.deactivate`), and a chat whose account is inactive is no staff chat (`staff_for`
checks both), so a deactivated person is refused even between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Staff, StaffChat, StaffInvite
from db.session import upsert_insert
from domain import audit, binding
from domain.codes import clean, random_code
from domain.errors import InvalidInput, NotFound

CODE_LENGTH = 10
DEFAULT_INVITE_TTL_MINUTES = 60 * 24


@dataclass(frozen=True)
class StaffChatView:
    """The staff account a chat speaks for, and whether it is acting as a member now."""

    staff: Staff
    as_member: bool


def normalize_code(text: str) -> str | None:
    """The staff code in what someone typed, or None when it cannot be one."""
    return clean(text, CODE_LENGTH)


async def create_invite(
    session: AsyncSession,
    staff_id: int,
    now: datetime,
    *,
    ttl_minutes: int = DEFAULT_INVITE_TTL_MINUTES,
    actor: str,
) -> str:
    """A fresh one-time code for the account; its earlier unused codes stop working. Returned
    once, to be handed over; only its hash is kept."""
    if ttl_minutes <= 0:
        raise InvalidInput("invite lifetime must be positive", ttl_minutes=ttl_minutes)
    person = await _account(session, staff_id)
    if not person.active:
        raise InvalidInput("this staff account is deactivated", staff_id=staff_id)
    await session.execute(
        update(StaffInvite)
        .where(
            StaffInvite.staff_id == staff_id,
            StaffInvite.used_at.is_(None),
            StaffInvite.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    code = random_code(CODE_LENGTH)
    invite = StaffInvite(
        code_hash=binding.hash_code(code),
        staff_id=staff_id,
        created_at=now,
        expires_at=now + timedelta(minutes=ttl_minutes),
        created_by=actor,
    )
    session.add(invite)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="staff.invite",
        entity="staff",
        entity_id=staff_id,
        detail={"invite_id": invite.id, "expires_at": invite.expires_at.isoformat()},
    )
    return code


async def redeem_invite(
    session: AsyncSession, channel: str, address: str, code: str, now: datetime
) -> Staff:
    """Bind the chat to the account the code was made for; the code is spent. Refusals count
    against the chat's limit and are committed before raising (`binding.refuse_code`): call
    this in a unit of work of its own. Of two chats redeeming one code, one has it."""
    attempts = await binding.check_attempts(session, channel, address, now)
    normalized = normalize_code(code)
    invite = (
        await session.scalar(
            select(StaffInvite).where(StaffInvite.code_hash == binding.hash_code(normalized))
        )
        if normalized
        else None
    )
    if invite is None:
        await binding.refuse_code(session, channel, address, now, attempts, "unknown")
    if invite.used_at is not None:
        await binding.refuse_code(session, channel, address, now, attempts, "used")
    if invite.expires_at <= now:
        await binding.refuse_code(session, channel, address, now, attempts, "expired")
    person = await session.get(Staff, invite.staff_id)
    if person is None or not person.active:
        await binding.refuse_code(session, channel, address, now, attempts, "unknown")
    claimed = await session.execute(
        update(StaffInvite)
        .where(StaffInvite.id == invite.id, StaffInvite.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        await binding.refuse_code(session, channel, address, now, attempts, "used")
    values = {"staff_id": invite.staff_id, "active": True, "as_member": False, "bound_at": now}
    await session.execute(
        upsert_insert(session, StaffChat.__table__)
        .values(channel=channel, address=address, **values)
        .on_conflict_do_update(index_elements=["channel", "address"], set_=values)
    )
    await audit.record(
        session,
        actor=f"chat:{channel}",
        action="staff.chat_bind",
        entity="staff",
        entity_id=invite.staff_id,
        detail={"channel": channel, "invite_id": invite.id},
    )
    return person


async def staff_for(session: AsyncSession, channel: str, address: str) -> StaffChatView | None:
    """The active account this chat speaks for (None: no staff chat), and its mode."""
    row = (
        await session.execute(
            select(Staff, StaffChat.as_member)
            .join(StaffChat, StaffChat.staff_id == Staff.id)
            .where(
                StaffChat.channel == channel,
                StaffChat.address == address,
                StaffChat.active.is_(True),
                Staff.active.is_(True),
            )
        )
    ).one_or_none()
    return None if row is None else StaffChatView(staff=row[0], as_member=bool(row[1]))


async def act_as_member(session: AsyncSession, channel: str, address: str, as_member: bool) -> bool:
    """Switch the chat between the staff menu and the member's own; whether it is a staff
    chat at all."""
    switched = await session.execute(
        update(StaffChat)
        .where(
            StaffChat.channel == channel,
            StaffChat.address == address,
            StaffChat.active.is_(True),
        )
        .values(as_member=as_member)
        .execution_options(synchronize_session=False)
    )
    return bool(switched.rowcount)


async def unbind_all(session: AsyncSession, staff_id: int, *, actor: str) -> int:
    """End every chat of the account (deactivation): no staff action from any of them after
    this commits. Returns how many were ended."""
    ended = await session.execute(
        update(StaffChat)
        .where(StaffChat.staff_id == staff_id, StaffChat.active.is_(True))
        .values(active=False)
        .execution_options(synchronize_session=False)
    )
    if ended.rowcount:
        await audit.record(
            session,
            actor=actor,
            action="staff.chat_unbind",
            entity="staff",
            entity_id=staff_id,
            detail={"chats": ended.rowcount},
        )
    return int(ended.rowcount or 0)


async def chats_of(session: AsyncSession, staff_ids: list[int], channel: str) -> list[str]:
    """The addresses on `channel` of the accounts' active chats, for staff alerts."""
    if not staff_ids:
        return []
    rows = await session.scalars(
        select(StaffChat.address)
        .where(
            StaffChat.staff_id.in_(staff_ids),
            StaffChat.channel == channel,
            StaffChat.active.is_(True),
        )
        .order_by(StaffChat.id)
    )
    return list(rows.all())


async def refused(
    session: AsyncSession,
    channel: str,
    *,
    flow: str,
    member_id: int | None,
    staff_id: int | None,
) -> None:
    """Audit a staff feature asked for from a chat that is no staff chat (or is acting as its
    member): who asked, naming ids only."""
    await audit.record(
        session,
        actor=f"chat:{channel}",
        action="staff.refused",
        entity="staff" if staff_id is not None else "member",
        entity_id=staff_id if staff_id is not None else member_id,
        detail={"flow": flow, "channel": channel},
    )


async def _account(session: AsyncSession, staff_id: int) -> Staff:
    person = await session.get(Staff, staff_id)
    if person is None:
        raise NotFound("no such staff account", staff_id=staff_id)
    return person


__all__ = [
    "CODE_LENGTH",
    "StaffChatView",
    "act_as_member",
    "chats_of",
    "create_invite",
    "normalize_code",
    "redeem_invite",
    "refused",
    "staff_for",
    "unbind_all",
]
