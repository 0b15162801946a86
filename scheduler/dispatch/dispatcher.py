"""The dispatcher: claims due outbox rows, decides for each whether it may go now (by the
`DispatchPolicy`), sends through each channel's `Sender` at its `Pacer`'s pace, and hands every
outcome to the `Recorder`. The package docstring (`scheduler.dispatch`) tells the whole round."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, OutboxMessage, Store
from db.session import Database
from db.types import utcnow
from domain import binding, cards
from domain.errors import DomainError
from domain.messages import Renderer
from domain.outgoing import BLOCKED, RETRY, SENT, WAIT, Button, Card, Delivery, Reply, Sender
from scheduler import outbox
from scheduler.dispatch.pacer import Pacer
from scheduler.dispatch.policy import (
    BLOCKED_CHAT,
    ERASED,
    LEASE_ENDING,
    MARKETING_CAP,
    NO_CHAT,
    NO_CONSENT,
    NO_SENDER,
    NO_WINDOW,
    OPT_OUT_FOOTER,
    QUIET_HOURS,
    DispatchPolicy,
)
from scheduler.dispatch.recording import (
    DispatchSummary,
    Outcome,
    Planned,
    Recorder,
    outcome_blocked,
    outcome_deferred,
    outcome_failed,
    outcome_held,
    outcome_sent,
    outcome_unreachable,
)

log = logging.getLogger(__name__)


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
    ) -> list[Planned]:
        facts = await self._facts(session, {row.member_id for row in rows})
        marketing = {
            row.member_id
            for row in rows
            if row.category == outbox.MARKETING and facts.consents(row.member_id)
        }
        used = await self._marketing_used(
            session, marketing, {row.id for row in rows if row.id is not None}, now
        )
        planned: list[Planned] = []
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
            planned.append(
                Planned(
                    row.id, row.member_id, row.attempts, channel, address, reply, row.held_until
                )
            )
        return planned

    def _keeps_quiet(self, row: OutboxMessage) -> bool:
        """Whether quiet hours hold this message: the rule's own say (`context["dispatch"]
        ["quiet_hours"]`, written by `scheduler.rules`) or else its category's."""
        flags = (row.context or {}).get("dispatch")
        if isinstance(flags, dict) and isinstance(flags.get("quiet_hours"), bool):
            return bool(flags["quiet_hours"])
        return row.category in self.policy.quiet_categories

    def _reply(self, row: OutboxMessage, channel: str) -> Reply:
        """The stored text (a retry sends the same words), or the template rendered now; with
        the rule's card, for channels that need one outside a conversation."""
        context = row.context or {}
        text = row.body
        if text is None:
            text = self.renderer.render(
                row.template_key, row.locale, outbox.revived_context(context), channel
            )
        if row.category == outbox.MARKETING:
            # Every offer says how to stop them, whoever wrote its template.
            text = f"{text}\n\n{self.renderer.render(OPT_OUT_FOOTER, row.locale, {}, channel)}"
        return Reply(
            text=text,
            buttons=buttons_from(context),
            locale=row.locale,
            category=row.category,
            card=self._card(row),
        )

    def _card(self, row: OutboxMessage) -> Card | None:
        """The rule's WeChat template message (`context["dispatch"]["wechat_template"]`,
        written by `scheduler.rules`), rendered for this member."""
        flags = (row.context or {}).get("dispatch")
        spec = flags.get("wechat_template") if isinstance(flags, dict) else None
        if not isinstance(spec, dict):
            return None
        return cards.render(
            str(spec["id"]),
            dict(spec["fields"]),
            row.locale,
            outbox.revived_context(row.context or {}),
            self.renderer,
            url=str(spec.get("url") or ""),
        )

    # -- sending and recording -------------------------------------------------------------

    async def _send(
        self, planned: list[Planned], deadline: float, summary: DispatchSummary
    ) -> None:
        lanes: dict[tuple[str, str], list[Planned]] = {}
        for item in planned:
            lanes.setdefault((item.channel, item.address), []).append(item)
        async with (
            Recorder(
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
        items: list[Planned],
        deadline: float,
        recorder: Recorder,
    ) -> None:
        """One chat's messages, in order, one at a time."""
        sender = self.senders[channel]
        pacer = self.pacers.get(channel)
        blocked = False
        for item in items:
            if blocked:
                recorder.add(outcome_unreachable(item, BLOCKED_CHAT))
                continue
            if time.monotonic() >= deadline:
                recorder.add(outcome_deferred(item, self.clock(), LEASE_ENDING))
                continue
            if pacer is not None:
                await pacer.wait_turn(address)
            delivery = await self._deliver(sender, address, item.reply)
            now = self.clock()
            if delivery.status == SENT:
                recorder.add(outcome_sent(item, now))
            elif delivery.status == RETRY and delivery.retry_after is not None:
                if pacer is not None:
                    pacer.flooded(address, delivery.retry_after)
                due = now + timedelta(seconds=delivery.retry_after)
                reason = f"flood control: retry after {delivery.retry_after:g}s"
                recorder.add(outcome_deferred(item, now, reason, due))
            elif delivery.status == RETRY:
                recorder.add(self._retry(item, now, delivery.error or "transient failure"))
            elif delivery.status == BLOCKED:
                blocked = True
                recorder.add(outcome_blocked(item))
            elif delivery.status == WAIT:
                recorder.add(self._held(item, now))
            else:
                recorder.add(outcome_failed(item, now, delivery.error or "refused by the channel"))

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

    def _held(self, item: Planned, now: datetime) -> Outcome:
        """Wait for the member until the first wait ends; after that, unreachable."""
        until = item.held_until or now + timedelta(days=self.policy.hold_days)
        if now >= until:
            return outcome_unreachable(item, NO_WINDOW)
        return outcome_held(item, now, until)

    def _retry(self, item: Planned, now: datetime, error: str) -> Outcome:
        if item.attempts >= self.policy.max_attempts:
            return outcome_failed(item, now, f"gave up after {item.attempts} attempts: {error}")
        wait = self.policy.backoff(item.attempts, self.rng)
        retry_at = now + timedelta(seconds=wait)

        async def apply(session: AsyncSession, worker: str) -> bool:
            return await outbox.mark_failed(
                session, item.message_id, worker, now, error, retry_at=retry_at
            )

        return Outcome("retried", item.message_id, apply)
