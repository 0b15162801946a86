"""The message outbox: every intent is committed here before anything is sent.

Rules may run again (a rerun, a second `serve` process, a crash half-way): the unique
idempotency key (rule, member, occurrence) makes a repeated intent a no-op, so a member never
gets the same message twice from the rules alone.

Dispatchers take due rows with `claim`, which hands each row to exactly one worker for a lease.
A worker that crashes simply lets its lease run out and the row returns to the pool; a worker
that comes back late after its row was re-claimed cannot overwrite the new owner's outcome,
because every `mark_*` applies only while the row is still claimed by the caller. The only
message that can ever go out twice is the one whose sender crashed between sending and
recording the result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MessageCategory, OutboxMessage, OutboxStatus
from db.session import upsert_insert
from db.types import utcnow
from domain.outgoing import WAITING_FOR_MEMBER

PENDING, CLAIMED, SENT = OutboxStatus.PENDING, OutboxStatus.CLAIMED, OutboxStatus.SENT
FAILED, SKIPPED = OutboxStatus.FAILED, OutboxStatus.SKIPPED
UNREACHABLE = OutboxStatus.UNREACHABLE
STATUSES = (PENDING, CLAIMED, SENT, FAILED, SKIPPED, UNREACHABLE)

TRANSACTIONAL, SERVICE = MessageCategory.TRANSACTIONAL, MessageCategory.SERVICE
MARKETING = MessageCategory.MARKETING
CATEGORIES = (TRANSACTIONAL, SERVICE, MARKETING)

# How a stored context's dates and times look, so that reading it back restores them.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)")

KEY_MAX = 160
ERROR_MAX = 255
# Keeps one INSERT well under SQLite's bound-parameter limit (about 15 columns per row).
_INSERT_CHUNK = 500


@dataclass(frozen=True)
class Intent:
    """A message a rule wants sent. `occurrence` names the event the message is about (the
    birthday year, a coupon's id, a booking's date) so the same event is only ever queued once."""

    member_id: int
    rule: str
    occurrence: str
    category: str
    template_key: str
    locale: str
    not_before: datetime
    context: dict[str, Any] = field(default_factory=dict)
    body: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown message category {self.category!r}")
        if self.not_before.tzinfo is None:
            raise ValueError("not_before must be an aware UTC datetime")
        if len(self.idempotency_key) > KEY_MAX:
            raise ValueError(f"idempotency key longer than {KEY_MAX} characters")

    @property
    def idempotency_key(self) -> str:
        return f"{self.rule}:member:{self.member_id}:{self.occurrence}"


@dataclass(frozen=True)
class OutboxReason:
    """Why messages of one rule on one channel ended skipped or unreachable, and how many."""

    status: str
    reason: str
    rule: str
    channel: str | None
    count: int


@dataclass(frozen=True)
class OutboxCount:
    """How many messages of one rule sit in one status on one channel (None: not yet chosen)."""

    status: str
    rule: str
    channel: str | None
    count: int


def _row(intent: Intent, created_at: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": intent.idempotency_key,
        "member_id": intent.member_id,
        "rule": intent.rule,
        "category": intent.category,
        "template_key": intent.template_key,
        "locale": intent.locale,
        "context": intent.context,
        "body": intent.body,
        "status": PENDING,
        "not_before": intent.not_before,
        "attempts": 0,
        "created_at": created_at,
    }


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def enqueue(session: AsyncSession, intents: list[Intent]) -> int:
    """Store the intents that are not already queued; returns how many were new.

    An intent whose key is already in the outbox, whatever its status, is ignored: a rerun of
    the rules adds nothing, and a message already sent is never queued again.
    """
    created_at = utcnow()
    unique = {intent.idempotency_key: intent for intent in intents}
    rows = [_row(intent, created_at) for intent in unique.values()]
    added = 0
    for chunk in _chunks(rows, _INSERT_CHUNK):
        statement = (
            upsert_insert(session, OutboxMessage)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(OutboxMessage.id)
        )
        added += len((await session.execute(statement)).all())
    return added


def _claimable(now: datetime) -> Any:
    """Due rows nobody holds: pending ones, and claimed ones whose worker's lease ran out."""
    m = OutboxMessage
    return and_(
        m.not_before <= now,
        or_(m.status == PENDING, and_(m.status == CLAIMED, m.claimed_until <= now)),
    )


