"""The dispatcher against the local Bot API server through the real TelegramSender: consent,
quiet hours in the store's time zone, the marketing cap, unreachable members, blocked chats,
flood control, transient failures, two dispatchers sharing one queue, and buttons; on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.channels.telegram import TelegramSender
from db.models import AuditLog, Member, OutboxMessage
from db.session import Database
from domain import binding, privacy
from domain.outgoing import RETRY, Delivery, Reply
from scheduler import outbox
from scheduler.dispatch import (
    ChannelLimits,
    Dispatcher,
    DispatchPolicy,
)
from scheduler.outbox import Intent, OutboxReason
from tests.support.botapi_server import BotApiServer
from tests.support.builders import add_store, new_member, new_members, queued

# 11:00 in Shanghai: outside the default quiet hours (21:00-09:00).
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def policy(**overrides: Any) -> DispatchPolicy:
    """Defaults, but fast: tests should not wait out Telegram's real pace unless they mean to."""
    base = DispatchPolicy(
        limits={"telegram": ChannelLimits(per_second=200.0, chat_interval=0.0)},
        retry_base_seconds=60.0,
        record_every_seconds=0.05,
    )
    return replace(base, **overrides)


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    # Generous limits: only the tests about flood control meet Telegram's real ones.
    async with BotApiServer(global_per_second=1000.0, chat_burst=50) as running:
        yield running


@pytest.fixture
async def sender(server: BotApiServer) -> AsyncIterator[TelegramSender]:
    async with TelegramSender(server.token, server.base_url) as telegram:
        yield telegram


async def queue(
    db: Database,
    member_id: int,
    occurrence: str,
    *,
    category: str = outbox.SERVICE,
    rule: str = "reminder",
    due: datetime = NOW,
    body: str | None = None,
    context: dict[str, Any] | None = None,
) -> int:
    """One queued message whose text names it, so the server's log tells messages apart."""
    intent = Intent(
        member_id=member_id,
        rule=rule,
        occurrence=occurrence,
        category=category,
        template_key=rule,
        locale="zh_CN",
        not_before=due,
        context=context or {},
    )
    return await queued(db, intent, body or f"{rule} {occurrence} for {member_id}")


async def row(db: Database, message_id: int) -> OutboxMessage:
    async with db.read() as session:
        found = await session.get(OutboxMessage, message_id)
    assert found is not None
    return found


def texts(server: BotApiServer, chat: int) -> list[str]:
    return [message.text for message in server.sent_to(chat)]


async def test_revive_turns_iso_strings_back_into_dates() -> None:
    revived = outbox.revived_context(
        {"points": {"expiring_on": "2026-12-31", "n": 3}, "at": ["2026-12-01T08:00:00+08:00"]}
    )
    assert revived["points"]["expiring_on"].isoformat() == "2026-12-31"
    assert revived["at"][0] == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert revived["points"]["n"] == 3


