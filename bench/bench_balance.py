"""Read-path benchmark: a member's balance, tier and expiring points on a large ledger.

Target (issue): with 5,000,000 points_entry rows, one staff/member read — `points.summary` plus
`tiers.progress` in one read session, as the chat does it — has p99 <= 5 ms.

The data is generated, deterministic (seeded) and consistent: every member's ledger is simulated
the way the domain writes it (lots expire 24 months after they were earned, debits consume the
soonest-expiring lots first, the daily expiry job writes one entry per member and day), so no
balance is ever negative and nothing is left unexpired that the job would have expired. Rows are
inserted in time order within blocks of members, as a live chain writes them, so a member's
lines are scattered over the table instead of sitting on a few neighbouring pages.

    python -m bench.bench_balance                      # SQLite file under bench/out/
    python -m bench.bench_balance --database-url postgresql+asyncpg://.../memberbot_bench

Exits 1 when the p99 target is missed, 2 when the database already holds other data.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.migrate import upgrade
from db.models import Member, PointsEntry, Store, Visit
from db.session import Database, create_engine
from domain import points, tiers
from domain.shop import ShopConfig, load_shop_config, to_cents
from memberbot.runtime import prepare

TODAY = date(2026, 11, 24)
HISTORY_DAYS = 3 * 365
SEED = 20_261_124
TARGET_P99_MS = 5.0
OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_URL = f"sqlite+aiosqlite:///{OUT_DIR / 'bench_balance.db'}"

MEMBERS_PER_BLOCK = 10_000
ROWS_PER_EXECUTE = 20_000
MAX_ROWS_PER_MEMBER = 3_000

# What a member does on an active day, by weight: pay for a visit (earns a lot), collect a
# bonus (survey, birthday, referral, campaign), or try to buy a reward with points.
EVENT_WEIGHTS = {"visit": 0.21, "bonus": 0.55, "redeem": 0.24}
OPENING_POINTS = (100, 200, 500, 1000)
BONUS_POINTS = (10, 20, 50, 100, 200)
BONUS_REASONS = ("survey", "birthday", "referral", "campaign")
SERVICE_WEIGHTS = {"wash": 8, "detailing": 1, "oil_service": 3, "major_service": 1, "tyres": 1}


@dataclass(frozen=True)
class Catalog:
    """What generated histories draw from: the synced shop, in plain values."""

    store_ids: list[int]
    services: list[tuple[str, str, int]]
    service_weights: list[int]
    reward_costs: list[int]
    tier_thresholds: list[tuple[str, int]]
    rules: points.LoyaltyRules


@dataclass
class History:
    """One member's generated life: visits and ledger lines, not yet given database ids."""

    member_id: int
    joined_on: date
    tier_code: str = "standard"
    visits: list[tuple[date, int, str, str]] = field(default_factory=list)
    entries: list[tuple[str, int, date, date | None, int | None, str | None]] = field(
        default_factory=list
    )


@dataclass
class Ledger:
    """Lots in expiry order plus the entries written so far, replayed the way the domain does."""

    rules: points.LoyaltyRules
    lots: deque[list[Any]] = field(default_factory=deque)
    balance: int = 0
    entries: list[tuple[str, int, date, date | None, int | None, str | None]] = field(
        default_factory=list
    )

    def lapse_before(self, day: date) -> None:
        """What the daily expiry job wrote up to `day`: one entry per expiry date with leftovers."""
        while self.lots and self.lots[0][0] < day:
            expires_on = self.lots[0][0]
            lapsed = 0
            while self.lots and self.lots[0][0] == expires_on:
                lapsed += self.lots.popleft()[1]
            if lapsed > 0:
                self.balance -= lapsed
                run_on = expires_on + timedelta(days=1)
                self.entries.append((points.EXPIRE, -lapsed, run_on, None, None, None))

    def credit(
        self, kind: str, amount: int, day: date, visit: int | None, reason: str | None
    ) -> None:
        expires_on = points.lot_expiry(day, self.rules)
        self.lots.append([expires_on, amount])
        self.balance += amount
        self.entries.append((kind, amount, day, expires_on, visit, reason))

    def debit(self, amount: int, day: date) -> bool:
        if amount > self.balance:
            return False
        self.balance -= amount
        left = amount
        while left:
            lot = self.lots[0]
            take = min(lot[1], left)
            lot[1] -= take
            left -= take
            if lot[1] == 0:
                self.lots.popleft()
        self.entries.append((points.REDEEM, -amount, day, None, None, None))
        return True


