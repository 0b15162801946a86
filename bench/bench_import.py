"""Import benchmark: the CSV exports of a big chain into a fresh database.

Target (issue): importing 1,000,000 visits for 200,000 members on SQLite takes <= 60 s on a
2-core machine with a peak memory <= 400 MB.

The CSVs are generated deterministically (seeded; the visit dates are relative to --until, by
default yesterday) and streamed to disk, then imported the way `memberbot import` does it:
members, vehicles, then visits, each file in one transaction. The figures printed per file are
rows, seconds, rows per second, and the process's peak RSS so far (`resource.getrusage`; the
generator streams, so the peak is the import's). Nothing is asserted: it is a measurement.

    python -m bench.bench_import                          # 200k members, 1M visits, SQLite
    python -m bench.bench_import --members 20000 --visits 100000
    python -m bench.bench_import --database-url postgresql+asyncpg://.../empty_db
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import resource
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from db.session import Database
from domain.csvimport import ImportResult, import_file
from domain.shop import load_shop_config
from memberbot.runtime import prepare

SEED = 20_261_124
OUT_DIR = Path(__file__).resolve().parent / "out"
HISTORY_DAYS = 3 * 365
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 400.0

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
PROVINCES = "京沪粤苏浙川鲁豫鄂湘"
TAGS = ("VIP", "fleet", "新能源", "老客户", "企业")
SERVICES = ("wash", "detailing", "oil_service", "major_service", "tyres", "精致洗车", "打蜡")
PREFIXES = ("133", "135", "136", "137", "138", "139", "150", "152", "158", "177", "186", "189")


def plate(index: int) -> str:
    """A unique plate per index, so a member's cars can be derived instead of remembered."""
    letter, number = divmod(index, 100_000)
    return f"{PROVINCES[letter // 26 % len(PROVINCES)]}{chr(65 + letter % 26)}{number:05d}"


def cars_of(member: int, members: int) -> list[int]:
    """Member k owns car k, and every fifth member a second car."""
    return [member] if member % 5 else [member, members + member // 5]


def member_rows(count: int, rng: random.Random) -> Iterator[list[str]]:
    yield ["member_ref", "name", "phone", "birthday", "store", "tags", "locale", "opening_points"]
    for k in range(count):
        birthday = date(1960, 1, 1) + timedelta(days=rng.randrange(40 * 365))
        yield [
            f"M{k:07d}",
            rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.randint(1, 2))),
            f"{rng.choice(PREFIXES)}{k:08d}",
            "" if k % 4 == 0 else f"{birthday.year}/{birthday.month}/{birthday.day}",
            "main",
            ";".join(rng.sample(TAGS, rng.randint(0, 2))),
            "en" if k % 10 == 0 else "zh_CN",
            str(rng.choice((0, 0, 100, 500))),
        ]


def vehicle_rows(members: int, rng: random.Random) -> Iterator[list[str]]:
    yield ["member_ref", "plate", "make", "model", "mileage_km", "insurance_expiry"]
    makes = (("大众", "帕萨特"), ("丰田", "凯美瑞"), ("比亚迪", "汉"), ("BMW", "530Li"))
    for k in range(members):
        for car in cars_of(k, members):
            make, model = rng.choice(makes)
            expiry = date(2026, 1, 1) + timedelta(days=rng.randrange(365))
            yield [f"M{k:07d}", plate(car), make, model, str(rng.randrange(0, 150_000)),
                   expiry.isoformat()]  # fmt: skip


