"""What a dispatch round did, recorded as it happens: each send's outcome is an `Outcome`
whose `apply` writes it to the outbox row (only while the row is still this worker's), and the
`Recorder` flushes them a few times a second in small transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession

from db.session import Database
from domain import binding
from domain.outgoing import Reply
from scheduler import outbox
from scheduler.dispatch.policy import BLOCKED_CHAT, UNBIND_ACTOR

log = logging.getLogger(__name__)


@dataclass
class DispatchSummary:
    """What one round did, row by row."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0  # handed back untried: quiet hours, flood control, lease ending
    held: int = 0  # waiting for the member's next action, which the channel needs first
    retried: int = 0  # transient failure: back to the pool after a backoff
    skipped: int = 0
    unreachable: int = 0
    failed: int = 0
    lost: int = 0  # outcome not recorded: the lease ran out and another worker took the row

    def add(self, other: DispatchSummary) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Planned:
    """A claimed row cleared to go: where to, and what."""

    message_id: int
    member_id: int
    attempts: int
    channel: str
    address: str
    reply: Reply
    held_until: datetime | None = None  # the end of its wait for the member, once it waited


@dataclass(frozen=True)
class Outcome:
    kind: str  # a DispatchSummary field
    message_id: int
    apply: Callable[[AsyncSession, str], Awaitable[bool]]


class Recorder:
    """Writes send outcomes a few times a second, in one transaction each time.

    Recording continuously (not once per batch) keeps what a crash can resend to the last
    fraction of a second; batching the writes keeps SQLite's single writer free for others.
    An outcome whose write failed is kept and written with the next flush.
    """

    def __init__(self, db: Database, worker: str, summary: DispatchSummary, every: float) -> None:
        self.db = db
        self.worker = worker
        self.summary = summary
        self.every = every
        self._pending: list[Outcome] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.flush(raise_errors=True)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.every)
            except TimeoutError:
                await self.flush(raise_errors=False)

    async def flush(self, *, raise_errors: bool) -> None:
        outcomes, self._pending = self._pending, []
        if not outcomes:
            return
        try:
            async with self.db.transaction() as session:
                applied = [await outcome.apply(session, self.worker) for outcome in outcomes]
        except Exception:
            self._pending = outcomes + self._pending
            if raise_errors:
                raise
            log.exception("recording %d send outcomes failed; will try again", len(outcomes))
            return
        for outcome, done in zip(outcomes, applied, strict=True):
            kind = outcome.kind if done else "lost"
            setattr(self.summary, kind, getattr(self.summary, kind) + 1)
            if not done:
                log.warning(
                    "outbox row %d was taken over before its outcome was recorded",
                    outcome.message_id,
                )


def outcome_sent(item: Planned, now: datetime) -> Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_sent(session, item.message_id, worker, now)

    return Outcome("sent", item.message_id, apply)


def outcome_deferred(
    item: Planned, now: datetime, reason: str, due: datetime | None = None
) -> Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.release(session, item.message_id, worker, now, due or now, reason)

    return Outcome("deferred", item.message_id, apply)


def outcome_held(item: Planned, now: datetime, until: datetime) -> Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.hold(session, item.message_id, worker, now, until)

    return Outcome("held", item.message_id, apply)


def outcome_failed(item: Planned, now: datetime, error: str) -> Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_failed(session, item.message_id, worker, now, error)

    return Outcome("failed", item.message_id, apply)


def outcome_unreachable(item: Planned, reason: str) -> Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_unreachable(session, item.message_id, worker, reason)

    return Outcome("unreachable", item.message_id, apply)


def outcome_blocked(item: Planned) -> Outcome:
    """Unreachable, and the chat unbound so that no later message is tried there; only when
    the row was still ours, so a late worker cannot unbind a chat on stale news."""

    async def apply(session: AsyncSession, worker: str) -> bool:
        if not await outbox.mark_unreachable(session, item.message_id, worker, BLOCKED_CHAT):
            return False
        await binding.unbind(session, item.channel, item.address, actor=UNBIND_ACTOR)
        return True

    return Outcome("unreachable", item.message_id, apply)
