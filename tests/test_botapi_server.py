"""The local Bot API server against python-telegram-bot's own `Bot` and `Application`: if PTB
parses every answer and raises the errors Telegram's refusals raise, our channel tests exercise
the real client stack."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import AIORateLimiter, ApplicationBuilder, CommandHandler, ContextTypes
from telegram.warnings import PTBDeprecationWarning

from tests.support.botapi_server import BotApiServer

CHAT = 7001


def _seconds(refusal: RetryAfter) -> float:
    """retry_after in seconds, whether PTB hands out an int (22.x) or a timedelta (later)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        retry_after = refusal.retry_after
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else retry_after


def _keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d.upper(), callback_data=d)] for d in data])


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer() as running:
        yield running


@pytest.fixture
async def bot(server: BotApiServer) -> AsyncIterator[Bot]:
    async with Bot(server.token, base_url=server.base_url) as client:
        yield client


async def test_get_me_names_the_bot(server: BotApiServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.is_bot
    assert me.username == "memberbot_test_bot"
    assert me.id == 123456
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/bot")


async def test_send_message_is_recorded_with_its_keyboard(server: BotApiServer, bot: Bot) -> None:
    message = await bot.send_message(CHAT, "您的积分：120", reply_markup=_keyboard("pts:more"))

    assert message.chat.id == CHAT
    assert message.text == "您的积分：120"
    assert message.reply_markup == _keyboard("pts:more")
    [sent] = server.sent
    assert (sent.chat_id, sent.message_id, sent.text, sent.method) == (
        CHAT,
        message.message_id,
        "您的积分：120",
        "sendMessage",
    )
    assert sent.reply_markup == {
        "inline_keyboard": [[{"text": "PTS:MORE", "callback_data": "pts:more"}]]
    }
    assert server.calls["sendMessage"] == 1


async def test_message_ids_count_per_chat_across_both_sides(server: BotApiServer, bot: Bot) -> None:
    first = await bot.send_message(CHAT, "one")
    server.user_text(CHAT, "hello")
    second = await bot.send_message(CHAT, "two")
    elsewhere = await bot.send_message(CHAT + 1, "other chat")

    assert [first.message_id, second.message_id, elsewhere.message_id] == [1, 3, 1]


async def test_edit_message_text_changes_the_message(server: BotApiServer, bot: Bot) -> None:
    message = await bot.send_message(CHAT, "choose a day", reply_markup=_keyboard("bk:day"))

    edited = await bot.edit_message_text("booked", chat_id=CHAT, message_id=message.message_id)

    assert edited.text == "booked"
    assert edited.edit_date is not None
    assert [(s.method, s.text, s.message_id) for s in server.sent] == [
        ("sendMessage", "choose a day", message.message_id),
        ("editMessageText", "booked", message.message_id),
    ]
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("booked", chat_id=CHAT, message_id=message.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=CHAT, message_id=99)


async def test_edit_reply_markup_removes_the_buttons(server: BotApiServer, bot: Bot) -> None:
    message = await bot.send_message(CHAT, "choose", reply_markup=_keyboard("a:b"))

    edited = await bot.edit_message_reply_markup(chat_id=CHAT, message_id=message.message_id)

    assert edited.reply_markup is None
    assert [edit.reply_markup for edit in server.markup_edits] == [None]
    assert len(server.sent) == 1


async def test_answer_callback_query_is_recorded(server: BotApiServer, bot: Bot) -> None:
    message = await bot.send_message(CHAT, "rewards", reply_markup=_keyboard("rw:buy:wash"))
    query_id = server.user_press(CHAT, message.message_id, "rw:buy:wash")
    [update] = await bot.get_updates(timeout=1)

    assert update.callback_query is not None
    assert await update.callback_query.answer("已兑换", show_alert=True)

    [answer] = server.callback_answers
    assert answer["callback_query_id"] == query_id
    assert answer["text"] == "已兑换"
    assert answer["show_alert"] is True
    with pytest.raises(BadRequest, match=r"(?i)query ID is invalid"):
        await bot.answer_callback_query("no-such-query")


async def test_commands_are_kept_per_language(server: BotApiServer, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand("points", "我的积分"), BotCommand("book", "预约")])
    await bot.set_my_commands([BotCommand("points", "My points")], language_code="en")

    assert server.my_commands == {
        "": [
            {"command": "points", "description": "我的积分"},
            {"command": "book", "description": "预约"},
        ],
        "en": [{"command": "points", "description": "My points"}],
    }
    english = await bot.get_my_commands(language_code="en")
    assert english == (BotCommand("points", "My points"),)
    assert await bot.delete_my_commands(language_code="en")
    assert await bot.get_my_commands(language_code="en") == ()
    assert set(server.my_commands) == {""}
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Points!", "bad")])