def visit_rows(
    count: int, members: int, until: date, rng: random.Random, cars: bool = True
) -> Iterator[list[str]]:
    yield ["member_ref", "visited_on", "amount", "visit_ref", "store", "plate", "services",
           "mileage_km", "satisfaction"]  # fmt: skip
    for i in range(count):
        k = rng.randrange(members)
        day = until - timedelta(days=rng.randrange(HISTORY_DAYS))
        cents = rng.choice((4500, 4500, 4500, 48000, 68000, 120000, 158000)) + rng.randrange(100)
        written_day = (
            day.isoformat() if i % 3 else f"{day.year}年{day.month}月{day.day}日"
        )  # fmt: skip
        with_car = cars and i % 2 == 0
        yield [
            f"M{k:07d}",
            written_day,
            f"¥{cents // 100:,}.{cents % 100:02d}" if i % 2 else f"{cents / 100:.2f}",
            f"V{i:08d}" if i % 4 else "",
            "main",
            plate(rng.choice(cars_of(k, members))) if with_car else "",
            ";".join(rng.sample(SERVICES, rng.randint(1, 2))),
            str(rng.randrange(1000, 200_000)) if with_car and i % 3 == 0 else "",
            str(rng.randint(6, 10)) if i % 5 == 0 else "",
        ]


def write_csv(path: Path, rows: Iterator[list[str]]) -> int:
    count = -1
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def generate(
    out: Path, members: int, visits: int, until: date, cars: bool = True
) -> dict[str, Path]:
    files = {kind: out / f"import_{kind}.csv" for kind in ("members", "vehicles", "visits")}
    started = time.perf_counter()
    write_csv(files["members"], member_rows(members, random.Random(SEED)))
    write_csv(files["vehicles"], vehicle_rows(members, random.Random(SEED + 1)))
    write_csv(files["visits"], visit_rows(visits, members, until, random.Random(SEED + 2), cars))
    sizes = ", ".join(f"{k} {p.stat().st_size / 1e6:.0f} MB" for k, p in files.items())
    print(f"generated in {time.perf_counter() - started:.1f} s: {sizes}")
    return files


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fresh_database(url: str) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        for suffix in ("", "-wal", "-shm"):
            Path(parsed.database + suffix).unlink(missing_ok=True)
    db = Database.from_url(url)
    await prepare(db, load_shop_config(None))
    return db


def report(result: ImportResult, seconds: float) -> None:
    print(
        f"{result.kind:>8}: {result.rows_read:>9,} rows in {seconds:6.1f} s = "
        f"{result.rows_read / seconds:>8,.0f} rows/s; created {result.created:,}, "
        f"unchanged {result.unchanged:,}, errors {result.error_count}, "
        f"points {result.points_credited:,}, upgrades {result.tier_upgrades:,}; "
        f"peak RSS {peak_rss_mb():.0f} MB"
    )
    for error in result.errors[:5]:
        print(f"          line {error.line}: {error.reason}")


async def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    files = generate(args.out, args.members, args.visits, args.until, not args.skip_vehicles)
    print(f"peak RSS after generating: {peak_rss_mb():.0f} MB")
    url = args.database_url or f"sqlite+aiosqlite:///{args.out / 'bench_import.db'}"
    db = await fresh_database(url)
    rules = load_shop_config(None).loyalty
    today = args.until + timedelta(days=1)
    seconds: dict[str, float] = {}
    try:
        for kind in ("members", "vehicles", "visits"):
            if kind == "vehicles" and args.skip_vehicles:
                continue
            started = time.perf_counter()
            result = await import_file(db, kind, files[kind], rules, today=today)  # type: ignore[arg-type]
            seconds[kind] = time.perf_counter() - started
            report(result, seconds[kind])
            if not result.written:
                return 1
    finally:
        await db.dispose()
    visits_ok = seconds["visits"] <= TARGET_SECONDS
    rss_ok = peak_rss_mb() <= TARGET_RSS_MB
    print(
        f"visits import {seconds['visits']:.1f} s (target <= {TARGET_SECONDS:.0f} s: "
        f"{'met' if visits_ok else 'MISSED'}); all files {sum(seconds.values()):.1f} s; "
        f"peak RSS {peak_rss_mb():.0f} MB (target <= {TARGET_RSS_MB:.0f} MB: "
        f"{'met' if rss_ok else 'MISSED'})"
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--until", type=date.fromisoformat, default=date.today() - timedelta(1))
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--database-url", default=None, help="default: SQLite under --out")
    parser.add_argument(
        "--skip-vehicles", action="store_true", help="no vehicles file; visits name no plates"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
