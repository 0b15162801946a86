"""A local Telegram Bot API server for tests and benchmarks.

Our Telegram tests drive the real python-telegram-bot stack (`Application`, `Bot`,
`AIORateLimiter`) unmodified; only the internet is replaced. This module is that replacement: a
Starlette app served by uvicorn inside the running event loop on 127.0.0.1, answering the Bot API
methods the bot uses with the JSON Telegram sends, including its refusals (flood control 429 with
`retry_after`, 403 for a chat that blocked the bot, 400 for a text that is too long, 401 for a
wrong token, 409 for a second poller). Test code plays the users: `user_text`, `user_command`,
`user_press` and `user_contact` queue updates that `getUpdates` hands out, and every message the
bot gets accepted is recorded in `sent`.

    async with BotApiServer() as server:
        app = ApplicationBuilder().token(server.token).base_url(server.base_url).build()
        ...
        server.user_command(42, "start", "INVITE")
        [reply] = await server.wait_sent(42)

Tests and benchmarks alike import it as `from tests.support.botapi_server import BotApiServer`.

Message ids are counted per chat from 1 and shared by both sides, as in a Telegram private chat:
the bot's answer to a member's first message has id 2.
"""

from __future__ import annotations

import asyncio
import collections
import html
import itertools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.localserver import LocalServer

TEXT_MAX = 4096
CALLBACK_DATA_MAX = 64
COMMANDS_MAX = 100
LONG_POLL_MAX = 50.0
UPDATE_LIMIT_MAX = 100
SEND_METHODS = frozenset({"sendmessage", "editmessagetext", "editmessagereplymarkup"})
# Parameters that are plain strings on the wire; every other form field carries JSON.
_STRING_PARAMS = frozenset(
    {
        "text",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "language_code",
        "inline_message_id",
        "ip_address",
    }
)
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_TAG = re.compile(r"<[^>]*>")
_BAD_MARKUP = "Bad Request: can't parse reply keyboard markup JSON object"
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


class ApiError(Exception):
    """A refusal answered the way Telegram words it."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass(frozen=True)
class SentMessage:
    """A message the server accepted from the bot (a send or an edit), as the member sees it."""

    chat_id: int
    message_id: int
    text: str
    reply_markup: dict[str, Any] | None
    method: str
    at: float
    parse_mode: str | None = None


@dataclass
class _ChatMessage:
    """The current state of a message in a chat, so edits and button presses can refer to it."""

    message_id: int
    from_bot: bool
    text: str
    reply_markup: dict[str, Any] | None
    date: int


@dataclass
class _Bucket:
    """A chat's flood allowance: `tokens` refills at one per chat interval up to the burst."""

    tokens: float
    stamp: float


@dataclass
class _Poller:
    """A long-polling getUpdates call; a newer one ends it with 409, as Telegram does."""

    superseded: bool = False


@dataclass
class _Flood:
    """Telegram's two flood limits: all chats per second, and a short burst per chat."""

    per_second: float
    chat_interval: float
    chat_burst: int
    window: collections.deque[float] = field(default_factory=collections.deque)
    buckets: dict[int, _Bucket] = field(default_factory=dict)

    def admit(self, chat_id: int, now: float) -> None:
        """Take one send from both allowances, or raise the 429 Telegram would answer."""
        while self.window and self.window[0] <= now - 1.0:
            self.window.popleft()
        waits: list[float] = []
        if len(self.window) >= self.per_second:
            waits.append(self.window[0] + 1.0 - now)
        bucket = self.buckets.get(chat_id)
        if bucket is None:
            bucket = self.buckets[chat_id] = _Bucket(tokens=float(self.chat_burst), stamp=now)
        refill = (now - bucket.stamp) / self.chat_interval if self.chat_interval > 0 else math.inf
        bucket.tokens = min(float(self.chat_burst), bucket.tokens + refill)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            waits.append((1.0 - bucket.tokens) * self.chat_interval)
        if waits:
            retry_after = max(1, math.ceil(max(waits)))
            raise ApiError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )
        bucket.tokens -= 1.0
        self.window.append(now)


