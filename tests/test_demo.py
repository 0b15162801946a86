"""The demo chain: the same seed gives the same files, the habits look like real customers, the
real importer takes every row, the summary tells the truth, and `memberbot demo` runs in one go
without ever touching a shop's own database."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import sqlite3
import statistics
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import phonenumbers
import pytest
from typer.testing import CliRunner

from db.session import Database
from domain import csvimport, members, points
from domain.identity import normalize_plate
from domain.shop import ShopConfig, load_shop_config, sync_shop
from memberbot import runtime
from memberbot.cli import app
from memberbot.demo import chain, generator
from memberbot.demo.summary import summarize
from memberbot.settings import Settings, get_settings

TODAY = date(2026, 11, 24)
SMALL = 200
HEADINGS = ("Demo chain", "Stores", "Tiers", "Activity", "Coming up", "Sample member", "Try next")
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


@pytest.fixture(scope="module")
def demo_config() -> ShopConfig:
    return load_shop_config(chain.DEMO_SHOP)


@pytest.fixture(scope="module")
def data(demo_config: ShopConfig) -> generator.DemoData:
    return generator.generate(demo_config, members=SMALL, seed=7, today=TODAY)


def day(text: str) -> date:
    return date.fromisoformat(text)


def visits_by_member(data: generator.DemoData) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for visit in data.visits:
        grouped[visit["member_ref"]].append(visit)
    return grouped


# ------------------------------------------------------------------ the generator


def test_same_seed_gives_identical_files(demo_config: ShopConfig, tmp_path: Path) -> None:
    first = generator.write_csv(
        generator.generate(demo_config, members=80, seed=3, today=TODAY), tmp_path / "a"
    )
    again = generator.write_csv(
        generator.generate(demo_config, members=80, seed=3, today=TODAY), tmp_path / "b"
    )
    other = generator.write_csv(
        generator.generate(demo_config, members=80, seed=4, today=TODAY), tmp_path / "c"
    )
    for kind in generator.KINDS:
        assert first[kind].read_bytes() == again[kind].read_bytes(), kind
        assert first[kind].read_bytes() != other[kind].read_bytes(), kind
    assert first["visits"].read_text(encoding="utf-8").startswith("visit_ref,member_ref,")


def test_a_member_does_not_depend_on_how_many_are_generated(
    demo_config: ShopConfig, data: generator.DemoData
) -> None:
    fewer = generator.generate(demo_config, members=50, seed=7, today=TODAY)
    assert fewer.members == data.members[:50]


def test_identifiers_are_valid_and_unique(data: generator.DemoData) -> None:
    phones = set()
    for member in data.members:
        number = phonenumbers.parse(member["phone"], "CN")
        assert phonenumbers.is_valid_number(number), member["member_ref"]
        phones.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    assert len(phones) == len(data.members)
    plates = [normalize_plate(v["plate"]) for v in data.vehicles]
    assert len(set(plates)) == len(plates)
    assert any(len(p) == 8 for p in plates), "new-energy plates have 6 characters after 沪A"
    refs = [v["visit_ref"] for v in data.visits]
    assert len(set(refs)) == len(refs) and all(refs)
    assert data.showcase_ref in {m["member_ref"] for m in data.members}


def test_three_years_of_history_up_to_today(data: generator.DemoData) -> None:
    days = [day(v["visited_on"]) for v in data.visits]
    assert max(days) <= TODAY
    assert min(days) >= TODAY - timedelta(days=3 * 366)
    assert min(days) <= TODAY - timedelta(days=2 * 365)
    assert 10 <= len(data.visits) / len(data.members) <= 25
    born = [day(m["birthday"]) for m in data.members if m["birthday"]]
    assert 0.7 <= len(born) / len(data.members) <= 0.9
    assert all(b <= TODAY for b in born)
    assert all(day(v["purchase_date"]) <= TODAY for v in data.vehicles)


def test_maintenance_regulars_come_every_five_or_six_months(data: generator.DemoData) -> None:
    gaps = []
    for ref, visits in visits_by_member(data).items():
        if data.personas[ref] != "regular":
            continue
        by_car: dict[str, list[date]] = defaultdict(list)
        for visit in visits:
            if {"oil_service", "major_service"} & set(visit["services"].split(";")):
                by_car[visit["plate"]].append(day(visit["visited_on"]))
        for days in by_car.values():
            days.sort()
            gaps += [(b - a).days for a, b in itertools.pairwise(days)]
    assert len(gaps) > 100
    assert 4 <= statistics.mean(gaps) / 30.44 <= 7


def test_monthly_washers_wash_about_monthly(data: generator.DemoData) -> None:
    gaps = []
    for ref, visits in visits_by_member(data).items():
        if data.personas[ref] == "washer":
            washes = sorted(day(v["visited_on"]) for v in visits if "wash" in v["services"])
            gaps += [(b - a).days for a, b in itertools.pairwise(washes)]
    assert 20 <= statistics.mean(gaps) <= 45


def test_lapsers_stopped_six_to_eighteen_months_ago(data: generator.DemoData) -> None:
    grouped = visits_by_member(data)
    lapsers = [ref for ref, persona in data.personas.items() if persona == "lapser"]
    assert len(lapsers) >= 10
    for ref in lapsers:
        last = max(day(v["visited_on"]) for v in grouped[ref])
        assert 180 < (TODAY - last).days <= 18 * 31, ref


def test_mileage_never_goes_backwards(data: generator.DemoData) -> None:
    readings: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for visit in data.visits:
        if visit["mileage_km"]:
            readings[visit["plate"]].append((visit["visited_on"], int(visit["mileage_km"])))
    assert readings
    for plate, series in readings.items():
        km = [k for _, k in sorted(series)]
        assert km == sorted(km), plate
    today_km = {normalize_plate(v["plate"]): int(v["mileage_km"]) for v in data.vehicles}
    for plate, series in readings.items():
        assert max(k for _, k in series) <= today_km[plate]


# ------------------------------------------------------------------ through the real importer


@pytest.fixture
async def demo_db(db: Database, demo_config: ShopConfig) -> Database:
    async with db.transaction() as session:
        await sync_shop(session, demo_config)
    return db


async def import_demo(
    db: Database, config: ShopConfig, folder: Path, data: generator.DemoData
) -> list[csvimport.ImportResult]:
    paths = generator.write_csv(data, folder)
    return [
        await csvimport.import_file(db, kind, paths[kind], config.loyalty, today=TODAY)
        for kind in generator.KINDS
    ]


async def test_the_importer_takes_every_row(
    demo_db: Database, demo_config: ShopConfig, data: generator.DemoData, tmp_path: Path
) -> None:
    results = await import_demo(demo_db, demo_config, tmp_path, data)
    for kind, result in zip(generator.KINDS, results, strict=True):
        assert result.error_count == 0, (kind, result.errors[:3])
        assert result.written
        assert result.created == len(data.rows(kind))
    again = await import_demo(demo_db, demo_config, tmp_path, data)
    assert [r.created for r in again] == [0, 0, 0]
    assert again[2].unchanged == len(data.visits), "stable visit_refs make a rerun a no-op"


async def test_summary_tells_what_the_files_hold(
    demo_db: Database, demo_config: ShopConfig, data: generator.DemoData, tmp_path: Path
) -> None:
    await import_demo(demo_db, demo_config, tmp_path, data)
    rt = runtime.Runtime(
        settings=Settings(database_url="sqlite+aiosqlite:///unused.db"),
        config=demo_config,
        db=demo_db,
    )
    summary = await summarize(rt, TODAY, data.showcase_ref)

    assert (summary.members, summary.vehicles, summary.visits) == (
        len(data.members),
        len(data.vehicles),
        len(data.visits),
    )
    assert sum(n for _, n in summary.tiers) == summary.members
    assert sum(summary.activity.values()) == summary.members
    lapsers = sum(1 for p in data.personas.values() if p == "lapser")
    assert summary.activity["lost"] >= lapsers
    assert summary.activity["active"] > summary.members / 2
    assert sum(s.members for s in summary.stores) == summary.members
    assert summary.points_outstanding == summary.points_issued - summary.points_expired > 0

    horizon = (TODAY + timedelta(days=60)).isoformat()
    renewals = [v for v in data.vehicles if TODAY.isoformat() <= v["insurance_expiry"] <= horizon]
    assert summary.insurance_count == len(renewals) > 0
    assert all(TODAY <= d.day <= TODAY + timedelta(days=30) for d in summary.inspections)

    assert summary.expiring, "three years of points always leave some about to lapse"
    async with demo_db.read() as session:
        for line in summary.expiring:
            member = await members.find(session, line.member_ref)
            shown = await points.summary(session, member.id, TODAY, demo_config.loyalty)
            assert line.details[0] == f"{shown.expiring_soon:,}"
    assert all("****" in line.details[1] for line in summary.expiring), "phones are masked"
    assert summary.sample.member.member_ref == data.showcase_ref
    assert summary.sample.visit_count > 0 and summary.sample.vehicles


# ------------------------------------------------------------------ the command


def sqlite_counts(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        people = conn.execute("SELECT count(*) FROM member").fetchone()[0]
        visits = conn.execute("SELECT count(*) FROM visit").fetchone()[0]
        adjusted = conn.execute("SELECT count(*) FROM points_entry WHERE kind = 'adjust'")
        return people, visits, adjusted.fetchone()[0]


def test_memberbot_demo_builds_and_shows_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", "sqlite+aiosqlite:///shop.db")
    get_settings.cache_clear()
    runner = CliRunner()
    demo_db = tmp_path / "memberbot-demo.db"

    result = runner.invoke(app, ["demo", "--members", "120", "--export", "csv"])
    assert result.exit_code == 0, result.output
    for heading in HEADINGS:
        assert heading in result.output
    assert "memberbot member show DEMO-" in result.output
    assert "MEMBERBOT_DATABASE_URL=sqlite+aiosqlite:///memberbot-demo.db" in result.output
    assert not MOBILE.search(result.output), "phones are masked in everything printed"
    assert not (tmp_path / "shop.db").exists(), "the shop's database is never touched"
    assert (tmp_path / "csv" / "visits.csv").exists()
    people, visits, _ = sqlite_counts(demo_db)
    assert people == 120 and visits > 120

    rebuilt = runner.invoke(app, ["demo", "--members", "60"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sqlite_counts(demo_db)[0] == 60

    # What the summary suggests works, and --keep shows the demo again with the change kept.
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", "sqlite+aiosqlite:///memberbot-demo.db")
    monkeypatch.setenv("MEMBERBOT_SHOP_CONFIG", str(chain.DEMO_SHOP))
    get_settings.cache_clear()
    adjusted = runner.invoke(app, ["points", "adjust", "DEMO-00001", "200", "-r", "goodwill"])
    assert adjusted.exit_code == 0, adjusted.output
    kept = runner.invoke(app, ["demo", "--members", "60", "--keep"])
    assert kept.exit_code == 0, kept.output
    assert "Kept the existing demo database" in kept.output
    assert sqlite_counts(demo_db)[0::2] == (60, 1)
    get_settings.cache_clear()


def test_memberbot_demo_refuses_a_shop_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shop = tmp_path / "memberbot.db"

    async def open_a_shop() -> None:
        rt = await runtime.start(Settings(database_url=f"sqlite+aiosqlite:///{shop}"))
        try:
            async with rt.db.transaction() as session:
                await members.create(session, member_ref="A001", name="王先生", phone="13812345678")
        finally:
            await rt.db.dispose()

    asyncio.run(open_a_shop())
    before = shop.read_bytes()
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"not a database at all, just some notes" * 50)
    runner = CliRunner()
    for target in (shop, junk):
        result = runner.invoke(
            app, ["demo", "--members", "20", "--database-url", f"sqlite+aiosqlite:///{target}"]
        )
        assert result.exit_code == 1, result.output
        assert "will not write" in result.output
    assert shop.read_bytes() == before
    assert junk.exists()


# ------------------------------------------------------------------ on each backend


async def test_demo_refuses_a_database_with_a_shop_of_its_own(
    db: Database, demo_config: ShopConfig
) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    reason = await chain.foreign_data(url, {s.code for s in demo_config.stores})
    assert reason is not None and "store" in reason


@pytest.fixture
async def empty_postgres() -> AsyncIterator[str]:
    conftest = pytest.importorskip("conftest")
    if not conftest.POSTGRES_URL:
        pytest.skip(conftest.SKIP_PG)
    name = f"memberbot_demo_{uuid.uuid4().hex[:10]}"
    await conftest._pg_admin(f'CREATE DATABASE "{name}"')
    yield conftest._pg_url(name)
    await conftest._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_demo_builds_on_postgresql(empty_postgres: str) -> None:
    options = chain.DemoOptions(database_url=empty_postgres, members=60, today=TODAY)
    summary = await chain.build(options)
    assert summary.members == 60
    assert [r.error_count for r in summary.imports] == [0, 0, 0]
    rebuilt = await chain.build(options)
    assert rebuilt.members == 60
    assert rebuilt.imports[2].created == summary.visits, "--fresh rebuilt the demo's rows"
    kept = await chain.build(dataclasses.replace(options, fresh=False))
    assert (kept.members, kept.visits, kept.imports) == (60, summary.visits, [])
