"""The dispatcher: takes due outbox rows, decides for each whether it may go now, sends it
through its channel at the pace the channel allows, and records what happened.

One round (`Dispatcher.run_once`) is three steps:

1. **Claim and decide**, in one write transaction. Rows are claimed with a lease
   (`scheduler.outbox.claim`, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes
   share the work). Each row then meets the policy, in this order:

   * the member was erased → skipped (`erased`);
   * marketing without consent (never given, or withdrawn by the member's opt-out) → skipped
     (`no_consent`); service and transactional messages do not need marketing consent;
   * no active chat on a configured channel → unreachable (`no_chat`; `no_sender` when the
     member's only chats are on channels this process cannot send on). Staff see these in
     `memberbot outbox status` and follow up by phone;
   * quiet hours in the member's home store's time zone (the chain's zone when the
     member has none): the row is handed back untried, due when the quiet hours end. A rule
     says whether they hold its messages (`context["dispatch"]["quiet_hours"]`, written by
     `scheduler.rules`); without that, transactional messages (a booking the member just
     made) are exempt and the others wait;
   * the marketing cap: a member who already had `marketing_cap` marketing messages in the
     last `marketing_cap_days` days → skipped (`marketing_cap`). Skipped rather than postponed:
     marketing is about a moment (a birthday, this week's offer) and postponed messages
     would pile up and go out together as soon as the window frees, which is what the cap is
     there to prevent. Messages another dispatcher has decided to send but not yet recorded
     count too: the members concerned are locked while deciding (PostgreSQL; SQLite's write
     transaction already admits one decider), so two processes cannot both send the cap's
     last message.

   A row that may go gets its channel (the member's oldest active chat on a channel with a
   sender) and its text (the stored body, or the template rendered now) written on it.

2. **Send**: one lane per chat, lanes concurrently, each lane's messages in order. A `Pacer`
   per channel keeps under the channel's overall rate and its per-chat interval. No send is
   started once the lease is close to running out: those rows are handed back untried.

3. **Record** each outcome as it comes (flushed in small transactions a few times a second):
   SENT → sent; RETRY with the channel's `retry_after` (flood control) → that chat (or, when
   several chats hit it at once, the whole channel) pauses, and the row goes back untried, due
   after the wait; RETRY without one (network, 5xx) → back to the pool after an exponential
   backoff with jitter, until `max_attempts` → failed; BLOCKED → unreachable (`blocked`), the
   chat is unbound (`domain.binding.unbind`, actor `dispatch`; the binding row stays as
   history) so no later message is tried there, and the lane's remaining rows are unreachable
   too; FAILED → failed.

Crash safety comes from the outbox: an unrecorded row stays claimed until its lease runs out
and is then sent again. What can go out twice is therefore at most the batch in flight when a
process dies, and in practice only its last fraction of a second, since outcomes are recorded
continuously.

Rates are per process: several processes sharing one bot token should divide
`telegram_rate_per_second` between them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, OutboxMessage, Store
from db.session import Database
from db.types import utcnow
from domain import binding
from domain.errors import DomainError
from domain.messages import Renderer
from domain.outgoing import BLOCKED, RETRY, SENT, Button, Delivery, Reply, Sender
from scheduler import outbox

log = logging.getLogger(__name__)

# Reasons written on rows (`last_error`); `memberbot outbox status` groups by them.
ERASED, NO_CONSENT, MARKETING_CAP = "erased", "no_consent", "marketing_cap"
NO_CHAT, NO_SENDER, BLOCKED_CHAT = "no_chat", "no_sender", "blocked"
QUIET_HOURS, LEASE_ENDING = "quiet_hours", "lease_ending"
UNBIND_ACTOR = "dispatch"
OPT_OUT_FOOTER = "opt_out_footer"

# Our window is this much longer than the channel's one second: requests leave in the pace we
# set but arrive with a few milliseconds of jitter, and a send that arrives early would fall in
# the previous second of Telegram's count.
WINDOW_MARGIN_SECONDS = 0.025
# Two chats told to wait within this many seconds means the channel as a whole is flooded.
FLOOD_SPREAD_SECONDS = 1.0
_QUIET = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class QuietHours:
    """Local hours when members are not disturbed; `start` > `end` spans midnight."""

    start: clock_time
    end: clock_time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """`21:00-09:00`; empty, `off` or a zero-length span mean no quiet hours."""
        cleaned = text.strip().lower()
        if cleaned in ("", "off", "none"):
            return None
        match = _QUIET.fullmatch(cleaned)
        if match is None:
            raise ValueError(f"quiet hours {text!r} are not HH:MM-HH:MM")
        start = clock_time(int(match[1]), int(match[2]))
        end = clock_time(int(match[3]), int(match[4]))
        return None if start == end else cls(start, end)

    def contains(self, local: clock_time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def applies(self, now: datetime, zone: ZoneInfo) -> bool:
        return self.contains(now.astimezone(zone).time().replace(tzinfo=None))

    def end_after(self, now: datetime, zone: ZoneInfo) -> datetime:
        """The first end of quiet hours after `now`, as aware UTC."""
        local = now.astimezone(zone)
        day = local.date()
        end = datetime.combine(day, self.end, tzinfo=zone)
        if end.astimezone(UTC) <= now:
            end = datetime.combine(day + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(UTC)


@dataclass(frozen=True)
class ChannelLimits:
    """How fast one channel may be written to: overall, and to any single chat."""

    per_second: float
    chat_interval: float

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.chat_interval < 0:
            raise ValueError("a channel needs a positive rate and a non-negative chat interval")


def _default_limits() -> dict[str, ChannelLimits]:
    return {"telegram": ChannelLimits(per_second=30.0, chat_interval=1.0)}


@dataclass(frozen=True)
class DispatchPolicy:
    """Everything the dispatcher decides by. `memberbot.app.dispatch_policy` maps the operator's
    settings onto it; `default_timezone` is the chain's (`ShopConfig.zone`), for members without
    a home store."""

    quiet_hours: QuietHours | None = QuietHours(clock_time(21), clock_time(9))
    quiet_categories: frozenset[str] = frozenset({outbox.SERVICE, outbox.MARKETING})
    marketing_cap: int = 2
    marketing_cap_days: int = 7
    batch: int = 200
    lease_seconds: int = 300
    # No send starts when less than this is left of the lease.
    lease_margin_seconds: float = 30.0
    limits: Mapping[str, ChannelLimits] = field(default_factory=_default_limits)
    # Sends in flight at once, over all chats.
    concurrency: int = 32
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    send_timeout_seconds: float = 30.0
    record_every_seconds: float = 0.2
    interval_seconds: float = 5.0
    default_timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if self.batch <= 0 or self.concurrency <= 0 or self.max_attempts <= 0:
            raise ValueError("batch, concurrency and max_attempts must be positive")
        if self.lease_margin_seconds >= self.lease_seconds:
            raise ValueError("the lease must be longer than its safety margin")

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds before a transient failure is tried again: doubling per attempt, capped,
        with "equal jitter" so a burst of failures does not come back as one burst."""
        ceiling = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(attempts - 1, 0))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Pacer:
    """Keeps one channel's sends under its limits, as the channel itself counts them.

    Overall: at most N sends start in any window of N/rate seconds (plus a small margin),
    which is how Telegram counts "30 per second"; after a pause the backlog may catch up, but
    sends never start closer than half the average interval, so no burst lands at once. Per
    chat: a minimum interval between two sends, and a chat told to wait (429) waits that long.
    Starts are handed out first come, first served.
    """

    def __init__(
        self,
        limits: ChannelLimits,
        *,
        margin: float = WINDOW_MARGIN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._per_window = max(1, math.floor(limits.per_second))
        self._window = self._per_window / limits.per_second + margin
        self._spacing = 0.5 / limits.per_second
        self._starts: deque[float] = deque(maxlen=self._per_window)
        self._chat_next: dict[str, float] = {}
        self._paused_until = 0.0
        self._recent_floods: deque[tuple[float, str]] = deque()
        self._lock = asyncio.Lock()
        self._now = monotonic

    def _channel_wait(self, now: float) -> float:
        waits = [self._paused_until - now]
        if self._starts:
            waits.append(self._starts[-1] + self._spacing - now)
        if len(self._starts) == self._per_window:
            waits.append(self._starts[0] + self._window - now)
        return max(waits)

    async def wait_turn(self, chat: str) -> None:
        """Return when a send to `chat` may start; the start is counted at once."""
        while True:
            chat_wait = self._chat_next.get(chat, 0.0) - self._now()
            if chat_wait > 0:
                await asyncio.sleep(chat_wait)
                continue
            async with self._lock:
                while (wait := self._channel_wait(self._now())) > 0:
                    await asyncio.sleep(wait)
                now = self._now()
                if self._chat_next.get(chat, 0.0) > now:
                    continue  # the chat was told to wait while we queued
                self._starts.append(now)
                self._chat_next[chat] = now + self.limits.chat_interval
                self._forget_idle_chats(now)
                return

    def note(self, chat: str) -> None:
        """A send made on the same bot outside the dispatcher (a chat reply) uses the same
        budget: reminders slow down while members are talking, and the two together stay
        under the channel's limit. Replies never wait for reminders."""
        now = self._now()
        self._starts.append(now)
        self._chat_next[chat] = max(self._chat_next.get(chat, 0.0), now + self.limits.chat_interval)

    def flooded(self, chat: str, retry_after: float) -> None:
        """The channel answered "too many requests, retry after": that chat waits; if other
        chats were told the same just now, the whole channel waits."""
        now = self._now()
        until = now + retry_after
        self._chat_next[chat] = max(self._chat_next.get(chat, 0.0), until)
        self._recent_floods.append((now, chat))
        while self._recent_floods and self._recent_floods[0][0] < now - FLOOD_SPREAD_SECONDS:
            self._recent_floods.popleft()
        if len({flooded for _, flooded in self._recent_floods}) > 1:
            self._paused_until = max(self._paused_until, until)

    def _forget_idle_chats(self, now: float) -> None:
        if len(self._chat_next) > 4 * max(self._per_window, 256):
            self._chat_next = {c: t for c, t in self._chat_next.items() if t > now}


@dataclass
class DispatchSummary:
    """What one round did, row by row."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0  # handed back untried: quiet hours, flood control, lease ending
    retried: int = 0  # transient failure: back to the pool after a backoff
    skipped: int = 0
    unreachable: int = 0
    failed: int = 0
    lost: int = 0  # outcome not recorded: the lease ran out and another worker took the row

    def add(self, other: DispatchSummary) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _Planned:
    """A claimed row cleared to go: where to, and what."""

    message_id: int
    member_id: int
    attempts: int
    channel: str
    address: str
    reply: Reply


@dataclass(frozen=True)
class _Facts:
    """What the decisions need about the members of one batch, read in a few queries."""

    members: dict[int, tuple[datetime | None, bool, int | None]]
    zones: dict[int, ZoneInfo]
    default_zone: ZoneInfo
    chats: dict[int, list[tuple[str, str]]]

    def consents(self, member_id: int) -> bool:
        found = self.members.get(member_id)
        return found is not None and found[0] is None and found[1]

    def zone_of(self, home_store_id: int | None) -> ZoneInfo:
        if home_store_id is None:
            return self.default_zone
        return self.zones.get(home_store_id, self.default_zone)


@dataclass(frozen=True)
class _Outcome:
    kind: str  # a DispatchSummary field
    message_id: int
    apply: Callable[[AsyncSession, str], Awaitable[bool]]


class _Recorder:
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
        self._pending: list[_Outcome] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, outcome: _Outcome) -> None:
        self._pending.append(outcome)

    async def __aenter__(self) -> _Recorder:
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


def default_worker_id() -> str:
    """Unique per process and run: a restarted process must not pass for its dead self."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def buttons_from(context: Mapping[str, Any]) -> tuple[tuple[Button, ...], ...]:
    """The rows of buttons a rule asked for: `context["buttons"]`, a list of rows of
    `{"label", "data"}`. Raises ValueError when they are malformed."""
    rows = context.get("buttons") or []
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ValueError("context buttons must be a list of rows (lists)")
    built: list[tuple[Button, ...]] = []
    for row in rows:
        buttons = []
        for item in row:
            if not isinstance(item, dict) or not {"label", "data"} <= item.keys():
                raise ValueError("every button needs a label and data")
            buttons.append(Button(label=str(item["label"]), data=str(item["data"])))
        if buttons:
            built.append(tuple(buttons))
    return tuple(built)


class Dispatcher:
    """Sends what the outbox holds, by the policy; one instance per process (or several, each
    with its own worker id: they share the work through the database)."""

    def __init__(
        self,
        db: Database,
        senders: Mapping[str, Sender],
        policy: DispatchPolicy | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
        renderer: Renderer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.senders = dict(senders)
        self.policy = policy or DispatchPolicy()
        self.clock = clock
        self.worker_id = worker_id or default_worker_id()
        self.renderer = renderer or Renderer()
        self.rng = rng or random.Random()
        self.pacers = {
            channel: Pacer(limits)
            for channel, limits in self.policy.limits.items()
            if channel in self.senders
        }
        self._sends = asyncio.Semaphore(self.policy.concurrency)

    def note_send(self, channel: str, address: str) -> None:
        """Count a message the chat itself sent on `channel` against the reminders' pace."""
        pacer = self.pacers.get(channel)
        if pacer is not None:
            pacer.note(address)

    async def run_once(self) -> DispatchSummary:
        """One round: claim a batch, decide, send, record. Returns what happened."""
        summary = DispatchSummary()
        now = self.clock()
        async with self.db.transaction() as session:
            rows = await outbox.claim(
                session,
                self.worker_id,
                now,
                limit=self.policy.batch,
                lease_seconds=self.policy.lease_seconds,
            )
            deadline = (
                time.monotonic() + self.policy.lease_seconds - self.policy.lease_margin_seconds
            )
            summary.claimed = len(rows)
            planned = await self._decide(session, rows, now, summary) if rows else []
        if planned:
            await self._send(planned, deadline, summary)
        return summary

    async def drain(self, stop: asyncio.Event | None = None) -> DispatchSummary:
        """Rounds until nothing is due, or `stop` is set (checked between batches): what the
        scheduler's periodic job runs."""
        total = DispatchSummary()
        while stop is None or not stop.is_set():
            summary = await self.run_once()
            total.add(summary)
            if not summary.claimed:
                break
        return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Rounds back to back while there is due work, otherwise every `interval_seconds`,
        until `stop` is set. A failing round (the database away) is logged and retried."""
        while not stop.is_set():
            busy = False
            try:
                busy = (await self.run_once()).claimed > 0
            except Exception:
                log.exception("dispatch round failed")
            if busy:
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.policy.interval_seconds)

    # -- deciding ---------------------------------------------------------------------------

    async def _facts(self, session: AsyncSession, member_ids: set[int]) -> _Facts:
        members = {
            row.id: (row.erased_at, row.marketing_consent, row.home_store_id)
            for row in await session.execute(
                select(
                    Member.id, Member.erased_at, Member.marketing_consent, Member.home_store_id
                ).where(Member.id.in_(member_ids))
            )
        }
        stores = (await session.execute(select(Store.id, Store.timezone))).all()
        zones = {store_id: ZoneInfo(zone) for store_id, zone in stores}
        default_zone = ZoneInfo(self.policy.default_timezone)
        chats = {
            member_id: [(chat.channel, chat.address) for chat in bound]
            for member_id, bound in (await binding.chats_of(session, member_ids)).items()
        }
        return _Facts(members=members, zones=zones, default_zone=default_zone, chats=chats)

    async def _marketing_used(
        self, session: AsyncSession, member_ids: set[int], batch_ids: set[int], now: datetime
    ) -> dict[int, int]:
        """Marketing messages each member already had in the cap window, or that another
        dispatcher has cleared and not yet recorded. The members are locked first, so a
        concurrent decider waits for our choices and then counts them."""
        if not member_ids:
            return {}
        ordered = sorted(member_ids)
        if session.bind.dialect.name == "postgresql":
            await session.execute(
                select(Member.id)
                .where(Member.id.in_(ordered))
                .order_by(Member.id)
                .with_for_update()
            )
        m = OutboxMessage
        since = now - timedelta(days=self.policy.marketing_cap_days)
        sent = select(m.member_id, func.count()).where(
            m.member_id.in_(ordered),
            m.category == outbox.MARKETING,
            m.status == outbox.SENT,
            m.sent_at >= since,
        )
        in_flight = select(m.member_id, func.count()).where(
            m.member_id.in_(ordered),
            m.category == outbox.MARKETING,
            m.status == outbox.CLAIMED,
            m.channel.is_not(None),
            m.claimed_until > now,
            m.id.not_in(batch_ids),
        )
        used: dict[int, int] = {}
        for statement in (sent, in_flight):
            for member_id, count in await session.execute(statement.group_by(m.member_id)):
                used[member_id] = used.get(member_id, 0) + count
        return used

    async def _decide(
        self,
        session: AsyncSession,
        rows: Sequence[OutboxMessage],
        now: datetime,
        summary: DispatchSummary,
    ) -> list[_Planned]:
        facts = await self._facts(session, {row.member_id for row in rows})
        marketing = {
            row.member_id
            for row in rows
            if row.category == outbox.MARKETING and facts.consents(row.member_id)
        }
        used = await self._marketing_used(
            session, marketing, {row.id for row in rows if row.id is not None}, now
        )
        planned: list[_Planned] = []
        worker = self.worker_id
        for row in rows:
            assert row.id is not None
            member = facts.members.get(row.member_id)
            if member is None or member[0] is not None:
                await outbox.mark_skipped(session, row.id, worker, ERASED)
                summary.skipped += 1
                continue
            _, consent, home_store_id = member
            if row.category == outbox.MARKETING and not consent:
                await outbox.mark_skipped(session, row.id, worker, NO_CONSENT)
                summary.skipped += 1
                continue
            chats = facts.chats.get(row.member_id, [])
            chat = next(((c, a) for c, a in chats if c in self.senders), None)
            if chat is None:
                reason = NO_SENDER if chats else NO_CHAT
                await outbox.mark_unreachable(session, row.id, worker, reason)
                summary.unreachable += 1
                continue
            zone = facts.zone_of(home_store_id)
            quiet = self.policy.quiet_hours
            if quiet and self._keeps_quiet(row) and quiet.applies(now, zone):
                await outbox.release(
                    session, row.id, worker, now, quiet.end_after(now, zone), QUIET_HOURS
                )
                summary.deferred += 1
                continue
            if row.category == outbox.MARKETING:
                if used.get(row.member_id, 0) >= self.policy.marketing_cap:
                    await outbox.mark_skipped(session, row.id, worker, MARKETING_CAP)
                    summary.skipped += 1
                    continue
                used[row.member_id] = used.get(row.member_id, 0) + 1
            channel, address = chat
            try:
                reply = self._reply(row, channel)
            except (DomainError, ValueError) as exc:
                await outbox.mark_failed(session, row.id, worker, now, f"message: {exc}")
                summary.failed += 1
                continue
            await outbox.assign(session, row.id, worker, channel, reply.text)
            planned.append(_Planned(row.id, row.member_id, row.attempts, channel, address, reply))
        return planned

    def _keeps_quiet(self, row: OutboxMessage) -> bool:
        """Whether quiet hours hold this message: the rule's own say (`context["dispatch"]
        ["quiet_hours"]`, written by `scheduler.rules`) or else its category's."""
        flags = (row.context or {}).get("dispatch")
        if isinstance(flags, dict) and isinstance(flags.get("quiet_hours"), bool):
            return bool(flags["quiet_hours"])
        return row.category in self.policy.quiet_categories

    def _reply(self, row: OutboxMessage, channel: str) -> Reply:
        """The stored text (a retry sends the same words), or the template rendered now."""
        context = row.context or {}
        text = row.body
        if text is None:
            text = self.renderer.render(
                row.template_key, row.locale, outbox.revived_context(context), channel
            )
        if row.category == outbox.MARKETING:
            # Every offer says how to stop them, whoever wrote its template.
            text = f"{text}\n\n{self.renderer.render(OPT_OUT_FOOTER, row.locale, {}, channel)}"
        return Reply(text=text, buttons=buttons_from(context))

    # -- sending and recording -------------------------------------------------------------

    async def _send(
        self, planned: list[_Planned], deadline: float, summary: DispatchSummary
    ) -> None:
        lanes: dict[tuple[str, str], list[_Planned]] = {}
        for item in planned:
            lanes.setdefault((item.channel, item.address), []).append(item)
        async with (
            _Recorder(
                self.db, self.worker_id, summary, self.policy.record_every_seconds
            ) as recorder,
            asyncio.TaskGroup() as lanes_running,
        ):
            for (channel, address), items in lanes.items():
                lanes_running.create_task(self._lane(channel, address, items, deadline, recorder))

    async def _lane(
        self,
        channel: str,
        address: str,
        items: list[_Planned],
        deadline: float,
        recorder: _Recorder,
    ) -> None:
        """One chat's messages, in order, one at a time."""
        sender = self.senders[channel]
        pacer = self.pacers.get(channel)
        blocked = False
        for item in items:
            if blocked:
                recorder.add(_unreachable(item, BLOCKED_CHAT))
                continue
            if time.monotonic() >= deadline:
                recorder.add(_release(item, self.clock(), LEASE_ENDING))
                continue
            if pacer is not None:
                await pacer.wait_turn(address)
            delivery = await self._deliver(sender, address, item.reply)
            now = self.clock()
            if delivery.status == SENT:
                recorder.add(_sent(item, now))
            elif delivery.status == RETRY and delivery.retry_after is not None:
                if pacer is not None:
                    pacer.flooded(address, delivery.retry_after)
                due = now + timedelta(seconds=delivery.retry_after)
                reason = f"flood control: retry after {delivery.retry_after:g}s"
                recorder.add(_release(item, now, reason, due))
            elif delivery.status == RETRY:
                recorder.add(self._retry(item, now, delivery.error or "transient failure"))
            elif delivery.status == BLOCKED:
                blocked = True
                recorder.add(_blocked(item))
            else:
                recorder.add(_failed(item, now, delivery.error or "refused by the channel"))

    async def _deliver(self, sender: Sender, address: str, reply: Reply) -> Delivery:
        """The sender's outcome; an exception or a hang is a transient failure."""
        try:
            async with self._sends:
                return await asyncio.wait_for(
                    sender.send(address, reply), self.policy.send_timeout_seconds
                )
        except TimeoutError:
            return Delivery(RETRY, error="send timed out")
        except Exception as exc:
            log.warning("sender %s raised %s", sender.channel, type(exc).__name__)
            return Delivery(RETRY, error=f"{type(exc).__name__}: {exc}")

    def _retry(self, item: _Planned, now: datetime, error: str) -> _Outcome:
        if item.attempts >= self.policy.max_attempts:
            return _failed(item, now, f"gave up after {item.attempts} attempts: {error}")
        wait = self.policy.backoff(item.attempts, self.rng)
        retry_at = now + timedelta(seconds=wait)

        async def apply(session: AsyncSession, worker: str) -> bool:
            return await outbox.mark_failed(
                session, item.message_id, worker, now, error, retry_at=retry_at
            )

        return _Outcome("retried", item.message_id, apply)


def _sent(item: _Planned, now: datetime) -> _Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_sent(session, item.message_id, worker, now)

    return _Outcome("sent", item.message_id, apply)


def _release(item: _Planned, now: datetime, reason: str, due: datetime | None = None) -> _Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.release(session, item.message_id, worker, now, due or now, reason)

    return _Outcome("deferred", item.message_id, apply)


def _failed(item: _Planned, now: datetime, error: str) -> _Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_failed(session, item.message_id, worker, now, error)

    return _Outcome("failed", item.message_id, apply)


def _unreachable(item: _Planned, reason: str) -> _Outcome:
    async def apply(session: AsyncSession, worker: str) -> bool:
        return await outbox.mark_unreachable(session, item.message_id, worker, reason)

    return _Outcome("unreachable", item.message_id, apply)


def _blocked(item: _Planned) -> _Outcome:
    """Unreachable, and the chat unbound so that no later message is tried there; only when
    the row was still ours, so a late worker cannot unbind a chat on stale news."""

    async def apply(session: AsyncSession, worker: str) -> bool:
        if not await outbox.mark_unreachable(session, item.message_id, worker, BLOCKED_CHAT):
            return False
        await binding.unbind(session, item.channel, item.address, actor=UNBIND_ACTOR)
        return True

    return _Outcome("unreachable", item.message_id, apply)