class _Signal:
    """Wakes every coroutine waiting for a change; callable from plain test code (`user_text`
    is not async), which an `asyncio.Condition` is not."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout: float) -> None:
        """Until the next `wake`, or `timeout` seconds, whichever comes first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)


def _decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PTB's form posts (and query strings): strings as they are, everything else JSON-encoded
    (reply_markup too)."""
    params: dict[str, Any] = {}
    for key, raw in pairs:
        if key in _STRING_PARAMS:
            params[key] = raw
            continue
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _visible_length(text: str, parse_mode: str | None) -> int:
    """The length Telegram checks: after entity parsing, so HTML tags do not count."""
    if parse_mode and parse_mode.lower() == "html":
        return len(html.unescape(_TAG.sub("", text)))
    return len(text)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ApiError(400, f"Bad Request: invalid {name} specified")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise ApiError(400, f"Bad Request: invalid {name} specified")


def _as_markup(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(
                400, "Bad Request: can't parse reply keyboard markup JSON object"
            ) from None
    if not isinstance(value, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in value.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_MAX:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return value


class BotApiServer:
    """One bot's view of Telegram, on 127.0.0.1. See the module docstring."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        username: str = "memberbot_test_bot",
        flood_limits: bool = True,
        global_per_second: float = 30.0,
        chat_interval: float = 1.0,
        chat_burst: int = 3,
        latency: float = 0.0,
    ) -> None:
        self.token = token
        self.username = username
        self.flood_limits = flood_limits
        self.latency = latency
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.base_url = ""
        self.sent: list[SentMessage] = []
        self.markup_edits: list[SentMessage] = []
        self.rejected_429 = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.callback_answers: list[dict[str, Any]] = []
        self.my_commands: dict[str, list[dict[str, Any]]] = {}
        self.my_commands_by_scope: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.webhook: dict[str, Any] | None = None
        # Called with each message added to `sent`, inside the request that sent it: lets a
        # benchmark play members who answer as soon as the bot has answered them.
        self.on_sent: Callable[[SentMessage], None] | None = None
        # update_id -> time.monotonic() when the update was queued / first handed to the bot.
        self.queued_at: dict[int, float] = {}
        self.served_at: dict[int, float] = {}
        self._flood = _Flood(global_per_second, chat_interval, chat_burst)
        self._blocked: set[int] = set()
        self._updates: dict[int, dict[str, Any]] = {}
        self._queue: collections.deque[int] = collections.deque()
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, dict[int, _ChatMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._allowed_updates: list[str] = []
        self._changed = _Signal()
        self._poller: _Poller | None = None
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._closing = False
        self._server: LocalServer | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "answercallbackquery": self._answer_callback_query,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "close": self._ok,
            "logout": self._ok,
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> BotApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serve on a free port of 127.0.0.1 until `stop`."""
        app = Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )
        self._server = LocalServer(app, "botapi-server")
        port = await self._server.start()
        self.base_url = f"http://127.0.0.1:{port}/bot"

    async def stop(self) -> None:
        """End long polls at once (empty answers), then let uvicorn close its connections."""
        self._closing = True
        self._changed.wake()
        if self._server is not None:
            await self._server.stop()
        self._server = None

    # -- simulated users ------------------------------------------------------------------

    def block(self, chat_id: int) -> None:
        """The member blocked the bot: every later send to the chat is refused with 403."""
        self._blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    def user_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        language_code: str = "zh-hans",
    ) -> int:
        """A member types `text`; returns the update_id."""
        message = self._user_message(chat_id, user_id, language_code, {"text": text})
        return self._queue_update({"message": message})

    def user_command(
        self,
        chat_id: int,
        command: str,
        args: str = "",
        *,
        user_id: int | None = None,
        language_code: str = "zh-hans",
    ) -> int:
        """A member sends `/command args`, marked with the bot_command entity Telegram adds."""
        head = command if command.startswith("/") else f"/{command}"
        text = f"{head} {args}" if args else head
        entity = {"type": "bot_command", "offset": 0, "length": len(head.encode("utf-16-le")) // 2}
        message = self._user_message(
            chat_id, user_id, language_code, {"text": text, "entities": [entity]}
        )
        return self._queue_update({"message": message})

    def user_press(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        language_code: str = "zh-hans",
    ) -> str:
        """A member taps an inline button of the bot's message; returns the callback query id."""
        sender = self._user(user_id if user_id is not None else chat_id, language_code)
        chat = self._chat(chat_id, sender)
        known = self._messages.get(chat_id, {}).get(message_id)
        if known is None:
            # A message the server never saw is one the bot can no longer read.
            message: dict[str, Any] = {"message_id": message_id, "date": 0, "chat": chat}
        else:
            message = self._message_json(chat_id, known)
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        query = {
            "id": query_id,
            "from": sender,
            "message": message,
            "chat_instance": str(-abs(chat_id) - 1000),
            "data": data,
        }
        self._queue_update({"callback_query": query})
        return query_id

    def user_contact(
        self,
        chat_id: int,
        phone: str,
        *,
        contact_user_id: int,
        user_id: int | None = None,
        language_code: str = "zh-hans",
    ) -> int:
        """A member shares a contact card (their own when contact_user_id is their user id)."""
        contact = {"phone_number": phone, "first_name": "Contact", "user_id": contact_user_id}
        message = self._user_message(chat_id, user_id, language_code, {"contact": contact})
        return self._queue_update({"message": message})

    def update_payload(self, update_id: int) -> dict[str, Any]:
        """The Update JSON as Telegram would POST it to a webhook."""
        return json.loads(json.dumps(self._updates[update_id]))

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet acknowledged by an offset."""
        return len(self._queue)

    # -- waiting helpers ------------------------------------------------------------------

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        return [message for message in self.sent if message.chat_id == chat_id]

    async def wait_sent(
        self, chat_id: int, count: int = 1, timeout: float = 5.0
    ) -> list[SentMessage]:
        """Every message accepted for `chat_id` so far, once there are at least `count`."""
        deadline = time.monotonic() + timeout
        while len(got := self.sent_to(chat_id)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                texts = [message.text[:60] for message in got]
                raise TimeoutError(
                    f"chat {chat_id}: {len(got)} of {count} messages within {timeout}s: {texts}"
                )
            await self._changed.wait(left)
        return got

    async def wait_idle(self, timeout: float = 5.0, quiet: float = 0.05) -> None:
        """Until every queued update was handed out and no call but a long poll ran for `quiet`
        seconds: the bot has done all it was going to do with what the users sent."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            served = all(update_id in self.served_at for update_id in self._queue)
            if served and self._in_flight == 0 and now - self._last_activity >= quiet:
                return
            if now >= deadline:
                raise TimeoutError(
                    f"not idle within {timeout}s: {len(self._queue)} updates pending, "
                    f"{self._in_flight} calls in flight"
                )
            await asyncio.sleep(min(quiet, 0.01))

    # -- HTTP -----------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.path_params["token"] != self.token:
            return self._error(ApiError(401, "Unauthorized"))
        handler = self._methods.get(method.lower())
        if handler is None:
            return self._error(ApiError(404, "Not Found"))
        self.calls[method] += 1
        long_poll = method.lower() == "getupdates"
        if not long_poll:
            self._in_flight += 1
        try:
            params = await self._params(request)
            if self.latency:
                await asyncio.sleep(self.latency)
            result = await handler(params)
        except ApiError as refusal:
            return self._error(refusal)
        finally:
            if not long_poll:
                self._in_flight -= 1
                self._last_activity = time.monotonic()
        return Response(
            json.dumps({"ok": True, "result": result}, ensure_ascii=False),
            media_type="application/json",
        )

    async def _params(self, request: Request) -> dict[str, Any]:
        params = _decode_form(request.query_params.multi_items())
        body = await request.body()
        if not body:
            return params
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                decoded = json.loads(body)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON request body") from None
            if not isinstance(decoded, dict):
                raise ApiError(400, "Bad Request: can't parse JSON request body")
            params.update(decoded)
        elif content_type.startswith("application/x-www-form-urlencoded"):
            params.update(_decode_form(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        else:
            raise ApiError(400, f"Bad Request: unsupported content type {content_type!r}")
        return params

    def _error(self, refusal: ApiError) -> Response:
        if refusal.code == 429:
            self.rejected_429 += 1
        payload: dict[str, Any] = {
            "ok": False,
            "error_code": refusal.code,
            "description": refusal.description,
        }
        if refusal.parameters:
            payload["parameters"] = refusal.parameters
        return Response(
            json.dumps(payload), status_code=refusal.code, media_type="application/json"
        )

    # -- Bot API methods ------------------------------------------------------------------

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Memberbot Test",
            "username": self.username,
        }

    async def _ok(self, params: dict[str, Any]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _as_int(params.get("offset", 0), "offset")
        limit = min(max(_as_int(params.get("limit", UPDATE_LIMIT_MAX), "limit"), 1), 100)
        timeout = min(max(float(params.get("timeout", 0) or 0), 0.0), LONG_POLL_MAX)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(kind) for kind in allowed]
        self._acknowledge(offset)
        if self._poller is not None:
            self._poller.superseded = True
        poller = self._poller = _Poller()
        self._changed.wake()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if poller.superseded:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that "
                        "only one bot instance is running",
                    )
                if self.webhook is not None:
                    raise ApiError(409, "Conflict: terminated by setWebhook request")
                batch = self._take(limit)
                left = deadline - time.monotonic()
                if batch or left <= 0 or self._closing:
                    break
                await self._changed.wait(left)
        finally:
            if self._poller is poller:
                self._poller = None
        now = time.monotonic()
        for update in batch:
            self.served_at.setdefault(update["update_id"], now)
        return batch

    def _acknowledge(self, offset: int) -> None:
        """Offsets confirm: a positive one forgets earlier updates, a negative one keeps the
        last -offset updates only."""
        if offset > 0:
            while self._queue and self._queue[0] < offset:
                self._queue.popleft()
        elif offset < 0:
            while len(self._queue) > -offset:
                self._queue.popleft()

    def _take(self, limit: int) -> list[dict[str, Any]]:
        allowed = set(self._allowed_updates)
        batch: list[dict[str, Any]] = []
        for update_id in list(self._queue):
            update = self._updates[update_id]
            kind = next(key for key in update if key != "update_id")
            if allowed and kind not in allowed:
                self._queue.remove(update_id)
                continue
            batch.append(update)
            if len(batch) >= limit:
                break
        return batch

    def _admit_send(self, chat_id: int) -> None:
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if self.flood_limits:
            self._flood.admit(chat_id, time.monotonic())

    def _check_text(self, params: dict[str, Any]) -> str:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _visible_length(text, params.get("parse_mode")) > TEXT_MAX:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _chat_id(self, params: dict[str, Any]) -> int:
        if "chat_id" not in params:
            raise ApiError(400, "Bad Request: chat_id is empty")
        try:
            return _as_int(params["chat_id"], "chat_id")
        except ApiError:
            raise ApiError(400, "Bad Request: chat not found") from None

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text = self._check_text(params)
        markup = _as_markup(params.get("reply_markup"))
        self._admit_send(chat_id)
        message = _ChatMessage(
            message_id=self._new_message_id(chat_id),
            from_bot=True,
            text=text,
            reply_markup=markup if markup and "inline_keyboard" in markup else None,
            date=int(time.time()),
        )
        self._messages.setdefault(chat_id, {})[message.message_id] = message
        self._record(self.sent, chat_id, message.message_id, text, markup, "sendMessage", params)
        return self._message_json(chat_id, message)

    def _editable(self, params: dict[str, Any]) -> tuple[int, _ChatMessage]:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat_id = self._chat_id(params)
        message_id = _as_int(params.get("message_id", 0), "message_id")
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return chat_id, message

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message = self._editable(params)
        text = self._check_text(params)
        markup = _as_markup(params.get("reply_markup"))
        if text == message.text and markup == message.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        self._admit_send(chat_id)
        message.text, message.reply_markup = text, markup
        self._record(
            self.sent, chat_id, message.message_id, text, markup, "editMessageText", params
        )
        return {**self._message_json(chat_id, message), "edit_date": int(time.time())}

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message = self._editable(params)
        markup = _as_markup(params.get("reply_markup"))
        if markup == message.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        self._admit_send(chat_id)
        message.reply_markup = markup
        self._record(
            self.markup_edits,
            chat_id,
            message.message_id,
            message.text,
            markup,
            "editMessageReplyMarkup",
            params,
        )
        return {**self._message_json(chat_id, message), "edit_date": int(time.time())}

    def _record(
        self,
        into: list[SentMessage],
        chat_id: int,
        message_id: int,
        text: str,
        markup: dict[str, Any] | None,
        method: str,
        params: dict[str, Any],
    ) -> None:
        message = SentMessage(
            chat_id=chat_id,
            message_id=message_id,
            text=text,
            reply_markup=markup,
            method=method,
            at=time.monotonic(),
            parse_mode=params.get("parse_mode"),
        )
        into.append(message)
        if into is self.sent and self.on_sent is not None:
            self.on_sent(message)
        self._changed.wake()

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._open_callbacks:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        text = params.get("text")
        if isinstance(text, str) and len(text) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self.callback_answers.append(dict(params))
        self._changed.wake()
        return True

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > COMMANDS_MAX:
            raise ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.fullmatch(
                str(command.get("command", ""))
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        listed = [{"command": c["command"], "description": c["description"]} for c in commands]
        language, scope = self._command_key(params)
        self.my_commands_by_scope[(scope, language)] = listed
        if scope == "default":
            self.my_commands[language] = listed
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        language, scope = self._command_key(params)
        return list(self.my_commands_by_scope.get((scope, language), []))

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        language, scope = self._command_key(params)
        self.my_commands_by_scope.pop((scope, language), None)
        if scope == "default":
            self.my_commands.pop(language, None)
        return True

    @staticmethod
    def _command_key(params: dict[str, Any]) -> tuple[str, str]:
        language = str(params.get("language_code") or "")
        scope = params.get("scope")
        if not scope:
            return language, "default"
        if isinstance(scope, str):
            scope = json.loads(scope)
        return language, json.dumps(scope, sort_keys=True) if len(scope) > 1 else scope["type"]

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url")
        if not isinstance(url, str):
            raise ApiError(400, "Bad Request: bad webhook: URL is empty")
        if not url:
            self.webhook = None
            return True
        if not url.startswith("https://") and not url.startswith("http://"):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        if params.get("drop_pending_updates"):
            self._queue.clear()
        self.webhook = {"url": url, "secret_token": params.get("secret_token")}
        self._changed.wake()  # a waiting poller now conflicts with the webhook
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._queue.clear()
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }

    # -- JSON shapes ----------------------------------------------------------------------

    def _user(self, user_id: int, language_code: str) -> dict[str, Any]:
        user = {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User{user_id}",
            "language_code": language_code,
        }
        self._users[user_id] = user
        return user

    def _chat(self, chat_id: int, sender: dict[str, Any]) -> dict[str, Any]:
        """A private chat when the sender's id is the chat id (as in Telegram), else a group."""
        if chat_id == sender["id"]:
            chat = {"id": chat_id, "type": "private", "first_name": sender["first_name"]}
        else:
            chat = {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}
        self._chats[chat_id] = chat
        return chat

    def _new_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _user_message(
        self, chat_id: int, user_id: int | None, language_code: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        sender = self._user(user_id if user_id is not None else chat_id, language_code)
        chat = self._chat(chat_id, sender)
        message_id = self._new_message_id(chat_id)
        self._messages.setdefault(chat_id, {})[message_id] = _ChatMessage(
            message_id=message_id,
            from_bot=False,
            text=content.get("text", ""),
            reply_markup=None,
            date=int(time.time()),
        )
        return {
            "message_id": message_id,
            "from": sender,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }

    def _message_json(self, chat_id: int, message: _ChatMessage) -> dict[str, Any]:
        chat = self._chats.get(chat_id) or {
            "id": chat_id,
            "type": "private",
            "first_name": f"User{chat_id}",
        }
        sender = self._bot_user() if message.from_bot else self._users.get(chat_id)
        payload: dict[str, Any] = {
            "message_id": message.message_id,
            "chat": chat,
            "date": message.date,
            "text": message.text,
        }
        if sender is not None:
            payload["from"] = sender
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            payload["reply_markup"] = message.reply_markup
        return payload

    def _queue_update(self, content: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self._updates[update_id] = {"update_id": update_id, **content}
        self._queue.append(update_id)
        self.queued_at[update_id] = time.monotonic()
        self._changed.wake()
        return update_id
