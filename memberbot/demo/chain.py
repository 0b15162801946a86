"""Building the demo chain: a database of its own, the generated files imported through the real
importer, the members' loyalty activity played through the real use cases, and the summary read
back.

The demo never touches a shop's database: it writes its own SQLite file by default and refuses
any database that holds members or stores it did not create.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import ColumnElement, delete, func, inspect, select
from sqlalchemy.engine import make_url

from db.models import Member, Store
from db.session import Database, create_engine
from domain import csvimport, scores
from domain.errors import InvalidInput
from domain.shop import ShopConfig, load_shop_config
from memberbot import runtime
from memberbot.demo import activity
from memberbot.demo.generator import KINDS, MEMBER_PREFIX, Kind, generate, write_csv
from memberbot.demo.summary import DemoSummary, summarize
from memberbot.settings import load
from scheduler import rules
from scheduler.ruleconfig import load_rules
from scheduler.rules import RunSummary

DEMO_SHOP = Path(__file__).resolve().parents[1] / "data" / "demo_shop.yaml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///memberbot-demo.db"
DEFAULT_MEMBERS = 2000
DEFAULT_SEED = 20240601


class NotADemoDatabase(Exception):
    """The target database holds a shop's own data; the demo refuses to write into it."""


@dataclass(frozen=True)
class DemoOptions:
    """What `memberbot demo` was asked for. `today` pins the calendar (tests do); left out, it is
    the chain's own today."""

    database_url: str = DEFAULT_DATABASE_URL
    members: int = DEFAULT_MEMBERS
    seed: int = DEFAULT_SEED
    fresh: bool = True
    export: Path | None = None
    today: date | None = None


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (relative to the working directory), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def shown_url(url: str) -> str:
    """A database URL fit to print: a password, if any, is replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


async def foreign_data(url: str, demo_stores: set[str]) -> str | None:
    """Why the database at `url` is not the demo's to write, or None when it is.

    A demo database holds only members numbered DEMO-… and only the demo's stores; an empty
    database is fine too. Anything else is a shop's, and the demo must not touch it.
    """
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            if not tables:
                return None
            if not {"member", "store"} <= tables:
                return "it is not a memberbot database"
            others = await conn.scalar(
                select(func.count())
                .select_from(Member)
                .where(Member.member_ref.not_like(f"{MEMBER_PREFIX}%"))
            )
            if others:
                return f"it holds {others} member(s) the demo did not create"
            stores = await conn.scalar(
                select(func.count()).select_from(Store).where(Store.code.not_in(demo_stores))
            )
            if stores:
                return f"it has {stores} store(s) that are not the demo chain's"
    except Exception as exc:  # a file that is not a database at all, a server that says no
        return f"it cannot be opened and read as a memberbot database ({type(exc).__name__})"
    finally:
        await engine.dispose()
    return None


async def prepare_database(url: str, fresh: bool, demo_stores: set[str]) -> None:
    """Refuse a shop's database; with `fresh`, delete an old demo SQLite file.

    Only a SQLite file is ever deleted. A server database that already holds the demo gets the
    same files imported again, which changes nothing because every row has a stable key.
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return
    reason = await foreign_data(url, demo_stores)
    if reason:
        raise NotADemoDatabase(
            f"The demo will not write to {shown_url(url)}: "
            f"{reason}. Pick another --database-url (the default is {DEFAULT_DATABASE_URL})."
        )
    if not fresh or path is None:
        return
    for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)


def export_folder(export: Path) -> Path:
    """The `--export` folder, made if need be and checked before the demo database is touched;
    one that cannot be made or written is a refusal (exit 1) naming it."""
    try:
        export.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidInput(f"cannot write the CSV files to {export}: {reason}") from exc
    if not os.access(export, os.W_OK):
        raise InvalidInput(f"cannot write the CSV files to {export}: permission denied")
    return export


@contextmanager
def csv_folder(export: Path | None) -> Iterator[Path]:
    """The folder the CSV files are written to: kept when the user asked for them."""
    if export is not None:
        yield export_folder(export)
        return
    with tempfile.TemporaryDirectory(prefix="memberbot-demo-") as folder:
        yield Path(folder)


async def import_all(
    db: Database,
    paths: dict[Kind, Path],
    config: ShopConfig,
    today: date,
    region: str,
    console: Console | None,
) -> list[csvimport.ImportResult]:
    """Members, then vehicles, then visits, through the same importer a shop uses."""
    results = []
    with Progress(
        TextColumn("Importing {task.description:<13}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console is None,
    ) as bar:
        for kind in KINDS:
            task = bar.add_task(paths[kind].name, total=paths[kind].stat().st_size)
            result = await csvimport.import_file(
                db,
                kind,
                paths[kind],
                config.loyalty,
                region=region,
                today=today,
                progress=lambda done, task=task: bar.update(task, completed=done),
            )
            results.append(result)
    return results


async def demo_members(db: Database) -> int:
    async with db.read() as session:
        count = select(func.count()).select_from(Member).where(_is_demo_member())
        return int(await session.scalar(count) or 0)


async def clear_demo(db: Database) -> None:
    """Delete the demo's members and, by cascade, their cars, visits and ledgers: how a server
    database is rebuilt, since only a SQLite file can simply be deleted."""
    async with db.transaction() as session:
        await session.execute(delete(Member).where(_is_demo_member()))


def _is_demo_member() -> ColumnElement[bool]:
    return Member.member_ref.like(f"{MEMBER_PREFIX}%")


async def build(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Generate the chain, import it into the demo database, play the members' loyalty activity
    and read back the summary.

    With `fresh=False` an existing demo (and whatever was changed in it since) is kept and
    shown again; nothing is imported into it and no activity is played again.
    """
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    config = load_shop_config(DEMO_SHOP)
    if options.export is not None:
        export_folder(options.export)
    await prepare_database(options.database_url, options.fresh, {s.code for s in config.stores})
    rt = await runtime.start(load(database_url=options.database_url, shop_config=DEMO_SHOP))
    try:
        today = options.today or rt.today()
        kept = not options.fresh and await demo_members(rt.db) > 0
        if options.fresh:
            await clear_demo(rt.db)
        step = time.perf_counter()
        data = generate(rt.config, members=options.members, seed=options.seed, today=today)
        results: list[csvimport.ImportResult] = []
        played: activity.Played | None = None
        lifecycle: RunSummary | None = None
        with csv_folder(options.export) as folder:
            paths = write_csv(data, folder)
            timings["generate"] = time.perf_counter() - step
            if not kept:
                step = time.perf_counter()
                results = await import_all(
                    rt.db, paths, rt.config, today, rt.settings.default_region, console
                )
                timings["import"] = time.perf_counter() - step
        if not kept:
            step = time.perf_counter()
            played = await activity.play(
                rt.db, data, rt.config.loyalty, seed=options.seed, today=today
            )
            timings["loyalty"] = time.perf_counter() - step
            step = time.perf_counter()
            async with rt.db.transaction() as session:
                await scores.refresh(session, today)
            timings["scores"] = time.perf_counter() - step
            step = time.perf_counter()
            lifecycle = await rules.run(rt.db, load_rules(None), today, rt.config)
            timings["rules"] = time.perf_counter() - step
        summary = await summarize(rt, today, data.showcase_ref, options.export)
    finally:
        await rt.db.dispose()
    summary.imports = results
    summary.played = played
    summary.lifecycle = lifecycle
    timings["total"] = time.perf_counter() - clock
    summary.timings = timings
    return summary


def run(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """`build` from synchronous code (the CLI)."""
    return asyncio.run(build(options, console))
