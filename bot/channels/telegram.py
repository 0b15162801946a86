"""The Telegram channel: python-telegram-bot 22 in front of the conversation core.

An adapter only: every update becomes a `bot.conversation.Event`, `Chat.handle` decides, and
the replies are shown with Telegram's widgets (inline keyboards for buttons, a one-time
"share my phone" keyboard for contact requests). No rule lives here.

Entry points (used by `memberbot.app`, the tests and the benchmarks):

* `build_application(chat, options, *, concurrency=...) -> Application`: the bot, its
  handlers, flood-control retries and the command menu set up at start. Webhook mode when
  `options.webhook_url` is set (refused without `options.webhook_secret`). `TelegramOptions`
  holds plain values; `memberbot.app` fills it from the operator's settings.
* `async with running(application, options):` initialises, registers the command menu
  (`post_init`), starts processing, then long polling or `setWebhook`; it stops everything
  cleanly on exit.
* `webhook_route(application, secret) -> starlette Route` at `WEBHOOK_PATH`: checks the
  `X-Telegram-Bot-Api-Secret-Token` header (403 otherwise) and queues the update.
* `TelegramSender(token, base_url)`: the scheduler's `domain.outgoing.Sender`. It has no
  rate limiter, so the dispatcher, which paces itself, sees every 429.
* `reply_markup(reply)`: how a `Reply`'s buttons look on Telegram, for both of the above.
"""

from __future__ import annotations

import hmac
import logging
import re
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from bot import intents
from bot.channels.chatlocks import ChatLocks
from bot.conversation import BUTTON, COMMAND, CONTACT, TEXT, Chat, Event
from domain.errors import ConfigError
from domain.locales import LOCALES
from domain.outgoing import BLOCKED, BUTTON_DATA_MAX, FAILED, RETRY, SENT, Delivery, Reply

log = logging.getLogger(__name__)

CHANNEL = "telegram"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
# Telegram's own rule for webhook secrets.
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Handler retries on 429 for the bot's answers: a member waits a few seconds rather than
# getting nothing. The scheduler's sender never retries by itself.
ANSWER_RETRIES = 3
# Updates processed at once, across different chats; one chat's updates stay in order.
DEFAULT_CONCURRENCY = 16
# Locales of the command menu: the Telegram language code each one is registered under. The
# first is also the menu of clients whose language has none of its own.
COMMAND_MENUS = {"zh_CN": "zh", "en": "en"}
# Text of the message that carries a reply's buttons when the reply's own text had to carry
# the removal of the contact keyboard (Telegram allows one markup per message).
BUTTONS_POINTER = "👇"
_KEYBOARD_UP = "contact_keyboard"


def file_url(base_url: str) -> str:
    """The file endpoint that goes with a Bot API base URL (`…/bot` → `…/file/bot`)."""
    root = base_url.removesuffix("/").removesuffix("bot").removesuffix("/")
    return f"{root}/file/bot"


def reply_markup(reply: Reply) -> InlineKeyboardMarkup | ReplyKeyboardMarkup | None:
    """Telegram's widget for a reply: its buttons inline, else a one-time keyboard offering to
    share the member's own phone. A message carries one markup; buttons win over the contact
    keyboard (no reply of the core asks for both)."""
    keyboard = inline_keyboard(reply)
    if keyboard is not None:
        return keyboard
    if reply.contact_button:
        return ReplyKeyboardMarkup(
            [[KeyboardButton(reply.contact_button, request_contact=True)]],
            one_time_keyboard=True,
            resize_keyboard=True,
        )
    return None


def inline_keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(button.label, callback_data=button.data) for button in row]
            for row in reply.buttons
        ]
    )


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Processes updates of different chats concurrently and each chat's in arrival order, so
    a member tapping twice never sees the second answer before the first."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks = ChatLocks()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        async with self._locks.hold(chat.id if chat is not None else None):
            await coroutine

    async def initialize(self) -> None:
        """Nothing to allocate: locks are made per chat as updates arrive."""

    async def shutdown(self) -> None:
        """Nothing to free: a lock goes when its chat's last update is done."""


