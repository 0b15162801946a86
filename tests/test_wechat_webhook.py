"""The WeChat webhook end to end, offline: we play WeChat's servers, signing every push as
WeChat does (SHA-1 of the sorted token, timestamp and nonce; in safe mode AES with wechatpy's
`WeChatCrypto` and a `msg_signature`), and POST real XML to the real Starlette route, with the
conversation core and a real database behind it, on SQLite and PostgreSQL. We check what the
member would read and what changed in the database; and `memberbot serve` with WeChat
configured, `/healthz` and `/wechat` on one port."""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from bot.channels import wechat
from bot.conversation import Answer, Chat, Event
from db.models import (
    AuditLog,
    ChatBinding,
    ChatChoice,
    Coupon,
    InboundMessage,
    PointsEntry,
    SurveyResponse,
)
from db.session import Database
from domain import binding, bookings, choices, inbound, members, points, visits
from domain.errors import ConfigError
from domain.shop import ShopConfig
from memberbot import app
from memberbot.settings import Settings
from tests.support import builders
from tests.support.builders import invite_code
from tests.support.localserver import free_port
from tests.support.wechat_platform import (
    AES_KEY,
    APP_ID,
    APP_SECRET,
    TOKEN,
    WeChatServer,
    event_xml,
    signature,
    text_xml,
)

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Tuesday
PHONE = "13812345678"
ALICE = "oAliceAbCdEfGhIjKlMnOpQrStU"
BOB = "oBobbyAbCdEfGhIjKlMnOpQrStU"
QUICK = 1.0  # seconds: a refusal takes far less


@dataclass
class Bot:
    db: Database
    chat: Chat
    channel: wechat.WeChatChannel
    wx: WeChatServer


def options(**extra: Any) -> wechat.WeChatOptions:
    return wechat.WeChatOptions(token=TOKEN, app_id=APP_ID, app_secret=APP_SECRET, **extra)


@contextlib.asynccontextmanager
async def webhook(
    db: Database, chat: Chat, *, safe: bool = False, **extra: Any
) -> AsyncIterator[Bot]:
    channel = wechat.WeChatChannel(chat, options(aes_key=AES_KEY if safe else None, **extra))
    web = Starlette(routes=[channel.route()])
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://memberbot") as client:
        yield Bot(db, chat, channel, WeChatServer(client, safe=safe))
    await channel.aclose()


@pytest.fixture(params=["plain", "safe"])
async def bot(
    request: pytest.FixtureRequest, db: Database, shop_config: ShopConfig
) -> AsyncIterator[Bot]:
    """The webhook in plain mode and in safe mode (AES)."""
    chat = Chat(db, shop_config, clock=lambda: NOW)
    async with webhook(db, chat, safe=request.param == "safe") as bot:
        yield bot


@pytest.fixture
async def plain(db: Database, shop_config: ShopConfig) -> AsyncIterator[Bot]:
    chat = Chat(db, shop_config, clock=lambda: NOW)
    async with webhook(db, chat) as bot:
        yield bot


# -- the shop's side --------------------------------------------------------------------------


async def new_member(db: Database, config: ShopConfig, balance: int = 0) -> int:
    member_id = await builders.new_member(db, "M1", PHONE, consent="counter")
    if balance:
        async with db.transaction() as session:
            await points.adjust(
                session, member_id, balance, NOW.date(), config.loyalty, reason="开卡", actor="t"
            )
    return member_id


async def invite(db: Database, member_id: int) -> str:
    return await invite_code(db, member_id, NOW)


async def bound_to(db: Database, openid: str) -> int | None:
    async with db.read() as session:
        member = await binding.member_for(session, "wechat", openid)
    return None if member is None else member.id


async def bound_member(bot: Bot, config: ShopConfig, balance: int = 0) -> int:
    member_id = await new_member(bot.db, config, balance)
    reply = await bot.wx.say(ALICE, await invite(bot.db, member_id))
    assert "绑定成功" in reply
    return member_id


async def key_for(bot: Bot, openid: str, reply: str, prefix: str, *, last: bool = False) -> str:
    """The number to type for the button whose data starts with `prefix`, checked against
    what the reply shows."""
    async with bot.db.read() as session:
        offered = await choices.recall(session, "wechat", openid, datetime.now(UTC))
    keys = sorted((int(k) for k, data in offered.items() if data.startswith(prefix)))
    assert keys, f"no {prefix} choice under {reply!r}"
    key = str(keys[-1 if last else 0])
    assert f"回复 {key}：" in reply
    return key