async def test_service_goes_marketing_needs_consent_and_an_opt_out_stops_it(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    willing = await new_member(db, "M1", chat=101, consent="counter")
    unasked = await new_member(db, "M2", chat=102)
    opted_out = await new_member(db, "M3", chat=103, consent="counter")
    async with db.transaction() as session:
        await privacy.set_consent(session, opted_out, False, source="telegram", actor="chat")
    promo = {
        m: await queue(db, m, "promo", category=outbox.MARKETING)
        for m in (willing, unasked, opted_out)
    }
    service = await queue(db, unasked, "oil")

    summary = await Dispatcher(db, {"telegram": sender}, policy(), clock=Clock()).run_once()

    assert (summary.claimed, summary.sent, summary.skipped) == (4, 2, 2)
    # An offer always says how to stop them; a service reminder needs no such line.
    footer = "回复“退订”即可不再接收优惠信息（保养、预约等服务提醒不受影响）。"
    assert texts(server, 101) == [f"reminder promo for {willing}\n\n{footer}"]
    assert texts(server, 102) == [f"reminder oil for {unasked}"]
    assert texts(server, 103) == []
    for skipped in (promo[unasked], promo[opted_out]):
        found = await row(db, skipped)
        assert (found.status, found.last_error) == (outbox.SKIPPED, "no_consent")
    sent = await row(db, service)
    assert (sent.status, sent.channel, sent.sent_at) == (outbox.SENT, "telegram", NOW)


async def test_quiet_hours_wait_in_the_members_store_time_zone(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    berlin_id = await add_store(db, "berlin", "Berlin", timezone="Europe/Berlin")
    shanghai_member = await new_member(db, "SH", chat=201)  # no home store: the chain's first
    berlin_member = await new_member(db, "BE", chat=202, home_store_id=berlin_id)
    late = await queue(db, shanghai_member, "late")
    booking = await queue(db, shanghai_member, "booked", category=outbox.TRANSACTIONAL)
    afternoon = await queue(db, berlin_member, "afternoon")
    # 14:00 UTC: 22:00 in Shanghai (quiet), 15:00 in Berlin.
    clock = Clock(datetime(2026, 11, 24, 14, 0, tzinfo=UTC))
    dispatcher = Dispatcher(db, {"telegram": sender}, policy(), clock=clock)

    summary = await dispatcher.run_once()

    assert (summary.sent, summary.deferred) == (2, 1)
    assert texts(server, 202) == [f"reminder afternoon for {berlin_member}"]
    assert texts(server, 201) == [f"reminder booked for {shanghai_member}"]
    waiting = await row(db, late)
    # Waits for 09:00 Shanghai (01:00 UTC), and waiting was not an attempt.
    assert waiting.status == outbox.PENDING
    assert waiting.not_before == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert waiting.attempts == 0 and waiting.last_error == "quiet_hours"
    assert (await row(db, booking)).status == outbox.SENT
    assert (await row(db, afternoon)).status == outbox.SENT

    clock.now = datetime(2026, 11, 25, 0, 59, tzinfo=UTC)
    assert (await dispatcher.run_once()).claimed == 0
    clock.now = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert (await dispatcher.run_once()).sent == 1
    assert texts(server, 201)[-1] == f"reminder late for {shanghai_member}"
    assert (await row(db, late)).attempts == 1


async def test_marketing_cap_counts_the_window_and_skips_the_excess(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    fan = await new_member(db, "FAN", chat=301, consent="counter")
    clock = Clock(NOW - timedelta(days=8))
    dispatcher = Dispatcher(db, {"telegram": sender}, policy(), clock=clock)
    await queue(db, fan, "old", category=outbox.MARKETING, due=clock.now)
    assert (await dispatcher.run_once()).sent == 1  # 8 days ago: outside the window
    clock.now = NOW - timedelta(days=6)
    await queue(db, fan, "recent", category=outbox.MARKETING, due=clock.now)
    assert (await dispatcher.run_once()).sent == 1  # 6 days ago: inside

    clock.now = NOW
    fresh = [await queue(db, fan, f"new{i}", category=outbox.MARKETING) for i in range(3)]
    service = await queue(db, fan, "oil")
    summary = await dispatcher.run_once()

    assert (summary.sent, summary.skipped) == (2, 2)
    assert [text.split("\n")[0] for text in texts(server, 301)] == [
        f"reminder old for {fan}",
        f"reminder recent for {fan}",
        f"reminder new0 for {fan}",
        f"reminder oil for {fan}",
    ]
    for capped in fresh[1:]:
        found = await row(db, capped)
        assert (found.status, found.last_error) == (outbox.SKIPPED, "marketing_cap")
    assert (await row(db, service)).status == outbox.SENT


async def test_no_chat_is_unreachable_and_listed_for_staff(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    walk_in = await new_member(db, "WALKIN", consent="counter")
    message = await queue(db, walk_in, "oil")

    summary = await Dispatcher(db, {"telegram": sender}, policy(), clock=Clock()).run_once()

    assert (summary.unreachable, summary.sent) == (1, 0)
    assert server.calls["sendMessage"] == 0
    found = await row(db, message)
    assert (found.status, found.last_error) == (outbox.UNREACHABLE, "no_chat")
    async with db.read() as session:
        reasons = await outbox.reason_counts(session)
    assert reasons == [OutboxReason(outbox.UNREACHABLE, "no_chat", "reminder", None, 1)]


async def test_blocked_chat_is_unreachable_unbound_and_never_tried_again(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    gone = await new_member(db, "GONE", chat=401)
    other = await new_member(db, "OTHER", chat=402)
    server.block(401)
    first = await queue(db, gone, "a")
    second = await queue(db, gone, "b")
    fine = await queue(db, other, "a")
    dispatcher = Dispatcher(db, {"telegram": sender}, policy(), clock=Clock())

    summary = await dispatcher.run_once()

    assert (summary.sent, summary.unreachable) == (1, 2)
    assert server.calls["sendMessage"] == 2  # one refused, one delivered; b never tried
    for message in (first, second):
        found = await row(db, message)
        assert (found.status, found.last_error) == (outbox.UNREACHABLE, "blocked")
    assert (await row(db, fine)).status == outbox.SENT
    async with db.read() as session:
        assert await binding.addresses_of(session, gone) == []
        unbinds = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "chat.unbind"))
        ).all()
    assert [(a.actor, a.entity_id) for a in unbinds] == [("dispatch", gone)]

    later = await queue(db, gone, "c")
    assert (await dispatcher.run_once()).unreachable == 1
    assert server.calls["sendMessage"] == 2
    assert (await row(db, later)).last_error == "no_chat"


async def test_flood_control_waits_and_delivers_each_message_once(db: Database) -> None:
    async with BotApiServer() as server, TelegramSender(server.token, server.base_url) as sender:
        await flood_control_case(db, server, sender)


async def flood_control_case(db: Database, server: BotApiServer, sender: TelegramSender) -> None:
    # The dispatcher is told no per-chat interval, so the server's burst of 3 runs out and
    # it answers 429 retry_after 1.
    chatty = await new_member(db, "CHATTY", chat=501)
    queued = [await queue(db, chatty, f"n{i}", due=NOW - timedelta(hours=1)) for i in range(5)]
    dispatcher = Dispatcher(db, {"telegram": sender}, policy(quiet_hours=None))

    first = await dispatcher.run_once()
    assert server.rejected_429 >= 1
    assert first.deferred >= 1 and first.sent + first.deferred == 5
    postponed = [await row(db, m) for m in queued]
    waiting = [r for r in postponed if r.status == outbox.PENDING]
    assert waiting and all(r.last_error.startswith("flood control") for r in waiting)
    assert all(r.attempts == 0 for r in waiting)  # being told to wait is not a failure

    for _ in range(10):
        if [(await row(db, m)).status for m in queued] == [outbox.SENT] * 5:
            break
        await asyncio.sleep(0.5)
        await dispatcher.run_once()
    delivered = Counter(texts(server, 501))
    assert set(delivered) == {f"reminder n{i} for {chatty}" for i in range(5)}
    assert max(delivered.values()) == 1


class Flaky:
    """A Telegram that fails the first `failures` sends the way a bad gateway does."""

    channel = "telegram"

    def __init__(self, inner: TelegramSender, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def send(self, address: str, reply: Reply) -> Delivery:
        if self.failures > 0:
            self.failures -= 1
            return Delivery(RETRY, error="Bad Gateway")
        return await self.inner.send(address, reply)


class Broken:
    channel = "telegram"

    async def send(self, address: str, reply: Reply) -> Delivery:
        raise ConnectionResetError("connection reset by peer")


async def test_transient_failure_backs_off_then_delivers(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    someone = await new_member(db, "SOMEONE", chat=601)
    message = await queue(db, someone, "oil")
    clock = Clock()
    dispatcher = Dispatcher(db, {"telegram": Flaky(sender, failures=2)}, policy(), clock=clock)

    assert (await dispatcher.run_once()).retried == 1
    first = await row(db, message)
    assert (first.status, first.attempts, first.last_error) == (outbox.PENDING, 1, "Bad Gateway")
    assert NOW + timedelta(seconds=30) <= first.not_before <= NOW + timedelta(seconds=60)

    clock.now = first.not_before
    assert (await dispatcher.run_once()).retried == 1
    second = await row(db, message)
    # The wait doubles with each attempt (with jitter: between half and all of it).
    assert first.not_before + timedelta(seconds=60) <= second.not_before
    assert second.not_before <= first.not_before + timedelta(seconds=120)

    clock.now = second.not_before
    assert (await dispatcher.run_once()).sent == 1
    assert texts(server, 601) == [f"reminder oil for {someone}"]
    assert (await row(db, message)).attempts == 3


async def test_gives_up_after_max_attempts(db: Database) -> None:
    someone = await new_member(db, "SOMEONE", chat=602)
    message = await queue(db, someone, "oil")
    clock = Clock()
    dispatcher = Dispatcher(db, {"telegram": Broken()}, policy(max_attempts=2), clock=clock)
    assert (await dispatcher.run_once()).retried == 1
    clock.now = (await row(db, message)).not_before
    assert (await dispatcher.run_once()).failed == 1
    found = await row(db, message)
    assert found.status == outbox.FAILED
    assert found.last_error.startswith("gave up after 2 attempts: ConnectionResetError")


async def test_two_dispatchers_deliver_every_message_exactly_once(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    ids = await new_members(db, 120, ref="P{n}", first_chat=7000)
    for someone in ids:
        for n in range(2):
            await queue(db, someone, f"v{n}")
    fast = policy(batch=25)
    one = Dispatcher(db, {"telegram": sender}, fast, clock=Clock(), worker_id="one")
    two = Dispatcher(db, {"telegram": sender}, fast, clock=Clock(), worker_id="two")

    done_one, done_two = await asyncio.gather(one.drain(), two.drain())

    assert done_one.sent + done_two.sent == 240
    assert done_one.sent > 0 and done_two.sent > 0
    assert done_one.lost == done_two.lost == 0
    delivered = Counter((m.chat_id, m.text) for m in server.sent)
    assert len(delivered) == 240 and max(delivered.values()) == 1
    async with db.read() as session:
        statuses = Counter((await session.scalars(select(OutboxMessage.status))).all())
    assert statuses == {outbox.SENT: 240}


async def test_buttons_from_context_arrive_as_an_inline_keyboard(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    someone = await new_member(db, "BTN", chat=801)
    buttons = [
        [{"label": "预约保养", "data": "booking:start"}],
        [{"label": "积分", "data": "points:show"}, {"label": "退订", "data": "account:opt_out"}],
    ]
    await queue(db, someone, "oil", context={"buttons": buttons})
    bad = await queue(db, someone, "bad", context={"buttons": [{"label": "x"}]})

    summary = await Dispatcher(db, {"telegram": sender}, policy(), clock=Clock()).run_once()

    assert (summary.sent, summary.failed) == (1, 1)
    (message,) = server.sent_to(801)
    assert message.reply_markup == {
        "inline_keyboard": [
            [{"text": "预约保养", "callback_data": "booking:start"}],
            [
                {"text": "积分", "callback_data": "points:show"},
                {"text": "退订", "callback_data": "account:opt_out"},
            ],
        ]
    }
    assert (await row(db, bad)).last_error.startswith("message: context buttons")


async def test_template_is_rendered_when_no_body_was_stored(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    someone = await new_member(db, "TPL", chat=901)
    context = {
        "member": {"name": "李女士"},
        "points": {"balance": 5000, "expiring": 1200, "expiring_on": "2026-12-31"},
        "store": {"name": "徐汇店", "timezone": "Asia/Shanghai"},
        "today": "2026-11-24",
    }
    intent = Intent(
        member_id=someone,
        rule="points_expiring",
        occurrence="2026-12-31",
        category=outbox.SERVICE,
        template_key="points_expiring",
        locale="zh_CN",
        not_before=NOW,
        context=context,
    )
    async with db.transaction() as session:
        await outbox.enqueue(session, [intent])

    summary = await Dispatcher(db, {"telegram": sender}, policy(), clock=Clock()).run_once()

    assert summary.sent == 1
    (message,) = server.sent_to(901)
    assert "李女士" in message.text and "1,200" in message.text
    async with db.read() as session:
        stored = await session.scalar(select(OutboxMessage.body))
    assert stored == message.text


async def test_erased_member_is_skipped(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    someone = await new_member(db, "ERASED", chat=902)
    message = await queue(db, someone, "oil")
    # Erasure deletes queued messages; a rule racing it may still queue one.
    async with db.transaction() as session:
        await session.execute(update(Member).where(Member.id == someone).values(erased_at=NOW))
    assert (
        await Dispatcher(db, {"telegram": sender}, policy(), clock=Clock()).run_once()
    ).skipped == 1
    assert (await row(db, message)).last_error == "erased"
    assert server.calls["sendMessage"] == 0


async def test_the_pacer_keeps_telegrams_limits(db: Database) -> None:
    """Real limits (30/s overall, 1/s per chat) on the server and the dispatcher's defaults:
    70 messages to 35 chats go out without a single 429, as fast as the limits allow."""
    for someone in await new_members(db, 35, ref="R{n}", first_chat=9000):
        for n in range(2):
            await queue(db, someone, f"r{n}")
    async with BotApiServer() as limited, TelegramSender(limited.token, limited.base_url) as tg:
        dispatcher = Dispatcher(db, {"telegram": tg}, DispatchPolicy(), clock=Clock())
        summary = await dispatcher.run_once()
        sent = limited.sent
    assert summary.sent == 70 and limited.rejected_429 == 0
    # 70 sends need three one-second windows of at most 30: the 61st starts two windows
    # after the first.
    span = sent[-1].at - sent[0].at
    assert 2.0 <= span <= 2.6
    times = [message.at for message in sent]
    assert max(sum(1 for u in times if t - 1.0 < u <= t) for t in times) <= 30
    by_chat: dict[int, list[float]] = {}
    for message in sent:
        by_chat.setdefault(message.chat_id, []).append(message.at)
    assert all(b - a >= 0.95 for a, b in by_chat.values())


async def test_a_rule_can_say_whether_quiet_hours_hold_its_messages(
    db: Database, server: BotApiServer, sender: TelegramSender
) -> None:
    someone = await new_member(db, "FLAGS", chat=903)
    urgent = await queue(db, someone, "urgent", context={"dispatch": {"quiet_hours": False}})
    patient = await queue(
        db,
        someone,
        "patient",
        category=outbox.TRANSACTIONAL,
        context={"dispatch": {"quiet_hours": True}},
    )
    late_evening = Clock(datetime(2026, 11, 24, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    dispatcher = Dispatcher(db, {"telegram": sender}, policy(), clock=late_evening)

    summary = await dispatcher.run_once()

    assert (summary.sent, summary.deferred) == (1, 1)
    assert (await row(db, urgent)).status == outbox.SENT
    assert (await row(db, patient)).status == outbox.PENDING
