"""The WeChat Official Account channel: the inbound webhook in front of the conversation core.

An adapter only: every message WeChat pushes becomes a `bot.conversation.Event`, `Chat.answer`
decides, and the replies go back as one passive XML reply. No rule lives here.

What reaches the core, and how:

* text → a text event; a number the chat was just offered ("1") presses that button (the chat's
  numbered choices are kept in the database, `domain.choices`); `/command args` is a command;
* a menu click (CLICK) → its key as button data: `go:points`, `booking:…`, or a bare intent
  name (`points` means `go:points`);
* subscribe → `JOINED` (a welcome and the way to bind); subscribe through a parametric QR code
  (`qrscene_<code>`) and SCAN while subscribed → `/start <code>`, which binds as Telegram's
  deep link does; unsubscribe → `LEFT` (the chat is unbound, audited; nothing is said);
* pictures, voice, locations and the like → empty text (the menu); other events (VIEW,
  LOCATION reports, template job reports) run nothing and are answered `success`.

WeChat text has no buttons: a reply's buttons become numbered choices under its text
(`bot.channels.numbered`, worded by `chat/wechat_choices`), and a turn's replies are joined
into one message within WeChat's 2048 bytes. The "share my phone" button does not exist here.

Each request is refused before anything parses it, with a log line that names no member:
403 for a missing or wrong signature or a timestamp more than `max_clock_skew_seconds` away
(a replay), 400 for a body over `max_body_bytes`, XML with a DOCTYPE or entity declarations
(checked by defusedxml before wechatpy's parser sees it), anything that is not a WeChat
message, and in safe mode (`aes_key` set) a message that is not encrypted; a wrong
`msg_signature` is 403.

WeChat waits 5 seconds and then delivers the same message again, up to three more times, to
any of our processes. Each delivery is claimed in the database (`domain.inbound`) under its
MsgId, or for an event under its user, event and CreateTime: the first claim runs the turn,
later ones wait for its reply and give the same one, so a retried redemption charges once.
A turn that takes longer than `reply_budget_seconds` is answered `success` (WeChat then stops
retrying) and its reply is stored as owed, for `wechat_send.OwedReplies` to send as a
customer-service message.

The first delivery of each message or event is also recorded as an interaction
(`domain.allowances.grant`): what it allows the dispatcher to send as customer-service
messages, and a wake-up for messages that waited for the member. An unsubscribe ends the
member's allowance and has what waited for them decided again at once.

Entry points (used by `memberbot.app` and the tests): `WeChatOptions` (plain values),
`WeChatChannel(chat, options)`, its `route()` (GET verification and POST messages at
`options.path`) and `aclose()` (waits for turns still running).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import WeChatSigner

from bot.channels import numbered
from bot.channels.chatlocks import ChatLocks
from bot.conversation import BUTTON, COMMAND, JOINED, LEFT, TEXT, Chat, Event
from domain import allowances, choices, inbound
from domain.binding import WECHAT
from domain.errors import ConfigError
from domain.messages import CHANNEL_LIMITS
from domain.outgoing import Reply

log = logging.getLogger(__name__)

CHANNEL = WECHAT
DEFAULT_PATH = "/wechat"
DEFAULT_API_BASE_URL = "https://api.weixin.qq.com"
SUCCESS = "success"  # what WeChat takes as "received, no reply": it stops retrying
PASSIVE_LIMIT = CHANNEL_LIMITS[CHANNEL].limit  # bytes of a passive text reply
AES_KEY_LENGTH = 43  # an EncodingAESKey: 32 bytes in base64 without its "="
POLL_SECONDS = 0.05  # how often a repeated delivery looks for the first one's reply
PRUNE_EVERY_SECONDS = 3600.0
CLOSE_WAIT_SECONDS = 10.0

_SIGNATURE = re.compile(r"[0-9a-f]{40}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9]{1,64}")
_ECHO = re.compile(r"[A-Za-z0-9_-]{1,128}")
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")  # openids and gh_ account ids
_INTENT = re.compile(r"[a-z][a-z0-9_]{0,23}")
# Characters XML 1.0 cannot carry, even in CDATA.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class WeChatOptions:
    """The Official Account as the webhook needs it: the token of the server configuration,
    the AppID (and AppSecret, for the sender), the EncodingAESKey for safe mode (None = plain
    mode), the path WeChat calls, and the webhook's limits."""

    token: str
    app_id: str
    app_secret: str
    aes_key: str | None = None
    path: str = DEFAULT_PATH
    api_base_url: str = DEFAULT_API_BASE_URL
    reply_budget_seconds: float = 4.0
    max_body_bytes: int = 64 * 1024
    max_clock_skew_seconds: int = 300

    @property
    def safe_mode(self) -> bool:
        return bool(self.aes_key)


