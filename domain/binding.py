"""Binding a chat to a member, and the chat's half-finished conversation.

A chat (a Telegram chat id, a WeChat openid, the console) speaks for at most one member; a member
may have several chats. A chat gets bound in one of two ways:

* an invite code staff create for the member (`create_invite`), redeemed from the chat
  (`redeem_invite`). Codes are 8 Crockford base-32 characters (40 random bits), expire, work
  once, and only their SHA-256 is stored. Creating a code invalidates the member's earlier unused
  ones (they expire at once), so only the last code staff handed out works and a code left on an
  old slip of paper cannot bind a stranger's chat later.
* the member's own contact shared from the chat (`bind_by_contact`), trusted only when the
  contact is the sender's (the messenger vouches for that phone) and it names exactly one member.

Guessing codes is rate-limited per chat: after `MAX_FAILURES` refused codes within a fixed
`FAILURE_WINDOW` (which starts at the first failure), every attempt, even with a good code, is
refused with `TooManyAttempts` until the window ends. The counter is one row per chat (window
start and failures), so a guessing chat cannot grow the table. A refusal must outlive the
caller's rollback to limit anything, so a refused redemption commits its unit of work before
raising: call `redeem_invite` in a unit of work of its own.

Binding a chat that is already bound moves it to the new member. Whoever presents a valid code
or their own contact holds that member's proof right now; the usual cause is a car or a phone
that changed hands, and a shop wants the counter's fresh code to just work rather than a
separate "unbind first" step. The move is audited with the previous member's id.

Audit lines carry ids, the channel and counts; never codes, phones or chat addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, Row, Select, and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    BindAttempt,
    Channel,
    ChatBinding,
    ConversationState,
    InviteCode,
    Member,
    StaffChat,
)
from db.session import lock_member, upsert_insert
from domain import audit, members
from domain.codes import ALPHABET, clean, random_code
from domain.errors import InvalidInput, InviteInvalid, NotFound, TooManyAttempts
from domain.identity import normalize_phone

TELEGRAM, WECHAT, CONSOLE = Channel.TELEGRAM, Channel.WECHAT, Channel.CONSOLE
CHANNELS = (TELEGRAM, WECHAT, CONSOLE)
VIA_INVITE, VIA_CONTACT, VIA_CONSOLE = "invite", "contact", "console"

# Crockford base 32 (domain.codes): 32**8 = 2**40.
CODE_ALPHABET = ALPHABET
CODE_LENGTH = 8

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
DEFAULT_INVITE_TTL_MINUTES = 60 * 24
DEFAULT_STATE_TTL_MINUTES = 30


@dataclass(frozen=True)
class FlowState:
    """Where a chat is in a multi-step flow, and what it has chosen so far."""

    flow: str
    data: dict[str, Any]
    updated_at: datetime
    expires_at: datetime


def normalize_code(text: str) -> str | None:
    """The code as stored, from what a person typed: case, spaces, dashes and the letters that
    look like digits (O, I, L) forgiven. None when it cannot be a code at all."""
    return clean(text, CODE_LENGTH)


def hash_code(code: str) -> str:
    """What the database keeps instead of the code: a leaked table binds no chat."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def _check_chat(channel: str, address: str) -> None:
    if channel not in CHANNELS:
        raise InvalidInput("unknown channel", channel=channel)
    if not address or len(address) > 64:
        raise InvalidInput("chat address is empty or too long")


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise InvalidInput("time must be aware UTC")


