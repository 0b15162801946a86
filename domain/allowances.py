"""What a member's own actions allow us to send them unasked, and the messages waiting for it.

WeChat lets an Official Account send a member customer-service messages (free text, like a
chat reply) only after the member acts, and only a few: the quotas below, which WeChat
changes now and then and which therefore live here and nowhere else. Every interaction the
webhook receives is recorded as a row (`grant`) with its window and how many messages it
allows; a send takes one (`take`, a conditional update, so two processes cannot both spend
the last one) and gives it back when the send did not go (`give_back`).

A message that finds no allowance and cannot go another way (a template message for a
service reminder, `domain.cards`) waits for the member: the dispatcher holds it, with
`WAITING_FOR_MEMBER` as its reason, until `held_until`. The member's next interaction wakes
what waits (`grant` makes it due at once); an unsubscribe wakes it too (`left`), so the
dispatcher finds the chat gone at once and counts the message unreachable, or sends it on the
member's other chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatAllowance, ChatBinding, OutboxMessage, OutboxStatus
from domain.outgoing import WAITING_FOR_MEMBER

MESSAGE, CLICK, SUBSCRIBE, SCAN = "message", "click", "subscribe", "scan"
KEEP = timedelta(days=1)  # expired rows are kept this long, for anyone looking into a complaint


@dataclass(frozen=True)
class Quota:
    """After an interaction, `messages` may be sent within `window`."""

    window: timedelta
    messages: int


QUOTAS: dict[str, dict[str, Quota]] = {
    "wechat": {
        MESSAGE: Quota(timedelta(hours=48), 5),
        CLICK: Quota(timedelta(minutes=1), 3),
        SUBSCRIBE: Quota(timedelta(minutes=1), 3),
        SCAN: Quota(timedelta(minutes=1), 3),
    }
}


async def grant(
    session: AsyncSession, channel: str, address: str, kind: str, now: datetime
) -> bool:
    """Record an interaction on `channel` by the chat at `address`, and wake the messages
    waiting for that member. Returns whether the interaction allows anything."""
    quota = QUOTAS.get(channel, {}).get(kind)
    if quota is None:
        return False
    session.add(
        ChatAllowance(
            channel=channel,
            address=address,
            kind=kind,
            granted_at=now,
            expires_at=now + quota.window,
            quota=quota.messages,
        )
    )
    await session.flush()
    await wake(session, channel, address, now)
    return True


async def take(session: AsyncSession, channel: str, address: str, now: datetime) -> int | None:
    """Spend one message of the allowance the chat has now, the one ending first; returns
    its row's id (for `give_back`), or None when nothing is left."""
    a = ChatAllowance
    candidates = await session.scalars(
        select(a.id)
        .where(
            a.channel == channel,
            a.address == address,
            a.expires_at > now,
            a.used < a.quota,
        )
        .order_by(a.expires_at, a.id)
    )
    for allowance_id in list(candidates):
        spent = await session.execute(
            update(a).where(a.id == allowance_id, a.used < a.quota).values(used=a.used + 1)
        )
        if spent.rowcount:
            return allowance_id
    return None


async def give_back(session: AsyncSession, allowance_id: int) -> None:
    """Return a message taken for a send that did not go."""
    a = ChatAllowance
    await session.execute(update(a).where(a.id == allowance_id, a.used > 0).values(used=a.used - 1))


async def wake(session: AsyncSession, channel: str, address: str, now: datetime) -> int:
    """Make due now the messages waiting for the member this chat speaks for."""
    m = OutboxMessage
    member = (
        select(ChatBinding.member_id)
        .where(
            ChatBinding.channel == channel,
            ChatBinding.address == address,
            ChatBinding.active.is_(True),
        )
        .scalar_subquery()
    )
    woken = await session.execute(
        update(m)
        .where(
            m.member_id == member,
            m.status == OutboxStatus.PENDING,
            m.last_error == WAITING_FOR_MEMBER,
        )
        .values(not_before=now)
    )
    return int(woken.rowcount or 0)


async def left(session: AsyncSession, channel: str, address: str, now: datetime) -> None:
    """The member unsubscribed: nothing more is allowed, and what waited for them is decided
    again at once (before the chat is unbound, since the wake finds the member by it)."""
    await wake(session, channel, address, now)
    a = ChatAllowance
    await session.execute(delete(a).where(a.channel == channel, a.address == address))


async def prune(session: AsyncSession, now: datetime) -> int:
    """Forget allowances that ended more than `KEEP` ago."""
    removed = await session.execute(
        delete(ChatAllowance).where(ChatAllowance.expires_at < now - KEEP)
    )
    return int(removed.rowcount or 0)


__all__ = [
    "CLICK",
    "MESSAGE",
    "QUOTAS",
    "SCAN",
    "SUBSCRIBE",
    "Quota",
    "give_back",
    "grant",
    "left",
    "prune",
    "take",
    "wake",
]