async def count_rows(db: Database, model: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def balance(db: Database, member_id: int) -> int:
    async with db.read() as session:
        return await points.balance(session, member_id)


# -- server verification ----------------------------------------------------------------------


async def test_verification_echoes_only_a_signed_request(plain: Bot) -> None:
    wx = plain.wx
    right = await wx.verify("5150751948338431719")
    assert right.status_code == 200 and right.text == "5150751948338431719"

    wrong = await wx.client.get(
        wx.path, params={**wx.query(), "signature": "0" * 40, "echostr": "1234"}
    )
    assert wrong.status_code == 403 and "1234" not in wrong.text
    stale = await wx.client.get(
        wx.path, params={**wx.query(int(time.time()) - 3600), "echostr": "1234"}
    )
    assert stale.status_code == 403
    missing = await wx.client.get(wx.path, params={"echostr": "1234"})
    assert missing.status_code == 403


# -- the conversation -------------------------------------------------------------------------


async def test_bind_by_code_then_points_in_chinese(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await new_member(bot.db, shop_config, balance=1280)

    how_to = await bot.wx.say(ALICE, "积分")
    assert "绑定码" in how_to and "二维码" in how_to and "分享手机号" not in how_to
    assert await bound_to(bot.db, ALICE) is None

    bound = await bot.wx.say(ALICE, await invite(bot.db, member_id))
    assert "绑定成功" in bound and "王先生" in bound
    assert "回复 1：" in bound  # the menu, as numbered choices
    assert await bound_to(bot.db, ALICE) == member_id

    points_reply = await bot.wx.say(ALICE, "我的积分")
    assert "1,280" in points_reply and "积分" in points_reply


async def test_menu_choice_by_number_and_menu_click(bot: Bot, shop_config: ShopConfig) -> None:
    await bound_member(bot, shop_config, balance=300)
    menu = await bot.wx.say(ALICE, "菜单")
    key = await key_for(bot, ALICE, menu, "go:points")
    assert "300" in await bot.wx.say(ALICE, key)
    assert "300" in await bot.wx.say(ALICE, f" {chr(ord(key) + 0xFEE0)} ")  # full-width digit

    assert "300" in await bot.wx.event(ALICE, "CLICK", "points")
    assert "300" in await bot.wx.event(ALICE, "CLICK", "go:points")
    forged = await bot.wx.event(ALICE, "CLICK", "account:unbind:../../etc")
    assert "过期" in forged
    # Leaving the chat is WeChat's unsubscribe event, never a menu key.
    assert "过期" in await bot.wx.event(ALICE, "CLICK", "left")
    assert await bound_to(bot.db, ALICE) is not None


async def test_subscribe_through_a_qr_code_binds(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await new_member(bot.db, shop_config)
    code = await invite(bot.db, member_id)
    bound = await bot.wx.event(ALICE, "subscribe", f"qrscene_{code}")
    assert "绑定成功" in bound and await bound_to(bot.db, ALICE) == member_id

    # A plain follow is welcomed and told how to bind; no offer consent is implied.
    welcome = await bot.wx.event(BOB, "subscribe")
    assert "欢迎" in welcome and "绑定码" in welcome
    assert await bound_to(bot.db, BOB) is None


async def test_scan_while_subscribed_binds(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await new_member(bot.db, shop_config)
    await bot.wx.event(ALICE, "subscribe")
    code = await invite(bot.db, member_id)
    bound = await bot.wx.event(ALICE, "SCAN", code)
    assert "绑定成功" in bound and await bound_to(bot.db, ALICE) == member_id
    used = await bot.wx.event(ALICE, "SCAN", code, later=1)  # another scan: the code is spent
    assert "绑定成功" not in used


async def test_unsubscribe_unbinds_and_is_audited(bot: Bot, shop_config: ShopConfig) -> None:
    member_id = await bound_member(bot, shop_config)
    await bot.wx.say(ALICE, "预约")  # half a booking: flow state and choices

    assert await bot.wx.event(ALICE, "unsubscribe") == ""  # nothing to say: answered `success`

    assert await bound_to(bot.db, ALICE) is None
    async with bot.db.read() as session:
        row = await session.scalar(select(ChatBinding).where(ChatBinding.address == ALICE))
        assert row is not None and row.active is False  # kept as history
        audit = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "chat.unbind"))
        ).all()
        assert await binding.load_state(session, "wechat", ALICE, NOW) is None
        assert await choices.recall(session, "wechat", ALICE, datetime.now(UTC)) == {}
    assert [(a.actor, a.entity_id) for a in audit] == [("chat:wechat", member_id)]
    assert ALICE not in str(audit[0].detail)
    assert "绑定码" in await bot.wx.say(ALICE, "积分")


async def test_book_a_wash_by_numbered_choices_and_cancel_it(
    plain: Bot, shop_config: ShopConfig
) -> None:
    bot = plain
    member_id = await bound_member(bot, shop_config)
    step = await bot.wx.say(ALICE, "预约")
    async with bot.db.read() as session:
        offered = await choices.recall(session, "wechat", ALICE, datetime.now(UTC))
    if any(data.startswith("booking:store:") for data in offered.values()):
        step = await bot.wx.say(ALICE, await key_for(bot, ALICE, step, "booking:store:"))
    for prefix in ("booking:svc:", "booking:day:", "booking:slot:", "booking:ok:"):
        # The last day offered, so the booking is still changeable when we cancel it.
        key = await key_for(bot, ALICE, step, prefix, last=prefix == "booking:day:")
        step = await bot.wx.say(ALICE, key)
    assert "预约成功" in step

    async with bot.db.read() as session:
        [line] = await bookings.upcoming_for_member(session, member_id, NOW)
    assert bookings.reference(line.booking) in step
    assert line.booking.status == bookings.BOOKED and line.booking.source == "chat"

    listing = await bot.wx.say(ALICE, "我的预约")
    sure = await bot.wx.say(
        ALICE, await key_for(bot, ALICE, listing, f"booking:cancel:{line.booking.id}")
    )
    done = await bot.wx.say(
        ALICE, await key_for(bot, ALICE, sure, f"booking:cancelok:{line.booking.id}")
    )
    assert "取消预约" in done and bookings.reference(line.booking) in done
    async with bot.db.read() as session:
        assert await bookings.upcoming_for_member(session, member_id, NOW) == []


async def test_a_survey_score_is_typed_as_its_own_number(
    plain: Bot, shop_config: ShopConfig
) -> None:
    bot = plain
    member_id = await bound_member(bot, shop_config)
    async with bot.db.transaction() as session:
        await visits.record(
            session, member_id, NOW.date() - timedelta(days=1), 30_000, shop_config.loyalty
        )
    survey = await bot.wx.say(ALICE, "评价")
    assert "请回复 0 / 1 / 2" in survey and "/ 10" in survey
    thanks = await bot.wx.say(ALICE, "7")
    assert "7 分" in thanks
    async with bot.db.read() as session:
        [answer] = (await session.scalars(select(SurveyResponse))).all()
    assert answer.score == 7 and answer.channel == "wechat"


async def test_english_member_gets_english_choices(plain: Bot, shop_config: ShopConfig) -> None:
    bot = plain
    async with bot.db.transaction() as session:
        member = await members.create(
            session, member_ref="M9", name="Ann", phone="13912345678", locale="en"
        )
    assert member.id is not None
    bound = await bot.wx.say(BOB, await invite(bot.db, member.id))
    assert "Reply 1: " in bound and "回复" not in bound


async def test_several_replies_are_one_message_within_the_limit(
    plain: Bot, shop_config: ShopConfig
) -> None:
    bot = plain
    welcome = await bot.wx.event(ALICE, "subscribe")  # welcome + how to bind: two replies
    assert "欢迎" in welcome and "绑定码" in welcome and "\n\n" in welcome
    await bound_member(bot, shop_config)
    help_text = await bot.wx.say(ALICE, "帮助")
    assert len(help_text.encode()) <= 2048 and "回复 1：" in help_text


# -- refusals ---------------------------------------------------------------------------------

BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE xml [\n<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">\n'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
    + "]>\n"
)


def bomb_xml() -> str:
    return BOMB + text_xml(ALICE, "&j;", 1, int(time.time()))


def doctype_xml() -> str:
    return '<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd">' + text_xml(
        ALICE, "积分", 2, int(time.time())
    )


async def _nothing_changed(db: Database) -> None:
    for model in (InboundMessage, ChatBinding, ChatChoice, AuditLog):
        assert await count_rows(db, model) == 0, model


async def test_hostile_or_unsigned_requests_are_refused_quickly(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    wx = bot.wx
    now = int(time.time())
    good = text_xml(ALICE, "积分", 42, now)
    refusals: list[tuple[str, int, httpx.Response]] = []

    async def refused(name: str, status: int, call: Any) -> None:
        started = time.perf_counter()
        response = await call
        assert time.perf_counter() - started < QUICK, name
        refusals.append((name, status, response))

    await refused("entity bomb", 400, wx.push(bomb_xml()))
    await refused("doctype", 400, wx.push(doctype_xml()))
    forged = {**wx.query(), "signature": signature("guess", str(now), "n0nce42")}
    await refused("forged signature", 403, wx.push(good, query=forged))
    await refused("no signature", 403, wx.client.post(wx.path, content=good.encode()))
    await refused("stale", 403, wx.push(good, query=wx.query(now - 600)))
    await refused("from the future", 403, wx.push(good, query=wx.query(now + 600)))
    big = text_xml(ALICE, "积" * 30_000, 43, now)
    await refused("oversized", 400, wx.push(big))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"<xml>" + b" " * 4096

    await refused(
        "oversized, streamed",
        400,
        wx.client.post(wx.path, params=wx.query(), content=chunks()),
    )
    await refused("not xml", 400, wx.push("not xml at all"))
    await refused("not a message", 400, wx.push("<xml><Foo>1</Foo></xml>", raw=True))
    if wx.safe:
        await refused("plain in safe mode", 400, wx.push(good, raw=True))
        sealed = dict(wx.query(), encrypt_type="aes", msg_signature="0" * 40)
        inner = ET.fromstring(wx.crypto.encrypt_message(good, "n0nce42", sealed["timestamp"]))
        body = f"<xml><Encrypt><![CDATA[{inner.findtext('Encrypt')}]]></Encrypt></xml>"
        await refused(
            "wrong msg_signature", 403, wx.client.post(wx.path, params=sealed, content=body)
        )

    for name, status, response in refusals:
        assert response.status_code == status, (name, response.status_code)
        assert response.text in ("", wechat.SUCCESS) or "积分" not in response.text
    await _nothing_changed(bot.db)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "wechat: refused" in logged and ALICE not in logged and "积分" not in logged


# -- WeChat's retries -------------------------------------------------------------------------


async def _picked_reward(bot: Bot, shop_config: ShopConfig) -> tuple[int, str]:
    """A bound member with 2,600 points who picked the free wash: (member id, confirm key)."""
    member_id = await bound_member(bot, shop_config, balance=2_600)
    catalogue = await bot.wx.say(ALICE, "兑换")
    confirm = await bot.wx.say(
        ALICE, await key_for(bot, ALICE, catalogue, "rewards:pick:free_wash")
    )
    assert "免费洗车券" in confirm
    return member_id, await key_for(bot, ALICE, confirm, "rewards:confirm:free_wash:")


async def _redemptions(db: Database, member_id: int) -> tuple[list[int], int]:
    async with db.read() as session:
        redeemed = (
            await session.scalars(
                select(PointsEntry.points).where(
                    PointsEntry.member_id == member_id, PointsEntry.kind == "redeem"
                )
            )
        ).all()
        coupons = await session.scalar(
            select(func.count()).select_from(Coupon).where(Coupon.member_id == member_id)
        )
    return list(redeemed), int(coupons or 0)


async def test_a_retried_redemption_charges_once_with_the_same_reply(
    bot: Bot, shop_config: ShopConfig
) -> None:
    member_id, key = await _picked_reward(bot, shop_config)
    created = int(time.time())
    xml = text_xml(ALICE, key, 9_000_000_001, created)

    first = bot.wx.read(await bot.wx.push(xml))
    assert "兑换成功" in first and "已经完成" not in first
    for _ in range(3):  # WeChat's retries, each with a fresh signature
        assert bot.wx.read(await bot.wx.push(xml)) == first
    assert await _redemptions(bot.db, member_id) == ([-300], 1)
    assert await balance(bot.db, member_id) == 2_300

    # A new message with the same words is a new press: the flow itself says it is done.
    again = await bot.wx.say(ALICE, key)
    assert await _redemptions(bot.db, member_id) == ([-300], 1)
    assert again != first


async def test_concurrent_retries_of_one_message_have_one_side_effect(
    bot: Bot, shop_config: ShopConfig
) -> None:
    member_id, key = await _picked_reward(bot, shop_config)
    xml = text_xml(ALICE, key, 9_000_000_002, int(time.time()))
    responses = await asyncio.gather(*(bot.wx.push(xml) for _ in range(4)))
    replies = {bot.wx.read(response) for response in responses}
    assert len(replies) == 1 and "兑换成功" in replies.pop()
    assert await _redemptions(bot.db, member_id) == ([-300], 1)
    async with bot.db.read() as session:
        found = await inbound.outcome(session, "wechat", inbound.message_key(9_000_000_002))
    assert found is not None and found.status == inbound.ANSWERED


async def test_a_repeated_event_is_answered_once(plain: Bot, shop_config: ShopConfig) -> None:
    bot = plain
    member_id = await new_member(bot.db, shop_config)
    code = await invite(bot.db, member_id)
    xml = event_xml(ALICE, "subscribe", int(time.time()), f"qrscene_{code}")
    first = bot.wx.read(await bot.wx.push(xml))
    second = bot.wx.read(await bot.wx.push(xml))
    assert "绑定成功" in first and first == second
    async with bot.db.read() as session:
        binds = await session.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "chat.bind")
        )
    assert binds == 1


