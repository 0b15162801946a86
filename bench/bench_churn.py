"""Churn models compared on histories held out in time, and churn scoring at scale.

Every candidate sees only the history up to the as-of day (the calibration period) and ranks the
members who had visited by then; the label is "no visit in the holdout window" (churned), and
the figure is the AUC of the risk against it (0.5 = chance, 1 = perfect; a score that ranks
returners as risky falls below 0.5). Candidates:

    recency              days since the last visit
    bgnbd_p_alive        1 - BG/NBD P(alive)
    bgnbd_expected       minus BG/NBD expected visits in the holdout
    pareto_p_alive       1 - Pareto/NBD P(alive)
    pareto_expected      minus Pareto/NBD expected visits in the holdout
    pareto_no_visit      Pareto/NBD P(no visit in the horizon): domain.churn's BTYD-only mode
    trained              domain.churn's logistic model on the shop's earlier history, no BTYD
    blend                the same with the Pareto/NBD expected-visits feature (the default)

Data sets:

(a) CDNOW (the 2,357-customer sample and the full 23,570-customer master file shipped inside the
    `lifetimes` wheel; read as files, the package is never imported): 39 weeks of calibration
    to 1997-09-30, 39 weeks of holdout, as in Fader, Hardie & Lee (2005). The trained model's
    label horizon must fit inside the calibration period (the cohort first bought in Q1 1997),
    so it is trained with H = 91 days (features as of 1997-07-01).
(b) A simulated chain (tests/support/churn_sim.py) with latent drop-out days, so AUC is also
    reported against the truth ("had dropped out by the as-of day"); once with satisfaction
    driving drop-out and once without.
(c) The demo chain (memberbot.demo.generator), held out for its last 180 days.

Scale (--members N, default 1,000,000): a SQLite file of simulated members and visits written
with plain executemany, then `domain.churn.assess` timed (wall clock, peak RSS).

    python -m bench.bench_churn                 # everything; the 1M-member part takes minutes
    python -m bench.bench_churn --skip-scale    # AUC tables only
    python -m bench.bench_churn --members 200000 --reuse
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from scipy import stats

from db.session import Database
from domain import churn, scores
from domain.btyd import fit_bgnbd, fit_pareto_nbd
from domain.churn import ChurnConfig, History
from domain.csvparse import parse_amount
from domain.shop import load_shop_config
from memberbot.demo import DEFAULT_SEED
from memberbot.demo.generator import generate
from memberbot.runtime import prepare
from tests.support.churn_sim import SimOptions, simulate, truly_gone

OUT_DIR = Path(__file__).resolve().parent / "out"
CDNOW_END = date(1997, 9, 30)
CDNOW_HOLDOUT_END = date(1998, 6, 30)
Visits = Sequence[Sequence[tuple[date, int, int | None]]]


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance a random positive scores above a random negative."""
    positive = np.asarray(positive, dtype=bool)
    ranks = stats.rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def candidates(
    ids: Sequence[int], visits: Visits, as_of: date, holdout_days: int, config: ChurnConfig
) -> tuple[dict[str, np.ndarray], History]:
    """Every candidate's risk for the members who had visited by `as_of` (higher = churn)."""
    now = churn.history_from_visits(ids, visits, as_of)
    then_day = as_of - timedelta(days=config.horizon_days)
    then = churn.history_from_visits(ids, visits, then_day)
    visitors = now.take(now.visited)
    x, t_x, T = visitors.btyd_summary()
    weeks = holdout_days / 7
    bg = fit_bgnbd(x, t_x, T)
    pareto = fit_pareto_nbd(x, t_x, T)
    scores = {
        "recency": visitors.last_age,
        "bgnbd_p_alive": 1 - bg.p_alive(x, t_x, T),
        "bgnbd_expected": -bg.expected_purchases(weeks, x, t_x, T),
        "pareto_p_alive": 1 - pareto.p_alive(x, t_x, T),
        "pareto_expected": -pareto.expected_purchases(weeks, x, t_x, T),
        "pareto_no_visit": churn.btyd_no_visit(pareto, visitors, holdout_days),
    }
    for name, use_btyd in (("trained", False), ("blend", True)):
        cfg = replace(config, use_btyd=use_btyd)
        model = churn.train(then, now, cfg)
        assessed = churn.assess_history(now, model, cfg)
        if model.method != churn.TRAINED:
            print(f"  {name}: {model.note}")
        scores[name] = assessed.risk[now.visited]
    return scores, visitors


