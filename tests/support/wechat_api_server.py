"""A local WeChat API server for tests: the stable token, customer-service and template
messages, the menu and parametric QR codes.

A Starlette app served by uvicorn in the running event loop on 127.0.0.1 (like
`botapi_server.py`), answering as WeChat does:

* `POST /cgi-bin/stable_token` (JSON: grant_type, appid, secret, force_refresh): the same
  token to every caller until it expires; `force_refresh` issues a new one and the old stops
  working. Every call is counted in `token_fetches` (forced ones also in `forced_fetches`);
  a wrong AppID or secret is 40013 / 40125;
* `GET /cgi-bin/token`, the plain fetch we must never use, is counted in `plain_fetches`;
* `POST /cgi-bin/message/custom/send?access_token=…`: a text message, recorded in `sent`
  as (openid, text); a token that is not the current one is 40001, an expired one 42001;
  a member who unfollowed (`unfollow`) is 43004. `fail_next(code)` makes the next calls
  answer an error code (45009 quota, 45015 out of window, 42001…); `expire_token()` makes
  the current token expired, as WeChat does after two hours;
* `POST /cgi-bin/message/template/send?access_token=…`: a template message, recorded in
  `cards` as (openid, template_id, {keyword: value}); a keyword value over 20 characters or
  with a line break is 47003, as WeChat refuses it; token, unfollow and `fail_next` as above;
* `POST /cgi-bin/menu/create?access_token=…`: the menu, checked as WeChat checks it (1–3
  buttons, 1–5 sub-buttons, names within 16 / 60 bytes, click keys within 128 bytes, view
  URLs within 1024 bytes, a known type), each body recorded in `menus`; a wrong shape answers
  WeChat's code for it (40016, 40017, 40018, 40019, 40020, 40023, 40024, 40025, 40026,
  40027, 47001 for a body that is not a menu);
* `GET /cgi-bin/menu/get?access_token=…`: the last menu created, as WeChat gives it back
  (`{"menu": {"button": [...]}}`, every button with a `sub_button` list), or 46003 when none;
* `POST /cgi-bin/qrcode/create?access_token=…`: a temporary string-scene QR code
  (`QR_STR_SCENE`, `scene_str` of 1–64 characters, `expire_seconds` up to 2592000; a missing
  one is WeChat's default, 60), each body recorded in `qr_codes`; the answer is `ticket`,
  `expire_seconds` and `url` (the QR code's content, `http://weixin.qq.com/q/…`, recorded in
  `qr_urls`). Anything else is 40097 (invalid args).

Every endpoint after the token ones checks the token as `message/custom/send` does, and
`fail_next(code)` makes the next calls to any of them answer `code`.

    async with WeChatApiServer() as server:
        api = WeChatApi(db, server.app_id, server.app_secret, server.base_url)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.localserver import LocalServer

ERRORS = {
    40001: "invalid credential, access_token is invalid or not latest",
    40013: "invalid appid",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    40097: "invalid args",
    40125: "invalid appsecret",
    42001: "access_token expired",
    43004: "require subscribe",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    40037: "invalid template_id",
    47003: "argument invalid! data.value invalid",
    46003: "menu no exist",
    47001: "data format error",
}
FIELD_LIMIT = 20  # characters WeChat shows of a template keyword's value
QR_SECONDS = (1, 2_592_000)
QR_DEFAULT_SECONDS = 60


class _Refusal(Exception):
    """A body WeChat would refuse, with the error code it would answer."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# Per level of the menu: (names' byte limit, the codes for a bad type, name, key and url).
_TOP = (16, 40017, 40018, 40019, 40020)
_SUB = (60, 40024, 40025, 40026, 40027)


