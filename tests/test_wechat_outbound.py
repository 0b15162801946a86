"""Proactive messages on WeChat: the dispatcher sending through the real `WeChatSender` to the
local WeChat API server, with members acting through the real webhook (signed XML).

Inside the allowance a member's actions give, a message goes as a customer-service message;
outside it a service reminder goes as its rule's template message, fitted to WeChat's limits,
and an offer waits for the member's next message (or counts unreachable after the wait).
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bot.channels import wechat
from bot.channels.wechat_api import WeChatApi
from bot.channels.wechat_send import WeChatSender
from bot.conversation import Chat
from db.models import OutboxMessage
from db.session import Database
from domain import allowances, cards
from domain.errors import ConfigError
from domain.messages import Renderer
from domain.shop import ShopConfig
from memberbot import app
from memberbot.settings import Settings
from scheduler import outbox, rules
from scheduler.dispatch import ChannelLimits, Dispatcher, DispatchPolicy
from scheduler.outbox import Intent
from scheduler.ruleconfig import load_rules
from tests.support.builders import bind_chat, invite_code, new_member, queued
from tests.support.localserver import free_port
from tests.support.rules_chain import DAY as CHAIN_DAY
from tests.support.rules_chain import NOW as CHAIN_NOW
from tests.support.rules_chain import build_chain, local
from tests.support.wechat_api_server import WeChatApiServer
from tests.support.wechat_platform import APP_ID, APP_SECRET, TOKEN, WeChatServer

ALICE = "oAliceAbCdEfGhIjKlMnOpQrStU"
TEMPLATE = {
    "id": "TPL_booking_0001",
    "fields": {
        "thing1": "{{ booking.service }}",
        "time2": "{{ booking.starts_at|date }} {{ booking.starts_at|time }}",
        "thing3": "{{ store.name }}",
    },
}


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Shop:
    """A member bound on WeChat, the webhook they write to, and the dispatcher that writes
    to them through the WeChat API server."""

    db: Database
    api: WeChatApiServer
    wx: WeChatServer
    dispatcher: Dispatcher
    clock: Clock
    member_id: int = 0


def policy() -> DispatchPolicy:
    return DispatchPolicy(
        quiet_hours=None,
        limits={"wechat": ChannelLimits(per_second=500.0, chat_interval=0.0)},
        record_every_seconds=0.05,
    )


@contextlib.asynccontextmanager
async def shop(db: Database, config: ShopConfig) -> AsyncIterator[Shop]:
    chat = Chat(db, config)
    options = wechat.WeChatOptions(token=TOKEN, app_id=APP_ID, app_secret=APP_SECRET)
    channel = wechat.WeChatChannel(chat, options)
    transport = httpx.ASGITransport(app=Starlette(routes=[channel.route()]))
    async with (
        WeChatApiServer() as api_server,
        httpx.AsyncClient(transport=transport, base_url="http://memberbot") as client,
    ):
        api = WeChatApi(db, api_server.app_id, api_server.app_secret, api_server.base_url)
        clock = Clock(datetime.now(UTC))
        sender = WeChatSender(api, chat)
        dispatcher = Dispatcher(db, {"wechat": sender}, policy(), clock=clock)
        try:
            yield Shop(db, api_server, WeChatServer(client), dispatcher, clock)
        finally:
            await channel.aclose()
            api.close()


async def bound_by_code(s: Shop, consent: bool = True) -> int:
    """A member who binds by typing their invite code: that message is an interaction."""
    member_id = await new_member(s.db, consent="counter" if consent else None)
    reply = await s.wx.say(ALICE, await invite_code(s.db, member_id, datetime.now(UTC)))
    assert "绑定成功" in reply
    s.member_id = member_id
    return member_id


async def bound_long_ago(s: Shop, consent: bool = True) -> int:
    """A member whose chat was bound before, with no interaction in any window now."""
    member_id = await new_member(
        s.db, consent="counter" if consent else None, chat=ALICE, channel="wechat"
    )
    s.member_id = member_id
    return member_id


async def queue(
    s: Shop,
    occurrence: str,
    *,
    category: str = outbox.SERVICE,
    template: dict[str, Any] | None = None,
    text: str | None = None,
) -> int:
    flags: dict[str, Any] = {"quiet_hours": True}
    if template is not None:
        flags["wechat_template"] = template
    context = {
        "booking": {
            "service": "精致洗车",
            "starts_at": datetime(2026, 12, 5, 2, 30, tzinfo=UTC),
            "store_name": "徐汇店",
        },
        "store": {"name": "上海徐汇区漕溪北路旗舰店（地铁1号线上海体育馆站3号口）"},
        "dispatch": flags,
    }
    intent = Intent(
        member_id=s.member_id,
        rule="reminder",
        occurrence=occurrence,
        category=category,
        template_key="booking_reminder",
        locale="zh_CN",
        not_before=s.clock.now,
        context=outbox.stored_context(context),
    )
    return await queued(s.db, intent, text or f"message {occurrence}")


async def row(db: Database, message_id: int) -> OutboxMessage:
    async with db.read() as session:
        found = await session.get(OutboxMessage, message_id)
    assert found is not None
    return found


@pytest.fixture
async def s(db: Database, shop_config: ShopConfig) -> AsyncIterator[Shop]:
    async with shop(db, shop_config) as running:
        yield running


async def test_inside_the_allowance_a_reminder_goes_as_a_customer_service_message(
    s: Shop,
) -> None:
    await bound_by_code(s)
    message = await queue(s, "1", template=TEMPLATE)
    summary = await s.dispatcher.run_once()
    assert summary.sent == 1
    assert s.api.sent == [(ALICE, "message 1")] and s.api.cards == []
    assert (await row(s.db, message)).status == "sent"


async def test_outside_it_a_reminder_goes_as_its_template_message_within_the_limits(
    s: Shop,
) -> None:
    await bound_long_ago(s)
    message = await queue(s, "1", template=TEMPLATE)
    summary = await s.dispatcher.run_once()
    assert summary.sent == 1 and s.api.sent == []
    [(openid, template_id, values)] = s.api.cards
    assert (openid, template_id) == (ALICE, "TPL_booking_0001")
    assert values["thing1"] == "精致洗车"
    assert values["time2"].startswith("2026") and "10:30" in values["time2"]
    # The store's long name is cut to WeChat's 20 characters, not refused at send time.
    assert len(values["thing3"]) == cards.FIELD_LIMIT and values["thing3"].endswith("…")
    assert values["thing3"].startswith("上海徐汇区漕溪北路旗舰店")
    assert (await row(s.db, message)).status == "sent"


async def test_an_offer_outside_it_waits_and_goes_on_the_members_next_message(s: Shop) -> None:
    await bound_long_ago(s)
    offer = await queue(s, "1", category=outbox.MARKETING, template=None, text="送您洗车券")
    summary = await s.dispatcher.run_once()
    assert summary.held == 1 and s.api.sent == [] and s.api.cards == []
    waiting = await row(s.db, offer)
    assert (waiting.status, waiting.last_error) == ("pending", "waiting_for_member")
    assert waiting.held_until is not None
    assert waiting.held_until - s.clock.now == timedelta(days=7)
    assert (await s.dispatcher.run_once()).claimed == 0  # it waits, it is not polled

    reply = await s.wx.say(ALICE, "你好")  # the member writes: the offer is due at once
    assert reply
    s.clock.now = datetime.now(UTC)
    assert (await s.dispatcher.run_once()).sent == 1
    [(openid, text)] = s.api.sent
    assert openid == ALICE and text.startswith("送您洗车券")
    assert "退订" in text  # an offer always says how to stop them
    assert (await row(s.db, offer)).status == "sent"


async def test_an_offer_nobody_answers_counts_unreachable_after_the_wait(s: Shop) -> None:
    await bound_long_ago(s)
    offer = await queue(s, "1", category=outbox.MARKETING, text="送您洗车券")
    await s.dispatcher.run_once()
    s.clock.now += timedelta(days=7, minutes=1)
    summary = await s.dispatcher.run_once()
    assert summary.unreachable == 1 and s.api.sent == []
    found = await row(s.db, offer)
    assert (found.status, found.last_error) == ("unreachable", "no_window")


async def test_a_reminder_without_a_template_waits_as_well(s: Shop) -> None:
    await bound_long_ago(s)
    reminder = await queue(s, "1")
    assert (await s.dispatcher.run_once()).held == 1
    assert (await row(s.db, reminder)).last_error == "waiting_for_member"


async def test_one_message_allows_five_then_the_rest_wait(s: Shop) -> None:
    await bound_by_code(s)
    ids = [await queue(s, str(n)) for n in range(7)]
    summary = await s.dispatcher.run_once()
    assert (summary.sent, summary.held) == (5, 2)
    assert [text for _, text in s.api.sent] == [f"message {n}" for n in range(5)]
    statuses = [(await row(s.db, i)).status for i in ids]
    assert statuses == ["sent"] * 5 + ["pending"] * 2


async def test_a_menu_click_allows_three_within_a_minute(s: Shop) -> None:
    await bound_long_ago(s)
    await s.wx.event(ALICE, "CLICK", "points")
    for n in range(4):
        await queue(s, str(n))
    summary = await s.dispatcher.run_once()
    assert (summary.sent, summary.held) == (3, 1)
    await s.wx.event(ALICE, "CLICK", "points", later=1)  # another click wakes the fourth
    s.clock.now = datetime.now(UTC)
    assert (await s.dispatcher.run_once()).sent == 1


async def test_unsubscribing_makes_what_waits_unreachable_at_once(s: Shop) -> None:
    await bound_long_ago(s)
    offer = await queue(s, "1", category=outbox.MARKETING, text="送您洗车券")
    await s.dispatcher.run_once()
    assert await s.wx.event(ALICE, "unsubscribe") == ""
    s.clock.now = datetime.now(UTC)
    assert (await s.dispatcher.run_once()).unreachable == 1
    found = await row(s.db, offer)
    assert (found.status, found.last_error) == ("unreachable", "no_chat")
    assert s.api.sent == [] and s.api.cards == []


async def test_wechat_closing_the_window_early_falls_back_to_the_template(s: Shop) -> None:
    await bound_by_code(s)
    s.api.fail_next(45015)
    await queue(s, "1", template=TEMPLATE)
    assert (await s.dispatcher.run_once()).sent == 1
    assert s.api.sent == [] and len(s.api.cards) == 1


async def test_two_senders_cannot_spend_the_same_allowance_twice(s: Shop) -> None:
    now = datetime.now(UTC)
    async with s.db.transaction() as session:
        await allowances.grant(session, "wechat", ALICE, allowances.CLICK, now)

    async def take() -> int | None:
        async with s.db.transaction() as session:
            return await allowances.take(session, "wechat", ALICE, now)

    taken = await asyncio.gather(*(take() for _ in range(10)))
    assert sum(t is not None for t in taken) == 3


async def test_a_rule_with_a_template_message_reaches_a_member_outside_the_window(
    db: Database, shop_config: ShopConfig, tmp_path: Path
) -> None:
    """The rules file's template message, through the real rules and dispatcher."""
    file = tmp_path / "rules.yaml"
    file.write_text(
        "rules:\n"
        "  - key: booking_reminder\n"
        "    wechat_template:\n"
        "      id: TPL_booking_0001\n"
        "      fields:\n"
        '        thing1: "{{ booking.service }}"\n'
        '        time2: "{{ booking.starts_at|time }}"\n'
        '        thing3: "{{ booking.store_name }}"\n',
        encoding="utf-8",
    )
    chain = await build_chain(db, shop_config)
    await rules.run(
        db, load_rules(file), CHAIN_DAY, shop_config, CHAIN_NOW, rule="booking_reminder"
    )
    await bind_chat(db, chain.ids["booker"], ALICE, "wechat")
    async with shop(db, shop_config) as s:
        s.clock.now = local(CHAIN_DAY + timedelta(days=1), 9)  # an hour before the booking
        summary = await s.dispatcher.run_once()
    assert summary.sent == 2 and s.api.sent == []
    assert [(openid, tpl) for openid, tpl, _ in s.api.cards] == [(ALICE, "TPL_booking_0001")] * 2
    for _, _, values in s.api.cards:
        assert values == {"thing1": "精致洗车", "time2": "10:00", "thing3": "总店"}