class TelegramChannel:
    """The handlers: each turns one kind of update into an `Event`, asks the core, and shows
    the replies."""

    def __init__(self, chat: Chat, on_sent: Callable[[str], None] | None = None) -> None:
        self.chat = chat
        self.on_sent = on_sent

    def register(self, application: Application) -> None:
        """Every handler, in one place. Only private chats are served: a member's chat is
        with them alone."""
        private = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
        application.add_handler(
            CommandHandler(list(intents.COMMANDS), self.on_command, filters=private)
        )
        application.add_handler(MessageHandler(private & filters.COMMAND, self.on_command))
        application.add_handler(
            MessageHandler(private & filters.TEXT & ~filters.COMMAND, self.on_text)
        )
        application.add_handler(MessageHandler(private & filters.CONTACT, self.on_contact))
        application.add_handler(CallbackQueryHandler(self.on_button))
        application.add_error_handler(self.on_error)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        word, _, rest = message.text.partition(" ")
        event = self._event(update, COMMAND, command=word, text=rest.strip())
        await self._answer(update, context, event)

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        await self._answer(update, context, self._event(update, TEXT, text=message.text))

    async def on_contact(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.contact is None:
            return
        event = self._event(
            update,
            CONTACT,
            contact_user_id=message.contact.user_id,
            contact_phone=message.contact.phone_number,
        )
        await self._answer(update, context, event, keyboard_used=True)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Always answer the query (the client spins until then); forged or stale data is the
        core's to refuse politely, so anything odd is passed on as empty data."""
        query = update.callback_query
        if query is None:
            return
        with suppress(TelegramError):
            await query.answer()
        if query.message is not None and query.message.chat.type != "private":
            return
        data = query.data if isinstance(query.data, str) else ""
        if len(data.encode()) > BUTTON_DATA_MAX:
            data = ""
        event = self._event(update, BUTTON, data=data, address=_button_address(query))
        # A step of a flow replaces the keyboard it was chosen from; a menu button (`go:`)
        # starts something new below, leaving the message it was on (a reminder) as it was.
        pressed = query.message if isinstance(query.message, Message) else None
        edit = pressed if data and not data.startswith("go:") else None
        await self._answer(update, context, event, edit=edit)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log what broke without what the member wrote: exception messages can quote SQL
        parameters (phones) or texts, so INFO and above get the type and the stack only."""
        error = context.error
        update_id = update.update_id if isinstance(update, Update) else None
        if error is None:
            return
        stack = "".join(traceback.format_tb(error.__traceback__))
        log.error("telegram update %s failed: %s\n%s", update_id, type(error).__name__, stack)
        log.debug("telegram update %s failed", update_id, exc_info=error)

    def _event(
        self, update: Update, kind: str, *, address: str | None = None, **fields: Any
    ) -> Event:
        user = update.effective_user
        chat = update.effective_chat
        if address is None:
            address = str(chat.id if chat is not None else user.id if user is not None else "")
        return Event(
            channel=CHANNEL,
            address=address,
            kind=kind,
            sender_id=user.id if user is not None else None,
            language=user.language_code if user is not None else None,
            **fields,
        )

    async def _answer(
        self,
        update: Update,
        context: ContextTypes.DEFAULT_TYPE,
        event: Event,
        *,
        edit: Message | None = None,
        keyboard_used: bool = False,
    ) -> None:
        log.debug("telegram update %s: %s", update.update_id, event.kind)
        replies = await self.chat.handle(event)
        state = context.chat_data if context.chat_data is not None else {}
        asks = any(reply.contact_button for reply in replies)
        remove = not asks and (keyboard_used or bool(state.get(_KEYBOARD_UP)))
        await show(context.bot, int(event.address), replies, edit=edit, remove_keyboard=remove)
        if self.on_sent is not None:
            for _reply in replies:
                self.on_sent(event.address)
        if asks:
            state[_KEYBOARD_UP] = True
        elif remove:
            state.pop(_KEYBOARD_UP, None)


def _button_address(query: CallbackQuery) -> str:
    """The chat a press came from; the user's own private chat for a message without one."""
    if query.message is not None:
        return str(query.message.chat.id)
    return str(query.from_user.id)


async def show(
    bot: Bot,
    chat_id: int,
    replies: Sequence[Reply],
    *,
    edit: Message | None = None,
    remove_keyboard: bool = False,
) -> None:
    """Send the replies in order.

    `edit`: the message whose button was pressed; the first reply replaces it, so a step-by-step
    flow (booking) stays one message. `remove_keyboard`: the contact keyboard is no longer
    wanted (the chat is bound, or moved on); the first reply's text carries the removal and,
    since a message has one markup, its buttons follow under a pointer.
    """
    for index, reply in enumerate(replies):
        if index == 0 and remove_keyboard:
            await bot.send_message(chat_id, reply.text, reply_markup=ReplyKeyboardRemove())
            keyboard = inline_keyboard(reply)
            if keyboard is not None:
                await bot.send_message(chat_id, BUTTONS_POINTER, reply_markup=keyboard)
            continue
        first_edit = edit if index == 0 and not reply.contact_button else None
        if first_edit is not None and await _edit(bot, first_edit, reply):
            continue
        await bot.send_message(chat_id, reply.text, reply_markup=reply_markup(reply))


async def _edit(bot: Bot, message: Message, reply: Reply) -> bool:
    """Replace a pressed message with a reply; False when Telegram will not edit it (too old,
    deleted), so the caller sends it instead."""
    try:
        await bot.edit_message_text(
            reply.text,
            chat_id=message.chat.id,
            message_id=message.message_id,
            reply_markup=inline_keyboard(reply),
        )
    except BadRequest as exc:
        return "not modified" in exc.message.lower()
    return True


@dataclass(frozen=True)
class TelegramOptions:
    """How this bot reaches Telegram: its token, the Bot API's base URL (a self-hosted server,
    or the tests' one on 127.0.0.1), the bot-wide pace for replies (0 = none), its @username
    for invite links (asked of Telegram when unset), and for webhook mode the public URL and
    the secret Telegram must send with every push."""

    token: str | None
    base_url: str = "https://api.telegram.org/bot"
    rate_per_second: float = 30.0
    bot_username: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None


def build_application(
    chat: Chat,
    options: TelegramOptions,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_sent: Callable[[str], None] | None = None,
) -> Application:
    """The bot for `options.token`, long polling unless a webhook URL is set.
    `on_sent(chat_id)` hears of every reply sent, so the reminders can share the bot's pace."""
    if not options.token:
        raise ConfigError([("environment", "MEMBERBOT_TELEGRAM_TOKEN", "is not set")])
    webhook = webhook_mode(options)
    builder = (
        ApplicationBuilder()
        .token(options.token)
        .base_url(options.base_url)
        .base_file_url(file_url(options.base_url))
        .rate_limiter(
            AIORateLimiter(overall_max_rate=options.rate_per_second, max_retries=ANSWER_RETRIES)
        )
        .concurrent_updates(PerChatUpdateProcessor(concurrency))
        .post_init(_post_init(chat, options))
    )
    if webhook:
        builder = builder.updater(None)
    application = builder.build()
    TelegramChannel(chat, on_sent).register(application)
    return application


def webhook_mode(options: TelegramOptions) -> bool:
    """Whether Telegram pushes updates to us; refuses a webhook nobody could authenticate."""
    if not options.webhook_url:
        return False
    secret = options.webhook_secret or ""
    if not _SECRET.fullmatch(secret):
        raise ConfigError(
            [
                (
                    "environment",
                    "MEMBERBOT_TELEGRAM_WEBHOOK_SECRET",
                    "webhook mode needs a secret of 1-256 characters A-Z a-z 0-9 _ -",
                )
            ]
        )
    return True


def _post_init(
    chat: Chat, options: TelegramOptions
) -> Callable[[Application], Coroutine[Any, Any, None]]:
    async def post_init(application: Application) -> None:
        """Once the bot knows itself (getMe): its username for invite links, and the command
        menu in each language."""
        chat.bot_username = options.bot_username or application.bot.username
        for index, (locale, language_code) in enumerate(COMMAND_MENUS.items()):
            commands = command_menu(chat, locale)
            if index == 0:
                await application.bot.set_my_commands(commands)
            await application.bot.set_my_commands(commands, language_code=language_code)

    return post_init


def command_menu(chat: Chat, locale: str) -> list[BotCommand]:
    """The menu from `chat/telegram_commands`: one `command - description` per line, every
    command one the chat understands (a typo in the template fails loudly at start)."""
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}")
    commands: list[BotCommand] = []
    for line in chat.render("telegram_commands", locale, {}).splitlines():
        if not line.strip():
            continue
        name, separator, description = line.partition(" - ")
        name = name.strip().lstrip("/")
        if not separator or name not in intents.COMMANDS or not description.strip():
            raise ValueError(f"chat/telegram_commands ({locale}): bad line {line!r}")
        commands.append(BotCommand(name, description.strip()))
    return commands


