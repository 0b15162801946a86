"""What members, staff and imports typed reaches a staff terminal as inert text.

A table of hostile strings (rich markup, ANSI escape sequences, bidi overrides, NUL, a carriage
return) is stored through the domain as member names, refs, tags, car models, complaints and
staff names; then every command that prints them runs through the real CLI. Each must exit 0,
show the visible text, and let none of the raw control characters through to the terminal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.session import Database
from domain import bookings, feedback, privacy, staff
from domain.shop import BookingRules, load_shop_config
from memberbot.cli import app
from memberbot.runtime import prepare
from memberbot.settings import get_settings
from tests.support.builders import add_car, new_member

pytestmark = pytest.mark.db

# (what is stored, a visible part that must be shown as it is written)
HOSTILE = (
    ("[/red] x", "[/red] x"),
    ("[/bold]x", "[/bold]x"),
    ("[link=file:///etc/passwd]click[/link]", "[link=file:///etc/passwd]click"),
    ("\x1b[2J\x1b[31mred", "[2J"),
    ("\x1b]8;;http://evil.example\x1b\\link", "evil.example"),
    ("abc\u202edcba", "dcba"),
    ("\u2066iso\u2069late", "late"),
    ("nul\x00here", "here"),
    ("over\rwrite", "write"),
    ("csi\x9b31m", "31m"),
)
RAW = ("\x1b", "\x00", "\u202e", "\u2066", "\u2069", "\r", "\x9b", "\x07")
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
BOOKED_DAY = date(2026, 12, 2)
BIRTHDAY = date(1990, 12, 2)
WIDE = {"COLUMNS": "400"}
BIDI_MARKS = (0x200E, 0x200F, 0x061C)


def inert(text: str) -> str:
    """How the staff terminal must show a stored string: control characters and bidi
    overrides as visible escapes, everything else (markup brackets too) as written."""
    shown = []
    for char in text:
        code = ord(char)
        if char != "\n" and (code < 0x20 or 0x7F <= code < 0xA0):
            shown.append(f"\\x{code:02x}")
        elif 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 or code in BIDI_MARKS:
            shown.append(f"\\u{code:04x}")
        else:
            shown.append(char)
    return "".join(shown)


def phone(index: int) -> str:
    return f"1381234{index:04d}"


async def _store_hostile_text(url: str) -> None:
    """One member per hostile string (as name, ref, tag and car model), each with a complaint
    and a booking, and one staff account named by each string."""
    db = Database.from_url(url)
    try:
        await prepare(db, load_shop_config(None))
        async with db.read() as session:
            store = await bookings.store_by_code(session, "main")
        for index, (text, _) in enumerate(HOSTILE):
            member_id = await new_member(
                db,
                f"R{index}{text}",
                phone(index),
                name=f"N{index}{text}",
                tags=[f"T{index}{text}"],
                birthday=BIRTHDAY,
                consent="counter",
                home_store_id=store.id,
            )
            await add_car(db, member_id, f"沪A1234{index}", make="Make", model=f"M{index}{text}")
            async with db.transaction() as session:
                await feedback.file_complaint(session, member_id, f"C{index}{text}", "counter", NOW)
                await bookings.reserve(
                    session,
                    member_id,
                    int(store.id or 0),
                    "wash",
                    datetime(2026, 12, 2, 2 + index % 6, 0, tzinfo=UTC),
                    NOW,
                    BookingRules(),
                    source="staff",
                )
                await staff.add(session, name=f"S{index}{text}", role=staff.STAFF, actor="cli")
                await privacy.set_consent(session, member_id, True, source="counter", actor="t")
    finally:
        await db.dispose()


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", url)
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    asyncio.run(_store_hostile_text(url))
    yield CliRunner()
    get_settings.cache_clear()


def assert_inert(output: str, shown: list[str]) -> None:
    """No raw control character or bidi override reached the terminal, and every stored
    string is there in its visible form."""
    for raw in RAW:
        assert raw not in output, f"{raw!r} reached the terminal"
    for text in shown:
        assert text in output, f"{text!r} is missing"


def run(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args), env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    return result.output


def test_inert_shows_control_characters_and_bidi_overrides_visibly() -> None:
    from domain.plaintext import inert

    assert inert("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert inert("x\x00y\ru") == "x\\x00y\\x0du"
    assert inert("abc\u202edcba\u2066i\u2069") == "abc\\u202edcba\\u2066i\\u2069"
    assert inert("two\nlines 中文 [b]") == "two\nlines 中文 [b]"


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_member_show_prints_member_text_inert(shop: CliRunner, index: int) -> None:
    text, visible = HOSTILE[index]
    output = run(shop, "member", "show", phone(index))
    assert_inert(output, [visible, inert(f"N{index}{text}"), inert(f"T{index}{text}")])
    assert inert(f"M{index}{text}") in output


def test_complaints_list_prints_member_text_inert(shop: CliRunner) -> None:
    output = run(shop, "complaints", "list")
    assert_inert(output, [inert(f"C{i}{text}") for i, (text, _) in enumerate(HOSTILE)])
    assert_inert(output, [inert(f"R{i}{text}") for i, (text, _) in enumerate(HOSTILE)])


def test_staff_list_prints_staff_names_inert(shop: CliRunner) -> None:
    output = run(shop, "staff", "list")
    assert_inert(output, [inert(f"S{i}{text}") for i, (text, _) in enumerate(HOSTILE)])
    added = run(shop, "staff", "add", "[/bold]y\x1b[2J")
    assert_inert(added, ["[/bold]y\\x1b[2J"])
    assert "[/bold]y\\x1b[2J" in run(shop, "staff", "list")


def test_bookings_day_prints_member_text_inert(shop: CliRunner) -> None:
    output = run(shop, "bookings", "day", "--store", "main", "--date", BOOKED_DAY.isoformat())
    assert_inert(output, [inert(f"R{i}{text}") for i, (text, _) in enumerate(HOSTILE)])


def test_rules_preview_prints_member_text_inert(shop: CliRunner) -> None:
    output = run(shop, "rules", "preview", "--date", BOOKED_DAY.isoformat(), "--rule", "birthday")
    assert_inert(output, [inert(f"R{i}{text}") for i, (text, _) in enumerate(HOSTILE)])
    assert_inert(output, [inert(f"N{i}{text}") for i, (text, _) in enumerate(HOSTILE)])


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_commands_that_name_a_member_print_the_ref_inert(shop: CliRunner, index: int) -> None:
    ref = inert(f"R{index}{HOSTILE[index][0]}")
    for args in (
        ("points", "adjust", phone(index), "5", "--reason", "goodwill"),
        ("member", "consent", phone(index), "no"),
        ("member", "invite", phone(index)),
        ("chat", "--phone", phone(index), "我的积分"),
    ):
        output = run(shop, *args)
        assert_inert(output, [ref] if args[0] != "chat" else [])