async def test_get_updates_hands_out_what_users_sent(server: BotApiServer, bot: Bot) -> None:
    bot_message = await bot.send_message(CHAT, "menu", reply_markup=_keyboard("menu:points"))
    text_id = server.user_text(CHAT, "我的积分")
    command_id = server.user_command(CHAT, "start", "ABCD-1234", language_code="en")
    server.user_press(CHAT, bot_message.message_id, "menu:points")
    contact_id = server.user_contact(CHAT, "+8613800138000", contact_user_id=CHAT)

    text, command, press, contact = await bot.get_updates(timeout=1)

    assert text.update_id == text_id
    assert text.message.text == "我的积分"
    assert text.effective_chat.type == "private"
    assert text.effective_user.id == CHAT
    assert command.update_id == command_id
    assert command.message.text == "/start ABCD-1234"
    assert command.message.parse_entities([MessageEntity.BOT_COMMAND]) == {
        MessageEntity(MessageEntity.BOT_COMMAND, 0, 6): "/start"
    }
    assert command.effective_user.language_code == "en"
    assert press.callback_query.data == "menu:points"
    assert press.callback_query.message.message_id == bot_message.message_id
    assert press.callback_query.message.reply_markup == _keyboard("menu:points")
    assert contact.update_id == contact_id
    assert contact.message.contact.user_id == CHAT
    assert contact.message.contact.phone_number == "+8613800138000"


async def test_offsets_acknowledge_updates(server: BotApiServer, bot: Bot) -> None:
    first = server.user_text(CHAT, "a")
    second = server.user_text(CHAT, "b")

    assert [u.update_id for u in await bot.get_updates()] == [first, second]
    assert [u.update_id for u in await bot.get_updates()] == [first, second]
    assert [u.update_id for u in await bot.get_updates(offset=second)] == [second]
    assert await bot.get_updates(offset=second + 1) == ()
    assert server.pending_updates == 0
    assert [u.update_id for u in await bot.get_updates(limit=1)] == []


async def test_long_poll_returns_as_soon_as_an_update_is_queued(
    server: BotApiServer, bot: Bot
) -> None:
    polling = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    assert not polling.done()
    started = time.monotonic()
    update_id = server.user_text(CHAT, "hi")

    [update] = await asyncio.wait_for(polling, 2)

    assert update.update_id == update_id
    assert time.monotonic() - started < 0.5
    assert update_id in server.served_at


async def test_a_second_poller_ends_the_first_with_conflict(server: BotApiServer, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    # A Bot polls over one connection, so a second instance plays the second process.
    async with Bot(server.token, base_url=server.base_url) as other:
        second = asyncio.create_task(other.get_updates(timeout=10))
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates"):
            await asyncio.wait_for(first, 2)
        update_id = server.user_text(CHAT, "hi")
        assert [u.update_id for u in await asyncio.wait_for(second, 2)] == [update_id]


async def test_chat_flood_limit_answers_retry_after_and_drops_the_message() -> None:
    async with (
        BotApiServer(chat_interval=2.0, chat_burst=1) as server,
        Bot(server.token, base_url=server.base_url) as bot,
    ):
        await bot.send_message(CHAT, "first")
        with pytest.raises(RetryAfter) as refused:
            await bot.send_message(CHAT, "second")
        await bot.send_message(CHAT + 1, "another chat has its own allowance")

    assert _seconds(refused.value) == 2
    assert [s.text for s in server.sent] == ["first", "another chat has its own allowance"]
    assert server.rejected_429 == 1


async def test_global_flood_limit_counts_every_chat() -> None:
    async with (
        BotApiServer(global_per_second=5) as server,
        Bot(server.token, base_url=server.base_url) as bot,
    ):
        for chat in range(5):
            await bot.send_message(CHAT + chat, "ok")
        with pytest.raises(RetryAfter) as refused:
            await bot.send_message(CHAT + 5, "one too many")

    assert _seconds(refused.value) == 1
    assert len(server.sent) == 5
    assert server.rejected_429 == 1


async def test_flood_answer_has_telegrams_json_shape(server: BotApiServer) -> None:
    url = f"{server.base_url}{server.token}/sendMessage"
    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(url, json={"chat_id": CHAT, "text": f"n{i}"}) for i in range(4)
        ]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].json()["ok"] is True
    assert answers[3].json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }


async def test_json_bodies_are_understood(server: BotApiServer) -> None:
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go:now"}]]}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{server.base_url}{server.token}/sendMessage",
            json={"chat_id": CHAT, "text": "json", "reply_markup": markup},
        )

    assert answer.json()["result"]["reply_markup"] == markup
    assert server.sent[0].reply_markup == markup