async def claim(
    session: AsyncSession,
    worker: str,
    now: datetime,
    *,
    limit: int = 50,
    lease_seconds: int = 300,
) -> list[OutboxMessage]:
    """Hand up to `limit` due rows to `worker` until `now + lease_seconds`, oldest due first.

    On PostgreSQL the candidates are locked with `FOR UPDATE SKIP LOCKED`, so concurrent
    claimers each take different rows without waiting on one another. On SQLite the write
    transaction (`Database.transaction`, BEGIN IMMEDIATE) already admits one claimer at a time,
    so a plain select then update cannot hand a row out twice. Call inside a write transaction.
    """
    if limit <= 0:
        return []
    m = OutboxMessage
    candidates = select(m.id).where(_claimable(now)).order_by(m.not_before, m.id).limit(limit)
    if session.bind.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list((await session.scalars(candidates)).all())
    if not ids:
        return []
    await session.execute(
        update(m)
        .where(m.id.in_(ids))
        .values(
            status=CLAIMED,
            claimed_by=worker,
            claimed_until=now + timedelta(seconds=lease_seconds),
            attempts=m.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    claimed = await session.scalars(
        select(m)
        .where(m.id.in_(ids))
        .order_by(m.not_before, m.id)
        .execution_options(populate_existing=True)
    )
    return list(claimed.all())


async def _finish(session: AsyncSession, message_id: int, worker: str, **values: Any) -> bool:
    """Record an outcome only if `worker` still holds the claim; says whether it did."""
    m = OutboxMessage
    result = await session.execute(
        update(m)
        .where(m.id == message_id, m.status == CLAIMED, m.claimed_by == worker)
        .values(claimed_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def _clip(text: str) -> str:
    return text[:ERROR_MAX]


async def mark_sent(session: AsyncSession, message_id: int, worker: str, now: datetime) -> bool:
    """The channel accepted the message."""
    return await _finish(session, message_id, worker, status=SENT, sent_at=now)


async def mark_failed(
    session: AsyncSession,
    message_id: int,
    worker: str,
    now: datetime,
    error: str,
    *,
    retry_at: datetime | None = None,
) -> bool:
    """Sending failed. With `retry_at` the row goes back to the pool, due then (never earlier
    than `now`, so a retry cannot jump the queue of rows already due); without it the failure
    is final."""
    if retry_at is None:
        return await _finish(session, message_id, worker, status=FAILED, last_error=_clip(error))
    return await _finish(
        session,
        message_id,
        worker,
        status=PENDING,
        claimed_by=None,
        not_before=max(retry_at, now),
        last_error=_clip(error),
    )


async def assign(
    session: AsyncSession, message_id: int, worker: str, channel: str, body: str
) -> bool:
    """Record the channel and the text a claimed row is about to be sent with; the claim holds.

    Written before the send, so an operator sees where a message went even if the sender then
    crashes, and a retry sends exactly the same words."""
    m = OutboxMessage
    result = await session.execute(
        update(m)
        .where(m.id == message_id, m.status == CLAIMED, m.claimed_by == worker)
        .values(channel=channel, body=body)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


async def release(
    session: AsyncSession,
    message_id: int,
    worker: str,
    now: datetime,
    not_before: datetime,
    reason: str,
) -> bool:
    """Hand a claimed row back untried, due at `not_before` (quiet hours, a channel asking us to
    slow down, a lease about to run out). The claim's attempt is given back: waiting is not a
    failure and must not bring a message closer to its last attempt."""
    return await _hand_back(session, message_id, worker, max(not_before, now), _clip(reason))


async def hold(
    session: AsyncSession, message_id: int, worker: str, now: datetime, until: datetime
) -> bool:
    """Hand a claimed row back to wait for the member (its channel can carry it only after
    the member's next action, which makes it due again: `domain.allowances.wake`), at most
    until `until`, when it is decided once more. `held_until` keeps the first wait's end, so
    waking and waiting again never stretches it."""
    held_until = func.coalesce(OutboxMessage.held_until, until)
    return await _hand_back(
        session, message_id, worker, max(until, now), WAITING_FOR_MEMBER, held_until=held_until
    )


async def _hand_back(
    session: AsyncSession,
    message_id: int,
    worker: str,
    not_before: datetime,
    reason: str,
    **values: Any,
) -> bool:
    m = OutboxMessage
    return await _finish(
        session,
        message_id,
        worker,
        status=PENDING,
        claimed_by=None,
        not_before=not_before,
        attempts=case((m.attempts > 0, m.attempts - 1), else_=0),
        last_error=reason,
        **values,
    )


async def mark_skipped(session: AsyncSession, message_id: int, worker: str, reason: str) -> bool:
    """A dispatch policy (consent, frequency cap, an outdated occasion) decided not to send."""
    return await _finish(session, message_id, worker, status=SKIPPED, last_error=_clip(reason))


async def mark_unreachable(
    session: AsyncSession, message_id: int, worker: str, reason: str
) -> bool:
    """The member has no channel that can reach them (no chat linked, bot blocked)."""
    return await _finish(session, message_id, worker, status=UNREACHABLE, last_error=_clip(reason))


async def status_counts(session: AsyncSession) -> list[OutboxCount]:
    """Messages per status, rule and channel, for operators watching the queue."""
    m = OutboxMessage
    rows = await session.execute(
        select(m.status, m.rule, m.channel, func.count()).group_by(m.status, m.rule, m.channel)
    )
    counts = [OutboxCount(status, rule, channel, count) for status, rule, channel, count in rows]
    # Sorted here: SQLite and PostgreSQL disagree on where NULL channels sort.
    return sorted(counts, key=lambda c: (c.status, c.rule, c.channel or ""))


async def reason_counts(
    session: AsyncSession, statuses: tuple[str, ...] = (SKIPPED, UNREACHABLE)
) -> list[OutboxReason]:
    """Messages per final status and reason (no_chat, blocked, no_consent…): the list staff
    work through, for example calling members no chat can reach."""
    m = OutboxMessage
    rows = await session.execute(
        select(m.status, m.last_error, m.rule, m.channel, func.count())
        .where(m.status.in_(statuses))
        .group_by(m.status, m.last_error, m.rule, m.channel)
    )
    reasons = [
        OutboxReason(status, reason or "", rule, channel, count)
        for status, reason, rule, channel, count in rows
    ]
    return sorted(reasons, key=lambda r: (r.status, r.reason, r.rule, r.channel or ""))


def stored_context(value: Any) -> Any:
    """A message's template context as the outbox keeps it (JSON): dates and times as ISO text.
    `revived_context` is its inverse; the two live together so they cannot drift apart."""
    if isinstance(value, dict):
        return {key: stored_context(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [stored_context(item) for item in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def revived_context(value: Any) -> Any:
    """A stored context with its ISO strings turned back into dates and times: templates format
    real dates (`|date`, `|days_until`) when a message is rendered at send time."""
    if isinstance(value, dict):
        return {key: revived_context(item) for key, item in value.items()}
    if isinstance(value, list):
        return [revived_context(item) for item in value]
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value):
            return date.fromisoformat(value)
        if _ISO_DATETIME.fullmatch(value):
            return datetime.fromisoformat(value).astimezone(UTC)
    return value
