"""The demo chain: the same seed gives the same files, the habits look like real customers, the
real importer takes every row, the loyalty activity is played through the real use cases the
same way every time, the summary tells the truth, and `memberbot demo` runs in one go without
ever touching a shop's own database."""

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
from domain import coupons, csvimport, members, points, punchcards, reports, rewards, wallet
from domain.identity import normalize_plate
from domain.shop import ShopConfig, load_shop_config, sync_shop
from memberbot import runtime
from memberbot.cli import app
from memberbot.demo import chain, generator
from memberbot.demo.summary import summarize
from memberbot.settings import Settings, get_settings

TODAY = date(2026, 11, 24)
SMALL = 200
HEADINGS = (
    "Demo chain",
    "Stores",
    "Tiers",
    "Activity",
    "Loyalty",
    "Coming up",
    "Sample member",
    "Try next",
)
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


# ------------------------------------------------------------------ the loyalty activity


def build_demo(folder: Path, seed: int = 7) -> tuple[chain.DemoSummary, Path]:
    path = folder / "demo.db"
    options = chain.DemoOptions(
        database_url=f"sqlite+aiosqlite:///{path}", members=SMALL, seed=seed, today=TODAY
    )
    return chain.run(options), path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[chain.DemoSummary, Path]:
    return build_demo(tmp_path_factory.mktemp("built"))