def holdout_label(visits: Visits, visitors: History, ids: Sequence[int], as_of: date, end: date):
    """Churned: no visit after `as_of` up to `end`, for the members in `visitors`."""
    position = {member_id: i for i, member_id in enumerate(ids)}
    return np.array(
        [
            not any(as_of < v[0] <= end for v in visits[position[int(member_id)]])
            for member_id in visitors.member_id
        ]
    )


def table(title: str, rows: dict[str, dict[str, float]], counts: str) -> None:
    columns = list(next(iter(rows.values())))
    print(f"\n{title} ({counts})")
    print(f"  {'candidate':<17}" + "".join(f"{c:>20}" for c in columns))
    for name, figures in rows.items():
        print(f"  {name:<17}" + "".join(f"{figures[c]:>20.3f}" for c in columns))


def evaluate(
    title: str,
    ids: Sequence[int],
    visits: Visits,
    as_of: date,
    end: date,
    config: ChurnConfig,
    truth: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    started = time.perf_counter()
    scores, visitors = candidates(ids, visits, as_of, (end - as_of).days, config)
    label = holdout_label(visits, visitors, ids, as_of, end)
    rows: dict[str, dict[str, float]] = {}
    for name, score in scores.items():
        rows[name] = {"AUC (no visit)": auc(score, label)}
        if truth is not None:
            rows[name]["AUC (truly gone)"] = auc(score, truth)
    counts = (
        f"{len(visitors):,} members, {label.mean():.0%} churned in holdout, "
        f"{time.perf_counter() - started:.1f} s"
    )
    table(title, rows, counts)
    return rows


# --- (a) CDNOW -----------------------------------------------------------------------------


def cdnow_dir() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return path if (path / "CDNOW_sample.txt").exists() else None


def cdnow(path: Path) -> tuple[list[int], list[list[tuple[date, int, int | None]]]]:
    """Per customer, (day, cents, no score) per purchase line of a CDNOW text file."""
    by_customer: dict[int, list[tuple[date, int, int | None]]] = {}
    with path.open() as fh:
        for line in fh:
            fields = line.split()
            if not fields[-1][0].isdigit():
                continue  # the master file's header
            day = datetime.strptime(fields[-3], "%Y%m%d").date()
            cents = round(float(fields[-1]) * 100)
            by_customer.setdefault(int(fields[-4]), []).append((day, cents, None))
    ids = sorted(by_customer)
    return ids, [by_customer[k] for k in ids]


def bench_cdnow() -> None:
    folder = cdnow_dir()
    if folder is None:
        print("\n(a) CDNOW: not found (pip install --no-deps lifetimes==0.11.3)")
        return
    for name in ("CDNOW_sample.txt", "CDNOW_master.txt"):
        ids, visits = cdnow(folder / name)
        for horizon in (91, 182):
            evaluate(
                f"(a) CDNOW {name}, 39 + 39 weeks, trained with H = {horizon} days",
                ids,
                visits,
                CDNOW_END,
                CDNOW_HOLDOUT_END,
                ChurnConfig(horizon_days=horizon),
            )


# --- (b) simulated chain -------------------------------------------------------------------


def bench_simulated(members: int) -> None:
    as_of = date(2025, 12, 31)
    end = as_of + timedelta(days=180)
    for matters in (True, False):
        sim = simulate(SimOptions(members=members, end=end, satisfaction_matters=matters))
        ids = list(range(1, len(sim) + 1))
        visits = [m.visits for m in sim]
        now = churn.history_from_visits(ids, visits, as_of)
        truth = truly_gone([m for m, v in zip(sim, now.visited, strict=True) if v], as_of)
        evaluate(
            f"(b) simulated chain, satisfaction {'drives' if matters else 'does not drive'} "
            f"drop-out, as of {as_of}, 180-day holdout",
            ids,
            visits,
            as_of,
            end,
            ChurnConfig(horizon_days=180),
            truth,
        )


# --- (c) demo chain ------------------------------------------------------------------------


def bench_demo(members: int) -> None:
    """The demo generator's chain (personas, lapsers who stopped 6-18 months ago), as of 180
    days before its last day."""
    today = date(2026, 11, 24)
    data = generate(load_shop_config(None), members=members, seed=DEFAULT_SEED, today=today)
    refs = [row["member_ref"] for row in data.members]
    position = {ref: i for i, ref in enumerate(refs)}
    visits: list[list[tuple[date, int, int | None]]] = [[] for _ in refs]
    for row in data.visits:
        score = int(row["satisfaction"]) if row["satisfaction"] else None
        visits[position[row["member_ref"]]].append(
            (date.fromisoformat(row["visited_on"]), parse_amount(row["amount"]), score)
        )
    as_of = today - timedelta(days=180)
    evaluate(
        f"(c) demo chain ({members:,} members), as of {as_of}, 180-day holdout",
        list(range(1, len(refs) + 1)),
        visits,
        as_of,
        today,
        ChurnConfig(horizon_days=180),
    )


# --- Scale -----------------------------------------------------------------------------------

SCALE_TODAY = date(2026, 11, 24)
SCALE_DAYS = 3 * 365


def _stamp(day: date) -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite."""
    return f"{day.isoformat()} 12:00:00.000000"


def build_scale_db(path: Path, members: int, seed: int = 20_261_124) -> int:
    """Members and visits drawn in numpy (cadence, regularity and drop-out per member, as in
    the simulation) and written with executemany; returns the number of visits."""
    asyncio.run(_prepare(path))
    rng = np.random.default_rng(seed)
    start = SCALE_TODAY - timedelta(days=SCALE_DAYS)
    joined = rng.integers(0, SCALE_DAYS - 30, members)
    cadence = np.clip(rng.lognormal(np.log(60), 0.6, members), 7, 300)
    end = np.minimum(joined + rng.exponential(rng.lognormal(np.log(700), 0.6, members)), SCALE_DAYS)
    count = np.clip(((end - joined) / cadence).astype(np.int64) + 1, 1, 80)
    owner = np.repeat(np.arange(members), count)
    gaps = rng.gamma(3.0, np.repeat(cadence, count) / 3.0)
    firsts = np.cumsum(count) - count
    gaps[firsts] = 0.0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[firsts], count)
    day = np.repeat(joined, count) + offsets.astype(np.int64)
    keep = day <= np.repeat(end, count)
    owner, day = owner[keep], day[keep]
    cents = (np.round(rng.lognormal(np.log(150), 0.8, owner.size)) * 100).astype(np.int64)
    rated = rng.random(owner.size) < 0.6
    score = rng.choice(
        np.arange(3, 11), owner.size, p=[0.02, 0.02, 0.03, 0.05, 0.08, 0.15, 0.28, 0.37]
    )
    days = [(start + timedelta(days=int(d))) for d in range(SCALE_DAYS + 1)]
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = _stamp(SCALE_TODAY)
    con.executemany(
        "INSERT INTO member (id, member_ref, name, locale, tier_code, tier_since,"
        " marketing_consent, created_at, updated_at) VALUES (?, ?, '', 'zh_CN', 'standard',"
        " ?, 0, ?, ?)",
        ((i + 1, f"B{i:07d}", now, _stamp(days[joined[i]]), now) for i in range(members)),
    )
    con.executemany(
        "INSERT INTO visit (member_id, visited_on, amount_cents, satisfaction, services,"
        " categories, created_at) VALUES (?, ?, ?, ?, '[]', '[]', ?)",
        (
            (int(owner[k]) + 1, days[day[k]].isoformat(), int(cents[k]),
             int(score[k]) if rated[k] else None, now)
            for k in range(owner.size)
        ),
    )  # fmt: skip
    messaged = rng.choice(members, members // 20, replace=False)
    con.executemany(
        "INSERT INTO outbox_message (idempotency_key, member_id, rule, category, template_key,"
        " locale, context, status, not_before, attempts, sent_at, created_at)"
        " VALUES (?, ?, 'winback', 'marketing', 'winback', 'zh_CN', '{}', 'sent', ?, 1, ?, ?)",
        (
            (f"winback:{m}", int(m) + 1, stamp, stamp, stamp)
            for m in messaged
            for stamp in [_stamp(SCALE_TODAY - timedelta(days=int(rng.integers(1, 120))))]
        ),
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return int(owner.size)


async def _prepare(path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{path}")
    try:
        await prepare(database, load_shop_config(None))
    finally:
        await database.dispose()


def peak_rss_mb() -> float:
    """VmHWM: the peak resident size of this process image (ru_maxrss would carry over the
    parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _score(path: Path, refresh: bool) -> None:
    """Run in a fresh process so its peak RSS is the scoring's own."""
    database = Database.from_url(f"sqlite+aiosqlite:///{path}")
    before = peak_rss_mb()
    config = ChurnConfig()
    async with database.read() as session:
        started = time.perf_counter()
        now = await churn.history(session, SCALE_TODAY)
        read_now = time.perf_counter()
        stride = max(1, -(-len(now) // config.train_sample))
        then_day = SCALE_TODAY - timedelta(days=config.horizon_days)
        then = await churn.history(session, then_day, stride=stride)
        read_then = time.perf_counter()
    model = churn.train(then, now, config)
    trained = time.perf_counter()
    result = churn.assess_history(now, model, config)
    scored = time.perf_counter()
    codes = [";".join(r.code for r in result.reasons(i)) for i in range(len(result.risk))]
    worded = time.perf_counter()
    print(
        f"  churn scoring of {len(now):,} members: {worded - started:.1f} s = read as of D "
        f"{read_now - started:.1f} + read as of D-H (1 in {stride}) {read_then - read_now:.1f}"
        f" + train {trained - read_then:.1f} + score {scored - trained:.1f} + reason codes "
        f"for all {worded - scored:.1f} ({sum(map(bool, codes)):,} with a reason); "
        f"peak RSS {peak_rss_mb():.0f} MB (process start {before:.0f} MB)"
    )
    print(f"  model: {result.note}")
    if refresh:
        started = time.perf_counter()
        async with database.transaction() as session:
            written = await scores.refresh(session, SCALE_TODAY)
        print(
            f"  scores.refresh (segments + churn + upsert): {written:,} rows in "
            f"{time.perf_counter() - started:.1f} s, peak RSS {peak_rss_mb():.0f} MB"
        )
    await database.dispose()


def bench_scale(members: int, reuse: bool, refresh: bool) -> None:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"bench_churn_{members}.db"
    print(f"\nScale: {members:,} members on SQLite ({path.name})")
    if not (reuse and path.exists()):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        started = time.perf_counter()
        visits = build_scale_db(path, members)
        print(f"  built: {visits:,} visits in {time.perf_counter() - started:.0f} s")
    command = [sys.executable, "-m", "bench.bench_churn", "--score-db", str(path)]
    subprocess.run([*command, *(["--refresh"] if refresh else [])], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sim-members", type=int, default=20_000)
    parser.add_argument("--demo-members", type=int, default=3_000)
    parser.add_argument("--members", type=int, default=1_000_000, help="scale test size")
    parser.add_argument("--reuse", action="store_true", help="keep an existing scale database")
    parser.add_argument("--refresh", action="store_true", help="also time scores.refresh")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--only-scale", action="store_true")
    parser.add_argument("--score-db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_db:
        asyncio.run(_score(args.score_db, args.refresh))
        return
    if not args.only_scale:
        bench_cdnow()
        bench_simulated(args.sim_members)
        bench_demo(args.demo_members)
    if not args.skip_scale:
        bench_scale(args.members, args.reuse, args.refresh)


if __name__ == "__main__":
    main()
