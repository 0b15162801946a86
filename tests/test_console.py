"""The console channel and the chat commands: a newcomer can try the member conversation in a
terminal, and staff hand out invite codes that really bind a chat."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bot.channels.console import ConsoleSession, show
from bot.conversation import BUTTON, COMMAND, CONTACT, TEXT, Chat, Event
from db.session import Database
from domain import binding, members
from domain.shop import ShopConfig
from memberbot.cli import app
from memberbot.settings import get_settings

pytestmark = pytest.mark.db  # the CLI's tests run against a SQLite file of their own

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
MEMBERS = "member_ref,name,phone,birthday,tags\nC-1,周先生,13812345678,1985-06-01,\n"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    monkeypatch.delenv("MEMBERBOT_TELEGRAM_BOT_USERNAME", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    (tmp_path / "members.csv").write_text(MEMBERS, encoding="utf-8")
    assert runner.invoke(app, ["import", "members", "members.csv"]).exit_code == 0
    yield runner
    get_settings.cache_clear()


def test_invite_prints_a_code_and_a_deep_link(
    shop: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMBERBOT_TELEGRAM_BOT_USERNAME", "@carcare_bot")
    get_settings.cache_clear()
    result = shop.invoke(app, ["member", "invite", "13812345678"])
    assert result.exit_code == 0, result.output
    code = re.search(r"invite code (\w+),", result.output)
    assert code is not None
    assert f"https://t.me/carcare_bot?start={code.group(1)}" in result.output
    assert "13812345678" not in result.output


def test_invite_for_an_unknown_member_is_refused(shop: CliRunner) -> None:
    result = shop.invoke(app, ["member", "invite", "13900000000"])
    assert result.exit_code == 1
    assert "no member" in result.output


def test_one_message_from_the_command_line(shop: CliRunner) -> None:
    result = shop.invoke(app, ["chat", "--phone", "13812345678", "帮助"])
    assert result.exit_code == 0, result.output
    assert "退订" in result.output  # the help text of a bound member
    assert "[1]" in result.output  # the menu buttons, numbered


def test_chat_needs_a_member(shop: CliRunner) -> None:
    assert shop.invoke(app, ["chat", "hello"]).exit_code == 2


def test_interactive_chat_presses_buttons_by_number(shop: CliRunner) -> None:
    result = shop.invoke(app, ["chat", "--phone", "C-1"], input="11\n2\nq\n")
    assert result.exit_code == 0, result.output
    assert "Choose your language" in result.output
    assert "English from now on" in result.output


async def test_console_session_turns_lines_into_events(
    db: Database, shop_config: ShopConfig
) -> None:
    async with db.transaction() as session:
        member = await members.create(session, member_ref="C-9", name="林", phone="13700000001")
    chat = Chat(db, shop_config, clock=lambda: NOW)
    console = ConsoleSession(chat, "member-9", phone="+8613700000001")
    assert console.event_for("/start ABC").kind == COMMAND
    assert console.event_for("/start ABC").text == "ABC"
    assert console.event_for("积分").kind == TEXT

    unbound = await console.send("你们几点开门")
    assert unbound[-1].contact_button  # an unbound chat is offered to share its phone
    shared = console.event_for(str(len(console.choices)))
    assert shared.kind == CONTACT and shared.contact_user_id == shared.sender_id
    replies = await chat.handle(shared)
    assert "绑定成功" in replies[0].text
    async with db.read() as session:
        bound = await binding.member_for(session, "console", "member-9")
    assert bound is not None and bound.id == member.id

    await console.send("/language")
    press = console.event_for("2")
    assert press.kind == BUTTON and press.data == "account:lang:en"
    out = Console(record=True, width=100)
    show(out, await chat.handle(press))
    assert "English from now on" in out.export_text()


async def test_unknown_numbers_are_text(db: Database, shop_config: ShopConfig) -> None:
    console = ConsoleSession(Chat(db, shop_config, clock=lambda: NOW), "member-1")
    assert console.event_for("42") == Event(
        channel="console", address="member-1", kind=TEXT, text="42", sender_id=1
    )
