"""WeChat's API client, sender and owed replies against a local WeChat API server
(`tests/support/wechat_api_server.py`), on SQLite and PostgreSQL: the stable token shared
through the database, refreshed once when refused, WeChat's refusals as `Delivery` outcomes
without tight loops, and a slow turn's owed reply delivered exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.channels import wechat_api
from bot.channels.wechat_api import WeChatApi
from bot.channels.wechat_send import OwedReplies, WeChatSender
from bot.conversation import Chat
from db.models import InboundMessage
from db.session import Database
from domain import allowances, choices, inbound
from domain.outgoing import BLOCKED, FAILED, RETRY, SENT, Button, Reply
from domain.shop import ShopConfig
from memberbot import app
from memberbot.settings import Settings
from tests.support.wechat_api_server import WeChatApiServer
from tests.support.wechat_platform import text_xml
from tests.test_wechat_webhook import ALICE, BOB, NOW, SlowChat, webhook


@pytest.fixture
async def server() -> AsyncIterator[WeChatApiServer]:
    async with WeChatApiServer() as running:
        yield running


def client(db: Database, server: WeChatApiServer) -> WeChatApi:
    return WeChatApi(db, server.app_id, server.app_secret, server.base_url)


async def test_two_processes_share_one_stable_token(db: Database, server: WeChatApiServer) -> None:
    first, second = client(db, server), client(db, server)
    sends = [
        api.send_text(openid, text)
        for _ in range(3)
        for api, openid, text in ((first, ALICE, "a"), (second, BOB, "b"))
    ]
    results = await asyncio.gather(*sends)
    assert [result.status for result in results] == [SENT] * 6
    assert server.token_fetches == 1 and server.plain_fetches == 0
    assert sorted(server.sent) == sorted([(ALICE, "a"), (BOB, "b")] * 3)


@pytest.mark.parametrize("code", [40001, 42001, 40014])
async def test_a_refused_token_is_refreshed_once_and_the_send_retried(
    db: Database, server: WeChatApiServer, code: int
) -> None:
    api, other = client(db, server), client(db, server)
    assert (await api.send_text(ALICE, "first")).status == SENT
    if code == 42001:
        server.expire_token()
    else:
        server.fail_next(code)
    assert (await api.send_text(ALICE, "second")).status == SENT
    assert server.token_fetches == 2 and server.forced_fetches == 1
    assert server.sent == [(ALICE, "first"), (ALICE, "second")]
    # The other process reads the new token from the database: no fetch of its own.
    assert (await other.send_text(BOB, "third")).status == SENT
    assert server.token_fetches == 2 and server.plain_fetches == 0


async def test_a_token_refused_twice_is_retried_later_not_in_a_loop(
    db: Database, server: WeChatApiServer
) -> None:
    server.fail_next(40001, times=5)
    delivery = await client(db, server).send_text(ALICE, "hello")
    assert delivery.status == RETRY and delivery.retry_after == wechat_api.TROUBLE_WAIT_SECONDS
    assert server.send_attempts == 2 and server.sent == []


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        (45009, RETRY, wechat_api.QUOTA_WAIT_SECONDS),
        (45047, FAILED, None),
        (45015, FAILED, None),
        (43004, BLOCKED, None),
    ],
)
async def test_quota_window_and_unfollow_answers_are_outcomes_tried_once(
    db: Database, server: WeChatApiServer, code: int, status: str, retry_after: float | None
) -> None:
    server.fail_next(code)
    delivery = await client(db, server).send_text(ALICE, "hello")
    assert (delivery.status, delivery.retry_after) == (status, retry_after)
    assert str(code) in (delivery.error or "")
    assert wechat_api.out_of_window(delivery) == (code in (45015, 45047))
    assert server.send_attempts == 1 and server.sent == []


async def test_wrong_secret_is_retried_later(db: Database, server: WeChatApiServer) -> None:
    api = WeChatApi(db, server.app_id, "wrong", server.base_url)
    delivery = await api.send_text(ALICE, "hello")
    assert delivery.status == RETRY and "40125" in (delivery.error or "")
    assert server.send_attempts == 0
    # The lease was given back: the right secret gets a token at once.
    assert (await client(db, server).send_text(ALICE, "hello")).status == SENT


async def test_sender_numbers_buttons_and_keeps_the_choices(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig
) -> None:
    chat = Chat(db, shop_config)
    sender = WeChatSender(client(db, server), chat)
    async with db.transaction() as session:  # the member wrote: a customer-service message may go
        await allowances.grant(session, "wechat", ALICE, allowances.MESSAGE, datetime.now(UTC))
    reply = Reply("积分有变动", ((Button("查积分", "go:points"), Button("预约", "go:booking")),))
    assert (await sender.send(ALICE, reply)).status == SENT
    [(openid, text)] = server.sent
    assert openid == ALICE and text.startswith("积分有变动") and "回复 1：" in text
    async with db.read() as session:
        offered = await choices.recall(session, "wechat", ALICE, datetime.now(UTC))
    assert offered == {"1": "go:points", "2": "go:booking"}


async def owed_row(db: Database) -> InboundMessage:
    async with db.read() as session:
        [row] = (await session.execute(select(InboundMessage))).scalars().all()
    return row


async def slow_turn(db: Database, shop_config: ShopConfig, msg_id: int) -> str:
    """A turn that overran the budget: the webhook answered `success`, the reply is owed."""
    chat = SlowChat(db, shop_config, clock=lambda: NOW)
    async with webhook(db, chat, reply_budget_seconds=0.2) as bot:
        xml = text_xml(ALICE, "积分", msg_id, int(time.time()))
        assert bot.wx.read(await bot.wx.push(xml)) == ""
        await bot.channel.aclose()
    row = await owed_row(db)
    assert row.status == inbound.OWED and row.reply
    return row.reply


async def test_an_owed_reply_reaches_the_member_once_with_two_deliverers(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig
) -> None:
    reply = await slow_turn(db, shop_config, 9_100_000_001)
    first, second = OwedReplies(client(db, server)), OwedReplies(client(db, server))
    counts = await asyncio.gather(first.deliver(), second.deliver(), first.deliver())
    assert sum(counts) == 1
    assert server.sent == [(ALICE, reply)] and "绑定码" in reply
    assert (await owed_row(db)).status == inbound.DELIVERED
    assert await second.deliver() == 0 and len(server.sent) == 1


async def refused_once(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig, code: int
) -> OwedReplies:
    """An owed reply whose first send WeChat answered with `code`."""
    await slow_turn(db, shop_config, 9_100_000_000 + code)
    owed = OwedReplies(client(db, server))
    server.fail_next(code)
    assert await owed.deliver() == 0
    return owed


async def test_an_owed_reply_on_quota_waits_and_is_sent_later(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig
) -> None:
    owed = await refused_once(db, server, shop_config, 45009)
    row = await owed_row(db)
    assert row.status == inbound.OWED and row.due_at is not None
    assert row.due_at > datetime.now(UTC) + timedelta(minutes=59)
    assert await owed.deliver() == 0 and server.send_attempts == 1  # not due: no tight loop
    async with db.transaction() as session:
        await session.execute(update(InboundMessage).values(due_at=datetime.now(UTC)))
    assert await owed.deliver() == 1 and len(server.sent) == 1


async def test_an_owed_reply_out_of_window_is_given_up(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig
) -> None:
    owed = await refused_once(db, server, shop_config, 45015)
    assert (await owed_row(db)).status == inbound.UNDELIVERED
    assert await owed.deliver() == 0 and server.send_attempts == 1


async def test_an_owed_reply_older_than_48_hours_is_not_sent(
    db: Database, server: WeChatApiServer, shop_config: ShopConfig
) -> None:
    await slow_turn(db, shop_config, 9_100_000_004)
    async with db.transaction() as session:
        old = datetime.now(UTC) - timedelta(hours=49)
        await session.execute(update(InboundMessage).values(created_at=old))
    assert await OwedReplies(client(db, server)).deliver() == 0
    assert (await owed_row(db)).status == inbound.UNDELIVERED
    assert server.send_attempts == 0 and server.token_fetches == 0


def test_the_api_base_url_is_a_setting() -> None:
    values = {"wechat_token": "t", "wechat_app_id": "wx1", "wechat_app_secret": "s"}
    default = app.wechat_options(Settings(_env_file=None, **values))  # type: ignore[call-arg]
    assert default is not None and default.api_base_url == "https://api.weixin.qq.com"
    local = app.wechat_options(
        Settings(_env_file=None, wechat_api_base_url="http://127.0.0.1:9", **values)  # type: ignore[call-arg]
    )
    assert local is not None and local.api_base_url == "http://127.0.0.1:9"