@pytest.mark.parametrize(
    ("fields", "rule", "problem"),
    [
        ({"first": "{{ member.name }}"}, "booking_reminder", "first"),
        ({"thing1": "您好\n{{ member.name }}"}, "booking_reminder", "one line"),
        ({"thing1": "{{ store.address }}"}, "booking_reminder", "20 characters"),
        ({"thing1": "{{ nothing.here }}"}, "booking_reminder", "thing1"),
        ({"thing1": "{{ member.name }}"}, "win_back", "marketing"),
        ({"Thing 1": "{{ member.name }}"}, "booking_reminder", "keyword"),
    ],
)
def test_template_messages_are_checked_when_the_rules_load(
    tmp_path: Path, fields: dict[str, str], rule: str, problem: str
) -> None:
    file = tmp_path / "rules.yaml"
    lines = [f"  - key: {rule}", "    wechat_template:", "      id: TPL_abcdefgh", "      fields:"]
    lines += [f"        {json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items()]
    file.write_text("rules:\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_rules(file)
    assert problem in str(raised.value)


def test_a_card_is_fitted_when_it_is_rendered() -> None:
    card = cards.render(
        "TPL_abcdefgh",
        {"thing1": "{{ a }}", "thing2": "{{ b }}"},
        "zh_CN",
        {"a": "第一行\n第二行 🚗", "b": "x" * 30},
        Renderer(),
    )
    assert dict(card.fields) == {"thing1": "第一行 第二行", "thing2": "x" * 19 + "…"}


# -- memberbot serve --------------------------------------------------------------------------


async def test_serve_binds_answers_and_sends_a_reminder_on_wechat(tmp_path: Path) -> None:
    """The whole process: the webhook, the dispatcher and WeChat's API on the settings alone."""
    port, url = free_port(), f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    async with WeChatApiServer() as api_server:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            shop_config=tmp_path / "shop.yaml",  # absent: the shipped defaults
            http_port=port,
            wechat_token=TOKEN,
            wechat_app_id=api_server.app_id,
            wechat_app_secret=api_server.app_secret,
            wechat_api_base_url=api_server.base_url,
            quiet_hours="off",
            dispatch_interval_seconds=0.1,
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(settings, stop=stop))
        db = Database.from_url(url)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await _healthy(client, serving)
                wx = WeChatServer(client)
                member_id = await new_member(db, consent="counter")
                code = await invite_code(db, member_id, datetime.now(UTC))
                assert "绑定成功" in await wx.event(ALICE, "subscribe", f"qrscene_{code}")
                assert "积分" in await wx.say(ALICE, "我的积分")
                intent = Intent(
                    member_id=member_id,
                    rule="maintenance_due",
                    occurrence="car-1",
                    category=outbox.SERVICE,
                    template_key="maintenance_due",
                    locale="zh_CN",
                    not_before=datetime.now(UTC),
                )
                await queued(db, intent, "该做保养啦")
                assert await api_server.wait_sent(1) == [(ALICE, "该做保养啦")]
        finally:
            stop.set()
            await asyncio.wait_for(serving, 15)
            await db.dispose()


async def _healthy(client: httpx.AsyncClient, serving: asyncio.Task[None]) -> None:
    for _ in range(500):
        if serving.done():
            serving.result()
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(app.HEALTH_PATH)).status_code == 200:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("serve did not answer /healthz")
