"""The staff CLI end to end on a SQLite file: init, a member's page, adjustments, the nightly
expiry and the tier review, and clear exits for what the user can fix."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memberbot.cli
from memberbot.cli import app
from memberbot.settings import get_settings

pytestmark = pytest.mark.db  # every test runs the CLI against a SQLite file of its own

MEMBERS = "member_ref,name,phone,birthday,tags\nC-1,周先生,13812345678,1985-06-01,车队\n"
VISITS = (
    "member_ref,visited_on,amount,services\n"
    "C-1,2024-01-15,¥9000.00,major_service\n"
    "C-1,2026-10-01,300,wash\n"
)


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    (tmp_path / "members.csv").write_text(MEMBERS, encoding="utf-8")
    (tmp_path / "visits.csv").write_text(VISITS, encoding="utf-8")
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["import", "members", "members.csv"]).exit_code == 0
    assert runner.invoke(app, ["import", "visits", "visits.csv"]).exit_code == 0
    yield runner
    get_settings.cache_clear()


def test_member_show_masks_the_phone(shop: CliRunner) -> None:
    result = shop.invoke(app, ["member", "show", "138 1234 5678"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "C-1" in result.output and "周先生" in result.output
    assert "+86138****5678" in result.output
    assert "13812345678" not in result.output
    assert "1985" not in result.output  # the birthday is only said to be on file


def test_adjust_needs_a_reason_and_never_overdraws(shop: CliRunner) -> None:
    # The 2024 visit's 9,000 points lapsed at import; the October visit left 300.
    ok = shop.invoke(app, ["points", "adjust", "C-1", "50", "--reason", "goodwill"])
    assert ok.exit_code == 0, ok.output
    assert "balance now 350" in ok.output
    refused = shop.invoke(app, ["points", "adjust", "C-1", "-351", "--reason", "typo"])
    assert refused.exit_code == 1
    assert "not enough points" in refused.output
    missing = shop.invoke(app, ["points", "adjust", "C-1", "5"])
    assert missing.exit_code != 0


def test_adjust_past_the_cap_is_a_clear_refusal(shop: CliRunner) -> None:
    huge = shop.invoke(app, ["points", "adjust", "C-1", "100000000000000000000", "-r", "x"])
    assert huge.exit_code == 1, huge.output
    assert "at most 100,000,000 points" in huge.output
    assert huge.exception is None or isinstance(huge.exception, SystemExit)
    after = shop.invoke(app, ["points", "adjust", "C-1", "1", "-r", "x"])
    assert "balance now 301" in after.output


def test_expire_and_review_are_idempotent_for_a_day(shop: CliRunner) -> None:
    first = shop.invoke(app, ["points", "expire", "--date", "2028-10-02"])
    assert first.exit_code == 0, first.output
    assert "300 points expired as of 2028-10-02" in first.output
    again = shop.invoke(app, ["points", "expire", "--date", "2028-10-02"])
    assert "0 points expired" in again.output
    review = shop.invoke(app, ["tiers", "review", "--date", "2028-10-02"])
    assert review.exit_code == 0, review.output
    assert "0 member(s) changed tier" in review.output  # still standard: 300 yuan in 12 months


def test_a_review_lowers_a_tier_the_spend_no_longer_earns(shop: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text(
        "member_ref,visited_on,amount\nC-1,2026-11-01,8500\n", encoding="utf-8"
    )
    assert shop.invoke(app, ["import", "visits", "big.csv"]).exit_code == 0
    shown = shop.invoke(app, ["member", "show", "C-1"], env={"COLUMNS": "160"})
    assert "Gold" in shown.output
    review = shop.invoke(app, ["tiers", "review", "--date", "2028-01-01"])
    assert "1 member(s) changed tier" in review.output
    shown = shop.invoke(app, ["member", "show", "C-1"], env={"COLUMNS": "160"})
    assert "Tier Standard" in shown.output


def test_bad_date_and_unknown_member_exit_clearly(shop: CliRunner) -> None:
    bad = shop.invoke(app, ["points", "expire", "--date", "next tuesday"])
    assert bad.exit_code == 2
    assert "not a date" in bad.output
    unknown = shop.invoke(app, ["member", "show", "13900000000"])
    assert unknown.exit_code == 1
    assert "no member matches" in unknown.output


def test_a_broken_shop_config_names_file_key_and_reason(
    shop: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop.yaml").write_text(
        "stores:\n  - code: a\n    name: A\n    timezone: Nowhere/City\n"
        "tiers:\n  - code: standard\n    name: {zh_CN: 普通, en: Standard}\n    threshold: 0\n",
        encoding="utf-8",
    )
    result = shop.invoke(app, ["init"])
    assert result.exit_code == 2
    assert "shop.yaml: stores.0.timezone: " in result.output
    assert "unknown time zone" in result.output


def test_consent_export_and_erase(shop: CliRunner, tmp_path: Path) -> None:
    assert shop.invoke(app, ["member", "consent", "C-1", "yes"]).exit_code == 0
    exported = shop.invoke(app, ["member", "export", "C-1", "-o", "c1.json"])
    assert exported.exit_code == 0, exported.output
    data = json.loads((tmp_path / "c1.json").read_text(encoding="utf-8"))
    assert data["member"]["phone"] == "+8613812345678"
    assert data["member"]["marketing_consent"] is True
    assert len(data["visits"]) == 2
    unconfirmed = shop.invoke(app, ["member", "erase", "C-1", "--reason", "asked"])
    assert unconfirmed.exit_code == 1
    erased = shop.invoke(app, ["member", "erase", "C-1", "--reason", "asked", "--yes"])
    assert erased.exit_code == 0, erased.output
    assert shop.invoke(app, ["member", "show", "13812345678"]).exit_code == 1


def test_staff_accounts(shop: CliRunner) -> None:
    added = shop.invoke(app, ["staff", "add", "王经理", "--role", "manager"])
    assert added.exit_code == 0, added.output
    assert shop.invoke(app, ["staff", "add", "小李", "--store", "main"]).exit_code == 0
    assert shop.invoke(app, ["staff", "add", "x", "--role", "owner"]).exit_code == 1
    assert shop.invoke(app, ["staff", "deactivate", "2"]).exit_code == 0
    listed = shop.invoke(app, ["staff", "list"], env={"COLUMNS": "160"})
    lines = [line for line in listed.output.splitlines() if "王经理" in line or "小李" in line]
    assert "chain-wide" in lines[0] and "yes" in lines[0]
    assert "main" in lines[1] and "no" in lines[1]


def imported(path: Path) -> set[str]:
    """Every module (and `from` module's name) a file imports, wherever the import stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_command_modules_reach_the_package_only_through_common() -> None:
    """No back-imports: a command module takes the consoles and the runner from `common`, and
    `common` imports no command module, so nothing imports the package that mounts it."""
    package = Path(memberbot.cli.__file__).parent
    modules = sorted(path for path in package.glob("*.py") if path.name != "__init__.py")
    assert len(modules) > 10
    for path in modules:
        allowed = "memberbot.cli.common" if path.name != "common.py" else None
        reached = {
            name
            for name in imported(path)
            if (name == "memberbot.cli" or name.startswith("memberbot.cli."))
            and not (allowed and (name == allowed or name.startswith(allowed + ".")))
        }
        assert not reached, f"{path.name} imports {sorted(reached)}"
