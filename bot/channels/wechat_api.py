"""WeChat's API as the bot uses it: the stable access token, shared through the database;
customer-service text messages and template messages, each send reported as a `Delivery`;
and `call` for any other API (the menu, QR codes).

Built on wechatpy's `WeChatClient`, with three of its habits changed:

* its base URL is `MEMBERBOT_WECHAT_API_BASE_URL` + `/cgi-bin/` (the tests' local server);
* it never calls `/cgi-bin/token` (`fetch_access_token` refuses): a plain token fetch
  invalidates the token every other process holds. We call `/cgi-bin/stable_token`, which
  gives every caller the same token until it expires, and keep it in the database
  (`domain.tokens`): one process fetches (under a lease, a conditional update), all read it;
* its auto-retry is off (`auto_retry=False`), since it would refetch with `/cgi-bin/token`.
  A token WeChat refuses (40001, 42001, 40014) is refreshed here once, through the shared
  row and with `force_refresh` only if the row still holds the refused token, and the send
  is tried once more.

wechatpy's client is synchronous (requests): every call runs in a thread (`asyncio.to_thread`).

What a send's answer means (`Delivery`):

* 0 → SENT;
* 43004 (the member unfollowed) → BLOCKED;
* 45015 (more than 48 hours since the member last wrote) and 45047 (too many
  customer-service messages to this member without an answer) → FAILED, error "out of
  window": sending again cannot help until the member writes; a template message is the way
  out (`out_of_window`);
* 45009 (the account's daily API allowance is spent) → RETRY after an hour, not retried
  here: whoever holds the message waits `retry_after`, never a tight loop;
* a token still refused after one refresh, a token that cannot be fetched, network errors and
  5xx answers → RETRY (a minute); any other error code → FAILED with the code and message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from bot.channels.wechat import clock_now
from db.session import Database
from domain import tokens
from domain.outgoing import BLOCKED, FAILED, RETRY, SENT, Card, Delivery

log = logging.getLogger(__name__)

TOKEN_REFUSED = frozenset({40001, 42001, 40014})  # invalid, expired, malformed access token
UNFOLLOWED = 43004
# More than 48 hours since the member last wrote; too many messages to them without an answer.
OUT_OF_WINDOW = frozenset({45015, 45047})
OUT_OF_WINDOW_ERROR = "out of window"
QUOTA = 45009  # the account's daily allowance of this API
QUOTA_WAIT_SECONDS = 3600.0
TROUBLE_WAIT_SECONDS = 60.0
TOKEN_MARGIN = timedelta(minutes=5)  # a token this close to its expiry is renewed
LEASE = timedelta(seconds=15)  # how long one process may take to fetch a token
LEASE_POLL_SECONDS = 0.1
TIMEOUT_SECONDS = 10.0


class TokenUnavailable(Exception):
    """No access token could be had (WeChat refused the AppID/secret, or is unreachable)."""


class _Client(WeChatClient):  # type: ignore[misc]
    """wechatpy's client that never fetches a plain token: ours are stable and shared."""

    def fetch_access_token(self) -> Any:
        raise TokenUnavailable("plain token fetches are not used; see WeChatApi.token")