async def create_invite(
    session: AsyncSession,
    member_id: int,
    now: datetime,
    *,
    ttl_minutes: int = DEFAULT_INVITE_TTL_MINUTES,
    actor: str,
) -> str:
    """A fresh one-time code for the member; their earlier unused codes stop working.

    The code is returned once, to be printed or sent; only its hash is kept.
    """
    _check_now(now)
    if ttl_minutes <= 0:
        raise InvalidInput("invite lifetime must be positive", ttl_minutes=ttl_minutes)
    await members.get(session, member_id)
    # Two staff creating codes for one member at once must still leave only one usable.
    await lock_member(session, member_id)
    invalidated = await session.execute(
        update(InviteCode)
        .where(
            InviteCode.member_id == member_id,
            InviteCode.used_at.is_(None),
            InviteCode.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    code, code_hash = await _unused_code(session)
    invite = InviteCode(
        code_hash=code_hash,
        member_id=member_id,
        created_at=now,
        expires_at=now + timedelta(minutes=ttl_minutes),
        created_by=actor,
    )
    session.add(invite)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="invite.create",
        entity="member",
        entity_id=member_id,
        detail={
            "invite_id": invite.id,
            "expires_at": invite.expires_at.isoformat(),
            "invalidated": invalidated.rowcount,
        },
    )
    return code


async def _unused_code(session: AsyncSession) -> tuple[str, str]:
    """A random code whose hash no stored invite has; a clash is a 1-in-2**40 event per code,
    but the unique hash would turn one into a failed unit of work."""
    for _ in range(5):
        code = random_code(CODE_LENGTH)
        code_hash = hash_code(code)
        taken = await session.scalar(select(InviteCode.id).where(InviteCode.code_hash == code_hash))
        if taken is None:
            return code, code_hash
    raise AssertionError("five random 40-bit codes all taken: the random source is broken")


@dataclass(frozen=True)
class Attempts:
    """A chat's failed code guesses in its current window (`check_attempts`)."""

    window_start: datetime
    failures: int


async def check_attempts(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> Attempts:
    """Refuse a chat that has used up its failures in the current window (every code a chat
    types, a member's invite or a staff account's, counts against the same limit).

    The chat's counter row is created if missing and locked (PostgreSQL; SQLite's write
    transaction already serializes), so two guesses racing from one chat cannot both slip
    under the limit.
    """
    await session.execute(
        upsert_insert(session, BindAttempt.__table__)
        .values(channel=channel, address=address, window_start=now, failures=0)
        .on_conflict_do_nothing(index_elements=["channel", "address"])
    )
    row = (
        await session.execute(
            select(BindAttempt.window_start, BindAttempt.failures)
            .where(BindAttempt.channel == channel, BindAttempt.address == address)
            .with_for_update()
        )
    ).one()
    attempts = Attempts(window_start=row.window_start, failures=row.failures)
    window_end = attempts.window_start + FAILURE_WINDOW
    if now < window_end and attempts.failures >= MAX_FAILURES:
        raise TooManyAttempts("too many wrong codes from this chat", retry_at=window_end)
    return attempts


async def refuse_code(
    session: AsyncSession,
    channel: str,
    address: str,
    now: datetime,
    attempts: Attempts,
    reason: str,
) -> NoReturn:
    """Count the failure, commit it so the caller's rollback keeps it, and say why."""
    if now >= attempts.window_start + FAILURE_WINDOW:
        values: dict[str, Any] = {"window_start": now, "failures": 1}
    else:
        values = {"failures": attempts.failures + 1}
    await session.execute(
        update(BindAttempt)
        .where(BindAttempt.channel == channel, BindAttempt.address == address)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    raise InviteInvalid(f"invite code refused: {reason}", reason=reason)


async def redeem_invite(
    session: AsyncSession, channel: str, address: str, code: str, now: datetime
) -> ChatBinding:
    """Bind the chat to the member the code was made for; the code is spent.

    Refusals (`InviteInvalid` unknown/expired/used) count against the chat's limit and are
    committed before raising; past the limit every attempt is `TooManyAttempts`. Two chats
    redeeming one code at once: the conditional update lets exactly one of them have it.
    """
    _check_chat(channel, address)
    _check_now(now)
    attempts = await check_attempts(session, channel, address, now)
    normalized = normalize_code(code)
    invite = (
        await session.scalar(
            select(InviteCode).where(InviteCode.code_hash == hash_code(normalized))
        )
        if normalized
        else None
    )
    if invite is None:
        await refuse_code(session, channel, address, now, attempts, "unknown")
    if invite.used_at is not None:
        await refuse_code(session, channel, address, now, attempts, "used")
    if invite.expires_at <= now:
        await refuse_code(session, channel, address, now, attempts, "expired")
    member = await session.get(Member, invite.member_id)
    if member is None or member.erased_at is not None:
        await refuse_code(session, channel, address, now, attempts, "unknown")
    claimed = await session.execute(
        update(InviteCode)
        .where(
            InviteCode.id == invite.id,
            InviteCode.used_at.is_(None),
            InviteCode.expires_at > now,
        )
        .values(used_at=now, used_by_address=f"{channel}:{address}")
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        await refuse_code(session, channel, address, now, attempts, "used")
    return await _bind(
        session, channel, address, invite.member_id, VIA_INVITE, now, invite_id=invite.id
    )


async def bind_by_contact(
    session: AsyncSession,
    channel: str,
    address: str,
    *,
    contact_user_id: int | None,
    sender_user_id: int | None,
    phone: str,
    region: str,
    now: datetime,
) -> ChatBinding:
    """Bind the chat to the one live member whose phone the sender shared as their own.

    A contact of someone else proves nothing (`InviteInvalid` not_own_contact); a phone no
    member has is `NotFound`; a phone several members share (a family, a fleet) cannot say
    which of them this is (`InviteInvalid` phone_shared: ask staff for an invite code).
    """
    _check_chat(channel, address)
    _check_now(now)
    if contact_user_id is None or sender_user_id is None or contact_user_id != sender_user_id:
        raise InviteInvalid("only your own contact can bind this chat", reason="not_own_contact")
    e164 = contact_phone(phone, region)
    member_ids = list(
        (
            await session.scalars(
                select(Member.id)
                .where(Member.phone == e164, Member.erased_at.is_(None))
                .order_by(Member.id)
                .limit(2)
            )
        ).all()
    )
    if not member_ids:
        raise NotFound("no member has this phone", query_kind="phone")
    if len(member_ids) > 1:
        raise InviteInvalid(
            "several members share this phone: ask staff for an invite code",
            reason="phone_shared",
        )
    return await _bind(session, channel, address, member_ids[0], VIA_CONTACT, now)


def contact_phone(phone: str, region: str) -> str:
    """E.164 of a shared contact's phone. Messengers send it international, often without the
    '+' (8613812345678, 447911123456): read it in the shop's region first, then as
    international."""
    try:
        return normalize_phone(phone, region)
    except InvalidInput:
        digits = (phone or "").strip()
        if digits.isdigit():
            return normalize_phone("+" + digits, region)
        raise


async def _bind(
    session: AsyncSession,
    channel: str,
    address: str,
    member_id: int,
    via: str,
    now: datetime,
    *,
    invite_id: int | None = None,
) -> ChatBinding:
    """Point the chat at the member, creating or moving its one binding row.

    An upsert, so two first bindings of one chat racing cannot fail on the unique pair; the
    later one wins, as a later move would.
    """
    previous = (
        await session.execute(
            select(ChatBinding.member_id, ChatBinding.active).where(
                ChatBinding.channel == channel, ChatBinding.address == address
            )
        )
    ).one_or_none()
    values = {"member_id": member_id, "bound_at": now, "via": via, "active": True}
    await session.execute(
        upsert_insert(session, ChatBinding.__table__)
        .values(channel=channel, address=address, **values)
        .on_conflict_do_update(index_elements=["channel", "address"], set_=values)
    )
    binding = await _binding_row(session, channel, address)
    assert binding is not None
    detail: dict[str, Any] = {"channel": channel, "binding_id": binding.id, "via": via}
    if invite_id is not None:
        detail["invite_id"] = invite_id
    if previous is not None and previous.active and previous.member_id != member_id:
        detail["moved_from_member_id"] = previous.member_id
    await audit.record(
        session,
        actor=f"chat:{channel}",
        action="chat.bind",
        entity="member",
        entity_id=member_id,
        detail=detail,
    )
    await session.flush()
    return binding


async def _binding_row(session: AsyncSession, channel: str, address: str) -> ChatBinding | None:
    return await session.scalar(
        select(ChatBinding)
        .where(ChatBinding.channel == channel, ChatBinding.address == address)
        .execution_options(populate_existing=True)
    )


async def member_for(session: AsyncSession, channel: str, address: str) -> Member | None:
    """The live member this chat speaks for; None means it may only learn how to bind."""
    return await session.scalar(
        select(Member)
        .join(ChatBinding, ChatBinding.member_id == Member.id)
        .where(*_speaks_for(channel, address))
    )


def _speaks_for(channel: Any, address: Any) -> list[ColumnElement[bool]]:
    """SQL: the chat's binding is active and its member not erased."""
    return [
        ChatBinding.channel == channel,
        ChatBinding.address == address,
        ChatBinding.active.is_(True),
        Member.erased_at.is_(None),
    ]


def _live_state(row: Row[Any] | None, now: datetime) -> FlowState | None:
    """A flow state row as the chat sees it: gone once it has lapsed."""
    if row is None or row.flow is None or row.expires_at <= now:
        return None
    return FlowState(
        flow=row.flow,
        data=dict(row.data or {}),
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


async def chat_context(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> tuple[Member | None, FlowState | None, bool]:
    """The member a chat speaks for, its unfinished flow, and whether it may speak for a staff
    account too (`domain.staffchats` says which, when it does), read together: every chat
    message starts here, so a member's chat costs one statement (an unbound one, two)."""
    row = (
        await session.execute(_chat_context_sql(), {"channel": channel, "address": address})
    ).one_or_none()
    if row is None:
        return None, await load_state(session, channel, address, now), True
    return row.Member, _live_state(row, now), row.staff_chat is not None


@cache
def _chat_context_sql() -> Select[Any]:
    """Built once, with bind parameters: on the chat's hottest path, composing the statement
    cost more than running it."""
    channel, address = bindparam("channel"), bindparam("address")
    return (
        select(
            Member,
            ConversationState.flow,
            ConversationState.data,
            ConversationState.updated_at,
            ConversationState.expires_at,
            StaffChat.id.label("staff_chat"),
        )
        .select_from(ChatBinding)
        .join(Member, Member.id == ChatBinding.member_id)
        .outerjoin(
            ConversationState,
            and_(
                ConversationState.channel == ChatBinding.channel,
                ConversationState.address == ChatBinding.address,
            ),
        )
        .outerjoin(
            StaffChat,
            and_(
                StaffChat.channel == ChatBinding.channel,
                StaffChat.address == ChatBinding.address,
                StaffChat.active.is_(True),
            ),
        )
        .where(*_speaks_for(channel, address))
    )


async def unbind(
    session: AsyncSession, channel: str, address: str, *, actor: str | None = None
) -> bool:
    """Stop the chat speaking for its member; the row stays, inactive, as history. Returns
    whether there was an active binding to end."""
    binding = await _binding_row(session, channel, address)
    if binding is None or not binding.active:
        return False
    binding.active = False
    session.add(binding)
    await audit.record(
        session,
        actor=actor or f"chat:{channel}",
        action="chat.unbind",
        entity="member",
        entity_id=binding.member_id,
        detail={"channel": channel, "binding_id": binding.id},
    )
    await session.flush()
    return True


async def addresses_of(session: AsyncSession, member_id: int) -> list[ChatBinding]:
    """Every chat a message to this member may go to, oldest binding first; none once the
    member is erased."""
    return (await chats_of(session, [member_id])).get(member_id, [])


async def chats_of(
    session: AsyncSession, member_ids: Iterable[int]
) -> dict[int, list[ChatBinding]]:
    """`addresses_of` for many members in one query (the dispatcher's batch): each member's
    active chats, oldest binding first, so every sender picks the same chat."""
    chats: dict[int, list[ChatBinding]] = {}
    result = await session.scalars(
        select(ChatBinding)
        .join(Member, Member.id == ChatBinding.member_id)
        .where(
            ChatBinding.member_id.in_(list(member_ids)),
            ChatBinding.active.is_(True),
            Member.erased_at.is_(None),
        )
        .order_by(ChatBinding.bound_at, ChatBinding.id)
    )
    for chat in result.all():
        chats.setdefault(chat.member_id, []).append(chat)
    return chats


async def load_state(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> FlowState | None:
    """The chat's unfinished flow, or None when there is none or it has lapsed (a member who
    walked away half an hour ago should start afresh, not land mid-booking)."""
    row = (
        await session.execute(
            select(
                ConversationState.flow,
                ConversationState.data,
                ConversationState.updated_at,
                ConversationState.expires_at,
            ).where(ConversationState.channel == channel, ConversationState.address == address)
        )
    ).one_or_none()
    return _live_state(row, now)


async def save_state(
    session: AsyncSession,
    channel: str,
    address: str,
    flow: str,
    data: dict[str, Any],
    now: datetime,
    ttl_minutes: int = DEFAULT_STATE_TTL_MINUTES,
) -> FlowState:
    """Replace the chat's flow state; every save gives it a fresh lifetime."""
    _check_chat(channel, address)
    _check_now(now)
    if ttl_minutes <= 0:
        raise InvalidInput("state lifetime must be positive", ttl_minutes=ttl_minutes)
    if not flow or len(flow) > 32:
        raise InvalidInput("flow name is empty or too long")
    values = {"flow": flow, "data": data, "updated_at": now}
    values["expires_at"] = now + timedelta(minutes=ttl_minutes)
    await session.execute(
        upsert_insert(session, ConversationState.__table__)
        .values(channel=channel, address=address, **values)
        .on_conflict_do_update(index_elements=["channel", "address"], set_=values)
    )
    return FlowState(flow=flow, data=dict(data), updated_at=now, expires_at=values["expires_at"])


async def clear_state(session: AsyncSession, channel: str, address: str) -> None:
    """Forget the chat's flow: it finished, or the member cancelled."""
    await session.execute(
        delete(ConversationState).where(
            ConversationState.channel == channel, ConversationState.address == address
        )
    )


async def bind_console(
    session: AsyncSession, address: str, member_id: int, now: datetime, *, actor: str
) -> ChatBinding:
    """Bind a console session to a member the operator picked (`memberbot chat --phone`): the
    operator is trusted staff at a terminal, so no invite is needed, but only the console
    channel can be bound this way and the audit log names who did it."""
    _check_chat(CONSOLE, address)
    _check_now(now)
    await members.get(session, member_id)
    bound = await _bind(session, CONSOLE, address, member_id, VIA_CONSOLE, now)
    await audit.record(
        session,
        actor=actor,
        action="chat.console",
        entity="member",
        entity_id=member_id,
        detail={"binding_id": bound.id},
    )
    return bound