def ledgers(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every loyalty ledger by member number, without what is random by design (coupon codes)
    or the wall clock (creation times)."""
    queries = {
        "points": "SELECT m.member_ref, p.kind, p.points, p.occurred_on, p.key FROM points_entry p"
        " JOIN member m ON m.id = p.member_id",
        "stored value": "SELECT m.member_ref, s.kind, s.amount_cents, s.key"
        " FROM stored_value_entry s JOIN member m ON m.id = s.member_id",
        "coupons": "SELECT m.member_ref, c.source, c.kind, c.value_cents, c.percent_off,"
        " c.valid_until, c.used_at IS NOT NULL, c.key FROM coupon c"
        " JOIN member m ON m.id = c.member_id",
        "punch cards": "SELECT m.member_ref, c.total_uses, c.expires_on, c.key, e.kind, e.uses"
        " FROM punch_entry e JOIN punch_card c ON c.id = e.card_id"
        " JOIN member m ON m.id = c.member_id",
    }
    with sqlite3.connect(path) as conn:
        return {name: sorted(conn.execute(sql).fetchall()) for name, sql in queries.items()}


def scalar(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0] or 0)


@pytest.mark.db
def test_the_same_seed_plays_the_same_loyalty_activity(
    built: tuple[chain.DemoSummary, Path], tmp_path: Path
) -> None:
    first, first_db = built
    again, again_db = build_demo(tmp_path)
    assert first.played is not None and again.played is not None
    assert first.played.calls == again.played.calls
    assert again.loyalty == first.loyalty
    assert (again.points_issued, again.points_outstanding) == (
        first.points_issued,
        first.points_outstanding,
    )
    assert ledgers(again_db) == ledgers(first_db)


@pytest.mark.db
def test_members_redeem_prepay_punch_and_get_birthday_coupons(
    built: tuple[chain.DemoSummary, Path], data: generator.DemoData
) -> None:
    summary, path = built
    loyalty = summary.loyalty
    issued = {c.source: c.issued for c in loyalty.coupons}
    born_this_month = sum(
        1 for m in data.members if m["birthday"] and day(m["birthday"]).month == TODAY.month
    )
    assert issued["birthday"] == born_this_month > 0
    assert issued[rewards.SOURCE] > 0 and 0 < loyalty.coupons_used < loyalty.coupons_issued
    assert loyalty.coupons_valid == loyalty.coupons_issued - loyalty.coupons_used
    assert loyalty.points_redeemed > 0 and loyalty.points_offset > 0
    assert summary.points_outstanding == (
        summary.points_issued
        - summary.points_expired
        - loyalty.points_redeemed
        - loyalty.points_offset
    )
    holders = scalar(path, "SELECT count(DISTINCT member_id) FROM stored_value_entry")
    assert loyalty.stored_value_members == holders
    assert 0.15 <= holders / summary.members <= 0.35, "about a quarter of members prepay"
    assert loyalty.stored_value_cents == scalar(
        path, "SELECT sum(amount_cents) FROM stored_value_entry"
    )
    assert scalar(path, "SELECT count(*) FROM stored_value_entry WHERE kind = 'spend'") > 0
    washers = {ref for ref, persona in data.personas.items() if persona == "washer"}
    with sqlite3.connect(path) as conn:
        owners = conn.execute(
            "SELECT m.member_ref FROM punch_card c JOIN member m ON m.id = c.member_id"
        ).fetchall()
    card_owners = {ref for (ref,) in owners}
    assert len(card_owners) == len(owners), "one card each"
    assert card_owners - {data.showcase_ref} <= washers, "10-wash cards go to monthly washers"
    assert loyalty.punch_cards_active == len(card_owners) > 0
    assert loyalty.punch_uses_left < 10 * len(card_owners), "some washes are punched already"
    assert summary.played is not None and summary.played.total < 5 * SMALL


@pytest.mark.db
def test_no_balance_ever_goes_below_zero(built: tuple[chain.DemoSummary, Path]) -> None:
    _, path = built
    per_owner = {
        "points": "SELECT min(t) FROM (SELECT sum(points) AS t FROM points_entry"
        " GROUP BY member_id)",
        "stored value": "SELECT min(t) FROM (SELECT sum(amount_cents) AS t"
        " FROM stored_value_entry GROUP BY member_id)",
        "punch cards": "SELECT min(t) FROM (SELECT sum(uses) AS t FROM punch_entry"
        " GROUP BY card_id)",
    }
    debits = {
        "points": "SELECT count(*) FROM points_entry WHERE kind IN ('redeem', 'offset')",
        "stored value": "SELECT count(*) FROM stored_value_entry WHERE amount_cents < 0",
        "punch cards": "SELECT count(*) FROM punch_entry WHERE uses < 0",
    }
    for ledger, sql in per_owner.items():
        assert scalar(path, debits[ledger]) > 0, f"the demo spends from {ledger}"
        assert scalar(path, sql) >= 0, ledger


@pytest.mark.db
def test_the_showcase_member_has_something_of_everything(
    built: tuple[chain.DemoSummary, Path], data: generator.DemoData
) -> None:
    summary, _ = built
    sample = summary.sample
    assert sample is not None and sample.member.member_ref == data.showcase_ref
    assert sample.stored_value_cents > 0
    assert any(status.remaining > 0 for status, _ in sample.punch_cards)
    assert sample.coupons and all(c.used_at is None for c, _ in sample.coupons)
    assert all(c.valid_from <= TODAY <= c.valid_until for c, _ in sample.coupons)
    assert sample.points.expiring_soon > 0, "what they spent left some points about to lapse"


# ------------------------------------------------------------------ the loyalty report


async def test_loyalty_totals_add_up_every_ledger(db: Database) -> None:
    """Two members; every coupon, prepaid cent, card and point spent is known."""
    rules = load_shop_config(None).loyalty
    async with db.transaction() as session:
        one = await members.create(session, member_ref="L1", name="一", phone=None)
        two = await members.create(session, member_ref="L2", name="二", phone=None)
        await points.credit(session, one.id, 2_000, TODAY, rules)
        wash = await rewards.redeem(session, one.id, "free_wash", today=TODAY, key="k1", actor="t")
        await rewards.redeem(session, one.id, "oil_50", today=TODAY, key="k2", actor="t")
        await coupons.redeem(
            session,
            wash.code,
            member_id=one.id,
            store_id=None,
            spend_cents=4_500,
            today=TODAY,
            actor="t",
        )
        await points.offset(session, one.id, 700, 10_000, TODAY, rules, actor="t")
        for last_day in (TODAY, TODAY - timedelta(days=1)):  # valid today, lapsed yesterday
            await coupons.issue(
                session,
                two.id,
                kind=coupons.VALUE,
                value_cents=5_000,
                valid_from=TODAY - timedelta(days=5),
                valid_until=last_day,
                source="birthday",
            )
        await wallet.top_up(session, one.id, 100_000, actor="t")
        await wallet.spend(session, one.id, 30_000, actor="t")
        await wallet.top_up(session, two.id, 20_000, actor="t")
        await wallet.spend(session, two.id, 20_000, actor="t")
        # One card in use, one lapsed yesterday with uses left, one used up.
        live = await punchcards.issue(session, one.id, "wash", 10, TODAY, None)
        await punchcards.use(
            session, live.id, member_id=one.id, store_id=None, today=TODAY, key=None, actor="t"
        )
        await punchcards.issue(session, two.id, "wash", 5, TODAY - timedelta(days=1), None)
        used_up = await punchcards.issue(session, two.id, "wash", 1, None, None)
        await punchcards.use(
            session,
            used_up.id,
            member_id=two.id,
            store_id=None,
            today=TODAY,
            key=None,
            actor="t",
        )
    async with db.read() as session:
        totals = await reports.loyalty_totals(session, TODAY)
    assert totals == reports.LoyaltyTotals(
        coupons=[
            reports.CouponCount("birthday", issued=2, used=0, valid=1),
            reports.CouponCount("reward", issued=2, used=1, valid=1),
        ],
        stored_value_cents=70_000,
        stored_value_members=1,
        punch_cards_active=1,
        punch_uses_left=9,
        points_redeemed=800,
        points_offset=700,
    )
    assert (totals.coupons_issued, totals.coupons_used, totals.coupons_valid) == (4, 1, 2)


# ------------------------------------------------------------------ the command


def sqlite_counts(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        people = conn.execute("SELECT count(*) FROM member").fetchone()[0]
        visits = conn.execute("SELECT count(*) FROM visit").fetchone()[0]
        adjusted = conn.execute("SELECT count(*) FROM points_entry WHERE kind = 'adjust'")
        return people, visits, adjusted.fetchone()[0]


def loyalty_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("coupon", "stored_value_entry", "punch_card", "punch_entry")
        }


@pytest.mark.db
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
    assert "Stored value ¥" in result.output and "Punch cards" in result.output

    rebuilt = runner.invoke(app, ["demo", "--members", "60"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sqlite_counts(demo_db)[0] == 60

    # What the summary suggests works, and --keep shows the demo again with the change kept.
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", "sqlite+aiosqlite:///memberbot-demo.db")
    monkeypatch.setenv("MEMBERBOT_SHOP_CONFIG", str(chain.DEMO_SHOP))
    get_settings.cache_clear()
    adjusted = runner.invoke(app, ["points", "adjust", "DEMO-00001", "200", "-r", "goodwill"])
    assert adjusted.exit_code == 0, adjusted.output
    played = loyalty_rows(demo_db)
    assert all(played.values()), played
    kept = runner.invoke(app, ["demo", "--members", "60", "--keep"])
    assert kept.exit_code == 0, kept.output
    assert "Kept the existing demo database" in kept.output
    assert sqlite_counts(demo_db)[0::2] == (60, 1)
    assert loyalty_rows(demo_db) == played, "a kept demo plays no loyalty activity again"
    assert "Played today" not in kept.output
    get_settings.cache_clear()


@pytest.mark.db
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
    from tests import conftest

    if not conftest.POSTGRES_URL:
        pytest.skip(conftest.SKIP_PG)
    name = f"memberbot_demo_{uuid.uuid4().hex[:10]}"
    await conftest._pg_admin(f'CREATE DATABASE "{name}"')
    yield conftest._pg_url(name)
    await conftest._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.db
async def test_demo_builds_on_postgresql(empty_postgres: str) -> None:
    options = chain.DemoOptions(database_url=empty_postgres, members=60, today=TODAY)
    summary = await chain.build(options)
    assert summary.members == 60
    assert [r.error_count for r in summary.imports] == [0, 0, 0]
    assert summary.played is not None and summary.loyalty.coupons_issued > 0
    assert summary.sample is not None and summary.sample.stored_value_cents > 0
    rebuilt = await chain.build(options)
    assert rebuilt.members == 60
    assert rebuilt.imports[2].created == summary.visits, "--fresh rebuilt the demo's rows"
    assert rebuilt.loyalty == summary.loyalty, "the same seed plays the same activity"
    assert rebuilt.points_outstanding == summary.points_outstanding
    kept = await chain.build(dataclasses.replace(options, fresh=False))
    assert (kept.members, kept.visits, kept.imports) == (60, summary.visits, [])
    assert (kept.played, kept.loyalty) == (None, summary.loyalty)