class WeChatApiServer:
    def __init__(self, app_id: str = "wx0123456789abcdef", app_secret: str = "s" * 32) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.base_url = ""
        self.token_fetches = 0
        self.forced_fetches = 0
        self.plain_fetches = 0
        self.send_attempts = 0
        self.sent: list[tuple[str, str]] = []
        # Template messages: (openid, template_id, {keyword: value}).
        self.cards: list[tuple[str, str, dict[str, str]]] = []
        self.menus: list[dict[str, Any]] = []
        self.qr_codes: list[dict[str, Any]] = []
        self.qr_urls: list[str] = []
        self.unfollowed: set[str] = set()
        self._failures: list[int] = []
        self._numbers = itertools.count(1)
        self._token: str | None = None
        self._expired: set[str] = set()
        self._changed = asyncio.Event()
        self._server: LocalServer | None = None

    async def __aenter__(self) -> WeChatApiServer:
        app = Starlette(
            routes=[
                Route("/cgi-bin/stable_token", self._stable_token, methods=["POST"]),
                Route("/cgi-bin/token", self._plain_token, methods=["GET"]),
                Route("/cgi-bin/message/custom/send", self._custom_send, methods=["POST"]),
                Route("/cgi-bin/message/template/send", self._template_send, methods=["POST"]),
                Route("/cgi-bin/menu/create", self._menu_create, methods=["POST"]),
                Route("/cgi-bin/menu/get", self._menu_get, methods=["GET"]),
                Route("/cgi-bin/qrcode/create", self._qrcode_create, methods=["POST"]),
            ]
        )
        self._server = LocalServer(app, "wechat-api-server")
        port = await self._server.start()
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.stop()

    # -- what the test arranges ------------------------------------------------------------

    def fail_next(self, code: int, times: int = 1) -> None:
        """The next `times` calls (sends, menus, QR codes) answer `code`, before the token is
        even looked at."""
        self._failures.extend([code] * times)

    def expire_token(self) -> None:
        """The current token has expired: sends with it answer 42001, the next fetch is new."""
        if self._token is not None:
            self._expired.add(self._token)
            self._token = None

    def unfollow(self, openid: str) -> None:
        self.unfollowed.add(openid)

    async def wait_sent(self, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        """The messages sent, once there are at least `count` of them."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.sent)

    # -- endpoints -------------------------------------------------------------------------

    async def _stable_token(self, request: Request) -> JSONResponse:
        body: dict[str, Any] = json.loads(await request.body())
        self.token_fetches += 1
        if body.get("grant_type") != "client_credential" or body.get("appid") != self.app_id:
            return _error(40013)
        if body.get("secret") != self.app_secret:
            return _error(40125)
        if body.get("force_refresh"):
            self.forced_fetches += 1
            if self._token is not None:
                self._expired.add(self._token)
            self._token = None
        if self._token is None:
            self._token = f"TOKEN{next(self._numbers)}"
        return JSONResponse({"access_token": self._token, "expires_in": 7200})

    async def _plain_token(self, request: Request) -> JSONResponse:
        self.plain_fetches += 1
        return _error(40164)

    def _refused(self, request: Request) -> JSONResponse | None:
        """What WeChat answers a call before reading it: an arranged failure or a bad token."""
        token = request.query_params.get("access_token", "")
        if self._failures:
            return _error(self._failures.pop(0))
        if token in self._expired:
            return _error(42001)
        if not token or token != self._token:
            return _error(40001)
        return None

    async def _custom_send(self, request: Request) -> JSONResponse:
        self.send_attempts += 1
        refused = self._refused(request)
        if refused is not None:
            return refused
        body: dict[str, Any] = json.loads(await request.body())
        if body.get("msgtype") != "text":
            return _error(40008)
        openid = body["touser"]
        if openid in self.unfollowed:
            return _error(43004)
        self.sent.append((openid, body["text"]["content"]))
        self._changed.set()
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def _template_send(self, request: Request) -> JSONResponse:
        self.send_attempts += 1
        refused = self._refused(request)
        if refused is not None:
            return refused
        body: dict[str, Any] = json.loads(await request.body())
        openid, template_id = body.get("touser"), body.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            return _error(40037)
        if openid in self.unfollowed:
            return _error(43004)
        values = {key: str(item.get("value", "")) for key, item in body["data"].items()}
        if any(len(v) > FIELD_LIMIT or "\n" in v for v in values.values()):
            return _error(47003)
        self.cards.append((openid, template_id, values))
        self._changed.set()
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": next(self._numbers)})

    async def _menu_create(self, request: Request) -> JSONResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
            _check_menu(body)
        except _Refusal as exc:
            return _error(exc.code)
        except ValueError:
            return _error(47001)
        self.menus.append(body)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def _menu_get(self, request: Request) -> JSONResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if not self.menus:
            return _error(46003)
        buttons = [{"sub_button": [], **button} for button in self.menus[-1]["button"]]
        return JSONResponse({"menu": {"button": buttons}})

    async def _qrcode_create(self, request: Request) -> JSONResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
            seconds = _check_qr(body)
        except (ValueError, _Refusal):
            return _error(40097)
        self.qr_codes.append(body)
        ticket = secrets.token_urlsafe(24)
        url = f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}"
        self.qr_urls.append(url)
        return JSONResponse({"ticket": ticket, "expire_seconds": seconds, "url": url})


def _check_menu(body: Any) -> None:
    """Refuse (with WeChat's code) a menu WeChat would refuse."""
    buttons = body.get("button") if isinstance(body, dict) else None
    if not isinstance(buttons, list):
        raise _Refusal(47001)
    if not 1 <= len(buttons) <= 3:
        raise _Refusal(40016)
    for button in buttons:
        if not isinstance(button, dict):
            raise _Refusal(47001)
        subs = button.get("sub_button")
        if subs is None:
            _check_button(button, _TOP)
            continue
        _check_name(button, _TOP)
        if not isinstance(subs, list) or not 1 <= len(subs) <= 5:
            raise _Refusal(40023)
        for sub in subs:
            if not isinstance(sub, dict) or "sub_button" in sub:
                raise _Refusal(40024)
            _check_button(sub, _SUB)


def _check_button(button: dict[str, Any], level: tuple[int, int, int, int, int]) -> None:
    _, bad_type, _, bad_key, bad_url = level
    _check_name(button, level)
    kind = button.get("type")
    if kind == "click":
        if not _sized(button.get("key"), 128):
            raise _Refusal(bad_key)
    elif kind == "view":
        if not _sized(button.get("url"), 1024):
            raise _Refusal(bad_url)
    else:
        raise _Refusal(bad_type)


def _check_name(button: dict[str, Any], level: tuple[int, int, int, int, int]) -> None:
    if not _sized(button.get("name"), level[0]):
        raise _Refusal(level[2])


def _sized(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value.encode("utf-8")) <= limit


def _check_qr(body: Any) -> int:
    """The seconds a string-scene temporary QR code will work; refuse anything else."""
    if not isinstance(body, dict) or body.get("action_name") != "QR_STR_SCENE":
        raise _Refusal(40097)
    info = body.get("action_info")
    scene = info.get("scene") if isinstance(info, dict) else None
    scene = scene.get("scene_str") if isinstance(scene, dict) else None
    if not isinstance(scene, str) or not 1 <= len(scene) <= 64:
        raise _Refusal(40097)
    seconds = body.get("expire_seconds", QR_DEFAULT_SECONDS)
    if not isinstance(seconds, int) or not QR_SECONDS[0] <= seconds <= QR_SECONDS[1]:
        raise _Refusal(40097)
    return seconds


def _error(code: int) -> JSONResponse:
    return JSONResponse({"errcode": code, "errmsg": ERRORS.get(code, "error")})


__all__ = ["WeChatApiServer"]
