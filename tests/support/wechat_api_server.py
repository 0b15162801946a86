"""A local WeChat API server for tests: the stable token, customer-service and template
messages.

A Starlette app served by uvicorn in the running event loop on 127.0.0.1 (like
`botapi_server.py`), answering as WeChat does:

* `POST /cgi-bin/stable_token` (JSON: grant_type, appid, secret, force_refresh): the same
  token to every caller until it expires; `force_refresh` issues a new one and the old stops
  working. Every call is counted in `token_fetches` (forced ones also in `forced_fetches`);
  a wrong AppID or secret is 40013 / 40125;
* `GET /cgi-bin/token`, the plain fetch we must never use, is counted in `plain_fetches`;
* `POST /cgi-bin/message/custom/send?access_token=…`: a text message, recorded in `sent`
  as (openid, text); a token that is not the current one is 40001, an expired one 42001;
  a member who unfollowed (`unfollow`) is 43004. `fail_next(code)` makes the next sends
  answer an error code (45009 quota, 45015 out of window, 42001…); `expire_token()` makes
  the current token expired, as WeChat does after two hours;
* `POST /cgi-bin/message/template/send?access_token=…`: a template message, recorded in
  `cards` as (openid, template_id, {keyword: value}); a keyword value over 20 characters or
  with a line break is 47003, as WeChat refuses it; token, unfollow and `fail_next` as above.

    async with WeChatApiServer() as server:
        api = WeChatApi(db, server.app_id, server.app_secret, server.base_url)
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
    40125: "invalid appsecret",
    42001: "access_token expired",
    43004: "require subscribe",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    40037: "invalid template_id",
    47003: "argument invalid! data.value invalid",
}
FIELD_LIMIT = 20  # characters WeChat shows of a template keyword's value


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
        """The next `times` sends answer `code` (before the token is even looked at)."""
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

    async def _custom_send(self, request: Request) -> JSONResponse:
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

    def _refused(self, request: Request) -> JSONResponse | None:
        """A send's answer before its content is read: a failure the test arranged, or the
        token's."""
        self.send_attempts += 1
        token = request.query_params.get("access_token", "")
        if self._failures:
            return _error(self._failures.pop(0))
        if token in self._expired:
            return _error(42001)
        if not token or token != self._token:
            return _error(40001)
        return None


def _error(code: int) -> JSONResponse:
    return JSONResponse({"errcode": code, "errmsg": ERRORS.get(code, "error")})


__all__ = ["WeChatApiServer"]
