"""`memberbot import KIND FILE`: a dealer or POS export into the database, and what it shows.

The file goes in through `domain.csvimport` in one transaction: one bad row and nothing of the
file is written, the bad rows are listed (the first 50) and the command exits 1. A person at a
terminal sees a progress bar over the file's bytes; piped output gets only the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from domain import csvimport
from domain.csvimport import ImportResult
from memberbot import runtime
from memberbot.cli.common import console, run
from memberbot.staffview import plain

SHOWN_ERRORS = 50
ENCODINGS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "gb18030": "GBK", "utf-16": "UTF-16"}


@contextmanager
def progress_bar(console: Console, path: Path) -> Iterator[Callable[[int], None] | None]:
    """A bar over the file's bytes when a person is watching; nothing when output is piped."""
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("Importing {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(plain(path.name).markup, total=path.stat().st_size)
        yield lambda done: bar.update(task, completed=done)


def render(console: Console, result: ImportResult) -> None:
    """The counts, the columns the file had that nobody reads, and the bad rows if any."""
    r = result
    encoding = f" ({ENCODINGS.get(r.encoding, r.encoding)})" if r.encoding else ""
    console.print(
        f"{r.kind}{encoding}: {r.rows_read:,} rows read: {r.created:,} created, "
        f"{r.updated:,} updated, {r.unchanged:,} unchanged.",
        markup=False,
        highlight=False,
    )
    if r.points_credited or r.tier_upgrades:
        console.print(
            f"{r.points_credited:,} points credited, {r.tier_upgrades:,} tier upgrade(s).",
            highlight=False,
        )
    if r.ignored_columns:
        names = ", ".join(r.ignored_columns)
        console.print(plain(f"Ignored columns: {names}"), highlight=False)
    if r.error_count:
        console.print(
            f"[red]Nothing was written: {r.error_count:,} bad row(s).[/red] "
            "Fix them and import the whole file again.",
            highlight=False,
        )
        for error in r.errors[:SHOWN_ERRORS]:
            line = f"  line {error.line}: {error.reason}"
            console.print(plain(line), highlight=False, soft_wrap=True)
        if r.error_count > SHOWN_ERRORS:
            console.print(f"  … and {r.error_count - SHOWN_ERRORS:,} more.", highlight=False)
    elif r.dry_run:
        console.print("Dry run: every row is good; nothing was written.")
    else:
        console.print("[green]Written.[/green]")


class ImportKind(StrEnum):
    """The three exports a shop brings, by what one row describes."""

    members = "members"
    vehicles = "vehicles"
    visits = "visits"


def import_(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV export, UTF-8 or GBK.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count only.")] = False,
    no_points: Annotated[bool, typer.Option("--no-points", help="Credit no points.")] = False,
) -> None:
    """Import a dealer or POS export. One bad row and nothing of the file is written."""

    async def work(rt: runtime.Runtime) -> ImportResult:
        with progress_bar(console, file) as progress:
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
    render(console, result)
    if result.error_count:
        raise typer.Exit(1)
