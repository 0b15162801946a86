"""The `memberbot` command. Each command is a thin shell over a domain use case."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from domain import csvimport, members, points, profiles, tiers
from domain.errors import ConfigError, DomainError
from memberbot import demo as demo_chain
from memberbot import importview, runtime, staffview

T = TypeVar("T")

app = typer.Typer(help="memberbot: member engagement for car service chains.", no_args_is_help=True)
member_app = typer.Typer(help="Look up members.", no_args_is_help=True)
points_app = typer.Typer(help="Points ledger operations.", no_args_is_help=True)
app.add_typer(member_app, name="member")
tiers_app = typer.Typer(help="Membership tiers.", no_args_is_help=True)
app.add_typer(points_app, name="points")
app.add_typer(tiers_app, name="tiers")
console = Console()
err = Console(stderr=True)


def run(work: Callable[[runtime.Runtime], Awaitable[T]]) -> T:
    """Start the runtime, run one unit of work, and turn domain errors into clear exits."""

    async def _main() -> T:
        rt = await runtime.start()
        try:
            return await work(rt)
        finally:
            await rt.db.dispose()

    with clear_errors():
        return asyncio.run(_main())


@contextmanager
def clear_errors(*refusals: type[Exception]) -> Iterator[None]:
    """A configuration problem exits 2 with every (file, key, reason); a refused request exits
    1 with its message. Never a stack trace for what the user can fix."""
    try:
        yield
    except ConfigError as exc:
        err.print("The shop configuration has problems:", style="red")
        for file, key, reason in exc.problems:
            err.print(f"  {file}: {key}: {reason}", markup=False)
        raise typer.Exit(2) from exc
    except (DomainError, *refusals) as exc:
        err.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from exc


@app.command()
def init() -> None:
    """Create or migrate the database and sync the shop configuration into it."""

    async def work(rt: runtime.Runtime) -> None:
        console.print(
            f"Database ready ({rt.db.dialect}); {len(rt.config.stores)} store(s), "
            f"{len(rt.config.services)} service(s), {len(rt.config.tiers)} tier(s) synced."
        )

    run(work)


@member_app.command("show")
def member_show(
    query: Annotated[str, typer.Argument(help="Phone, plate or member number.")],
) -> None:
    """The staff view of one member: profile, cars, visits, balances, tier."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            member = await members.find(session, query, rt.settings.default_region)
            view = await profiles.profile(session, member, rt.today(), rt.config.loyalty)
        staffview.render(console, view)

    run(work)


# Lets "-200" through as the delta instead of reading it as an unknown option.
@points_app.command("adjust", context_settings={"ignore_unknown_options": True})
def points_adjust(
    query: Annotated[str, typer.Argument(help="Phone, plate or member number.")],
    delta: Annotated[int, typer.Argument(help="Points to add (positive) or take (negative).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option(help="Who is making the change.")] = "cli",
) -> None:
    """Correct a member's points by hand. Needs a reason; never takes the balance below 0."""

    async def work(rt: runtime.Runtime) -> None:
        today = rt.today()
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await points.adjust(
                session, member.id, delta, today, rt.config.loyalty, reason=reason, actor=actor
            )
            new_balance = await points.balance(session, member.id)
        console.print(f"{member.member_ref}: {delta:+d} points, balance now {new_balance}.")

    run(work)


AsOf = Annotated[
    str | None, typer.Option("--date", help="Business day, YYYY-MM-DD; default today.")
]


def _as_of(rt: runtime.Runtime, text: str | None) -> date:
    if text is None:
        return rt.today()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        message = f"{text!r} is not a date like 2026-03-05"
        raise typer.BadParameter(message, param_hint="--date") from exc


@points_app.command("expire")
def points_expire(as_of: AsOf = None) -> None:
    """Expire points whose lots lapsed before the day (the nightly job, run by hand)."""

    async def work(rt: runtime.Runtime) -> None:
        day = _as_of(rt, as_of)
        async with rt.db.transaction() as session:
            expired = await points.expire(session, day)
        console.print(f"{expired:,} points expired as of {day}.")

    run(work)


@tiers_app.command("review")
def tiers_review(as_of: AsOf = None) -> None:
    """Move every member to the tier their last 12 months of spend earns, up or down."""

    async def work(rt: runtime.Runtime) -> None:
        day = _as_of(rt, as_of)
        async with rt.db.transaction() as session:
            moved = await tiers.review(session, day)
        console.print(f"{moved:,} member(s) changed tier at the review of {day}.")

    run(work)


class ImportKind(StrEnum):
    members = "members"
    vehicles = "vehicles"
    visits = "visits"


@app.command("import")
def import_(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV export, UTF-8 or GBK.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count only.")] = False,
    no_points: Annotated[bool, typer.Option("--no-points", help="Credit no points.")] = False,
) -> None:
    """Import a dealer or POS export. One bad row and nothing of the file is written."""

    async def work(rt: runtime.Runtime) -> csvimport.ImportResult:
        with importview.progress_bar(console, file) as progress:
            return await csvimport.import_file(
                rt.db,
                kind.value,
                file,
                rt.config.loyalty,
                dry_run=dry_run,
                earn_points=not no_points,
                region=rt.settings.default_region,
                progress=progress,
                today=rt.today(),
            )

    result = run(work)
    importview.render(console, result)
    if result.error_count:
        raise typer.Exit(1)


@app.command()
def demo(
    members: Annotated[
        int, typer.Option(min=1, help="How many members to generate.")
    ] = demo_chain.DEFAULT_MEMBERS,
    seed: Annotated[
        int, typer.Option(help="The same seed builds the same chain.")
    ] = demo_chain.DEFAULT_SEED,
    database_url: Annotated[
        str, typer.Option(help="Where the demo goes; a shop's own database is refused.")
    ] = demo_chain.DEFAULT_DATABASE_URL,
    fresh: Annotated[
        bool,
        typer.Option("--fresh/--keep", help="Rebuild the demo SQLite file, or import on top."),
    ] = True,
    export: Annotated[
        str | None, typer.Option(help="Keep the generated CSV files in this folder.")
    ] = None,
) -> None:
    """Build a demo chain (3 stores, members, cars, 3 years of visits) and show around it."""
    options = demo_chain.DemoOptions(
        database_url=database_url,
        members=members,
        seed=seed,
        fresh=fresh,
        export=Path(export) if export else None,
    )
    with clear_errors(demo_chain.NotADemoDatabase):
        summary = demo_chain.run(options, console)
    demo_chain.render(console, summary)
