"""Setting up the Official Account: the menu and the invite QR codes, through the real CLI
against the local WeChat API server (`tests/support/wechat_api_server.py`), on SQLite and
PostgreSQL. The shipped menu's every click gets a real answer through the webhook; the QR
code's PNG holds WeChat's URL, its scene is the invite code, and following the account
through that scene binds the member; every failure exits clearly and says what was made."""

from __future__ import annotations

import asyncio
import re
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import segno
import yaml
from click.testing import Result
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot.channels import wechat_admin
from bot.conversation import Chat
from db.models import InviteCode
from db.session import Database
from domain.errors import ConfigError
from domain.shop import DEFAULT_CONFIG, ShopConfig, load_shop_config
from memberbot.cli import app
from memberbot.settings import get_settings
from tests.support import builders
from tests.support.wechat_api_server import WeChatApiServer
from tests.test_wechat_webhook import ALICE, bound_to, webhook

WECHAT_ENV = ("APP_ID", "APP_SECRET", "API_BASE_URL", "TOKEN", "AES_KEY")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Shop:
    db: Database
    server: WeChatApiServer
    runner: CliRunner
    folder: Path
    member_id: int

    async def cli(self, *args: str) -> Result:
        """One `memberbot` command, in a thread of its own (it runs its own event loop)."""
        get_settings.cache_clear()
        return await asyncio.to_thread(self.runner.invoke, app, list(args))

    async def invites(self) -> int:
        async with self.db.read() as session:
            return int(await session.scalar(select(func.count()).select_from(InviteCode)) or 0)


