"""Lifecycle rules benchmark: one daily run of every shipped rule over a big chain.

Target (issue): selection, rendering and outbox writes of all rules for one day over 1,000,000
members with 1,500,000 cars and 10,000,000 visits take <= 60 s on SQLite on a 2-core machine,
with a peak memory <= 1 GB; PostgreSQL figures too.

The chain is generated deterministically (seeded) and written with bulk inserts in blocks of
members (sqlite3 executemany; COPY on PostgreSQL): members (3 in 4 with a birthday on file, half
with marketing consent, a few erased), one car each and a second for every other member (with
insurance and inspection dates over the coming year), about ten visits per member over three
years at each member's own rhythm (a third of them stop coming at some point), odometer readings
on most visits from each car's own km/day, one points lot per visit with the expiry entries the
nightly job would have written, two weeks of bookings and this morning's tier upgrades.

The measured day is TODAY. Before it, the win-back rule is run once for TODAY - 14 (untimed),
so second offers have first offers to follow, as in a running system. The measurement runs in a
fresh process (so the peak RSS is the run's, not the generator's): `rules.run` for every rule,
per-rule selection / render / write seconds, then a second run of the same day (everything
already there).

    python -m bench.bench_rules                                   # SQLite under bench/out/
    python -m bench.bench_rules --members 100000 --visits 1000000 # a smaller chain
    python -m bench.bench_rules --reuse                           # measure an existing build
    python -m bench.bench_rules --database-url postgresql+asyncpg://.../memberbot_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from db.models import Member, Store
from db.session import Database
from domain.points import add_months
from domain.shop import load_shop_config
from memberbot.runtime import prepare
from scheduler import rules
from scheduler.ruleconfig import load_rules

TODAY = date(2026, 11, 24)
HISTORY_DAYS = 3 * 365
FIRST_DAY = TODAY - timedelta(days=HISTORY_DAYS)
SEED = 20_261_124
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 1024.0
OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_URL = f"sqlite+aiosqlite:///{OUT_DIR / 'bench_rules.db'}"
ZONE = ZoneInfo("Asia/Shanghai")
BLOCK = 20_000
RUN_AT = datetime.combine(TODAY, clock(8, 30), tzinfo=ZONE).astimezone(UTC)

# service code, category, price in cents, weight
SERVICES = (
    ("wash", "wash", 4_500, 60),
    ("detailing", "detailing", 68_000, 5),
    ("oil_service", "maintenance", 48_000, 20),
    ("major_service", "maintenance", 158_000, 4),
    ("tyres", "tyres", 120_000, 5),
    ("repair", "repair", 200_000, 6),
)
MAKES = (("大众", "帕萨特"), ("丰田", "凯美瑞"), ("比亚迪", "汉"), ("BMW", "530Li"))
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"

TABLES: dict[str, tuple[str, ...]] = {
    "member": (
        "id", "member_ref", "name", "phone", "birthday", "locale", "home_store_id", "tier_code",
        "tier_since", "marketing_consent", "consent_at", "consent_source", "created_at",
        "updated_at", "erased_at",
    ),
    "vehicle": (
        "id", "member_id", "plate", "vin", "make", "model", "purchase_date", "insurance_expiry",
        "inspection_due", "created_at",
    ),
    "visit": (
        "id", "visit_ref", "member_id", "store_id", "vehicle_id", "visited_on", "amount_cents",
        "services", "categories", "mileage_km", "satisfaction", "created_at",
    ),
    "mileage_reading": ("vehicle_id", "read_on", "km", "source"),
    "points_entry": (
        "member_id", "kind", "points", "occurred_on", "expires_on", "visit_id", "key", "reason",
        "actor", "created_at",
    ),
    "booking": (
        "member_id", "store_id", "service_code", "vehicle_id", "starts_at", "ends_at", "status",
        "created_at", "source",
    ),
    "tier_change": ("member_id", "from_tier", "to_tier", "reason", "created_at"),
}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it starts afresh at exec,
    so the measuring child does not inherit the generator's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _noon(day: date) -> datetime:
    return datetime.combine(day, clock(4, 0), tzinfo=UTC)


@dataclass
class Rows:
    """One block's rows per table, as tuples in TABLES' column order (Python values)."""

    tables: dict[str, list[tuple[Any, ...]]]


class Generator:
    """The chain, block by block; ids are assigned here so blocks never need the database."""

    def __init__(self, members: int, visits: int, store_ids: list[int]) -> None:
        self.members = members
        self.visits_per_member = visits / members
        self.store_ids = store_ids
        self.rng = random.Random(SEED)
        self.next_visit = 1
        self.services = [s[:3] for s in SERVICES]
        self.weights = [s[3] for s in SERVICES]

    def cars_of(self, member: int) -> list[int]:
        """Member k drives car k; every other member a second car too (1.5 cars a member)."""
        return [member] if member % 2 else [member, self.members + member // 2]

    def block(self, first: int, last: int) -> Rows:
        rng = self.rng
        out: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        for member in range(first, last + 1):
            self._member(member, rng, out)
        return Rows(out)

    def _member(self, k: int, rng: random.Random, out: dict[str, list[tuple[Any, ...]]]) -> None:
        store = self.store_ids[k % len(self.store_ids)]
        joined = _noon(FIRST_DAY)
        birthday = date(1960, 1, 1) + timedelta(days=rng.randrange(40 * 365)) if k % 4 else None
        consent = k % 2 == 0
        erased = _noon(TODAY - timedelta(days=30)) if k % 200 == 0 else None
        out["member"].append(
            (
                k, f"B{k:08d}", rng.choice(SURNAMES) + "先生", None, birthday,
                "en" if k % 5 == 0 else "zh_CN", store, "standard", joined, consent,
                joined if consent else None, "counter" if consent else None, joined, joined,
                erased,
            )
        )  # fmt: skip
        cars = self.cars_of(k)
        rates = {}
        for car in cars:
            make, model = MAKES[car % len(MAKES)]
            rates[car] = (rng.randint(5_000, 60_000), rng.uniform(15, 90))
            out["vehicle"].append(
                (
                    car, k, f"B{car:07d}", None, make, model,
                    FIRST_DAY - timedelta(days=rng.randrange(3_000)),
                    TODAY + timedelta(days=rng.randrange(-30, 365)),
                    TODAY + timedelta(days=rng.randrange(0, 365)),
                    joined,
                )
            )  # fmt: skip
        count = max(1, int(rng.expovariate(1 / self.visits_per_member) + 0.5))
        # A third of the members stop coming at some point of the three years.
        span_end = HISTORY_DAYS if rng.random() > 0.33 else rng.randrange(30, HISTORY_DAYS)
        days = sorted(rng.randrange(span_end) for _ in range(count))
        lots: list[tuple[date, int]] = []
        read: set[tuple[int, date]] = set()
        for offset in days:
            day = FIRST_DAY + timedelta(days=offset)
            if day >= TODAY:
                continue
            code, category, price = rng.choices(self.services, self.weights)[0]
            car = rng.choice(cars)
            base, rate = rates[car]
            km = int(base + rate * (day - FIRST_DAY).days)
            mileage = km if category != "wash" or rng.random() < 0.5 else None
            score = None
            if rng.random() < 0.3:
                score = rng.randint(0, 6) if rng.random() < 0.1 else rng.randint(7, 10)
            amount = price * rng.randint(80, 130) // 100
            visit_id = self.next_visit
            self.next_visit += 1
            out["visit"].append(
                (
                    visit_id, None, k, store, car, day, amount, json.dumps([code]),
                    json.dumps([category]), mileage, score, _noon(day),
                )
            )  # fmt: skip
            if mileage is not None and (car, day) not in read:
                read.add((car, day))
                out["mileage_reading"].append((car, day, mileage, "visit"))
            earned = amount // 100
            expires = add_months(day, 24)
            lots.append((expires, earned))
            out["points_entry"].append(
                (k, "earn", earned, day, expires, visit_id, f"visit:{visit_id}", None, None,
                 _noon(day))
            )  # fmt: skip
        lapsed = sum(points for expires, points in lots if expires < TODAY)
        if lapsed:
            out["points_entry"].append(
                (k, "expire", -lapsed, TODAY, None, None, f"expire:{k}:{TODAY}", None, "system",
                 _noon(TODAY))
            )  # fmt: skip
        if rng.random() < 0.03:  # two weeks of bookings: ~30,000 for a million members
            start = datetime.combine(
                TODAY + timedelta(days=rng.randrange(14)), clock(rng.randrange(9, 18)), ZONE
            ).astimezone(UTC)
            out["booking"].append(
                (k, store, "wash", cars[0], start, start + timedelta(minutes=30), "booked",
                 _noon(TODAY - timedelta(days=3)), "chat")
            )  # fmt: skip
        if rng.random() < 0.0005:  # upgrades recorded this morning
            at = RUN_AT - timedelta(hours=2)
            out["tier_change"].append((k, "standard", "silver", "upgrade", at))
            out["member"][-1] = (*out["member"][-1][:7], "silver", *out["member"][-1][8:])


def _sqlite_value(value: Any) -> Any:
    """What SQLAlchemy would have stored: ISO dates, naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def write_sqlite(path: Path, rows: Rows) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-400000")
        for table, columns in TABLES.items():
            data = rows.tables[table]
            if not data:
                continue
            marks = ",".join("?" * len(columns))
            conn.executemany(
                f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})",
                ([_sqlite_value(v) for v in row] for row in data),
            )


