"""Messages a chat service may deliver more than once, answered once.

WeChat waits five seconds for an answer and then delivers the same message again, up to three
more times, to whichever of our processes its request reaches. Each delivery is claimed here
under a key unique per channel (`msg:<MsgId>`, or for an event, which has no MsgId, a hash of
the user, the event and its CreateTime; `event_key`):

* the first `claim` wins (a unique key: one winner across processes, on SQLite and
  PostgreSQL alike) and its turn runs; every later delivery of the key runs nothing;
* `settle` stores the reply the turn gave, as `answered` (it went back in the HTTP answer, and
  goes back again to any later delivery, so every delivery reads the same reply) or `owed`
  (the turn overran the channel's reply budget: the channel answered without it, and the
  reply waits for the channel's sender to deliver it as a message of its own);
* `release` forgets a claim whose turn failed, so the service's next delivery runs it again;
* `outcome` is what a later delivery reads; `prune` deletes what no delivery can still ask;
* an owed reply is delivered once: `due_owed` lists those due, `take` (a conditional update,
  `owed` → `sending`) picks the one process that sends it, `delivered` records the outcome
  (`delivered`, `owed` again with a `due_at`, or `undelivered`), and `give_up` ends one too
  old to send. A process that dies mid-send leaves `sending`: never sent twice.

The key names no member and the reply is what the chat already showed; the address is kept
only so an owed reply can be delivered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import InboundMessage, InboundStatus
from db.session import upsert_insert

PENDING, ANSWERED, OWED = InboundStatus.PENDING, InboundStatus.ANSWERED, InboundStatus.OWED
# Longer than any service retries, and than WeChat's 48 hours for a customer-service message.
KEEP = timedelta(days=3)


def message_key(message_id: int | str) -> str:
    """The key of a message the service numbered (WeChat's MsgId)."""
    return f"msg:{message_id}"


def event_key(address: str, event: str, created: int | str, detail: str = "") -> str:
    """The key of an event, which has no id of its own: the same event from the same user at
    the same second is the same delivery. Hashed, so the key names nobody."""
    digest = hashlib.sha256(f"{address}\x1f{event}\x1f{created}\x1f{detail}".encode())
    return f"evt:{digest.hexdigest()[:48]}"


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed delivery: still running, or settled with its reply."""

    status: str
    reply: str | None


async def claim(session: AsyncSession, channel: str, key: str, address: str, now: datetime) -> bool:
    """Whether this delivery is the first of its key (and so the one to run the turn). Commit
    before running the turn, so other processes see the claim."""
    claimed = await session.execute(
        upsert_insert(session, InboundMessage.__table__)
        .values(channel=channel, key=key, address=address, status=PENDING, created_at=now)
        .on_conflict_do_nothing(index_elements=["channel", "key"])
        .returning(InboundMessage.__table__.c.id)
    )
    return claimed.first() is not None


async def outcome(session: AsyncSession, channel: str, key: str) -> Outcome | None:
    row = (
        await session.execute(
            select(InboundMessage.status, InboundMessage.reply).where(
                InboundMessage.channel == channel, InboundMessage.key == key
            )
        )
    ).one_or_none()
    return None if row is None else Outcome(row.status, row.reply)


async def settle(
    session: AsyncSession, channel: str, key: str, reply: str, now: datetime, *, owed: bool
) -> None:
    """Store the turn's reply: `answered`, or `owed` when the channel had to answer without
    it. Only a claim still pending is settled."""
    await session.execute(
        update(InboundMessage)
        .where(
            InboundMessage.channel == channel,
            InboundMessage.key == key,
            InboundMessage.status == PENDING,
        )
        .values(status=OWED if owed else ANSWERED, reply=reply, settled_at=now)
        .execution_options(synchronize_session=False)
    )


async def release(session: AsyncSession, channel: str, key: str) -> None:
    """Forget a claim whose turn failed: the service's next delivery runs the turn again."""
    await session.execute(
        delete(InboundMessage).where(
            InboundMessage.channel == channel,
            InboundMessage.key == key,
            InboundMessage.status == PENDING,
        )
    )


async def prune(session: AsyncSession, now: datetime) -> int:
    """Delete the deliveries older than `KEEP`; returns how many."""
    result = await session.execute(
        delete(InboundMessage)
        .where(InboundMessage.created_at < now - KEEP)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# -- owed replies, delivered by the channel's sender ------------------------------------------

SENDING, DELIVERED, UNDELIVERED = (
    InboundStatus.SENDING,
    InboundStatus.DELIVERED,
    InboundStatus.UNDELIVERED,
)


@dataclass(frozen=True)
class Owed:
    id: int
    address: str
    reply: str
    created_at: datetime


async def due_owed(session: AsyncSession, channel: str, now: datetime, limit: int) -> list[Owed]:
    """Owed replies whose time has come (never tried, or their retry is due), oldest first."""
    rows = await session.execute(
        select(
            InboundMessage.id,
            InboundMessage.address,
            InboundMessage.reply,
            InboundMessage.created_at,
        )
        .where(
            InboundMessage.channel == channel,
            InboundMessage.status == OWED,
            or_(InboundMessage.due_at.is_(None), InboundMessage.due_at <= now),
        )
        .order_by(InboundMessage.created_at, InboundMessage.id)
        .limit(limit)
    )
    return [Owed(row.id, row.address, row.reply or "", row.created_at) for row in rows]


async def take(session: AsyncSession, owed_id: int, now: datetime) -> bool:
    """Whether this deliverer is the one to send the owed reply (a conditional update: of two
    processes, one wins). Commit before sending. A process that dies while sending leaves the
    row `sending`: the reply is not sent twice, and `prune` removes it in time."""
    return await _leave_owed(session, owed_id, SENDING, now)


async def delivered(
    session: AsyncSession, owed_id: int, now: datetime, *, sent: bool, retry_at: datetime | None
) -> None:
    """After the send: delivered, owed again until `retry_at`, or (neither) undelivered."""
    status = DELIVERED if sent else (OWED if retry_at is not None else UNDELIVERED)
    await session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == owed_id, InboundMessage.status == SENDING)
        .values(status=status, settled_at=now, due_at=None if sent else retry_at)
        .execution_options(synchronize_session=False)
    )


async def give_up(session: AsyncSession, owed_id: int, now: datetime) -> bool:
    """Mark an owed reply undelivered without sending it (its window has passed)."""
    return await _leave_owed(session, owed_id, UNDELIVERED, now)


async def _leave_owed(session: AsyncSession, owed_id: int, status: str, now: datetime) -> bool:
    """Move a row that is still owed to `status`; whether this caller moved it."""
    result = await session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == owed_id, InboundMessage.status == OWED)
        .values(status=status, settled_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