@pytest.fixture
async def shop(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    """The CLI on the test's database, WeChat's API settings pointing at the local server."""
    monkeypatch.chdir(tmp_path)
    url = db.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", url)
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    for name in WECHAT_ENV:
        monkeypatch.delenv(f"MEMBERBOT_WECHAT_{name}", raising=False)
    member_id = await builders.new_member(db, "M1")
    async with WeChatApiServer() as server:
        monkeypatch.setenv("MEMBERBOT_WECHAT_APP_ID", server.app_id)
        monkeypatch.setenv("MEMBERBOT_WECHAT_APP_SECRET", server.app_secret)
        monkeypatch.setenv("MEMBERBOT_WECHAT_API_BASE_URL", server.base_url)
        yield Shop(db, server, CliRunner(), tmp_path, member_id)
    get_settings.cache_clear()


def without_wechat(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WECHAT_ENV:
        monkeypatch.delenv(f"MEMBERBOT_WECHAT_{name}", raising=False)


def shipped_keys() -> list[str]:
    return [key for _, key in wechat_admin.menu_keys(load_shop_config(None).wechat_menu)]


# -- the menu ---------------------------------------------------------------------------------


async def test_every_shipped_menu_click_gets_a_real_answer(
    db: Database, shop_config: ShopConfig
) -> None:
    keys = shipped_keys()
    assert {"points", "rewards", "coupons", "book", "bookings", "cars", "help"} <= set(keys)
    chat = Chat(db, shop_config)
    async with webhook(db, chat) as bot:
        fallbacks = {
            await bot.wx.event(ALICE, "CLICK", "nosuch"),  # "this button has expired"
            await bot.wx.say(ALICE, "xyzzy"),  # not understood (unbound: taken as a code)
        }
        member_id = await builders.new_member(db, "M1")
        await builders.add_car(db, member_id, "沪A12345")
        assert "绑定成功" in await bot.wx.say(
            ALICE, await builders.invite_code(db, member_id, chat.clock())
        )
        fallbacks.add(await bot.wx.say(ALICE, "xyzzy"))  # not understood, bound
        answers = {}
        for later, key in enumerate(keys, start=1):
            answers[key] = await bot.wx.event(ALICE, "CLICK", key, later=later)
    for key, answer in answers.items():
        assert answer and answer not in fallbacks, key
        assert "过期" not in answer and "没太明白" not in answer, (key, answer)
    assert len(set(answers.values())) == len(keys)  # each key its own answer


def test_a_click_key_the_chat_does_not_answer_is_a_config_problem(tmp_path: Path) -> None:
    config = load_shop_config(None)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    raw["wechat_menu"][1]["sub_buttons"][0]["key"] = "go:nowhere"
    raw["wechat_menu"][2]["sub_buttons"][3]["key"] = "joined"
    broken = ShopConfig.model_validate(raw)
    assert wechat_admin.checked_menu(config, "shop.yaml")["button"][0]["name"] == "积分"
    with pytest.raises(ConfigError) as caught:
        wechat_admin.checked_menu(broken, "shop.yaml")
    assert [(file, key) for file, key, _ in caught.value.problems] == [
        ("shop.yaml", "wechat_menu.1.sub_buttons.0.key"),
        ("shop.yaml", "wechat_menu.2.sub_buttons.3.key"),
    ]
    assert "names nothing the chat answers" in caught.value.problems[0][2]
    with pytest.raises(ConfigError, match="wechat_menu: missing"):
        wechat_admin.checked_menu(config.model_copy(update={"wechat_menu": []}), "shop.yaml")


async def test_menu_without_publish_shows_it_and_calls_nobody(shop: Shop) -> None:
    shown = await shop.cli("wechat", "menu")
    assert shown.exit_code == 0, shown.output
    assert "我的积分 → click points" in shown.output
    assert '"type": "click"' in shown.output and "--publish" in shown.output
    assert shop.server.token_fetches == 0 and shop.server.menus == []


async def test_menu_publish_sends_the_configured_menu(shop: Shop) -> None:
    published = await shop.cli("wechat", "menu", "--publish")
    assert published.exit_code == 0, published.output
    assert "Published" in published.output and "3 button(s)" in published.output
    expected = wechat_admin.menu_payload(load_shop_config(None).wechat_menu)
    assert shop.server.menus == [expected]
    assert shop.server.token_fetches == 1 and shop.server.plain_fetches == 0


async def test_menu_publish_reports_wechats_error_code(shop: Shop) -> None:
    shop.server.fail_next(45009)
    refused = await shop.cli("wechat", "menu", "--publish")
    assert refused.exit_code == 1
    assert "menu/create" in refused.output and "45009" in refused.output
    assert "Traceback" not in refused.output and shop.server.menus == []


async def test_menu_publish_needs_the_wechat_settings(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_wechat(monkeypatch)
    refused = await shop.cli("wechat", "menu", "--publish")
    assert refused.exit_code == 2
    assert "MEMBERBOT_WECHAT_APP_ID" in refused.output
    assert "MEMBERBOT_WECHAT_APP_SECRET" in refused.output
    assert shop.server.token_fetches == 0


async def test_menu_with_a_broken_section_names_file_key_and_reason(shop: Shop) -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    raw["wechat_menu"][0]["name"] = "积分中心欢迎您"  # 21 bytes
    (shop.folder / "shop.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    refused = await shop.cli("wechat", "menu", "--publish")
    assert refused.exit_code == 2
    assert "shop.yaml: wechat_menu.0.name: " in refused.output
    assert "21 bytes" in refused.output and shop.server.menus == []


# -- QR invites -------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height, after checking its signature and every chunk's CRC."""
    assert data.startswith(PNG_SIGNATURE)
    at, chunks = len(PNG_SIGNATURE), []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        at += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    return width, height


def decoded(data: bytes) -> str | None:
    """The text of the QR code in a PNG, when a decoder is installed (the dev extras)."""
    try:
        import numpy
        import png
        import zxingcpp
    except ImportError:
        return None
    _, _, rows, _ = png.Reader(bytes=data).asDirect()
    pixels = numpy.array([list(row) for row in rows], dtype=numpy.uint8)
    found = zxingcpp.read_barcodes(pixels * (255 // max(1, int(pixels.max()))))
    return found[0].text if found else ""


def invite_code_in(output: str) -> str:
    match = re.search(r"invite code (\S+),", output)
    assert match, output
    return match.group(1)


async def test_invite_qr_writes_a_png_of_wechats_url_whose_scene_binds(
    shop: Shop, shop_config: ShopConfig
) -> None:
    made = await shop.cli("member", "invite", "M1", "--hours", "48", "--qr", "m1.png")
    assert made.exit_code == 0, made.output
    code = invite_code_in(made.output)
    [posted] = shop.server.qr_codes
    assert posted["action_name"] == "QR_STR_SCENE"
    assert posted["action_info"]["scene"]["scene_str"] == code
    assert 48 * 3600 - 60 < posted["expire_seconds"] <= 48 * 3600
    assert "m1.png" in made.output and "it works for 48 h" in made.output

    data = (shop.folder / "m1.png").read_bytes()
    url = shop.server.qr_urls[-1]
    expected = segno.make_qr(url, error="m").symbol_size(
        scale=wechat_admin.QR_SCALE, border=wechat_admin.QR_BORDER
    )
    assert png_size(data) == expected
    assert decoded(data) in (None, url)

    chat = Chat(shop.db, shop_config)
    async with webhook(shop.db, chat) as bot:
        bound = await bot.wx.event(ALICE, "subscribe", f"qrscene_{code}")
    assert "绑定成功" in bound and await bound_to(shop.db, ALICE) == shop.member_id


async def test_invite_qr_without_wechat_settings_makes_nothing(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_wechat(monkeypatch)
    refused = await shop.cli("member", "invite", "M1", "--qr", "m1.png")
    assert refused.exit_code == 2 and "MEMBERBOT_WECHAT_APP_ID" in refused.output
    assert await shop.invites() == 0 and not (shop.folder / "m1.png").exists()


async def test_invite_qr_to_an_unwritable_place_makes_nothing(shop: Shop) -> None:
    refused = await shop.cli("member", "invite", "M1", "--qr", "no/such/folder/m1.png")
    assert refused.exit_code == 2 and "Cannot write the QR code" in refused.output
    assert await shop.invites() == 0 and shop.server.qr_codes == []


async def test_invite_qr_refused_by_wechat_says_the_code_still_works(shop: Shop) -> None:
    shop.server.fail_next(45009)
    refused = await shop.cli("member", "invite", "M1", "--qr", "m1.png")
    assert refused.exit_code == 1
    code = invite_code_in(refused.output)
    assert f"The invite code {code} was created and works" in refused.output
    assert "45009" in refused.output and "Traceback" not in refused.output
    assert await shop.invites() == 1 and not (shop.folder / "m1.png").exists()


# -- the API calls themselves -----------------------------------------------------------------


async def test_qr_codes_last_at_most_thirty_days_and_bad_menus_are_refused(
    db: Database,
) -> None:
    async with WeChatApiServer() as server:
        api = wechat_admin.ApiAccess(server.app_id, server.app_secret, server.base_url).client(db)
        try:
            made = await wechat_admin.invite_qr(api, "abc123", 40 * 86400)
            assert made.expire_seconds == wechat_admin.QR_MAX_SECONDS
            with pytest.raises(wechat_admin.AdminCallFailed, match="46003"):
                await wechat_admin.published_menu(api)
            too_long = {"button": [{"type": "click", "name": "积分积分积分", "key": "points"}]}
            with pytest.raises(wechat_admin.AdminCallFailed, match="40018"):
                await wechat_admin.publish_menu(api, too_long)
            four = {"button": [{"type": "click", "name": "a", "key": "points"}] * 4}
            with pytest.raises(wechat_admin.AdminCallFailed, match="40016"):
                await wechat_admin.publish_menu(api, four)
        finally:
            api.close()
        wrong = wechat_admin.ApiAccess("wxother", "wrong", server.base_url).client(db)
        try:
            with pytest.raises(wechat_admin.AdminCallFailed, match=r"no access token \(40013"):
                await wechat_admin.publish_menu(wrong, four)
        finally:
            wrong.close()
    assert server.menus == [] and server.qr_codes[0]["expire_seconds"] == 2_592_000