def catalog_from(config: ShopConfig, store_ids: list[int]) -> Catalog:
    services = [
        (s.code, s.category, to_cents(s.price))
        for s in config.services
        if s.code in SERVICE_WEIGHTS and s.price > 0
    ]
    return Catalog(
        store_ids=store_ids,
        services=services,
        service_weights=[SERVICE_WEIGHTS[code] for code, _, _ in services],
        reward_costs=sorted(r.points for r in config.rewards),
        tier_thresholds=[(t.code, to_cents(t.threshold)) for t in config.tiers],
        rules=config.loyalty,
    )


def row_budgets(rng: random.Random, members: int, ledger_rows: int) -> list[int]:
    """Ledger lines per member: heavy-tailed (most have a few dozen, fleets have hundreds),
    scaled so they add up to the requested total."""
    raw = [min(rng.lognormvariate(0.0, 1.0), 60.0) for _ in range(members)]
    scale = ledger_rows / sum(raw)
    return [max(1, min(MAX_ROWS_PER_MEMBER, round(x * scale))) for x in raw]


def _replay(
    history: History, events: list[tuple[date, str]], rng: random.Random, catalog: Catalog
) -> None:
    ledger = Ledger(catalog.rules)
    history.visits = []
    if rng.random() < 0.3:
        opening = rng.choice(OPENING_POINTS)
        ledger.credit(points.OPENING, opening, history.joined_on, None, "imported balance")
    for day, kind in events:
        ledger.lapse_before(day)
        if kind == "visit":
            code, category, price = rng.choices(catalog.services, catalog.service_weights)[0]
            amount = price * rng.randint(80, 130) // 100
            history.visits.append((day, amount, code, category))
            earned = points.points_for_spend(amount, catalog.rules, 1000)
            if earned > 0:
                ledger.credit(points.EARN, earned, day, len(history.visits) - 1, None)
        elif kind == "bonus":
            ledger.credit(
                points.EARN, rng.choice(BONUS_POINTS), day, None, rng.choice(BONUS_REASONS)
            )
        else:
            ledger.debit(rng.choice(catalog.reward_costs), day)
    ledger.lapse_before(TODAY + timedelta(days=1))
    history.entries = ledger.entries


def simulate_member(member_id: int, budget: int, rng: random.Random, catalog: Catalog) -> History:
    """A member's history with about `budget` ledger lines (a few more when expiries land late)."""
    span = HISTORY_DAYS if budget > 100 else rng.randint(60, HISTORY_DAYS)
    history = History(member_id=member_id, joined_on=TODAY - timedelta(days=span - 1))
    kinds, weights = list(EVENT_WEIGHTS), list(EVENT_WEIGHTS.values())

    def more(count: int) -> list[tuple[date, str]]:
        return [
            (history.joined_on + timedelta(days=rng.randrange(span)), kind)
            for kind in rng.choices(kinds, weights, k=count)
        ]

    events = more(budget)
    for _ in range(20):
        events.sort(key=lambda event: event[0])
        _replay(history, events, rng, catalog)
        short = budget - len(history.entries)
        if short <= 0:
            break
        events += more(short)
    spend = sum(amount for day, amount, _, _ in history.visits if day >= tiers.window_start(TODAY))
    history.tier_code = [code for code, floor in catalog.tier_thresholds if spend >= floor][-1]
    return history


def _at(day: date, minute: int) -> datetime:
    return datetime.combine(day, clock(1, 0), UTC) + timedelta(minutes=minute % 600)