async def test_blocked_chat_is_forbidden(server: BotApiServer, bot: Bot) -> None:
    server.block(CHAT)

    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(CHAT, "are you there?")
    assert server.sent == []
    await bot.send_message(CHAT + 1, "others still get messages")


async def test_too_long_text_is_a_bad_request(server: BotApiServer, bot: Bot) -> None:
    await bot.send_message(CHAT, "积" * 4096)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(CHAT, "积" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(CHAT, " ")

    assert [len(s.text) for s in server.sent] == [4096]


async def test_html_markup_does_not_count_towards_the_length(
    server: BotApiServer, bot: Bot
) -> None:
    await bot.send_message(CHAT, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")

    assert server.sent[0].parse_mode == "HTML"


async def test_callback_data_over_64_bytes_is_refused(server: BotApiServer, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(CHAT, "x", reply_markup=_keyboard("积" * 22))
    assert server.sent == []


async def test_wrong_token_is_refused(server: BotApiServer) -> None:
    bot = Bot("654321:WRONG", base_url=server.base_url)
    with pytest.raises(InvalidToken, match=r"(?i)Unauthorized"):
        await bot.get_me()
    await bot.shutdown()
    assert server.calls["getMe"] == 0


async def test_unknown_method_is_not_found(server: BotApiServer) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{server.base_url}{server.token}/sendTelepathy")

    assert answer.status_code == 404
    assert answer.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_webhook_is_recorded_and_blocks_polling(server: BotApiServer, bot: Bot) -> None:
    await bot.set_webhook("https://shop.example/tg", secret_token="s3cret")

    assert server.webhook == {"url": "https://shop.example/tg", "secret_token": "s3cret"}
    assert (await bot.get_webhook_info()).url == "https://shop.example/tg"
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates()
    update_id = server.user_text(CHAT, "via webhook")
    posted = Update.de_json(server.update_payload(update_id), bot)
    assert posted.message.text == "via webhook"

    await bot.delete_webhook()
    assert server.webhook is None
    assert [u.update_id for u in await bot.get_updates()] == [update_id]


async def test_without_flood_limits_a_burst_of_200_all_pass() -> None:
    async with (
        BotApiServer(flood_limits=False) as server,
        Bot(server.token, base_url=server.base_url) as bot,
    ):
        await asyncio.gather(*(bot.send_message(CHAT, f"m{i}") for i in range(200)))

    assert len(server.sent) == 200
    assert sorted(s.message_id for s in server.sent) == list(range(1, 201))
    assert server.rejected_429 == 0


async def test_rate_limiter_retries_a_429_and_the_message_lands_once(
    server: BotApiServer,
) -> None:
    application = (
        ApplicationBuilder()
        .token(server.token)
        .base_url(server.base_url)
        .rate_limiter(AIORateLimiter(max_retries=3))
        .build()
    )
    async with application:
        texts = [f"reminder {i}" for i in range(4)]
        await asyncio.gather(*(application.bot.send_message(CHAT, t) for t in texts))

    assert server.rejected_429 >= 1
    assert sorted(s.text for s in server.sent_to(CHAT)) == texts


async def test_an_application_polls_and_answers(server: BotApiServer) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"welcome {' '.join(context.args or [])}")

    application = ApplicationBuilder().token(server.token).base_url(server.base_url).build()
    application.add_handler(CommandHandler("start", start))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=5)
        server.user_command(CHAT, "start", "INV-1")
        [reply] = await server.wait_sent(CHAT)
        await server.wait_idle()
        await application.updater.stop()
        await application.stop()

    assert reply.text == "welcome INV-1"
    assert server.pending_updates == 0


async def test_wait_sent_times_out_with_what_it_saw(server: BotApiServer, bot: Bot) -> None:
    await bot.send_message(CHAT, "only one")

    with pytest.raises(TimeoutError, match=r"(?i)1 of 2"):
        await server.wait_sent(CHAT, 2, timeout=0.2)


async def test_stopping_answers_a_pending_long_poll_and_leaves_no_task() -> None:
    async with BotApiServer() as server, Bot(server.token, base_url=server.base_url) as bot:
        polling = asyncio.create_task(bot.get_updates(timeout=30))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await server.stop()
        assert await asyncio.wait_for(polling, 3) == ()
        assert time.monotonic() - started < 2

    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_on_sent_lets_a_member_answer_the_bot_at_once(server: BotApiServer, bot: Bot) -> None:
    """The benchmark's closed loop: each accepted message queues the member's next words."""
    server.on_sent = lambda message: server.user_text(message.chat_id, f"re: {message.text}")
    await bot.send_message(CHAT, "how was your wash?")

    [update] = await bot.get_updates(timeout=1)

    assert update.message.text == "re: how was your wash?"
    assert server.served_at[update.update_id] >= server.queued_at[update.update_id]
