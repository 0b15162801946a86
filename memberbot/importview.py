"""What `memberbot import` shows: a progress bar on a terminal, then the summary and bad rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from domain.csvimport import ImportResult

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
        task = bar.add_task(escape(path.name), total=path.stat().st_size)
        yield lambda done: bar.update(task, completed=done)


def render(console: Console, result: ImportResult) -> None:
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
        console.print(f"Ignored columns: {names}", markup=False, highlight=False)
    if r.error_count:
        console.print(
            f"[red]Nothing was written: {r.error_count:,} bad row(s).[/red] "
            "Fix them and import the whole file again.",
            highlight=False,
        )
        for error in r.errors[:SHOWN_ERRORS]:
            line = f"  line {error.line}: {error.reason}"
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if r.error_count > SHOWN_ERRORS:
            console.print(f"  … and {r.error_count - SHOWN_ERRORS:,} more.", highlight=False)
    elif r.dry_run:
        console.print("Dry run: every row is good; nothing was written.")
    else:
        console.print("[green]Written.[/green]")