def block_rows(
    histories: Sequence[History], catalog: Catalog, first_visit_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Member, visit and ledger rows for one block, visits and ledger in time order."""
    members = [
        {
            "id": h.member_id,
            "member_ref": f"B{h.member_id:08d}",
            "name": f"Bench member {h.member_id}",
            "phone": None,
            "birthday": None,
            "locale": "zh_CN" if h.member_id % 5 else "en",
            "home_store_id": catalog.store_ids[h.member_id % len(catalog.store_ids)],
            "tier_code": h.tier_code,
            "tier_since": _at(h.joined_on, h.member_id),
            "marketing_consent": False,
            "consent_at": None,
            "consent_source": None,
            "created_at": _at(h.joined_on, h.member_id),
            "updated_at": _at(h.joined_on, h.member_id),
            "erased_at": None,
        }
        for h in histories
    ]
    order = sorted(
        ((v[0], i, j) for i, h in enumerate(histories) for j, v in enumerate(h.visits)),
        key=lambda item: item[0],
    )
    visit_ids: dict[tuple[int, int], int] = {}
    visits = []
    for offset, (day, i, j) in enumerate(order):
        visit_id = first_visit_id + offset
        visit_ids[i, j] = visit_id
        h = histories[i]
        _, amount, code, category = h.visits[j]
        visits.append(
            {
                "id": visit_id,
                "visit_ref": None,
                "member_id": h.member_id,
                "store_id": catalog.store_ids[h.member_id % len(catalog.store_ids)],
                "vehicle_id": None,
                "visited_on": day,
                "amount_cents": amount,
                "services": [code],
                "categories": [category],
                "mileage_km": None,
                "satisfaction": None,
                "created_at": _at(day, visit_id),
            }
        )
    ledger = []
    for i, h in enumerate(histories):
        for n, (kind, amount, day, expires_on, visit, reason) in enumerate(h.entries):
            visit_id = visit_ids[i, visit] if visit is not None else None
            ledger.append(
                {
                    "member_id": h.member_id,
                    "kind": kind,
                    "points": amount,
                    "occurred_on": day,
                    "expires_on": expires_on,
                    "visit_id": visit_id,
                    "key": _entry_key(h.member_id, n, kind, day, visit_id),
                    "reason": reason,
                    "actor": "system" if kind == points.EXPIRE else None,
                    "created_at": _at(day, h.member_id + n),
                }
            )
    ledger.sort(key=lambda row: row["occurred_on"])
    return members, visits, ledger


def _entry_key(member_id: int, n: int, kind: str, day: date, visit_id: int | None) -> str | None:
    """The idempotency keys the real callers use, so the unique index is as big as in life."""
    if visit_id is not None:
        return f"visit:{visit_id}"
    if kind == points.EXPIRE:
        return f"expire:{member_id}:{day.isoformat()}"
    if kind == points.REDEEM:
        return f"redeem:{member_id}:{n}"
    return None


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), ROWS_PER_EXECUTE):
        yield rows[start : start + ROWS_PER_EXECUTE]


async def _insert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        await conn.execute(insert(table), chunk)


@dataclass
class BuildReport:
    members: int = 0
    visits: int = 0
    ledger_rows: int = 0
    seconds: float = 0.0


async def _prepare_schema(url: str, config: ShopConfig) -> list[int]:
    database = Database.from_url(url)
    try:
        await prepare(database, config)
        async with database.read() as session:
            return list((await session.scalars(select(Store.id).order_by(Store.id))).all())
    finally:
        await database.dispose()


async def _load(
    engine: AsyncEngine, catalog: Catalog, members: int, ledger_rows: int
) -> BuildReport:
    report = BuildReport()
    rng = random.Random(SEED)
    budgets = row_budgets(rng, members, ledger_rows)
    carry = 0
    next_visit_id = 1
    step = max(1, members // 10)
    for first in range(0, members, MEMBERS_PER_BLOCK):
        histories = []
        for index in range(first, min(members, first + MEMBERS_PER_BLOCK)):
            history = simulate_member(index + 1, max(1, budgets[index] + carry), rng, catalog)
            carry += budgets[index] - len(history.entries)
            histories.append(history)
        member_rows, visit_rows, ledger = block_rows(histories, catalog, next_visit_id)
        next_visit_id += len(visit_rows)
        async with engine.begin() as conn:
            await _insert(conn, Member.__table__, member_rows)  # type: ignore[attr-defined]
            await _insert(conn, Visit.__table__, visit_rows)  # type: ignore[attr-defined]
            await _insert(conn, PointsEntry.__table__, ledger)  # type: ignore[attr-defined]
        report.members += len(member_rows)
        report.visits += len(visit_rows)
        report.ledger_rows += len(ledger)
        done = first + len(histories)
        if done // step != first // step or done == members:
            print(f"  {done:>9,} members  {report.ledger_rows:>11,} ledger rows", flush=True)
    return report


async def _finish(engine: AsyncEngine) -> None:
    """Leave the database as a running system would have it: sequences past the ids we chose,
    statistics gathered, WAL checkpointed."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "postgresql":
            for table in ("member", "visit"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
            await conn.execute(text("VACUUM ANALYZE"))
        else:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


async def build(url: str, config: ShopConfig, members: int, ledger_rows: int) -> BuildReport:
    started = time.perf_counter()
    store_ids = await _prepare_schema(url, config)
    catalog = catalog_from(config, store_ids)
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            # A big page cache for the build only: the measurement gets a fresh engine.
            event.listen(engine.sync_engine, "connect", _big_sqlite_cache)
        report = await _load(engine, catalog, members, ledger_rows)
        await _finish(engine)
    finally:
        await engine.dispose()
    report.seconds = time.perf_counter() - started
    return report


def _big_sqlite_cache(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA cache_size=-512000")
    cursor.close()


async def existing_rows(db: Database) -> tuple[int, int]:
    async with db.read() as session:
        has_members = await session.scalar(select(func.count()).select_from(Member))
        has_ledger = await session.scalar(select(func.count()).select_from(PointsEntry))
    return int(has_members or 0), int(has_ledger or 0)


async def describe(db: Database) -> None:
    """What is actually in the tables the read touches."""
    async with db.read() as session:
        members = await session.scalar(select(func.count()).select_from(Member))
        visits = await session.scalar(select(func.count()).select_from(Visit))
        kinds = (
            await session.execute(select(PointsEntry.kind, func.count()).group_by(PointsEntry.kind))
        ).all()
        per_member = sorted(
            (
                await session.scalars(
                    select(func.count()).select_from(PointsEntry).group_by(PointsEntry.member_id)
                )
            ).all()
        )
    total = sum(count for _, count in kinds)
    mix = ", ".join(f"{kind} {count:,}" for kind, count in sorted(kinds))
    print(f"members {members:,}   visits {visits:,}")
    print(f"ledger rows in points_entry: {total:,}  ({mix})")
    if per_member:
        print(
            "ledger rows per member: "
            f"mean {total / len(per_member):.1f}  p50 {_rank(per_member, 50)}  "
            f"p99 {_rank(per_member, 99)}  max {per_member[-1]}"
        )


def _rank(ordered: Sequence[float], percent: float) -> Any:
    """Nearest-rank percentile of already sorted values."""
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


async def read_once(db: Database, member_id: int, rules: points.LoyaltyRules) -> float:
    """One balance-tier-expiry read as the chat does it; returns milliseconds."""
    started = time.perf_counter()
    async with db.read() as session:
        await points.summary(session, member_id, TODAY, rules)
        await tiers.progress(session, member_id, TODAY)
    return (time.perf_counter() - started) * 1000


async def measure(
    db: Database, rules: points.LoyaltyRules, queries: int, warmup: int
) -> list[float]:
    async with db.read() as session:
        member_ids = list((await session.scalars(select(Member.id).order_by(Member.id))).all())
    rng = random.Random(SEED + 1)
    for _ in range(warmup):
        await read_once(db, rng.choice(member_ids), rules)
    return [await read_once(db, rng.choice(member_ids), rules) for _ in range(queries)]


def report_latencies(samples: list[float], warmup: int) -> bool:
    ordered = sorted(samples)
    p99 = _rank(ordered, 99)
    print(
        f"read (points.summary + tiers.progress, one db.read()): {len(ordered):,} queries "
        f"after {warmup} warm-up, as of {TODAY}"
    )
    print(
        f"  mean {sum(ordered) / len(ordered):.3f} ms   p50 {_rank(ordered, 50):.3f} ms   "
        f"p95 {_rank(ordered, 95):.3f} ms   p99 {p99:.3f} ms   max {ordered[-1]:.3f} ms"
    )
    met = p99 <= TARGET_P99_MS
    print(f"  target p99 <= {TARGET_P99_MS:g} ms: {'MET' if met else 'MISSED'}")
    return met


def _fresh_default_file(url: str) -> None:
    """The default SQLite file is ours to throw away; any other database must be empty."""
    if url != DEFAULT_URL:
        return
    path = Path(make_url(url).database or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def main(args: argparse.Namespace) -> int:
    config = load_shop_config(None)
    url: str = args.database_url
    backend = make_url(url).get_backend_name()
    print(f"bench_balance on {backend}: {make_url(url).render_as_string(hide_password=True)}")
    db = Database.from_url(url)
    try:
        reuse = False
        if args.reuse:
            await upgrade(db.engine)
            members, ledger = await existing_rows(db)
            reuse = members > 0 and ledger > 0
        if not reuse:
            await db.dispose()
            _fresh_default_file(url)
            db = Database.from_url(url)
            await upgrade(db.engine)
            members, ledger = await existing_rows(db)
            if members or ledger:
                print("the database already holds members: use --reuse or an empty database")
                return 2
            print(f"building {args.members:,} members and {args.ledger_rows:,} ledger rows ...")
            built = await build(url, config, args.members, args.ledger_rows)
            print(
                f"build: {built.members:,} members, {built.visits:,} visits, "
                f"{built.ledger_rows:,} ledger rows in {built.seconds:.1f} s"
            )
        else:
            print("reusing the data already in the database")
        await describe(db)
        load_before = os.getloadavg()[0]
        samples = await measure(db, config.loyalty, args.queries, args.warmup)
        met = report_latencies(samples, args.warmup)
        print(
            f"  machine load average (1 min) before/after: {load_before:.2f} / "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
    finally:
        await db.dispose()
    return 0 if met else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--ledger-rows", type=int, default=5_000_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--reuse", action="store_true", help="skip the build when the database holds data"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