async def write_postgres(dsn: str, rows: Rows) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for table, columns in TABLES.items():
                data = rows.tables[table]
                if data:
                    await conn.copy_records_to_table(table, records=data, columns=list(columns))
    finally:
        await conn.close()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def build(url: str, members: int, visits: int) -> float:
    started = time.perf_counter()
    config = load_shop_config(None)
    db = Database.from_url(url)
    try:
        await prepare(db, config)
        async with db.read() as session:
            store_ids = list((await session.scalars(select(Store.id).order_by(Store.id))).all())
    finally:
        await db.dispose()
    generator = Generator(members, visits, store_ids)
    backend = make_url(url).get_backend_name()
    path = Path(make_url(url).database or "")
    written = {name: 0 for name in TABLES}
    for first in range(1, members + 1, BLOCK):
        block = generator.block(first, min(members, first + BLOCK - 1))
        if backend == "sqlite":
            write_sqlite(path, block)
        else:
            await write_postgres(_asyncpg_dsn(url), block)
        for name, data in block.tables.items():
            written[name] += len(data)
        if (first // BLOCK) % 10 == 0:
            print(
                f"  {min(members, first + BLOCK - 1):>9,} members  {written['visit']:>11,} visits"
                f"  {time.perf_counter() - started:6.0f} s",
                flush=True,
            )
    await _finish(url)
    print("rows: " + ", ".join(f"{name} {count:,}" for name, count in written.items()))
    return time.perf_counter() - started


async def _finish(url: str) -> None:
    """Sequences past the generated ids, statistics gathered, WAL checkpointed."""
    if make_url(url).get_backend_name() == "sqlite":
        with closing(sqlite3.connect(make_url(url).database or "")) as conn:
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    db = Database.from_url(url)
    try:
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("member", "vehicle", "visit"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
            await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await db.dispose()


async def measure(url: str) -> int:
    """One daily run for TODAY after the warm-up, then the same day again; prints the figures."""
    config = load_shop_config(None)
    rule_set = load_rules(None)
    db = Database.from_url(url)
    try:
        async with db.read() as session:
            members = await session.scalar(select(func.count()).select_from(Member))
        print(f"measuring on {db.dialect}: {members:,} members, day {TODAY}")
        started = time.perf_counter()
        warm_day = TODAY - timedelta(days=14)
        warm_now = datetime.combine(warm_day, clock(8, 30), ZONE).astimezone(UTC)
        warm = await rules.run(db, rule_set, warm_day, config, warm_now, rule="win_back")
        print(
            f"warm-up: win_back for {warm_day}: {warm.total().enqueued:,} first offers "
            f"in {time.perf_counter() - started:.1f} s (not counted)"
        )
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        summary = await rules.run(db, rule_set, TODAY, config, RUN_AT)
        seconds = time.perf_counter() - started
        _table(summary)
        rss = peak_rss_mb()
        met = seconds <= TARGET_SECONDS and rss <= TARGET_RSS_MB
        print(
            f"daily run: {seconds:.1f} s, peak RSS {rss:.0f} MB (before the run {rss_before:.0f} "
            f"MB); target <= {TARGET_SECONDS:g} s and <= {TARGET_RSS_MB:g} MB: "
            f"{'MET' if met else 'MISSED'}"
        )
        started = time.perf_counter()
        again = await rules.run(db, rule_set, TODAY, config, RUN_AT + timedelta(hours=1))
        print(
            f"second run of the same day: {time.perf_counter() - started:.1f} s, "
            f"{again.total().enqueued:,} new rows, {again.total().coupons:,} coupons"
        )
        print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    finally:
        await db.dispose()
    return 0 if met else 1


def _table(summary: rules.RunSummary) -> None:
    head = f"{'rule':<18}{'selected':>10}{'queued':>9}{'already':>9}{'coupons':>9}"
    print(head + f"{'select s':>10}{'render s':>10}{'write s':>9}")
    for part in [*summary.rules, summary.total()]:
        print(
            f"{part.rule:<18}{part.selected:>10,}{part.enqueued:>9,}{part.already:>9,}"
            f"{part.coupons:>9,}{part.select_seconds:>10.2f}{part.render_seconds:>10.2f}"
            f"{part.write_seconds:>9.2f}"
        )


def _fresh_default_file(url: str) -> None:
    if url != DEFAULT_URL:
        return
    path = Path(make_url(url).database or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _has_members(url: str) -> bool:
    db = Database.from_url(url)
    try:
        await prepare(db, load_shop_config(None))
        async with db.read() as session:
            return bool(await session.scalar(select(func.count()).select_from(Member)))
    finally:
        await db.dispose()


def main(args: argparse.Namespace) -> int:
    url: str = args.database_url
    print(f"bench_rules: {make_url(url).render_as_string(hide_password=True)}")
    if args.measure_only:
        return asyncio.run(measure(url))
    if not (args.reuse and asyncio.run(_has_members(url))):
        _fresh_default_file(url)
        if asyncio.run(_has_members(url)):
            print("the database already holds members: use --reuse or an empty database")
            return 2
        print(f"building {args.members:,} members, ~{args.visits:,} visits ...")
        seconds = asyncio.run(build(url, args.members, args.visits))
        print(f"build: {seconds:.0f} s, peak RSS {peak_rss_mb():.0f} MB")
    # A fresh process, so the peak RSS printed is the run's alone.
    command = [sys.executable, "-m", "bench.bench_rules", "--measure-only"]
    return subprocess.call([*command, "--database-url", url])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--visits", type=int, default=10_000_000)
    parser.add_argument("--reuse", action="store_true", help="measure the data already there")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
