"""Wrong arguments and wrong settings get a clear message and a non-zero exit, never a
traceback: days out of range, files that cannot be written, numbers no column holds, settings
that make no sense.

Arguments run in-process through the real CLI (an exception escaping the command shows up as
`result.exception`); settings run as real processes, because logging and the settings object
are configured once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from memberbot.cli import app
from memberbot.settings import get_settings

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = "member_ref,name,phone\nC-1,周先生,13812345678\n"

# (arguments, words the message must hold); "{tmp}" is the test's folder.
BAD_ARGUMENTS = (
    (["rules", "preview", "--date", "9999-12-31"], "between"),
    (["rules", "preview", "--date", "0001-01-01"], "between"),
    (["rules", "run", "--date", "9999-12-31"], "between"),
    (["segments", "export", "--as-of", "0001-01-01", "-o", "{tmp}/s.csv"], "between"),
    (["segments", "refresh", "--as-of", "0001-01-01"], "between"),
    (["bookings", "day", "--store", "main", "--date", "9999-12-31"], "between"),
    (["bookings", "day", "--store", "main", "--date", "0001-01-01"], "between"),
    (["points", "expire", "--date", "0001-01-01"], "between"),
    (["tiers", "review", "--date", "0001-01-01"], "between"),
    (["member", "export", "C-1", "-o", "/nonexistent/x.json"], "cannot write"),
    (["member", "export", "C-1", "-o", "{tmp}"], "cannot write"),
    (["segments", "export", "--as-of", "2026-01-01", "-o", "/nonexistent/s.csv"], "cannot write"),
    (["staff", "add", "X", "--telegram-id", "100000000000000000000"], "telegram"),
    (["staff", "add", "X", "--telegram-id", "-5"], "telegram"),
    (["demo", "--members", "3", "--no-chat", "--export", "/proc/nowhere"], "cannot write"),
    (["demo", "--members", "3", "--no-chat", "--export", "{tmp}/members.csv"], "cannot write"),
)
# Days at the ends of the range work.
EDGE_DAYS = (
    ["rules", "preview", "--date", "2999-12-31"],
    ["bookings", "day", "--store", "main", "--date", "1900-01-01"],
    ["segments", "export", "--as-of", "1900-01-01", "-o", "{tmp}/edge.csv"],
)
# (variable, value, words the message must hold)
BAD_SETTINGS = (
    ("MEMBERBOT_LOG_LEVEL", "bogus", "MEMBERBOT_LOG_LEVEL"),
    ("MEMBERBOT_SQL_LOG_LEVEL", "loud", "MEMBERBOT_SQL_LOG_LEVEL"),
    ("MEMBERBOT_SHOP_CONFIG", "{tmp}", "not a file"),
    ("MEMBERBOT_DATABASE_URL", "not-a-url", "MEMBERBOT_DATABASE_URL"),
    ("MEMBERBOT_DATABASE_URL", "mysql://x/y", "MEMBERBOT_DATABASE_URL"),
    ("MEMBERBOT_DATABASE_URL", "sqlite:///plain.db", "MEMBERBOT_DATABASE_URL"),
    ("MEMBERBOT_HTTP_PORT", "eighty", "MEMBERBOT_HTTP_PORT"),
)


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    (tmp_path / "members.csv").write_text(MEMBERS, encoding="utf-8")
    assert runner.invoke(app, ["import", "members", "members.csv"]).exit_code == 0
    yield runner
    get_settings.cache_clear()


def assert_clear_refusal(code: int, output: str, words: str) -> None:
    assert code != 0, output
    assert "Traceback" not in output, output
    assert words.casefold() in output.casefold(), output


@pytest.mark.parametrize(
    ("args", "words"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_get_a_clear_message(
    shop: CliRunner, tmp_path: Path, args: list[str], words: str
) -> None:
    result = shop.invoke(app, [arg.format(tmp=tmp_path) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert_clear_refusal(result.exit_code, result.output, words)


@pytest.mark.parametrize("args", EDGE_DAYS, ids=[" ".join(a) for a in EDGE_DAYS])
def test_days_at_the_ends_of_the_range_work(
    shop: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    result = shop.invoke(app, [arg.format(tmp=tmp_path) for arg in args])
    assert result.exit_code == 0, result.output


def test_a_failed_export_is_not_audited(shop: CliRunner, tmp_path: Path) -> None:
    failed = shop.invoke(app, ["member", "export", "C-1", "-o", str(tmp_path)])
    assert failed.exit_code != 0
    written = shop.invoke(app, ["member", "export", "C-1", "-o", "c1.json"])
    assert written.exit_code == 0, written.output
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    with engine.connect() as connection:
        actions = connection.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'member.export'")
        ).scalar_one()
    engine.dispose()
    assert actions == 1  # the written copy, not the failed one


@pytest.mark.parametrize(
    ("name", "value", "words"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS]
)
def test_bad_settings_get_a_clear_message(
    tmp_path: Path, name: str, value: str, words: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERBOT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env[name] = value.format(tmp=tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "memberbot", "init"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clear_refusal(done.returncode, done.stdout + done.stderr, words)