@asynccontextmanager
async def running(application: Application, options: TelegramOptions) -> AsyncIterator[Application]:
    """The bot at work: initialised, menu registered, processing updates from long polling or,
    in webhook mode, from `webhook_route` after `setWebhook`. Stops cleanly on exit."""
    await application.initialize()
    try:
        if application.post_init is not None:
            await application.post_init(application)
        await application.start()
        try:
            if webhook_mode(options):
                await application.bot.set_webhook(
                    url=options.webhook_url or "",
                    secret_token=options.webhook_secret,
                    allowed_updates=list(ALLOWED_UPDATES),
                )
                log.info("telegram: webhook mode")
            elif application.updater is not None:
                await application.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES))
                log.info("telegram: long polling")
            yield application
        finally:
            if application.updater is not None and application.updater.running:
                await application.updater.stop()
            await application.stop()
    finally:
        await application.shutdown()


def webhook_route(application: Application, secret: str) -> Route:
    """POST `WEBHOOK_PATH`: Telegram's pushes, authenticated by the secret given to
    setWebhook. Nothing is read from a request without it."""
    if not _SECRET.fullmatch(secret):
        raise ValueError("a webhook needs a secret of 1-256 characters A-Z a-z 0-9 _ -")
    expected = secret.encode()

    async def receive(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not given or not hmac.compare_digest(given, expected):
            return Response(status_code=403)
        try:
            payload = await request.json()
            update = Update.de_json(payload, application.bot) if isinstance(payload, dict) else None
        except (ValueError, TypeError, KeyError):
            update = None
        if update is None:
            return Response(status_code=400)
        await application.update_queue.put(update)
        return Response(status_code=200)

    return Route(WEBHOOK_PATH, receive, methods=["POST"])


class TelegramSender:
    """The scheduler's way to Telegram: one message, one faithful outcome. No rate limiter
    and no retries here: the dispatcher paces itself and must see every 429."""

    channel = CHANNEL

    def __init__(self, token: str, base_url: str = "https://api.telegram.org/bot") -> None:
        self.bot = Bot(token, base_url=base_url, base_file_url=file_url(base_url))

    async def __aenter__(self) -> TelegramSender:
        """Opens the connection pool and checks the token; Telegram being unreachable now is
        no reason not to start (sends report RETRY until it is back), a wrong token is."""
        try:
            await self.bot.initialize()
        except InvalidToken:
            await self.bot.shutdown()
            raise
        except TelegramError as exc:
            log.warning("telegram sender: Telegram unreachable at start (%s)", type(exc).__name__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.bot.shutdown()

    async def send(self, address: str, reply: Reply) -> Delivery:
        try:
            chat_id = int(address)
        except ValueError:
            return Delivery(FAILED, error="not a Telegram chat id")
        try:
            message = await self.bot.send_message(
                chat_id, reply.text, reply_markup=reply_markup(reply)
            )
        except RetryAfter as exc:
            return Delivery(RETRY, retry_after=_seconds(exc), error="flood control")
        except Forbidden as exc:
            return Delivery(BLOCKED, error=exc.message)
        except BadRequest as exc:
            gone = "chat not found" in exc.message.lower()
            return Delivery(BLOCKED if gone else FAILED, error=exc.message)
        except NetworkError as exc:  # TimedOut included; BadRequest handled above
            return Delivery(RETRY, error=f"{type(exc).__name__}: {exc.message}")
        except TelegramError as exc:  # a revoked token, a server in trouble: try again later
            return Delivery(RETRY, error=f"{type(exc).__name__}: {exc.message}")
        return Delivery(SENT, message_id=str(message.message_id))


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


__all__ = [
    "ALLOWED_UPDATES",
    "CHANNEL",
    "SECRET_HEADER",
    "WEBHOOK_PATH",
    "PerChatUpdateProcessor",
    "TelegramChannel",
    "TelegramSender",
    "build_application",
    "command_menu",
    "file_url",
    "reply_markup",
    "running",
    "show",
    "webhook_mode",
    "webhook_route",
]
