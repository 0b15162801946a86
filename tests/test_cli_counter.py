"""Counter commands through the real CLI on a SQLite file: a visit recorded and voided, money
in and out with a retry changing nothing, a refused staff account audited, and the audit
listing with phones masked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memberbot.cli import app
from memberbot.settings import get_settings

pytestmark = pytest.mark.db

MEMBERS = "member_ref,name,phone\nC-1,[bold]周先生,13812345678\n"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    monkeypatch.delenv("MEMBERBOT_STAFF", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    (tmp_path / "members.csv").write_text(MEMBERS, encoding="utf-8")
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["import", "members", "members.csv"]).exit_code == 0
    for args in (["小李", "--store", "main"], ["小王", "--store", "main"]):
        assert runner.invoke(app, ["staff", "add", *args]).exit_code == 0
    assert runner.invoke(app, ["staff", "deactivate", "2"]).exit_code == 0
    yield runner
    get_settings.cache_clear()


def ok(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_visit_and_money_at_the_counter(shop: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    out = ok(
        shop, "visit", "record", "C-1", "--amount", "300", "--service", "wash", "--staff", "小李"
    )
    assert "visit 1 recorded, 300 points earned" in out and "300 points" in out
    monkeypatch.setenv("MEMBERBOT_STAFF", "1")  # the terminal's account, through the settings
    get_settings.cache_clear()
    out = ok(shop, "wallet", "topup", "C-1", "200", "--key", "t1")
    assert "stored value ¥200.00" in out
    again = ok(shop, "wallet", "topup", "C-1", "200", "--key", "t1", "--staff", "1")
    assert "already done" in again and "stored value ¥200.00" in again
    out = ok(shop, "points", "pay", "C-1", "200", "--bill", "100", "--staff", "1")
    assert "¥2.00" in out and "100 points" in out
    refused = shop.invoke(app, ["visit", "void", "1", "--reason", "typo", "--staff", "1"])
    assert refused.exit_code == 1 and "not enough points" in refused.output  # 200 were spent
    second = ok(
        shop, "visit", "record", "C-1", "--amount", "150", "--service", "wash", "--staff", "1"
    )
    assert "visit 2 recorded, 150 points earned" in second and "250 points" in second
    out = ok(shop, "visit", "void", "2", "--reason", "typo", "--staff", "1")
    assert "visit 2 voided, 150 points taken back" in out and "100 points" in out
    found = ok(shop, "member", "find", "13812345678", "--staff", "小李")
    assert "[bold]周先生" in found and "+86138****5678" in found


def test_refused_staff_are_audited_and_the_audit_masks_phones(shop: CliRunner) -> None:
    refused = shop.invoke(app, ["wallet", "topup", "C-1", "200", "--staff", "小王"])
    assert refused.exit_code == 1 and "deactivated" in refused.output
    nobody = shop.invoke(app, ["wallet", "topup", "C-1", "200", "--staff", "99"])
    assert nobody.exit_code == 1 and "not a staff account" in nobody.output
    ok(shop, "member", "find", "13812345678", "--staff", "小李")
    listing = ok(shop, "audit", "--action", "refused", env={"COLUMNS": "200"})
    assert "refused.wallet.top_up" in listing and "deactivated" in listing
    assert "staff:2" in listing and "unknown:99" in listing
    mine = ok(shop, "audit", "--actor", "小李", env={"COLUMNS": "200"})
    assert "counter.member.find" in mine and "refused" not in mine
    assert "13812345678" not in ok(shop, "audit", env={"COLUMNS": "200"})
