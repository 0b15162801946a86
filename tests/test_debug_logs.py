"""DEBUG logs carry no member's personal data: the database drivers' loggers, which print every
statement's parameters, stay at WARNING unless `MEMBERBOT_SQL_LOG_LEVEL` asks for them.

The commands run as real processes, because logging is configured once per process (and
pytest's own handlers would keep `logging.basicConfig` from doing anything in-process).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from memberbot.demo.chain import DEMO_SHOP

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = 12


def memberbot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m memberbot ARGS` in `tmp_path`, with only our MEMBERBOT_ variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERBOT_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "memberbot", *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def personal_data(database: Path) -> list[str]:
    """Every phone (its national digits), plate and name the demo stored."""
    with sqlite3.connect(database) as connection:
        members = connection.execute("SELECT phone, name FROM member").fetchall()
        plates = connection.execute("SELECT plate FROM vehicle").fetchall()
    found = [phone[-11:] for phone, _ in members if phone] + [name for _, name in members]
    return found + [plate for (plate,) in plates]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo built with MEMBERBOT_LOG_LEVEL=DEBUG: its folder and what it wrote to stderr."""
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite+aiosqlite:///{folder / 'memberbot-demo.db'}"
    args = ("demo", "--members", str(MEMBERS), "--no-chat", "--database-url", url)
    built = memberbot(folder, *args, MEMBERBOT_LOG_LEVEL="DEBUG")
    assert built.returncode == 0, built.stderr[-3000:]
    return folder, built.stderr


def test_demo_at_debug_logs_no_phone_plate_or_name(demo: tuple[Path, str]) -> None:
    folder, stderr = demo
    assert "INFO scheduler.rules" in stderr  # the level was DEBUG: our own lines are there
    secrets = personal_data(folder / "memberbot-demo.db")
    assert len(secrets) >= 3 * MEMBERS
    leaked = [value for value in secrets if value in stderr]
    assert not leaked, f"{len(leaked)} personal values in the DEBUG log, e.g. {leaked[:3]}"


def chat_as_first_member(folder: Path, **env: str) -> tuple[str, str]:
    """`memberbot chat --phone P 我的积分` on the demo's database as its first member: the
    phone looked up and what the process wrote to stderr."""
    database = folder / "memberbot-demo.db"
    phone = personal_data(database)[0]
    talked = memberbot(
        folder,
        *("chat", "--phone", phone, "我的积分"),
        MEMBERBOT_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        MEMBERBOT_SHOP_CONFIG=str(DEMO_SHOP),
        **env,
    )
    assert talked.returncode == 0, talked.stderr[-3000:]
    return phone, talked.stderr


def test_chat_at_debug_does_not_log_the_phone_it_looked_up(demo: tuple[Path, str]) -> None:
    phone, stderr = chat_as_first_member(demo[0], MEMBERBOT_LOG_LEVEL="DEBUG")
    assert phone not in stderr


def test_the_sql_log_level_brings_the_driver_logs_back_for_debugging(
    demo: tuple[Path, str],
) -> None:
    phone, stderr = chat_as_first_member(demo[0], MEMBERBOT_SQL_LOG_LEVEL="DEBUG")
    assert "DEBUG aiosqlite" in stderr and phone in stderr
