"""The clock of `memberbot serve`: an APScheduler `AsyncIOScheduler` in the server's own loop.

| job | when (chain time zone = first store's) | does |
|---|---|---|
| `dispatch` | every `dispatch_interval_seconds` | `Dispatcher.drain`: send what is due |
| `daily_rules` | daily at `daily_rules_at` | `scheduler.rules.run` for today |
| `booking_reminders` | hourly, at :05 | the booking reminder rules again, for bookings made since |
| `points_expiry` | nightly 00:15 | `domain.points.expire` as of today |
| `segments` | nightly 01:00 | the score refresh it is handed (a child process in `serve`) |
| `tier_review` | monthly, the 1st at 02:00 | `domain.tiers.review` as of today |

Every job is coalesced (runs missed while the process was down or busy collapse into one run),
runs one instance at a time, and still runs when it starts late within its misfire grace time.
Job stores are in memory and not shared between processes, so each job is idempotent rather
than exclusive: several `serve` processes may all run the daily rules (the outbox's keys make
the second run add nothing), expire points (keyed per member and day), review tiers or refresh
segments (both converge to the same state), and dispatch (rows are claimed, never shared).

`running(setup, dispatcher)` starts the schedule and, on the way out, lets a dispatch in
progress finish its batch before the senders close.

The scheduler reads no settings and knows no channel: the composition root (`memberbot/app.py`)
hands it a `JobSetup` of plain values and callables and a `Dispatcher` with its senders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from db.session import Database
from domain import points, tiers
from domain.shop import ShopConfig
from scheduler.dispatch import Dispatcher, DispatchSummary

log = logging.getLogger(__name__)

DISPATCH, DAILY_RULES, POINTS_EXPIRY = "dispatch", "daily_rules", "points_expiry"
SEGMENTS, TIER_REVIEW = "segments", "tier_review"
BOOKING_REMINDERS, BOOKING_REMINDER_KIND = "booking_reminders", "booking_reminder"
BOOKING_REMINDERS_MINUTE = 5
BOOKING_REMINDERS_GRACE_SECONDS = 1800
POINTS_EXPIRY_AT = clock_time(0, 15)
SEGMENTS_AT = clock_time(1, 0)
TIER_REVIEW_AT = clock_time(2, 0)
# A daily job that could not start on time still runs within this much of it (a restart in
# the morning still sends the day's messages); the dispatcher's next tick is never far off.
DAILY_GRACE_SECONDS = 6 * 3600
DISPATCH_GRACE_SECONDS = 60
STOP_GRACE_SECONDS = 30.0


def parse_clock(text: str) -> clock_time:
    """`HH:MM` (the `daily_rules_at` setting)."""
    try:
        hour, minute = (int(part) for part in text.strip().split(":"))
        return clock_time(hour, minute)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time like 08:30") from exc


@dataclass(frozen=True)
class JobSetup:
    """What the jobs run on, as plain values: the database, the chain (its time zone is the
    clock's), the shop's rules file (read at every run, so an edited file needs no restart),
    when the daily rules run, how often the dispatcher looks, and how to refresh the member
    scores (in `serve`, a child process that gives the model's memory back)."""

    db: Database
    config: ShopConfig
    rules_file: Path | None
    daily_rules_at: clock_time
    dispatch_interval_seconds: float
    refresh_scores: Callable[[date], Awaitable[int]]

    def today(self) -> date:
        return self.config.today()


class Jobs:
    """The job functions, small and idempotent, and the tasks running them right now (so that
    stopping can wait for them)."""

    def __init__(self, setup: JobSetup, dispatcher: Dispatcher) -> None:
        self.setup = setup
        self.dispatcher = dispatcher
        self.stopping = asyncio.Event()
        self.running: set[asyncio.Task[Any]] = set()

    async def _tracked(self, work: Callable[[], Awaitable[Any]]) -> Any:
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)
        try:
            return await work()
        finally:
            if task is not None:
                self.running.discard(task)

    async def dispatch(self) -> DispatchSummary:
        """Send everything due, batch by batch, until nothing is due or we are stopping."""
        summary = await self._tracked(lambda: self.dispatcher.drain(self.stopping))
        if summary.claimed:
            log.info("dispatch: %s", summary)
        return summary

    async def daily_rules(self) -> int:
        """Queue today's lifecycle messages; a second run the same day queues nothing."""
        return await self._rules(None)

    async def booking_reminders(self) -> int:
        """Queue reminders for bookings made since the daily run (a booking at 10:00 for 15:00
        the same day still gets its 2-hour reminder); already queued ones are not repeated."""
        return await self._rules(BOOKING_REMINDER_KIND)

    async def _rules(self, kind: str | None) -> int:
        from scheduler import rules
        from scheduler.ruleconfig import load_rules

        setup = self.setup
        day = setup.today()
        chosen = [
            rule for rule in load_rules(setup.rules_file) if kind is None or rule.kind == kind
        ]
        summary = await self._tracked(lambda: rules.run(setup.db, chosen, day, setup.config))
        total = summary.total()
        log.info(
            "rules (%s) for %s: %d queued, %d already queued, %d failed",
            kind or "all",
            day,
            total.enqueued,
            total.already,
            total.failed,
        )
        return total.enqueued

    async def points_expiry(self) -> int:
        """Expire lapsed points as of today (one entry per member and day, so reruns add none)."""
        day = self.setup.today()

        async def work() -> int:
            async with self.setup.db.transaction() as session:
                return await points.expire(session, day)

        expired = await self._tracked(work)
        log.info("points expiry for %s: %d points expired", day, expired)
        return expired

    async def segments(self) -> int:
        """Rewrite the member segments and churn scores as of today."""
        day = self.setup.today()

        written = await self._tracked(lambda: self.setup.refresh_scores(day))
        log.info("segments as of %s: %d members scored", day, written)
        return written

    async def tier_review(self) -> int:
        """Move every member to the tier their spend earns, up or down."""
        day = self.setup.today()

        async def work() -> int:
            async with self.setup.db.transaction() as session:
                return await tiers.review(session, day)

        moved = await self._tracked(work)
        log.info("tier review as of %s: %d members changed tier", day, moved)
        return moved

    async def wait_idle(self, timeout: float) -> None:
        """Ask running jobs to wrap up and wait for them, at most `timeout` seconds."""
        self.stopping.set()
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout)


