"""The Official Account's set-up calls, for staff commands: the menu and parametric QR codes.

Every call goes through `WeChatApi.call`, so it uses the stable token every process shares
(a refused token is refreshed once). A refusal becomes `AdminCallFailed`, whose text names
the call and WeChat's error code, for the command to print as it is.

* The menu comes from the shop configuration's `wechat_menu` (validated at load: WeChat's
  sizes, one action per button). Whether each click key reaches something the chat answers
  needs the flows, which the configuration cannot see: `unanswered` checks it here, against
  the same translation the webhook makes of a click (`wechat.event_for`).
* A parametric QR code's scene is an invite code: following the account through it, or
  scanning it while following, binds the chat (see `wechat.py`). WeChat answers with the
  QR code's content (`url`); `qr_png` draws it locally (segno), so no image is fetched from
  another host.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import segno
from wechatpy.exceptions import WeChatClientException

from bot.channels import wechat
from bot.channels.wechat_api import TokenUnavailable, WeChatApi
from bot.conversation import BUTTON, EVENT_INTENTS, Flow
from bot.flows import ALL_FLOWS
from db.session import Database
from domain.errors import ConfigError
from domain.outgoing import valid_button_data
from domain.shop import ShopConfig, WeChatMenuButton, WeChatMenuItem

QR_MAX_SECONDS = 2_592_000  # WeChat's longest temporary QR code: 30 days
QR_SCALE, QR_BORDER = 8, 4  # pixels per module, modules of quiet zone


@dataclass(frozen=True)
class ApiAccess:
    """What calling the API takes: the AppID, the AppSecret and the API's base URL."""

    app_id: str
    app_secret: str
    base_url: str = wechat.DEFAULT_API_BASE_URL

    def client(self, db: Database) -> WeChatApi:
        return WeChatApi(db, self.app_id, self.app_secret, self.base_url)


@dataclass(frozen=True)
class QrCode:
    """WeChat's answer to a QR code request: its ticket, how long it works, and its content."""

    ticket: str
    expire_seconds: int
    url: str


class AdminCallFailed(Exception):
    """WeChat refused a set-up call, or could not be reached; the text says which and why."""


# -- the menu ------------------------------------------------------------------------------


def checked_menu(config: ShopConfig, source: str) -> dict[str, Any]:
    """The `menu/create` body for the shop's menu. ConfigError (file, key, reason) when the
    configuration (read from `source`) has no menu, or a click key the chat does not answer."""
    if not config.wechat_menu:
        reason = "missing: add the section (the shipped domain/data/shop.yaml has an example)"
        raise ConfigError([(source, "wechat_menu", reason)])
    problems = unanswered(config.wechat_menu, ALL_FLOWS)
    if problems:
        raise ConfigError([(source, where, reason) for where, reason in problems])
    return menu_payload(config.wechat_menu)


def menu_payload(menu: Sequence[WeChatMenuButton]) -> dict[str, Any]:
    """The body of `menu/create` for the configured menu."""
    return {"button": [_button(entry) for entry in menu]}


def _button(item: WeChatMenuItem) -> dict[str, Any]:
    if isinstance(item, WeChatMenuButton) and item.sub_buttons is not None:
        return {"name": item.name, "sub_button": [_button(sub) for sub in item.sub_buttons]}
    if item.key is not None:
        return {"type": "click", "name": item.name, "key": item.key}
    return {"type": "view", "name": item.name, "url": item.url}


def menu_keys(menu: Sequence[WeChatMenuButton]) -> list[tuple[str, str]]:
    """Every click key of the menu with where it stands (`wechat_menu.0.sub_buttons.1.key`)."""
    found: list[tuple[str, str]] = []
    for i, entry in enumerate(menu):
        if entry.key is not None:
            found.append((f"wechat_menu.{i}.key", entry.key))
        for j, sub in enumerate(entry.sub_buttons or ()):
            if sub.key is not None:
                found.append((f"wechat_menu.{i}.sub_buttons.{j}.key", sub.key))
    return found


def unanswered(menu: Sequence[WeChatMenuButton], flows: Iterable[Flow]) -> list[tuple[str, str]]:
    """(where, reason) for each click key the chat could only answer with its fallback (the
    menu, or "this button has expired"): no intent or flow action of that name, or one only
    WeChat's own events may run (`joined`, `left`)."""
    intents = {name for flow in flows for name in flow.intents}
    actions = {(flow.name, action) for flow in flows for action in flow.actions}
    problems = []
    for where, key in menu_keys(menu):
        data = _click_data(key)
        if not _reaches(data, intents, actions):
            problems.append((where, f"{key!r} names nothing the chat answers"))
    return problems


def _click_data(key: str) -> str:
    """The button data the webhook makes of a click on `key`."""
    click = wechat.Incoming(openid="-", account="-", key="-", kind="click", text=key)
    event = wechat.event_for(click, {})
    return event.data if event.kind == BUTTON else ""


def _reaches(data: str, intents: set[str], actions: set[tuple[str, str]]) -> bool:
    if not valid_button_data(data):
        return False
    flow, action, *args = data.split(":")
    if flow == "go":
        return not args and action in intents and action not in EVENT_INTENTS.values()
    return (flow, action) in actions


async def publish_menu(api: WeChatApi, payload: dict[str, Any]) -> None:
    """Replace the account's menu (WeChat shows it to followers within minutes)."""
    await _call(api, "menu/create", payload)


async def published_menu(api: WeChatApi) -> dict[str, Any]:
    """The menu WeChat holds now, as `menu/get` gives it."""
    return dict(await _call(api, "menu/get", method="get"))


# -- QR codes ------------------------------------------------------------------------------


async def invite_qr(api: WeChatApi, code: str, seconds: int) -> QrCode:
    """A temporary QR code whose scene is the invite `code`, working for `seconds` (at most
    WeChat's 30 days)."""
    payload = {
        "expire_seconds": max(1, min(seconds, QR_MAX_SECONDS)),
        "action_name": "QR_STR_SCENE",
        "action_info": {"scene": {"scene_str": code}},
    }
    answer = await _call(api, "qrcode/create", payload)
    try:
        return QrCode(str(answer["ticket"]), int(answer["expire_seconds"]), str(answer["url"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AdminCallFailed("qrcode/create: WeChat's answer has no ticket and url") from exc


def qr_png(content: str) -> bytes:
    """A PNG of a QR code holding `content`, large enough to print on a counter card."""
    out = io.BytesIO()
    segno.make_qr(content, error="m").save(out, kind="png", scale=QR_SCALE, border=QR_BORDER)
    return out.getvalue()


async def _call(
    api: WeChatApi, endpoint: str, payload: dict[str, Any] | None = None, *, method: str = "post"
) -> Any:
    try:
        return await api.call(endpoint, payload, method=method)
    except TokenUnavailable as exc:
        raise AdminCallFailed(f"{endpoint}: no access token ({exc})") from exc
    except WeChatClientException as exc:
        raise AdminCallFailed(
            f"{endpoint}: WeChat refused it with error {exc.errcode} ({exc.errmsg})"
        ) from exc
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise AdminCallFailed(f"{endpoint}: WeChat's API unreachable ({reason})") from exc


__all__ = [
    "QR_MAX_SECONDS",
    "AdminCallFailed",
    "ApiAccess",
    "QrCode",
    "checked_menu",
    "invite_qr",
    "menu_keys",
    "menu_payload",
    "publish_menu",
    "published_menu",
    "qr_png",
    "unanswered",
]
