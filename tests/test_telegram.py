"""The Telegram channel end to end, offline: the real python-telegram-bot Application (long
polling, and webhook mode through our Starlette route) against the local Bot API server, with
the conversation core and a real database behind it, on SQLite and PostgreSQL. We play members
and check what they would read and what changed in the database; and the scheduler's
TelegramSender against Telegram's refusals."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from telegram.ext import Application

from bot.channels import telegram as tg
from bot.conversation import Chat, Flow
from bot.flows import ALL_FLOWS
from db.models import Member
from db.session import Database
from domain import binding, bookings, members, points, staff
from domain.errors import ConfigError
from domain.outgoing import BLOCKED, FAILED, RETRY, SENT, Button, Reply
from domain.shop import ShopConfig
from memberbot import app
from memberbot.settings import Settings
from tests.support.botapi_server import BotApiServer, SentMessage
from tests.support.builders import invite_code, new_member
from tests.support.localserver import free_port

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Tuesday
PHONE = "13812345678"
ALICE = 1001  # chat id == user id, as in a Telegram private chat
BOB = 2002
SECRET = "hook-Secret_42"


def _flow_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"bot.flows.{name}")
    except ModuleNotFoundError:
        return None


def chat_flows() -> list[Flow]:
    """Every registered flow, plus the member-facing ones colleagues have written but may not
    have registered yet (points, booking), so these tests follow the real chat."""
    flows = list(ALL_FLOWS)
    for name in ("loyalty", "booking"):
        module = _flow_module(name)
        if module is not None and module.FLOW.name not in {flow.name for flow in flows}:
            flows.append(module.FLOW)
    return flows


def settings_for(server: BotApiServer, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        telegram_token=server.token,
        telegram_base_url=server.base_url,
        **extra,
    )


@dataclass
class Bot:
    server: BotApiServer
    chat: Chat
    application: Application
    db: Database

    async def answer(self, chat_id: int, update: Any = None, count: int = 1) -> list[SentMessage]:
        """The messages a member sees after acting: wait for `count` new ones."""
        before = len(self.server.sent_to(chat_id))
        if callable(update):
            update()
        await self.server.wait_sent(chat_id, before + count)
        await self.server.wait_idle()
        return self.server.sent_to(chat_id)[before:]


async def member_with_points(db: Database, config: ShopConfig, balance: int = 0) -> int:
    """Member M1, who agreed to marketing, with `balance` points given on opening the card."""
    member_id = await new_member(db, "M1", PHONE, consent="counter")
    if balance:
        async with db.transaction() as session:
            await points.adjust(
                session, member_id, balance, NOW.date(), config.loyalty, reason="开卡", actor="t"
            )
    return member_id


async def bound_to(db: Database, chat_id: int) -> int | None:
    async with db.read() as session:
        member = await binding.member_for(session, "telegram", str(chat_id))
    return None if member is None else member.id


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(flood_limits=False) as server:
        yield server


@pytest.fixture
async def bot(db: Database, shop_config: ShopConfig, server: BotApiServer) -> AsyncIterator[Bot]:
    chat = Chat(db, shop_config, flows=chat_flows(), clock=lambda: NOW)
    options = app.telegram_options(settings_for(server))
    application = tg.build_application(chat, options)
    async with tg.running(application, options):
        assert application.updater is not None and application.updater.running
        yield Bot(server, chat, application, db)
    assert not application.running


def inline_data(message: SentMessage) -> list[str]:
    markup = message.reply_markup or {}
    return [button["callback_data"] for row in markup.get("inline_keyboard", []) for button in row]


def _send_attempts(server: BotApiServer) -> int:
    return server.calls["sendMessage"] + server.calls["editMessageText"]


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def asks_for_contact(message: SentMessage) -> bool:
    rows = (message.reply_markup or {}).get("keyboard", [])
    return any(button.get("request_contact") for row in rows for button in row)


async def test_binding_by_invite_then_points_in_chinese(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await member_with_points(bot.db, shop_config, balance=1280)
    server = bot.server

    [how_to] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "积分"))
    assert "绑定码" in how_to.text and asks_for_contact(how_to)
    assert how_to.reply_markup is not None and how_to.reply_markup.get("one_time_keyboard")
    assert await bound_to(bot.db, ALICE) is None

    code = await invite_code(bot.db, member_id, NOW)
    bound, menu = await bot.answer(
        ALICE, lambda: server.user_command(ALICE, "start", code), count=2
    )
    assert "绑定成功" in bound.text and "王先生" in bound.text
    assert bound.reply_markup == {"remove_keyboard": True}  # the contact keyboard goes
    assert "go:points" in inline_data(menu) and "go:book" in inline_data(menu)
    assert await bound_to(bot.db, ALICE) == member_id

    [balance] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "积分"))
    assert "1,280" in balance.text and "积分" in balance.text
    assert not asks_for_contact(balance)


async def test_only_ones_own_contact_binds(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await member_with_points(bot.db, shop_config)
    server = bot.server

    refused, menu = await bot.answer(
        BOB, lambda: server.user_contact(BOB, "86" + PHONE, contact_user_id=ALICE), count=2
    )
    assert "本人" in refused.text and refused.reply_markup == {"remove_keyboard": True}
    assert menu.text == tg.BUTTONS_POINTER and "go:how_to_bind" in inline_data(menu)
    assert await bound_to(bot.db, BOB) is None

    bound, menu = await bot.answer(
        BOB, lambda: server.user_contact(BOB, "86" + PHONE, contact_user_id=BOB), count=2
    )
    assert "绑定成功" in bound.text and bound.reply_markup == {"remove_keyboard": True}
    assert "go:points" in inline_data(menu)
    assert await bound_to(bot.db, BOB) == member_id


async def test_forged_buttons_get_an_answer_and_a_polite_reply(
    bot: Bot, shop_config: ShopConfig
) -> None:
    member_id = await member_with_points(bot.db, shop_config)
    server = bot.server
    code = await invite_code(bot.db, member_id, NOW)
    await bot.answer(ALICE, lambda: server.user_command(ALICE, "start", code))
    [menu] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "菜单"))

    for forged in ("account:unbind:../../etc", "x" * 200, "booking:day:2026-13-45; DROP"):
        answered, attempts = len(server.callback_answers), _send_attempts(server)
        server.user_press(ALICE, menu.message_id, forged)
        await _until(lambda a=answered: len(server.callback_answers) > a)
        await _until(lambda n=attempts: _send_attempts(server) > n)
        await server.wait_idle()
        # What the member sees last: the pressed message edited, or a new one (an edit that
        # would change nothing is refused by Telegram and skipped).
        seen = server.sent_to(ALICE)[-1]
        assert "过期" in seen.text and "go:points" in inline_data(seen)
    assert await bound_to(bot.db, ALICE) == member_id  # nothing was unbound


async def test_menu_button_runs_its_intent(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await member_with_points(bot.db, shop_config, balance=300)
    code = await invite_code(bot.db, member_id, NOW)
    server = bot.server
    [menu] = await bot.answer(ALICE, lambda: server.user_command(ALICE, "start", code))
    assert menu.reply_markup is not None and "remove_keyboard" not in menu.reply_markup

    [balance] = await bot.answer(
        ALICE, lambda: server.user_press(ALICE, menu.message_id, "go:points")
    )
    assert "300" in balance.text and balance.method == "sendMessage"
    assert server.callback_answers[-1]["callback_query_id"]


async def test_stop_opts_out_of_marketing_only(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await member_with_points(bot.db, shop_config)
    code = await invite_code(bot.db, member_id, NOW)
    server = bot.server
    await bot.answer(ALICE, lambda: server.user_command(ALICE, "start", code))

    [reply] = await bot.answer(ALICE, lambda: server.user_command(ALICE, "stop"))

    assert "退订" in reply.text and "服务通知仍会照常发送" in reply.text
    async with bot.db.read() as session:
        member = await session.scalar(select(Member).where(Member.id == member_id))
    assert member is not None and member.marketing_consent is False


async def test_a_complaint_reaches_the_store_staff_on_telegram(
    bot: Bot, shop_config: ShopConfig
) -> None:
    clerk_user, manager_user, elsewhere_user = 7001, 7002, 7003
    async with bot.db.transaction() as session:
        store = await bookings.store_by_code(session, "main")
        member = await members.create(
            session, member_ref="M2", name="赵女士", phone=PHONE, home_store_id=store.id
        )
        await staff.add(
            session,
            name="小张",
            role=staff.STAFF,
            store_code="main",
            telegram_user_id=clerk_user,
            actor="t",
        )
        await staff.add(
            session,
            name="刘经理",
            role=staff.MANAGER,
            store_code=None,
            telegram_user_id=manager_user,
            actor="t",
        )
        await staff.add(  # chain-wide but not a manager: not whom a complaint is for
            session,
            name="小李",
            role=staff.STAFF,
            store_code=None,
            telegram_user_id=elsewhere_user,
            actor="t",
        )
        assert member.id is not None
    code = await invite_code(bot.db, member.id, NOW)
    server = bot.server
    await bot.answer(ALICE, lambda: server.user_command(ALICE, "start", code))
    async with tg.TelegramSender(server.token, server.base_url) as sender:
        bot.chat.staff_channel = partial(app.alert_staff, sender)
        await bot.answer(ALICE, lambda: server.user_text(ALICE, "投诉"))
        [filed] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "洗车后还有水渍"))
        [alert] = await server.wait_sent(clerk_user, 1)
        [to_manager] = await server.wait_sent(manager_user, 1)

    assert "洗车后还有水渍" in alert.text and "M2" in alert.text
    assert "+86138****5678" in alert.text and PHONE not in alert.text
    assert to_manager.text == alert.text
    assert server.sent_to(elsewhere_user) == []
    assert "已收到您的反馈" in filed.text


async def test_unknown_command_gets_the_menu(bot: Bot) -> None:
    [reply] = await bot.answer(ALICE, lambda: bot.server.user_command(ALICE, "frobnicate"))
    assert "没太明白" in reply.text and "go:how_to_bind" in inline_data(reply)


async def test_english_client_and_command_menus(bot: Bot) -> None:
    server = bot.server
    [reply] = await bot.answer(BOB, lambda: server.user_text(BOB, "points", language_code="en"))
    assert "code" in reply.text.lower() and asks_for_contact(reply)
    assert reply.reply_markup is not None
    assert reply.reply_markup["keyboard"][0][0]["text"] != "📱 分享手机号"

    assert set(server.my_commands) == {"", "zh", "en"}
    zh = {c["command"]: c["description"] for c in server.my_commands["zh"]}
    en = {c["command"]: c["description"] for c in server.my_commands["en"]}
    assert server.my_commands[""] == server.my_commands["zh"]
    assert set(zh) == set(en) and {"points", "book", "stop", "help"} <= set(zh)
    assert zh["points"] == "我的积分和即将到期的积分" and en["stop"].startswith("Stop offers")
    assert bot.chat.bot_username == server.username


async def _press_first(
    bot: Bot, message: SentMessage, prefix: str, *, last: bool = False
) -> SentMessage:
    """Tap the first (or last) button of `message` whose data starts with `prefix`; the answer."""
    matching = [d for d in inline_data(message) if d.startswith(prefix)]
    assert matching, f"no {prefix} button under {message.text!r}"
    data = matching[-1 if last else 0]
    [answer] = await bot.answer(
        ALICE, lambda: bot.server.user_press(ALICE, message.message_id, data)
    )
    return answer


async def test_booking_through_the_buttons_and_cancelling(
    bot: Bot, shop_config: ShopConfig
) -> None:
    if _flow_module("booking") is None:
        pytest.xfail("bot/flows/booking.py is not written yet")
    member_id = await member_with_points(bot.db, shop_config)
    code = await invite_code(bot.db, member_id, NOW)
    server = bot.server
    await bot.answer(ALICE, lambda: server.user_command(ALICE, "start", code))

    [step] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "预约"))
    if any(d.startswith("booking:store:") for d in inline_data(step)):
        step = await _press_first(bot, step, "booking:store:")
    for prefix in ("booking:svc:", "booking:day:", "booking:slot:", "booking:ok:"):
        pressed = step.message_id
        # The last day offered, so the booking is still changeable when we cancel it.
        step = await _press_first(bot, step, prefix, last=prefix == "booking:day:")
        # One message walks through the steps: each answer replaces the tapped keyboard.
        assert step.method == "editMessageText" and step.message_id == pressed
    assert "预约成功" in step.text

    async with bot.db.read() as session:
        [line] = await bookings.upcoming_for_member(session, member_id, NOW)
    assert bookings.reference(line.booking) in step.text
    assert line.booking.status == bookings.BOOKED and line.booking.source == "chat"

    [listing] = await bot.answer(ALICE, lambda: server.user_text(ALICE, "我的预约"))
    assert f"booking:cancel:{line.booking.id}" in inline_data(listing)
    sure = await _press_first(bot, listing, f"booking:cancel:{line.booking.id}")
    done = await _press_first(bot, sure, f"booking:cancelok:{line.booking.id}")
    assert "取消预约" in done.text and bookings.reference(line.booking) in done.text
    async with bot.db.read() as session:
        assert await bookings.upcoming_for_member(session, member_id, NOW) == []


# -- webhook mode ---------------------------------------------------------------------------


async def test_webhook_mode_checks_the_secret(
    db: Database, shop_config: ShopConfig, server: BotApiServer
) -> None:
    chat = Chat(db, shop_config, flows=chat_flows(), clock=lambda: NOW)
    options = app.telegram_options(
        settings_for(
            server,
            telegram_webhook_url="https://bot.example.com/telegram/webhook",
            telegram_webhook_secret=SECRET,
        )
    )
    application = tg.build_application(chat, options)
    assert application.updater is None
    web = Starlette(routes=[tg.webhook_route(application, SECRET)])
    transport = httpx.ASGITransport(app=web)
    async with (
        tg.running(application, options),
        httpx.AsyncClient(transport=transport, base_url="http://memberbot") as client,
    ):
        assert server.webhook is not None
        assert server.webhook["url"] == "https://bot.example.com/telegram/webhook"
        assert server.webhook["secret_token"] == SECRET

        update = server.update_payload(server.user_text(ALICE, "积分"))
        for headers in ({}, {tg.SECRET_HEADER: "wrong"}, {tg.SECRET_HEADER: SECRET + "x"}):
            response = await client.post(tg.WEBHOOK_PATH, json=update, headers=headers)
            assert response.status_code == 403
        garbage = await client.post(
            tg.WEBHOOK_PATH, content=b"{not json", headers={tg.SECRET_HEADER: SECRET}
        )
        assert garbage.status_code == 400
        await asyncio.sleep(0.3)  # what was wrongly queued would be answered by now
        assert server.sent_to(ALICE) == []

        response = await client.post(
            tg.WEBHOOK_PATH, json=update, headers={tg.SECRET_HEADER: SECRET}
        )
        assert response.status_code == 200
        [reply] = await server.wait_sent(ALICE)
        assert "绑定码" in reply.text and asks_for_contact(reply)
    assert server.calls["getUpdates"] == 0


def test_webhook_mode_needs_a_secret(shop_config: ShopConfig) -> None:
    for secret in (None, "", "has spaces", "x" * 257):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            telegram_token="1:T",
            telegram_webhook_url="https://bot.example.com/telegram/webhook",
            telegram_webhook_secret=secret,
        )
        with pytest.raises(ConfigError):
            tg.build_application(Chat(None, shop_config), app.telegram_options(settings))  # type: ignore[arg-type]


# -- the scheduler's sender -----------------------------------------------------------------


async def test_sender_reports_each_outcome() -> None:
    async with (
        BotApiServer(flood_limits=True, chat_burst=2, chat_interval=5.0) as server,
        tg.TelegramSender(server.token, server.base_url) as sender,
    ):
        reply = Reply("您的保养快到期了", ((Button("预约", "go:book"),),))
        first = await sender.send(str(ALICE), reply)
        assert first.status == SENT and first.message_id == "1"
        assert inline_data(server.sent[0]) == ["go:book"]
        assert server.sent[0].text == "您的保养快到期了"

        assert (await sender.send(str(ALICE), Reply("second"))).status == SENT
        flooded = await sender.send(str(ALICE), Reply("third"))
        assert flooded.status == RETRY and flooded.retry_after is not None
        assert 1 <= flooded.retry_after <= 5 and server.rejected_429 == 1

        server.block(BOB)
        blocked = await sender.send(str(BOB), Reply("hello"))
        assert blocked.status == BLOCKED

        too_long = await sender.send("3003", Reply("长" * 5000))
        assert too_long.status == FAILED and "too long" in (too_long.error or "")

        assert (await sender.send("not-a-chat", Reply("x"))).status == FAILED
        assert [m.text for m in server.sent] == ["您的保养快到期了", "second"]


async def test_sender_reports_a_network_failure_as_retry() -> None:
    async with BotApiServer() as server:
        base_url = server.base_url
    async with tg.TelegramSender("123456:TEST-TOKEN", base_url) as sender:
        outcome = await sender.send(str(ALICE), Reply("hello"))
    assert outcome.status == RETRY


# -- memberbot serve ------------------------------------------------------------------------


async def _until_serving(
    client: httpx.AsyncClient, url: str, serving: asyncio.Task[None]
) -> httpx.Response:
    for _ in range(500):
        if serving.done():
            serving.result()  # raises what stopped it
        with contextlib.suppress(httpx.TransportError):
            return await client.get(url)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered")


@pytest.mark.db
async def test_serve_polls_and_reports_health_until_stopped(
    tmp_path: Path, server: BotApiServer
) -> None:
    port = free_port()
    settings = settings_for(
        server,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        shop_config=tmp_path / "shop.yaml",  # absent: the shipped defaults
        health_port=port,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(settings, stop=stop))
    async with httpx.AsyncClient() as client:
        health = await _until_serving(client, f"http://127.0.0.1:{port}{app.HEALTH_PATH}", serving)
        assert health.status_code == 200 and health.json() == {"ok": True, "database": True}
        server.user_text(ALICE, "积分")
        [reply] = await server.wait_sent(ALICE)
        assert "绑定码" in reply.text
        stop.set()
        await asyncio.wait_for(serving, 15)
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{port}{app.HEALTH_PATH}")
    assert server.my_commands and server.calls["getUpdates"] > 0


@pytest.mark.db
async def test_serve_in_webhook_mode_takes_updates_on_its_port(
    tmp_path: Path, server: BotApiServer
) -> None:
    port = free_port()
    settings = settings_for(
        server,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        shop_config=tmp_path / "shop.yaml",  # absent: the shipped defaults
        telegram_webhook_url="https://bot.example.com/telegram/webhook",
        telegram_webhook_secret=SECRET,
        telegram_webhook_port=port,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(settings, stop=stop))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await _until_serving(client, app.HEALTH_PATH, serving)).json()["ok"] is True
        update = server.update_payload(server.user_text(ALICE, "积分"))
        refused = await client.post(tg.WEBHOOK_PATH, json=update)
        assert refused.status_code == 403
        taken = await client.post(tg.WEBHOOK_PATH, json=update, headers={tg.SECRET_HEADER: SECRET})
        assert taken.status_code == 200
        [reply] = await server.wait_sent(ALICE)
        assert "绑定码" in reply.text
        stop.set()
        await asyncio.wait_for(serving, 15)
    assert server.webhook is not None and server.calls["getUpdates"] == 0