class SlowChat(Chat):
    """A chat whose turns take longer than WeChat waits."""

    delay = 0.6

    async def answer(self, event: Event) -> Answer:
        await asyncio.sleep(self.delay)
        return await super().answer(event)


async def test_a_slow_turn_is_answered_success_and_its_reply_owed(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = SlowChat(db, shop_config, clock=lambda: NOW)
    async with webhook(db, chat, reply_budget_seconds=0.2) as bot:
        xml = text_xml(ALICE, "积分", 9_000_000_003, int(time.time()))
        started = time.perf_counter()
        assert bot.wx.read(await bot.wx.push(xml)) == ""  # `success`
        assert time.perf_counter() - started < SlowChat.delay
        # A retry while the turn still runs runs nothing more and also gets `success`.
        assert bot.wx.read(await bot.wx.push(xml)) == ""
        await bot.channel.aclose()
        async with db.read() as session:
            found = await inbound.outcome(session, "wechat", inbound.message_key(9_000_000_003))
        assert found is not None and found.status == inbound.OWED
        assert found.reply is not None and "绑定码" in found.reply
        assert bot.wx.read(await bot.wx.push(xml)) == ""  # owed: the sender will deliver it
        assert await count_rows(db, InboundMessage) == 1


# -- memberbot serve --------------------------------------------------------------------------


async def test_serve_runs_wechat_and_health_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        shop_config=tmp_path / "shop.yaml",  # absent: the shipped defaults
        http_port=port,
        wechat_token=TOKEN,
        wechat_app_id=APP_ID,
        wechat_app_secret=APP_SECRET,
        wechat_aes_key=AES_KEY,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(settings, stop=stop))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(500):
            if serving.done():
                serving.result()
            with contextlib.suppress(httpx.TransportError):
                health = await client.get(app.HEALTH_PATH)
                break
            await asyncio.sleep(0.02)
        assert health.status_code == 200 and health.json()["ok"] is True
        wx = WeChatServer(client, safe=True)
        assert (await wx.verify("8888")).text == "8888"
        reply = await wx.say(ALICE, "积分")
        assert "绑定码" in reply and "二维码" in reply
        assert (await wx.push(bomb_xml())).status_code == 400
        stop.set()
        await asyncio.wait_for(serving, 15)
        with pytest.raises(httpx.TransportError):
            await client.get(app.HEALTH_PATH)


# -- settings ---------------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_wechat_settings_are_all_or_nothing() -> None:
    assert app.wechat_options(_settings()) is None
    full = {"wechat_token": TOKEN, "wechat_app_id": APP_ID, "wechat_app_secret": APP_SECRET}
    made = app.wechat_options(_settings(**full))
    assert made is not None and not made.safe_mode and made.path == "/wechat"
    safe = app.wechat_options(_settings(**full, wechat_aes_key=AES_KEY))
    assert safe is not None and safe.safe_mode
    for broken in (
        {"wechat_token": TOKEN},
        {**full, "wechat_aes_key": "too-short"},
        {**full, "wechat_path": "/healthz"},
        {**full, "wechat_path": "wechat"},
    ):
        with pytest.raises(ConfigError):
            app.wechat_options(_settings(**broken))


async def test_wechat_words_say_reply_with_a_number_not_tap(
    plain: Bot, shop_config: ShopConfig
) -> None:
    await bound_member(plain, shop_config)
    for asked in ("帮助", "积分兑换"):
        reply = await plain.wx.say(ALICE, asked)
        assert "回复" in reply and "点" not in reply.split("回复 1")[0], reply
