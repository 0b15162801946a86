"""Churn risk: features from the database as of a day (nothing later leaks in), the model
trained on the shop's own earlier history, its reasons, how it ranks against BG/NBD and
Pareto/NBD on a simulated chain whose true churn is known, the nightly snapshot and the CSV
export."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import stats
from sqlalchemy import insert, select
from typer.testing import CliRunner

from db.models import Member, MemberScore, OutboxMessage, Visit
from db.session import Database
from domain import churn, privacy, scores
from domain.btyd import fit_bgnbd, fit_pareto_nbd
from domain.churn import ChurnConfig, History
from memberbot.cli.segments import COLUMNS
from memberbot.cli.segments import app as segments_app
from memberbot.settings import get_settings
from tests.support.churn_sim import SimMember, SimOptions, simulate, truly_gone

AS_OF = date(2026, 3, 31)
HORIZON = 180
VisitRow = tuple[date, int, int | None]


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    ranks = stats.rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _every(first: date, last: date, days: int, cents: int = 20_000) -> list[VisitRow]:
    """Visits every `days` from `first` up to `last`, ending exactly on `last`."""
    count = (last - first).days // days
    return [(last - timedelta(days=days * k), cents, None) for k in range(count, -1, -1)]


async def _add(
    db: Database, people: Sequence[tuple[str, date, Sequence[VisitRow]]]
) -> dict[str, int]:
    """Members (ref, joined, visits) in bulk; returns their ids by ref."""
    now = _at(date(2026, 1, 1))
    async with db.transaction() as session:
        await session.execute(
            insert(Member),
            [
                {
                    "member_ref": ref,
                    "name": f"Name {ref}",
                    "phone": f"+86138{i:08d}",
                    "locale": "zh_CN",
                    "tier_code": "standard",
                    "tier_since": now,
                    "marketing_consent": False,
                    "created_at": _at(joined),
                    "updated_at": now,
                }
                for i, (ref, joined, _) in enumerate(people)
            ],
        )
        ids = dict((await session.execute(select(Member.member_ref, Member.id))).all())
        rows = [
            {
                "member_id": ids[ref],
                "visited_on": day,
                "amount_cents": cents,
                "satisfaction": score,
                "services": [],
                "categories": [],
                "created_at": now,
            }
            for ref, _, visits in people
            for day, cents, score in visits
        ]
        for start in range(0, len(rows), 2_000):
            await session.execute(insert(Visit), rows[start : start + 2_000])
    return {ref: ids[ref] for ref, _, _ in people}


def _sim(members: int, *, matters: bool = False, seed: int = 11) -> list[SimMember]:
    end = AS_OF + timedelta(days=HORIZON)
    return simulate(
        SimOptions(
            members=members,
            start=date(2023, 1, 1),
            end=end,
            satisfaction_matters=matters,
            seed=seed,
        )
    )


def _people(
    sim: Sequence[SimMember], until: date = AS_OF
) -> list[tuple[str, date, list[VisitRow]]]:
    return [
        (f"S{i:05d}", m.joined, [v for v in m.visits if v[0] <= until]) for i, m in enumerate(sim)
    ]


def _same(a: History, b: History) -> None:
    for name in History.__dataclass_fields__:
        left, right = getattr(a, name), getattr(b, name)
        if name == "as_of":
            assert left == right
        else:
            np.testing.assert_array_equal(left, right, err_msg=name)


# --- Features from the database -----------------------------------------------------------


async def test_sql_history_equals_the_plain_computation(db: Database) -> None:
    sim = _sim(250, matters=True)
    people = _people(sim, AS_OF + timedelta(days=60))
    ids = await _add(db, people)
    async with db.read() as session:
        from_sql = await churn.history(session, AS_OF)
    plain = churn.history_from_visits(
        [ids[ref] for ref, _, _ in people], [v for _, _, v in people], AS_OF
    )
    # Members who joined after the day and had no visit by it are not counted by either side's
    # population rule, but the plain form keeps everyone: compare the counted ones.
    joined_by = np.array(
        [joined <= AS_OF or bool(plain.visit_days[i]) for i, (_, joined, _) in enumerate(people)]
    )
    _same(from_sql, plain.take(joined_by))
    assert from_sql.visit_days.sum() > 1_000 and np.isfinite(from_sql.last_satisfaction).sum() > 150


async def test_nothing_after_the_as_of_day_changes_the_scores(db: Database) -> None:
    sim = _sim(400)
    ids = await _add(db, _people(sim))
    async with db.read() as session:
        before = await churn.assess(session, AS_OF)
    assert before.method == churn.TRAINED
    later = AS_OF + timedelta(days=1)
    some = list(ids.values())[:50]
    async with db.transaction() as session:
        await session.execute(
            insert(Visit),
            [
                {"member_id": m, "visited_on": later, "amount_cents": 99_900, "satisfaction": 0,
                 "services": [], "categories": [], "created_at": _at(later)}
                for m in some
            ],
        )  # fmt: skip
        session.add_all(
            OutboxMessage(
                idempotency_key=f"late-{m}",
                member_id=m,
                rule="winback",
                category="marketing",
                template_key="winback",
                locale="zh_CN",
                status="sent",
                not_before=_at(later),
                sent_at=_at(later),
                created_at=_at(later),
            )
            for m in some
        )
    async with db.read() as session:
        after = await churn.assess(session, AS_OF)
        moved = await churn.assess(session, later)
    np.testing.assert_array_equal(before.risk, after.risk)
    assert [before.reasons(i) for i in range(len(before.risk))] == [
        after.reasons(i) for i in range(len(after.risk))
    ]
    assert not np.array_equal(before.risk, moved.risk)  # the test can see a change


async def test_unanswered_counts_sent_messages_after_the_last_visit(db: Database) -> None:
    last = AS_OF - timedelta(days=30)
    ids = await _add(
        db, [("M1", date(2025, 1, 1), [(last, 10_000, 9)]), ("M2", date(2025, 1, 1), [])]
    )

    def message(key: str, member: str, created: datetime, status: str = "sent") -> OutboxMessage:
        return OutboxMessage(
            idempotency_key=key, member_id=ids[member], rule="r", category="marketing",
            template_key="t", locale="zh_CN", status=status, not_before=created,
            sent_at=created if status == "sent" else None, created_at=created,
        )  # fmt: skip

    async with db.transaction() as session:
        session.add_all(
            [
                message("same-day", "M1", _at(last, 20)),  # the visit's own thank-you
                message("after", "M1", _at(last + timedelta(days=10))),
                message("after-2", "M1", _at(AS_OF, 23)),
                message("pending", "M1", _at(last + timedelta(days=12)), status="pending"),
                message("future", "M1", _at(AS_OF + timedelta(days=1))),
                message("prospect", "M2", _at(AS_OF - timedelta(days=3))),
            ]
        )
    async with db.read() as session:
        hist = await churn.history(session, AS_OF)
    by_id = dict(zip(hist.member_id.tolist(), hist.unanswered.tolist(), strict=True))
    assert by_id == {ids["M1"]: 2, ids["M2"]: 1}


# --- The model and its reasons -------------------------------------------------------------


async def test_overdue_member_outranks_a_regular_one_and_is_told_why(db: Database) -> None:
    start = AS_OF - timedelta(days=720)
    regular = _every(start, AS_OF - timedelta(days=10), 30)
    overdue = _every(start, AS_OF - timedelta(days=150), 30)
    ids = await _add(
        db, [*_people(_sim(400)), ("REGULAR", start, regular), ("OVERDUE", start, overdue)]
    )
    async with db.read() as session:
        result = await churn.assess(session, AS_OF)
    index = result.index_of()
    late, steady = index[ids["OVERDUE"]], index[ids["REGULAR"]]
    print(f"\nrisk overdue {result.risk[late]:.3f}, regular {result.risk[steady]:.3f}")
    assert result.risk[late] > result.risk[steady] + 0.3
    assert ((result.risk >= 0) & (result.risk <= 1)).all()
    reasons = result.reasons(late)
    assert reasons[0].key == "overdue"
    assert reasons[0].code == "overdue:days=120"  # 150 days quiet against a 30-day rhythm
    assert churn.reason_text(reasons[0].code, "zh_CN") == "超过平时到店周期 120 天"
    assert churn.reason_text(reasons[0].code, "en") == "120 days past their usual visit interval"
    assert "overdue" not in {r.key for r in result.reasons(steady)}


def _probe(sim: list[SimMember], score: int) -> SimMember:
    """A steady member whose last visit, 20 days ago, was rated `score`."""
    visits = [
        (d, c, 9) for d, c, _ in _every(AS_OF - timedelta(days=600), AS_OF - timedelta(days=20), 40)
    ]
    visits[-1] = (visits[-1][0], visits[-1][1], score)
    return SimMember(visits[0][0], date.max, visits)


def _assess_plain(sim: list[SimMember], config: ChurnConfig) -> churn.Assessment:
    ids = list(range(1, len(sim) + 1))
    visits = [m.visits for m in sim]
    now = churn.history_from_visits(ids, visits, AS_OF)
    then = churn.history_from_visits(ids, visits, AS_OF - timedelta(days=config.horizon_days))
    return churn.assess_history(now, churn.train(then, now, config), config)


@pytest.mark.parametrize("matters", [True, False], ids=["scores-matter", "scores-do-not"])
def test_low_satisfaction_raises_risk_only_where_the_model_learnt_it(matters: bool) -> None:
    sim = _sim(4_000, matters=matters, seed=5)
    base = [*sim, _probe(sim, 3), _probe(sim, 10)]
    result = _assess_plain(base, ChurnConfig(horizon_days=HORIZON, use_btyd=False))
    unhappy, happy = len(base) - 2, len(base) - 1
    gap = result.risk[unhappy] - result.risk[happy]
    weight = result.model.coefficients()["dissatisfaction"]
    print(f"\nsatisfaction matters={matters}: weight {weight:+.3f}, risk gap {gap:+.3f}")
    keys = {r.key for r in result.reasons(unhappy)}
    if matters:
        assert weight > 0.2 and gap > 0.1
        assert "low_satisfaction" in keys
        assert (
            churn.reason_text(
                next(r.code for r in result.reasons(unhappy) if r.key == "low_satisfaction"), "en"
            )
            == "last satisfaction score 3/10"
        )
    else:
        assert abs(weight) < 0.15 and abs(gap) < 0.05
        assert "low_satisfaction" not in keys


def test_trained_model_ranks_simulated_churn_better_than_bgnbd_and_as_well_as_pareto() -> None:
    """Held out in time: fitted on data to AS_OF, judged on who did not come back in the next
    180 days (and on who had truly dropped out, which the simulation knows)."""
    sim = _sim(5_000, matters=True, seed=23)
    ids = list(range(1, len(sim) + 1))
    visits = [m.visits for m in sim]
    result = _assess_plain(sim, ChurnConfig(horizon_days=HORIZON))
    assert result.method == churn.TRAINED and "Pareto/NBD" in result.note
    now = result.history
    seen = now.visited
    churned = np.array([not any(d > AS_OF for d, _, _ in visits[i]) for i in np.flatnonzero(seen)])
    gone = truly_gone([m for m, s in zip(sim, seen, strict=True) if s], AS_OF)
    x, t_x, T = now.take(seen).btyd_summary()
    weeks = HORIZON / 7
    bg, pareto = fit_bgnbd(x, t_x, T), fit_pareto_nbd(x, t_x, T)
    figures = {
        "model": result.risk[seen],
        "bgnbd_p_alive": 1 - bg.p_alive(x, t_x, T),
        "bgnbd_expected": -bg.expected_purchases(weeks, x, t_x, T),
        "pareto_p_alive": 1 - pareto.p_alive(x, t_x, T),
        "pareto_expected": -pareto.expected_purchases(weeks, x, t_x, T),
    }
    aucs = {name: (_auc(s, churned), _auc(s, gone)) for name, s in figures.items()}
    print()
    for name, (held_out, truth) in aucs.items():
        print(f"{name:<16} AUC no visit {held_out:.3f}  truly gone {truth:.3f}")
    assert len(ids) == len(now)
    best_bg = max(aucs["bgnbd_p_alive"][0], aucs["bgnbd_expected"][0])
    best_pareto = max(aucs["pareto_p_alive"][0], aucs["pareto_expected"][0])
    assert aucs["model"][0] > best_bg
    assert aucs["model"][0] >= best_pareto - 0.005
    assert aucs["model"][1] >= max(aucs["pareto_p_alive"][1], aucs["pareto_expected"][1]) - 0.005
    assert ((result.risk >= 0) & (result.risk <= 1)).all()


def test_short_history_falls_back_and_says_so() -> None:
    some = _sim(120, seed=3)
    btyd = _assess_plain(some, ChurnConfig(horizon_days=HORIZON))
    assert btyd.method == churn.BTYD_ONLY
    assert "Pareto/NBD only" in btyd.note and "too few to train" in btyd.note
    few = _assess_plain(some[:8], ChurnConfig(horizon_days=HORIZON))
    assert few.method == churn.RULE and "too few for Pareto/NBD" in few.note
    for result in (btyd, few):
        assert ((result.risk >= 0) & (result.risk <= 1)).all()
        quiet = int(np.nanargmax(result.history.last_age))
        assert result.risk[quiet] >= np.median(result.risk[result.history.visited])
        assert {r.key for r in result.reasons(quiet)} & {"overdue", "absent", "few_visits"}


def test_quick_pareto_fit_reaches_the_published_cdnow_optimum() -> None:
    """The churn model's cheaper Pareto/NBD search lands where the thorough one does."""
    folder = _cdnow_dir()
    if folder is None:
        pytest.skip("CDNOW data not found: install the dev extra")
    with (folder / "cdnow_customers_summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    x, t_x, T = (np.array([float(r[k]) for r in rows]) for k in ("frequency", "recency", "T"))
    fitted = churn.quick_pareto_fit(x, t_x, T)
    assert fitted is not None
    assert fitted.log_likelihood(x, t_x, T).sum() == pytest.approx(-9595.0, abs=0.5)
    assert (fitted.r, fitted.s) == (pytest.approx(0.553, rel=0.01), pytest.approx(0.606, rel=0.01))


def _cdnow_dir() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return path if (path / "cdnow_customers_summary.csv").exists() else None


def test_reason_codes_read_back_in_both_languages() -> None:
    code = churn.Reason("lower_spend", {"recent": 1200, "earlier": 5400}, 1.0).code
    assert code == "lower_spend:recent=1200,earlier=5400"
    assert churn.reason_text(code, "zh_CN") == "消费下降：近12个月 ¥1,200，之前12个月 ¥5,400"
    assert churn.reason_text("few_expected:expected=0.3,days=180", "en") == (
        "their visit pattern predicts only 0.3 visit(s) in the next 180 days"
    )
    assert churn.reason_text("no_visit", "zh_CN") == "入会后从未到店"


# --- Snapshot and export -------------------------------------------------------------------


async def _chain_for_export(db: Database) -> tuple[dict[str, int], set[str]]:
    """A small chain plus a prospect, a member who joins after the day and an erased one;
    returns the ids and the refs that should be counted as of AS_OF."""
    people = [
        *_people(_sim(300, seed=2)),
        ("PROSPECT", AS_OF - timedelta(days=200), []),
        ("LATER", AS_OF + timedelta(days=5), []),
        ("GONE", date(2024, 1, 1), [(date(2024, 2, 1), 30_000, 8)]),
    ]
    ids = await _add(db, people)
    async with db.transaction() as session:
        await privacy.erase(session, ids["GONE"], actor="test", reason="asked")
    live = {ref for ref, joined, visits in people if joined <= AS_OF or visits} - {"GONE"}
    return ids, live


async def test_refresh_writes_one_row_per_live_member_and_drops_the_erased(db: Database) -> None:
    ids, live = await _chain_for_export(db)
    async with db.transaction() as session:
        written = await scores.refresh(session, AS_OF)
    async with db.read() as session:
        rows = {s.member_id: s for s in (await session.scalars(select(MemberScore))).all()}
        fresh = {r.member_id: r for r in await scores.compute(session, AS_OF)}
    assert written == len(rows) == len(fresh) == len(live) > 250
    assert {fresh[ids[ref]].member_ref for ref in live} == live
    assert ids["GONE"] not in rows and ids["LATER"] not in rows
    prospect = rows[ids["PROSPECT"]]
    assert (prospect.rfm_segment, prospect.reasons) == ("prospect", ["no_visit"])
    for member_id, row in rows.items():
        expected = fresh[member_id]
        assert (row.as_of, row.churn_risk, row.rfm_score, row.lifecycle) == (
            AS_OF,
            expected.churn_risk,
            expected.rfm_score,
            expected.lifecycle_stage,
        )
        assert row.reasons == list(expected.reasons)
        assert 0.0 <= row.churn_risk <= 1.0
    victim = next(iter(set(rows) - {ids["PROSPECT"]}))
    async with db.transaction() as session:
        await privacy.erase(session, victim, actor="test", reason="asked")
    async with db.transaction() as session:
        again = await scores.refresh(session, AS_OF)
    async with db.read() as session:
        left = set((await session.scalars(select(MemberScore.member_id))).all())
    assert again == written - 1 and victim not in left


async def test_batched_store_writes_the_same_snapshot(db: Database) -> None:
    ids, _live = await _chain_for_export(db)
    async with db.transaction() as session:
        await scores.refresh(session, AS_OF)  # yesterday's snapshot, with the victim in it
    victim = ids["PROSPECT"]
    async with db.transaction() as session:
        await privacy.erase(session, victim, actor="test", reason="asked")
    async with db.read() as session:
        score_set = await scores.compute(session, AS_OF)

    async def snapshot() -> dict[int, tuple[object, ...]]:
        async with db.read() as session:
            return {
                s.member_id: (s.as_of, s.churn_risk, s.rfm_score, s.stickiness, tuple(s.reasons))
                for s in (await session.scalars(select(MemberScore))).all()
            }

    assert victim in await snapshot()
    batched_count = await scores.store_in_batches(db, score_set, rows_per_commit=7)
    batched = await snapshot()
    assert victim not in batched  # the erased member's old row went with the last batch
    async with db.transaction() as session:
        at_once = await scores.store(session, score_set)
    assert batched_count == at_once == len(batched) and batched == await snapshot()


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(segments_app, name="segments")

    @app.callback()
    def _root() -> None:
        """memberbot (test harness)"""

    return app


async def test_export_writes_the_members_as_of_the_day(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, live = await _chain_for_export(db)
    monkeypatch.setenv(
        "MEMBERBOT_DATABASE_URL", db.engine.url.render_as_string(hide_password=False)
    )
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    out = tmp_path / "segments.csv"
    runner = CliRunner()
    try:
        result = await asyncio.to_thread(
            runner.invoke,
            _cli(),
            [
                "segments",
                "export",
                "--as-of",
                AS_OF.isoformat(),
                "--output",
                str(out),
                "--locale",
                "en",
            ],
        )
        assert result.exit_code == 0, result.output
        assert f"{len(live):,} member(s) as of {AS_OF}" in result.output
        assert "Churn risk: logistic model" in result.output
        future = await asyncio.to_thread(
            runner.invoke,
            _cli(),
            ["segments", "export", "--as-of", "2999-01-01", "-o", str(tmp_path / "x.csv")],
        )
        bad = await asyncio.to_thread(
            runner.invoke, _cli(), ["segments", "export", "--as-of", "yesterday", "-o", "x.csv"]
        )
    finally:
        get_settings.cache_clear()
    assert future.exit_code == 1 and "in the future" in future.output
    assert not (tmp_path / "x.csv").exists()
    assert bad.exit_code == 2
    text = out.read_text(encoding="utf-8-sig")
    assert "Name " not in text and "+86" not in text  # no names, no phones
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(rows[0]) == COLUMNS
    by_ref = {r["member_ref"]: r for r in rows}
    assert set(by_ref) == live and len(rows) == len(live)
    assert by_ref["PROSPECT"]["reasons"] == "never visited since joining"
    assert by_ref["PROSPECT"]["recency_days"] == ""
    async with db.read() as session:
        fresh = {r.member_ref: r for r in await scores.compute(session, AS_OF)}
    for ref, row in by_ref.items():
        expected = fresh[ref]
        assert float(row["churn_risk"]) == pytest.approx(expected.churn_risk, abs=1e-4)
        assert 0.0 <= float(row["churn_risk"]) <= 1.0
        assert row["rfm_segment"] == expected.rfm_segment
        assert row["monetary"] == f"{expected.monetary_cents / 100:.2f}"
        assert row["recency_days"] == (
            "" if expected.recency_days is None else str(expected.recency_days)
        )
    worded = [r["reasons"] for r in rows if r["reasons"]]
    assert any(
        "days past their usual visit interval" in r or "days since their last visit" in r
        for r in worded
    )