def build_scheduler(setup: JobSetup, dispatcher: Dispatcher) -> AsyncIOScheduler:
    """The schedule, not started. Its `Jobs` is `scheduler.memberbot_jobs`."""
    zone = setup.config.zone
    jobs = Jobs(setup, dispatcher)
    scheduler = AsyncIOScheduler(
        timezone=zone,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": DAILY_GRACE_SECONDS,
        },
    )
    rules_at = setup.daily_rules_at

    def daily(at: clock_time, **fields: Any) -> CronTrigger:
        return CronTrigger(hour=at.hour, minute=at.minute, timezone=zone, **fields)

    scheduler.add_job(
        jobs.dispatch,
        IntervalTrigger(seconds=setup.dispatch_interval_seconds, timezone=zone),
        id=DISPATCH,
        name="send due messages",
        misfire_grace_time=DISPATCH_GRACE_SECONDS,
        next_run_time=datetime.now(zone),
    )
    scheduler.add_job(jobs.daily_rules, daily(rules_at), id=DAILY_RULES, name="lifecycle rules")
    scheduler.add_job(
        jobs.booking_reminders,
        CronTrigger(minute=BOOKING_REMINDERS_MINUTE, timezone=zone),
        id=BOOKING_REMINDERS,
        name="booking reminders",
        misfire_grace_time=BOOKING_REMINDERS_GRACE_SECONDS,
    )
    scheduler.add_job(
        jobs.points_expiry, daily(POINTS_EXPIRY_AT), id=POINTS_EXPIRY, name="points expiry"
    )
    scheduler.add_job(jobs.segments, daily(SEGMENTS_AT), id=SEGMENTS, name="member segments")
    scheduler.add_job(
        jobs.tier_review, daily(TIER_REVIEW_AT, day=1), id=TIER_REVIEW, name="tier review"
    )
    scheduler.memberbot_jobs = jobs  # type: ignore[attr-defined]
    return scheduler


@asynccontextmanager
async def running(
    setup: JobSetup, dispatcher: Dispatcher, *, stop_grace: float = STOP_GRACE_SECONDS
) -> AsyncIterator[AsyncIOScheduler]:
    """The schedule, started; on exit no new job starts, a dispatch in progress finishes its
    batch (so nothing is left claimed until its lease runs out), then the scheduler stops."""
    scheduler = build_scheduler(setup, dispatcher)
    jobs: Jobs = scheduler.memberbot_jobs  # type: ignore[attr-defined]
    scheduler.start()
    log.info(
        "scheduler: %s",
        ", ".join(
            f"{job.id} next {job.next_run_time:%Y-%m-%d %H:%M}" for job in scheduler.get_jobs()
        ),
    )
    try:
        yield scheduler
    finally:
        scheduler.pause()
        await jobs.wait_idle(stop_grace)
        scheduler.shutdown(wait=False)