class WeChatApi:
    """One Official Account's API. Cheap to make; every process may have one."""

    def __init__(
        self,
        db: Database,
        app_id: str,
        app_secret: str,
        base_url: str = "https://api.weixin.qq.com",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.app_id = app_id
        self.app_secret = app_secret
        self.clock = clock
        self.name = f"wechat:{app_id}"
        self.client = _Client(app_id, app_secret, timeout=TIMEOUT_SECONDS, auto_retry=False)
        self.client.API_BASE_URL = base_url.rstrip("/") + "/cgi-bin/"

    def close(self) -> None:
        self.client._http.close()

    # -- the token -------------------------------------------------------------------------

    async def token(self, refused: str | None = None) -> str:
        """The shared token, fetched only when the stored one is missing, near its expiry, or
        `refused` (the token WeChat just refused). While another process fetches, wait."""
        waited_until = self._now() + LEASE + LEASE
        while True:
            now = self._now()
            async with self.db.read(snapshot=False) as session:
                found = await tokens.stored(session, self.name)
            if found is not None and found.usable(now, TOKEN_MARGIN, refused):
                return found.token or ""
            seen = found.token if found is not None else None
            async with self.db.transaction() as session:
                mine = await tokens.lease(session, self.name, seen, now, LEASE)
            if mine:
                return await self._fetch(force=refused is not None and seen == refused)
            if now > waited_until:
                raise TokenUnavailable("another process holds the token lease too long")
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def _fetch(self, *, force: bool) -> str:
        data = {
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self.app_secret,
            "force_refresh": force,
        }
        try:
            # access_token=None: requests leaves it out, and wechatpy does not add its own.
            result = await asyncio.to_thread(
                self.client.post, "stable_token", params={"access_token": None}, data=data
            )
            token, expires_in = str(result["access_token"]), int(result["expires_in"])
        except BaseException as exc:
            async with self.db.transaction() as session:
                await tokens.unlease(session, self.name)
            if isinstance(exc, WeChatClientException | requests.RequestException | KeyError):
                raise TokenUnavailable(_describe(exc)) from exc
            raise
        async with self.db.transaction() as session:
            await tokens.store(
                session, self.name, token, self._now() + timedelta(seconds=expires_in)
            )
        log.info("wechat api: fetched a stable token (force_refresh=%s)", force)
        return token

    # -- messages --------------------------------------------------------------------------

    async def send_text(self, openid: str, text: str) -> Delivery:
        """A customer-service text message to `openid`, with its outcome."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        return await self.deliver("message/custom/send", payload)

    async def send_card(self, openid: str, card: Card) -> Delivery:
        """A template message to `openid`: the card's template, its keywords filled."""
        payload: dict[str, Any] = {
            "touser": openid,
            "template_id": card.template_id,
            "data": {keyword: {"value": value} for keyword, value in card.fields},
        }
        if card.url:
            payload["url"] = card.url
        return await self.deliver("message/template/send", payload)

    async def deliver(self, endpoint: str, payload: dict[str, Any]) -> Delivery:
        """POST a message to `endpoint` (under `/cgi-bin/`) and report it as a `Delivery`."""
        try:
            await self.call(endpoint, payload)
        except TokenUnavailable as exc:
            log.warning("wechat api: no access token (%s)", exc)
            return Delivery(RETRY, retry_after=TROUBLE_WAIT_SECONDS, error=f"token: {exc}")
        except WeChatClientException as exc:
            return outcome(exc)
        except requests.RequestException as exc:
            return Delivery(RETRY, retry_after=TROUBLE_WAIT_SECONDS, error=_describe(exc))
        return Delivery(SENT)

    async def call(
        self, endpoint: str, payload: dict[str, Any] | None = None, *, method: str = "post"
    ) -> Any:
        """One API call with the shared token: `method` ("post" with a JSON `payload`, or
        "get") on `endpoint` under `/cgi-bin/`, returning WeChat's decoded answer (a dict, or
        the bytes of an image). A refused token is refreshed once and the call repeated.

        Raises TokenUnavailable, wechatpy's WeChatClientException (an error code) or a
        requests exception (the network)."""
        refused: str | None = None
        while True:
            token = await self.token(refused)
            try:
                if method == "get":
                    return await asyncio.to_thread(
                        self.client.get, endpoint, params={"access_token": token}
                    )
                return await asyncio.to_thread(
                    self.client.post,
                    endpoint,
                    params={"access_token": token},
                    data=payload or {},
                )
            except WeChatClientException as exc:
                if exc.errcode in TOKEN_REFUSED and refused is None:
                    refused = token
                    continue
                raise

    def _now(self) -> datetime:
        return clock_now(self.clock)


def outcome(exc: WeChatClientException) -> Delivery:
    """A refused send as a `Delivery` (see the module's table)."""
    code, error = exc.errcode, _describe(exc)
    if code == UNFOLLOWED:
        return Delivery(BLOCKED, error=error)
    if code in OUT_OF_WINDOW:
        return Delivery(FAILED, error=f"{OUT_OF_WINDOW_ERROR}: {error}")
    if code == QUOTA:
        return Delivery(RETRY, retry_after=QUOTA_WAIT_SECONDS, error=f"quota: {error}")
    if code is None or code in TOKEN_REFUSED or code == -1:  # HTTP trouble, token, busy
        return Delivery(RETRY, retry_after=TROUBLE_WAIT_SECONDS, error=error)
    return Delivery(FAILED, error=error)


def out_of_window(delivery: Delivery) -> bool:
    """Whether WeChat refused a customer-service message because the member's window is
    closed: only the member's next action (or a template message) can help."""
    return delivery.status == FAILED and (delivery.error or "").startswith(OUT_OF_WINDOW_ERROR)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WeChatClientException):
        return f"{exc.errcode}: {exc.errmsg}"
    return type(exc).__name__


__all__ = ["TokenUnavailable", "WeChatApi", "out_of_window", "outcome"]
