"""The serve schedule: which jobs, when, in the chain's time zone, coalesced; job functions that
can run twice; a stop that lets the dispatch in progress finish; `memberbot outbox status`."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot.channels.telegram import TelegramSender
from db.models import MemberScore, OutboxMessage
from db.session import Database
from db.types import utcnow
from domain import members
from domain.outgoing import Sender
from domain.shop import ShopConfig
from memberbot import app
from memberbot.cli.outbox import app as outbox_app
from memberbot.runtime import Runtime
from memberbot.settings import Settings
from scheduler import jobs, outbox
from scheduler.outbox import Intent
from tests.support.botapi_server import BotApiServer
from tests.support.builders import new_member, new_members


def runtime(db: Database, config: ShopConfig, **settings: object) -> Runtime:
    values: dict[str, object] = {
        "daily_rules_at": "07:45",
        "dispatch_interval_seconds": 0.5,
        "quiet_hours": "off",
        "telegram_rate_per_second": 200.0,
    }
    values.update(settings)
    return Runtime(settings=Settings(_env_file=None, **values), config=config, db=db)


def build_scheduler(rt: Runtime, senders: Mapping[str, Sender]) -> AsyncIOScheduler:
    """The schedule as `memberbot serve` wires it."""
    return jobs.build_scheduler(app.job_setup(rt), app.build_dispatcher(rt, senders))


async def queue_for_chats(db: Database, count: int, first_chat: int) -> None:
    ids = await new_members(db, count, ref="J{n}", first_chat=first_chat)
    intents = [
        Intent(
            member_id=member_id,
            rule="reminder",
            occurrence="1",
            category=outbox.SERVICE,
            template_key="reminder",
            locale="zh_CN",
            not_before=utcnow() - timedelta(minutes=1),
            body=f"reminder for {member_id}",
        )
        for member_id in ids
    ]
    async with db.transaction() as session:
        await outbox.enqueue(session, intents)


async def test_jobs_are_scheduled_in_the_chain_time_zone_and_coalesced(
    db: Database, shop_config: ShopConfig
) -> None:
    scheduler = build_scheduler(runtime(db, shop_config), {})
    scheduler.start(paused=True)
    try:
        found = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(found) == {
        jobs.DISPATCH,
        jobs.DAILY_RULES,
        jobs.BOOKING_REMINDERS,
        jobs.POINTS_EXPIRY,
        jobs.SEGMENTS,
        jobs.TIER_REVIEW,
    }
    for job in found.values():
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time and job.misfire_grace_time >= 60
    dispatch = found[jobs.DISPATCH].trigger
    assert isinstance(dispatch, IntervalTrigger)
    assert dispatch.interval == timedelta(seconds=0.5)
    rules = found[jobs.DAILY_RULES].trigger
    assert isinstance(rules, CronTrigger)
    assert str(rules.timezone) == "Asia/Shanghai"
    fields = {f.name: str(f) for f in rules.fields}
    assert (fields["hour"], fields["minute"], fields["day"]) == ("7", "45", "*")
    review = {f.name: str(f) for f in found[jobs.TIER_REVIEW].trigger.fields}
    assert (review["day"], review["hour"]) == ("1", "2")
    assert found[jobs.DAILY_RULES].misfire_grace_time == jobs.DAILY_GRACE_SECONDS
    hourly = {f.name: str(f) for f in found[jobs.BOOKING_REMINDERS].trigger.fields}
    assert (hourly["hour"], hourly["minute"]) == ("*", "5")


def test_daily_rules_at_must_be_a_time() -> None:
    assert jobs.parse_clock("08:30").hour == 8
    with pytest.raises(ValueError):
        jobs.parse_clock("half past eight")


async def test_job_functions_are_idempotent(db: Database, shop_config: ShopConfig) -> None:
    rt = runtime(db, shop_config)
    await new_member(db, "BDAY", None, birthday=rt.today().replace(year=1990), consent="counter")
    scheduler = build_scheduler(rt, {})
    work: jobs.Jobs = scheduler.memberbot_jobs  # type: ignore[attr-defined]

    # The hourly pass queues only booking reminders: the birthday waits for the daily run.
    assert await work.booking_reminders() == 0
    assert await work.daily_rules() >= 1
    async with db.read() as session:
        queued = await session.scalar(select(func.count()).select_from(OutboxMessage))
    assert await work.daily_rules() == 0
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == queued
    assert await work.points_expiry() == 0
    assert await work.points_expiry() == 0
    assert await work.tier_review() == 0
    # Scored in a child process, into the same database: one row per live member, twice over.
    assert await work.segments() == await work.segments() == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(MemberScore)) == 1
    # No chat is bound: the birthday message is unreachable, for staff to call.
    assert (await work.dispatch()).unreachable == queued


async def test_stopping_lets_the_dispatch_in_progress_finish(
    db: Database, shop_config: ShopConfig
) -> None:
    await queue_for_chats(db, 60, first_chat=20_000)
    rt = runtime(db, shop_config, telegram_rate_per_second=40.0, dispatch_batch=60)
    async with (
        BotApiServer(global_per_second=1000.0) as server,
        TelegramSender(server.token, server.base_url) as sender,
    ):
        dispatcher = app.build_dispatcher(rt, {"telegram": sender})
        async with jobs.running(app.job_setup(rt), dispatcher):
            await server.wait_sent(20_000, timeout=5)
        # Stopped while a batch of 60 at 40/s was still going out: it finished first.
        sent = list(server.sent)
    async with db.read() as session:
        statuses = Counter((await session.scalars(select(OutboxMessage.status))).all())
    assert statuses == {outbox.SENT: 60}
    assert len(sent) == 60


@pytest.mark.db
def test_outbox_status_counts_and_unreachable_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shop_config: ShopConfig
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", url)
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    async def fill() -> None:
        from memberbot.runtime import prepare

        db = Database.from_url(url)
        try:
            await prepare(db, shop_config)
            await queue_for_chats(db, 2, first_chat=30_000)
            async with db.transaction() as session:
                lonely = await members.create(session, member_ref="ALONE", name="", phone=None)
                assert lonely.id is not None
                await outbox.enqueue(
                    session,
                    [
                        Intent(
                            member_id=lonely.id,
                            rule="maintenance_due",
                            occurrence="2026-12",
                            category=outbox.SERVICE,
                            template_key="maintenance_due",
                            locale="zh_CN",
                            not_before=utcnow(),
                            body="该保养了",
                        )
                    ],
                )
            scheduler = build_scheduler(runtime(db, shop_config), {})
            await scheduler.memberbot_jobs.dispatch()  # type: ignore[attr-defined]
        finally:
            await db.dispose()

    asyncio.run(fill())
    from memberbot.settings import get_settings

    get_settings.cache_clear()
    # Mounted as memberbot.cli mounts it.
    root = typer.Typer()
    root.add_typer(outbox_app, name="outbox")
    result = CliRunner().invoke(root, ["outbox", "status"], env={"COLUMNS": "160"})
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    # The member without a chat is listed with the reason, for a phone call; members whose
    # chats are on a channel this process has no sender for are told apart.
    assert ["unreachable", "no_chat", "maintenance_due", "-", "1"] in [
        [cell for cell in row if cell != "│" and cell != "┃"] for row in rows
    ]
    assert ["unreachable", "no_sender", "reminder", "-", "2"] in [
        [cell for cell in row if cell not in ("│", "┃")] for row in rows
    ]
    assert "Total: unreachable 3" in result.output