def check_options(options: WeChatOptions) -> None:
    """Refuse a configuration WeChat could not talk to (ConfigError names the setting)."""
    problems: list[tuple[str, str, str]] = []
    for name in ("token", "app_id", "app_secret"):
        if not getattr(options, name):
            problems.append(("environment", f"MEMBERBOT_WECHAT_{name.upper()}", "is not set"))
    if options.aes_key is not None and not _aes_key_ok(options.aes_key):
        problems.append(
            ("environment", "MEMBERBOT_WECHAT_AES_KEY", "must be the 43-character EncodingAESKey")
        )
    if not options.path.startswith("/") or options.path.rstrip("/") == "":
        problems.append(("environment", "MEMBERBOT_WECHAT_PATH", "must be a path like /wechat"))
    if problems:
        raise ConfigError(problems)


def _aes_key_ok(key: str) -> bool:
    if len(key) != AES_KEY_LENGTH:
        return False
    try:
        return len(base64.b64decode(key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


class Refused(Exception):
    """A request we do not read: its status and a reason for the log (never member data)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Incoming:
    """One verified message, as much of it as the chat needs. `key` is its dedupe key."""

    openid: str
    account: str  # our account's id (ToUserName): the reply comes from it
    key: str
    kind: str  # "text", "click", "subscribe", "scan", "unsubscribe", "other"
    text: str = ""  # the text, the menu key or the QR code's scene


def incoming(message: Any) -> Incoming | None:
    """What a parsed wechatpy message asks of the chat; None when it asks nothing (a VIEW
    click, a location report, a template job's result)."""
    if message.type == "unknown":  # a kind of message or event this version does not know
        return None
    openid, account = _plain(message.source), _plain(message.target)
    if not _ACCOUNT.fullmatch(openid) or not _ACCOUNT.fullmatch(account):
        raise Refused(400, "not a WeChat user message")
    created = message.time
    if message.type != "event":
        key = inbound.message_key(message.id) if message.id else None
        key = key or inbound.event_key(openid, message.type, created)
        text = _plain(getattr(message, "content", "")) if message.type == "text" else ""
        return Incoming(openid, account, key, "text" if text else "other", text)
    event = message.event
    if event in ("subscribe_scan", "scan"):
        scene, kind = _plain(message.scene_id), "scan"
    elif event == "subscribe":
        scene, kind = "", "subscribe"
    elif event == "click":
        scene, kind = _plain(message.key), "click"
    elif event == "unsubscribe":
        scene, kind = "", "unsubscribe"
    else:
        return None
    return Incoming(openid, account, inbound.event_key(openid, event, created, scene), kind, scene)


_ALLOWING = {
    "text": allowances.MESSAGE,
    "other": allowances.MESSAGE,
    "click": allowances.CLICK,
    "subscribe": allowances.SUBSCRIBE,
    "scan": allowances.SCAN,
}


async def _interacted(session: AsyncSession, message: Incoming, now: datetime) -> None:
    """Record what the member's action allows us to send them (and so wake what waited for
    it), or, for an unsubscribe, that nothing more is allowed. Once per delivery key."""
    if message.kind == "unsubscribe":
        await allowances.left(session, CHANNEL, message.openid, now)
    else:
        await allowances.grant(session, CHANNEL, message.openid, _ALLOWING[message.kind], now)


def _plain(value: Any) -> str:
    """A field's text; nested XML where text belongs counts as nothing."""
    return value.strip() if isinstance(value, str) else ""


def event_for(message: Incoming, offered: Mapping[str, str]) -> Event:
    """The core's event for a message, given the choices the chat was last offered."""
    address, text = message.openid, message.text
    if message.kind == "unsubscribe":
        return Event(CHANNEL, address, LEFT)
    if message.kind == "subscribe":
        return Event(CHANNEL, address, JOINED)
    if message.kind == "scan":
        return Event(CHANNEL, address, COMMAND, command="start", text=text)
    if message.kind == "click":
        data = f"go:{text}" if _INTENT.fullmatch(text) else text
        return Event(CHANNEL, address, BUTTON, data=data)
    data = numbered.pressed(text, offered)
    if data is not None:
        return Event(CHANNEL, address, BUTTON, data=data)
    if text.startswith("/") and len(text) > 1:
        command, _, rest = text[1:].partition(" ")
        return Event(CHANNEL, address, COMMAND, command=command, text=rest.strip())
    return Event(CHANNEL, address, TEXT, text=text)


@dataclass
class _Ticket:
    """Who speaks for a running turn: the request that waited for it, or (when it gave up at
    the budget) the sender later. Both sides decide without awaiting, so exactly one wins."""

    text: str | None = None  # set when the turn's reply is ready and will be answered
    gave_up: bool = False  # the request answered `success`: the reply is owed


class WeChatChannel:
    """The webhook: `route()` for the HTTP server, `aclose()` when stopping."""

    def __init__(
        self,
        chat: Chat,
        options: WeChatOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_options(options)
        self.chat = chat
        self.options = options
        self.clock = clock
        self.crypto = (
            WeChatCrypto(options.token, options.aes_key, options.app_id)
            if options.aes_key
            else None
        )
        self._locks = ChatLocks()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pruned_at = float("-inf")

    def route(self) -> Route:
        return Route(self.options.path, self.receive, methods=["GET", "POST"])

    async def aclose(self) -> None:
        """Let the turns still running (past the budget) finish, for a while."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_SECONDS)
        for task in set(self._tasks):
            task.cancel()

    # -- HTTP ------------------------------------------------------------------------------

    async def receive(self, request: Request) -> Response:
        started = asyncio.get_running_loop().time()
        try:
            self._check_query(request)
            if request.method == "GET":
                return self._verification(request)
            message = self._open(request, await _read_body(request, self.options.max_body_bytes))
            found = incoming(message)
        except Refused as exc:
            log.warning("wechat: refused a %s: %s", request.method, exc.reason)
            return Response(status_code=exc.status)
        if found is None:
            return PlainTextResponse(SUCCESS)
        deadline = started + self.options.reply_budget_seconds
        try:
            text = await self._reply(found, deadline)
        except Exception as exc:
            log.error("wechat: turn failed (%s)", type(exc).__name__)
            log.debug("wechat: turn failed", exc_info=exc)
            return Response(status_code=500)
        return self._passive(request, found, text)

    def _check_query(self, request: Request) -> None:
        """The signature of token, timestamp and nonce, and a timestamp close to now."""
        query = request.query_params
        signature = query.get("signature", "")
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not (
            _SIGNATURE.fullmatch(signature)
            and _TIMESTAMP.fullmatch(timestamp)
            and _NONCE.fullmatch(nonce)
        ):
            raise Refused(403, "missing or malformed signature")
        if abs(self.clock() - int(timestamp)) > self.options.max_clock_skew_seconds:
            raise Refused(403, "timestamp too far from now (a replay?)")
        if not hmac.compare_digest(_signed(self.options.token, timestamp, nonce), signature):
            raise Refused(403, "wrong signature")

    def _verification(self, request: Request) -> Response:
        """WeChat's check of the server URL: echo `echostr` when the signature is ours."""
        echo = request.query_params.get("echostr", "")
        if not _ECHO.fullmatch(echo):
            raise Refused(400, "verification without echostr")
        log.info("wechat: server verification answered")
        return PlainTextResponse(echo)

    def _open(self, request: Request, body: bytes) -> Any:
        """The message in the body: decrypted in safe mode, XML hardened, then wechatpy's."""
        root = _hardened(body)
        if self.crypto is None:
            return _parsed(body)
        query = request.query_params
        msg_signature = query.get("msg_signature", "")
        encrypted = root.findtext("Encrypt")
        if query.get("encrypt_type") != "aes" or not encrypted:
            raise Refused(400, "safe mode takes encrypted messages only")
        if not _SIGNATURE.fullmatch(msg_signature):
            raise Refused(403, "missing msg_signature")
        try:
            plain = self.crypto.decrypt_message(
                {"Encrypt": encrypted}, msg_signature, query["timestamp"], query["nonce"]
            )
        except InvalidSignatureException as exc:
            raise Refused(403, "wrong msg_signature") from exc
        except Exception as exc:  # bad base64, padding, another account's AppID
            raise Refused(400, f"cannot decrypt ({type(exc).__name__})") from exc
        inner = plain.encode("utf-8")
        _hardened(inner)
        return _parsed(inner)

    def _passive(self, request: Request, message: Incoming, text: str) -> Response:
        """The reply as WeChat wants it: XML (encrypted in safe mode), or `success`."""
        if not text:
            return PlainTextResponse(SUCCESS)
        reply = TextReply(
            source=message.account,
            target=message.openid,
            content=_cdata_safe(text),
            time=int(self.clock()),
        ).render()
        if self.crypto is not None:
            reply = self.crypto.encrypt_message(
                reply, request.query_params["nonce"], str(int(self.clock()))
            )
        return Response(reply, media_type="application/xml")

    # -- one delivery ----------------------------------------------------------------------

    async def _reply(self, message: Incoming, deadline: float) -> str:
        """The reply text for a delivery ("" = `success`): run the turn if this delivery is
        the first of its key, else give the first one's reply."""
        loop = asyncio.get_running_loop()
        while True:
            async with self.chat.db.transaction() as session:
                first = await inbound.claim(
                    session, CHANNEL, message.key, message.openid, self._now()
                )
                if first:
                    await _interacted(session, message, self._now())
            if first:
                return await self._run_within(message, deadline)
            while loop.time() < deadline:
                async with self.chat.db.read() as session:
                    found = await inbound.outcome(session, CHANNEL, message.key)
                if found is None:  # the first delivery's turn failed: run it again
                    break
                if found.status == inbound.ANSWERED:
                    return found.reply or ""
                if found.status != inbound.PENDING:  # owed: the sender delivers it
                    return ""
                await asyncio.sleep(POLL_SECONDS)
            else:
                return ""  # still running elsewhere past the budget: its reply will be owed

    async def _run_within(self, message: Incoming, deadline: float) -> str:
        ticket = _Ticket()
        task = asyncio.create_task(self._turn(message, ticket), name="wechat-turn")
        self._keep(task)
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task in done or ticket.text is not None:
            return await asyncio.shield(task)
        ticket.gave_up = True
        log.info(
            "wechat: a turn overran %.1f s; its reply is owed", self.options.reply_budget_seconds
        )
        return ""

    async def _turn(self, message: Incoming, ticket: _Ticket) -> str:
        """One turn, in the chat's order: the core's answer, composed, stored with the chat's
        new choices. A failure forgets the claim, so WeChat's next delivery tries again."""
        address = message.openid
        try:
            async with self._locks.hold(address):
                offered: dict[str, str] = {}
                if message.kind == "text" and numbered.could_press(message.text):
                    # One statement: no snapshot, no BEGIN.
                    async with self.chat.db.read(snapshot=False) as session:
                        offered = await choices.recall(session, CHANNEL, address, self._now())
                answer = await self.chat.answer(event_for(message, offered))
                text, listed = compose(self.chat, answer.locale, answer.replies)
                owed = ticket.gave_up
                if not owed:
                    ticket.text = text
                async with self.chat.db.transaction() as session:
                    await remember(session, self.chat, address, listed, self._now())
                    await inbound.settle(
                        session, CHANNEL, message.key, text, self._now(), owed=owed
                    )
        except BaseException:
            await asyncio.shield(self._release(message.key))
            raise
        self._maybe_prune()
        return text

    async def _release(self, key: str) -> None:
        try:
            async with self.chat.db.transaction() as session:
                await inbound.release(session, CHANNEL, key)
        except Exception as exc:
            log.warning("wechat: could not release a failed claim (%s)", type(exc).__name__)

    def _maybe_prune(self) -> None:
        """Now and then, forget deliveries too old for WeChat to repeat."""
        if self.clock() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = self.clock()
        self._keep(asyncio.create_task(self._prune(), name="wechat-prune"))

    async def _prune(self) -> None:
        try:
            async with self.chat.db.transaction() as session:
                removed = await inbound.prune(session, self._now())
                await allowances.prune(session, self._now())
        except Exception as exc:
            log.warning("wechat: pruning deliveries failed (%s)", type(exc).__name__)
            return
        if removed:
            log.info("wechat: forgot %d old deliveries", removed)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a task until it ends (the loop keeps only weak references), and log what a
        task nobody awaits raised."""
        self._tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.debug("wechat: background task failed", exc_info=finished.exception())

        task.add_done_callback(done)

    def _now(self) -> datetime:
        return clock_now(self.clock)


def clock_now(clock: Callable[[], float]) -> datetime:
    """The time of a seconds-since-epoch clock (time.time, or a test's), as aware UTC: what the
    domain takes, for every WeChat module."""
    return datetime.fromtimestamp(clock(), UTC)


def compose(
    chat: Chat, locale: str, replies: Sequence[Reply], limit: int = PASSIVE_LIMIT
) -> tuple[str, list[numbered.Choice]]:
    """Replies as one WeChat text: their texts, then their buttons as numbered choices
    (`chat/wechat_choices`), within `limit` bytes; and the choices, for `remember`."""
    listed = numbered.numbered(replies)
    tail = ""
    if listed:
        views = [choice.view() for choice in listed]
        tail = chat.render("wechat_choices", locale, {"choices": views})
    return numbered.fit([reply.text for reply in replies], tail, limit), listed


async def remember(
    session: AsyncSession, chat: Chat, address: str, listed: list[numbered.Choice], now: datetime
) -> None:
    """Keep the choices a chat was just shown, so its next "1" presses the first."""
    await choices.remember(
        session,
        CHANNEL,
        address,
        {choice.key: choice.data for choice in listed},
        now,
        chat.state_ttl_minutes,
    )


def _signed(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is longer than `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(400, "body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(400, "body too large")
    return bytes(body)


def _hardened(body: bytes) -> Element:
    """The XML root, by a parser that refuses DOCTYPEs, entities and external references
    before wechatpy's (which would expand them) ever sees the text."""
    try:
        root = safe_xml.fromstring(body, forbid_dtd=True, forbid_entities=True)
    except DefusedXmlException as exc:
        raise Refused(400, f"XML with {type(exc).__name__}") from exc
    except (ParseError, ValueError) as exc:
        raise Refused(400, "malformed XML") from exc
    if root.tag != "xml":
        raise Refused(400, "not a WeChat message")
    return root


def _parsed(body: bytes) -> Any:
    """wechatpy's message, with the fields every message has checked to be numbers."""
    try:
        message = parse_message(body.decode("utf-8"))
        numbers = (message.time, message.id) if message is not None else ()
    except Exception as exc:  # missing or nested fields, numbers that are not
        raise Refused(400, "not a WeChat message") from exc
    if not numbers or not all(isinstance(number, int) for number in numbers):
        raise Refused(400, "not a WeChat message")
    return message


def _cdata_safe(text: str) -> str:
    """Text that stays inside wechatpy's CDATA section: no "]]>", no characters XML forbids."""
    return _NOT_XML.sub("", text).replace("]]>", "]]]]><![CDATA[>")


__all__ = [
    "CHANNEL",
    "DEFAULT_PATH",
    "SUCCESS",
    "Incoming",
    "Refused",
    "WeChatChannel",
    "WeChatOptions",
    "check_options",
    "compose",
    "event_for",
    "incoming",
    "remember",
]
