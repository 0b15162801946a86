"""The lifecycle rules on a hand-built chain, on SQLite and PostgreSQL: each shipped rule picks
exactly the members it should on the day (and not those without consent, erased, or on another
day), occurrences are stable, a second run adds nothing and issues no second coupon, every
template renders in both languages from its selector's real context, a shop's YAML overrides
the defaults and a bad one is explained, and the preview writes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel
from typer.testing import CliRunner

from db.models import (
    Booking,
    Coupon,
    Member,
    OutboxMessage,
    TierChange,
)
from db.session import Database
from domain import bookings, csvimport, segments, visits
from domain.errors import ConfigError
from domain.messages import Renderer
from domain.shop import ShopConfig
from memberbot.cli.rules import app as rules_app
from memberbot.runtime import prepare
from memberbot.settings import get_settings
from scheduler import rules
from scheduler.ruleconfig import load_rules
from scheduler.rules import Planned
from tests.conftest import run_blocking
from tests.support.rules_chain import DAY, NOW, build_chain, local

EXPECTED = {
    "visit_survey": {"surveyed"},
    "visit_care": {"detailed"},
    "birthday": {"birthday"},
    "maintenance_due": {"oil_by_time", "oil_by_km"},
    "insurance_renewal": {"insured"},
    "inspection_due": {"insured"},
    "booking_reminder": {"booker"},
    "points_expiring": {"expiring"},
    "tier_upgrade": {"upgraded"},
    "win_back": {"lapsing", "detractor"},
    "wake_up": {"dormant"},
}


async def planned(db: Database, config: ShopConfig, day: date = DAY, **kw: object) -> list[Planned]:
    found = []
    async for message in rules.plan(db, load_rules(None), day, config, now=NOW, **kw):  # type: ignore[arg-type]
        found.append(message)
    return found


async def outbox_rows(db: Database) -> list[OutboxMessage]:
    async with db.read() as s:
        return list((await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def test_each_rule_selects_exactly_its_members(db: Database, shop_config: ShopConfig) -> None:
    chain = await build_chain(db, shop_config)
    messages = await planned(db, shop_config)
    assert [m.error for m in messages if m.error] == []
    picked: dict[str, set[str]] = {}
    for m in messages:
        picked.setdefault(m.rule, set()).add(chain.name(m.member_id))
    assert picked == EXPECTED
    occurrences = {(m.rule, chain.name(m.member_id), m.occurrence) for m in messages}
    car = chain.cars
    assert {o for o in occurrences if o[0] in ("insurance_renewal", "inspection_due")} == {
        ("insurance_renewal", "insured", f"{car['insured_30']}:2026-12-24:30d"),
        ("insurance_renewal", "insured", f"{car['insured_7']}:2026-12-01:7d"),
        ("inspection_due", "insured", f"{car['insured_7']}:2026-12-01:7d"),
    }
    assert {o[2] for o in occurrences if o[0] == "maintenance_due"} == {
        f"{car['time_car']}:oil_service:2026-05-24",
        f"{car['km_car']}:oil_service:2026-09-01",
    }
    assert {o[2] for o in occurrences if o[0] == "birthday"} == {"2026"}
    assert {o[2] for o in occurrences if o[0] == "points_expiring"} == {"2026-12-24"}
    assert {o[2] for o in occurrences if o[0] == "wake_up"} == {"2026-05-28"}
    assert {o[2] for o in occurrences if o[0] == "win_back"} == {
        f"1:{DAY - timedelta(days=31)}",
        f"1:{DAY - timedelta(days=2)}",
    }


async def test_contexts_carry_what_the_messages_need(db: Database, shop_config: ShopConfig) -> None:
    chain = await build_chain(db, shop_config)
    messages = {(m.rule, m.occurrence): m for m in await planned(db, shop_config)}
    by_rule: dict[str, list[Planned]] = {}
    for m in messages.values():
        by_rule.setdefault(m.rule, []).append(m)

    survey = by_rule["visit_survey"][0]
    visit_id = int(survey.occurrence)
    buttons = survey.context["buttons"]
    assert [b["label"] for row in buttons for b in row] == [str(n) for n in range(11)]
    assert buttons[0][3]["data"] == f"feedback:score:{visit_id}:3"
    assert survey.locale == "en" and survey.body.startswith("Hi surveyed, thank you for visiting")

    reminders = sorted(by_rule["booking_reminder"], key=lambda m: m.not_before)
    start = local(DAY + timedelta(days=1), 10)
    assert [m.not_before for m in reminders] == [
        start - timedelta(hours=24),
        start - timedelta(hours=2),
    ]
    assert [m.occurrence.split(":")[1] for m in reminders] == ["24h", "2h"]
    assert reminders[0].context["dispatch"] == {"quiet_hours": False}

    points_message = by_rule["points_expiring"][0]
    assert points_message.context["points"]["expiring"] == 800
    assert points_message.context["points"]["balance"] == 1000
    assert "800 积分将在 2026年12月24日 到期" in points_message.body

    km = next(m for m in by_rule["maintenance_due"] if chain.name(m.member_id) == "oil_by_km")
    assert km.context["maintenance"]["due_by"] == "mileage"
    assert km.context["maintenance"]["km_since_service"] == 5_040
    time_due = next(m for m in by_rule["maintenance_due"] if m is not km)
    assert time_due.context["maintenance"]["due_by"] == "time"
    assert "小保养" in time_due.body

    tier = by_rule["tier_upgrade"][0]
    assert tier.context["tier"]["name"] == "银卡会员"
    birthday = by_rule["birthday"][0]
    assert birthday.context["coupon"]["code"] == rules.PENDING_CODE
    assert "¥50.00" in birthday.body
    assert all(m.not_before == NOW for m in messages.values() if m.rule != "booking_reminder")


async def test_run_twice_adds_nothing_and_issues_each_coupon_once(
    db: Database, shop_config: ShopConfig
) -> None:
    await build_chain(db, shop_config)
    rule_set = load_rules(None)
    expected_messages = len(await planned(db, shop_config))
    first = await rules.run(db, rule_set, DAY, shop_config, NOW)
    total = first.total()
    assert total.enqueued == total.selected == expected_messages
    assert total.failed == 0 and total.coupons == 3  # birthday + two first win-back offers
    rows = await outbox_rows(db)
    assert len(rows) == expected_messages
    assert all(row.body for row in rows)
    async with db.read() as s:
        codes = dict((await s.execute(select(Coupon.key, Coupon.code))).all())
    birthday_row = next(r for r in rows if r.rule == "birthday")
    assert birthday_row.context["coupon"]["code"] == codes[f"rule:{birthday_row.idempotency_key}"]
    assert codes[f"rule:{birthday_row.idempotency_key}"] in (birthday_row.body or "")

    second = await rules.run(db, rule_set, DAY, shop_config, NOW + timedelta(hours=3))
    assert second.total().enqueued == 0 and second.total().coupons == 0
    assert len(await outbox_rows(db)) == expected_messages
    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Coupon)) == 3
    # The preview now marks everything as already queued, with the real coupon code.
    again = await planned(db, shop_config)
    assert all(m.queued for m in again if m.rule != "win_back")
    assert (
        next(m for m in again if m.rule == "birthday").context["coupon"]["code"]
        == (birthday_row.context["coupon"]["code"])
    )


async def test_win_back_second_offer_follows_an_ignored_first(
    db: Database, shop_config: ShopConfig
) -> None:
    chain = await build_chain(db, shop_config)
    rule_set = load_rules(None)
    await rules.run(db, rule_set, DAY, shop_config, NOW, rule="win_back")
    later = DAY + timedelta(days=14)
    async with db.transaction() as s:  # the detractor comes back; the lapsing member does not
        await visits.record(s, chain.ids["detractor"], later - timedelta(days=3), 5_000,
                            shop_config.loyalty, earn_points=False)  # fmt: skip
    second = [m for m in await planned(db, shop_config, later, rule="win_back")]
    assert {(chain.name(m.member_id), m.occurrence) for m in second} == {
        ("lapsing", f"2:{DAY - timedelta(days=31)}")
    }
    assert second[0].context["coupon"]["value_cents"] == 6_000
    # Within 90 days of a first offer no other first offer goes out, even on a new lapse.
    assert not [m for m in await planned(db, shop_config, DAY + timedelta(days=1), rule="win_back")
                if m.occurrence.startswith("1:") and not m.queued]  # fmt: skip


async def test_win_back_agrees_with_segments(db: Database, shop_config: ShopConfig) -> None:
    """The SQL selection and domain.segments call the same members pre-churn."""
    chain = await build_chain(db, shop_config)
    async with db.read() as s:
        today = {x.member_id: x for x in await segments.segment_members(s, DAY)}
        before = {
            x.member_id: x.stickiness
            for x in await segments.segment_members(s, DAY - timedelta(days=3))
        }
        consent = set((await s.scalars(select(Member.id).where(Member.marketing_consent))).all())
    turned = {
        chain.name(mid)
        for mid, seg in today.items()
        if seg.stickiness == "pre_churn" and before.get(mid) != "pre_churn" and mid in consent
    }
    picked = {chain.name(m.member_id) for m in await planned(db, shop_config, rule="win_back")}
    assert picked == turned == EXPECTED["win_back"]


async def test_wrong_day_selects_none_of_them(db: Database, shop_config: ShopConfig) -> None:
    chain = await build_chain(db, shop_config)
    # Five days on, outside every rule's catch-up window.
    messages = await planned(db, shop_config, DAY + timedelta(days=5))
    names = {(m.rule, chain.name(m.member_id)) for m in messages}
    for rule, members in EXPECTED.items():
        assert not {(rule, n) for n in members} & names, rule
    # The day before, the booking's 24 h reminder is not yet anyone's to queue.
    earlier = await planned(db, shop_config, DAY - timedelta(days=1), rule="booking_reminder")
    assert earlier == []


async def test_preview_changes_nothing(db: Database, shop_config: ShopConfig) -> None:
    await build_chain(db, shop_config)

    async def snapshot() -> dict[str, int]:
        """Rows in every table: a preview that wrote anything anywhere would change one."""
        counts = {}
        async with db.read() as s:
            for table in SQLModel.metadata.sorted_tables:
                counts[table.name] = int(
                    await s.scalar(select(func.count()).select_from(table)) or 0
                )
        return counts

    before = await snapshot()
    assert len(await planned(db, shop_config)) > 10
    assert await snapshot() == before
    limited = await planned(db, shop_config, rule="insurance_renewal", limit=1)
    assert len(limited) == 1


async def test_every_template_renders_in_both_locales(
    db: Database, shop_config: ShopConfig
) -> None:
    await build_chain(db, shop_config)
    renderer = Renderer()
    messages = await planned(db, shop_config)
    for rule in load_rules(None):
        for message in (m for m in messages if m.rule == rule.key):
            for locale in ("zh_CN", "en"):
                text = renderer.render(rule.template, locale, message.context, "wechat")
                assert text and "None" not in text, (rule.key, locale, text)


def test_shop_file_overrides_and_bad_files_are_explained(tmp_path: Path) -> None:
    shop = tmp_path / "rules.yaml"
    shop.write_text(
        "rules:\n"
        "  - key: birthday\n    coupon: {value: 88}\n"
        "  - key: wake_up\n    enabled: false\n"
        "  - key: insurance_early\n    kind: insurance_renewal\n    category: service\n"
        "    template: insurance_renewal\n    days_before: [90]\n",
        encoding="utf-8",
    )
    loaded = {r.key: r for r in load_rules(shop)}
    assert loaded["birthday"].coupon is not None
    assert loaded["birthday"].coupon.value_cents == 8_800
    assert loaded["birthday"].coupon.min_spend_cents == 10_000  # the rest stays shipped
    assert loaded["wake_up"].enabled is False
    assert loaded["insurance_early"].days_before == [90]  # type: ignore[union-attr]

    shop.write_text(
        "rules:\n"
        "  - key: birthday\n    category: service\n"
        "  - key: visit_survey\n    days_after: -1\n    colour: red\n"
        "  - key: new_rule\n    kind: nonsense\n"
        "  - key: points_expiring\n    template: nowhere\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(shop)
    problems = {key: reason for _, key, reason in caught.value.problems}
    assert all(f == str(shop) for f, _, _ in caught.value.problems)
    assert set(problems) == {"birthday", "visit_survey.days_after", "visit_survey.colour",
                             "new_rule", "points_expiring.template"}  # fmt: skip
    assert "must be category marketing" in problems["birthday"]
    assert "nonsense" in problems["new_rule"]
    assert "no template 'nowhere'" in problems["points_expiring.template"]

    shop.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(shop)
    with pytest.raises(ConfigError, match="file not found"):
        load_rules(tmp_path / "missing.yaml")


@pytest.fixture
def shop_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shop_config: ShopConfig
) -> Iterator[Path]:
    """A SQLite shop holding the chain, for the command line."""
    path = tmp_path / "shop.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()

    async def setup() -> None:
        database = Database.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            await prepare(database, shop_config)
            await build_chain(database, shop_config)
        finally:
            await database.dispose()

    run_blocking(setup())
    yield path
    get_settings.cache_clear()


def table_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            table.name: conn.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
            for table in SQLModel.metadata.sorted_tables
        }


@pytest.mark.db
def test_cli_preview_writes_nothing_and_run_queues_once(shop_db: Path) -> None:
    runner = CliRunner()
    before = table_counts(shop_db)
    shown = runner.invoke(rules_app, ["preview", "--date", DAY.isoformat()], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "R-insured" in shown.output and "insurance_renewal" in shown.output
    assert "沪A***01" in shown.output  # the insured car's plate, masked
    assert "沪A10001" not in shown.output and "沪A·10001" not in shown.output
    assert "nothing written" in shown.output
    assert table_counts(shop_db) == before

    one = runner.invoke(rules_app, ["preview", "--date", DAY.isoformat(), "--rule", "birthday"])
    assert one.exit_code == 0 and "R-birthday " in one.output and "R-insured" not in one.output
    unknown = runner.invoke(rules_app, ["preview", "--date", DAY.isoformat(), "--rule", "nope"])
    assert unknown.exit_code == 1 and "no rule 'nope'" in unknown.output

    first = runner.invoke(rules_app, ["run", "--date", DAY.isoformat()], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    total = next(line for line in first.output.splitlines() if "total" in line)
    queued = int(total.split("│")[3].strip())
    assert queued > 10
    again = runner.invoke(rules_app, ["run", "--date", DAY.isoformat()], env={"COLUMNS": "200"})
    total = next(line for line in again.output.splitlines() if "total" in line)
    assert int(total.split("│")[3].strip()) == 0


async def test_a_cancelled_booking_gets_no_reminder(db: Database, shop_config: ShopConfig) -> None:
    chain = await build_chain(db, shop_config)
    await rules.run(db, load_rules(None), DAY, shop_config, NOW)
    async with db.read() as s:
        booking = await s.scalar(select(Booking).where(Booking.member_id == chain.ids["booker"]))
    assert booking is not None
    async with db.transaction() as s:
        await bookings.cancel(
            s,
            booking.id,
            member_id=booking.member_id,
            now=NOW,
            rules=shop_config.booking_rules,
            actor="test",
        )
    reminders = [r for r in await outbox_rows(db) if r.rule == "booking_reminder"]
    assert len(reminders) == 2
    assert {(r.status, r.last_error) for r in reminders} == {("skipped", "booking_cancelled")}
    others = [r for r in await outbox_rows(db) if r.rule != "booking_reminder"]
    assert all(r.status == "pending" for r in others)


async def test_tiers_an_import_brought_in_are_not_congratulated(
    db: Database, shop_config: ShopConfig, tmp_path: Path
) -> None:
    (tmp_path / "members.csv").write_text(
        "member_ref,name,phone\nIMP-1,钱先生,13800000099\n", encoding="utf-8"
    )
    (tmp_path / "visits.csv").write_text(
        "member_ref,visited_on,amount,services\nIMP-1,2026-10-01,9000,major_service\n",
        encoding="utf-8",
    )
    for kind in ("members", "visits"):
        result = await csvimport.import_file(
            db, kind, tmp_path / f"{kind}.csv", shop_config.loyalty, today=DAY
        )
        assert result.errors == []
    async with db.read() as s:
        change = await s.scalar(select(TierChange))
    assert change is not None and change.reason == "import"  # the import did move them up
    assert [m for m in await planned(db, shop_config) if m.rule == "tier_upgrade"] == []
