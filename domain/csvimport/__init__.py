"""Importing a shop's CSV exports (members, vehicles, visits) in one all-or-nothing transaction.

The file is read once, as a stream, in chunks of a few thousand rows. For each chunk the rows it
names (members, stores, vehicles, earlier visits) are looked up with one `IN (...)` query each,
and what is new or changed is written with one executemany per table. Memory therefore depends
on the chunk size, never on the file's.

Every bad row is collected with its line number and reason and the import goes on to the end, so
the shop sees every mistake at once; then, if any row was bad (or on a dry run), the whole
transaction is rolled back and nothing of the file is written. A header that lacks a required
column is reported as a RowError on line 1 (no exception), like any other bad row.

Importing the same file again changes nothing: members are matched by `member_ref`, vehicles by
plate, visits by `visit_ref` or, without one, by member, day and amount. A row that repeats an
earlier row of the same file is matched against it the same way.

This module is the entry point (`import_file`) and the loop that hands the file, chunk by chunk,
to the importer of its kind. What an import does to each kind is said, and done, in that kind's
module: `members`, `vehicles`, `visits`. What they share (the result, the run's context, the
Importer base class, the fast paths that look up and write a chunk) is in `common`. Reading the
file (encodings, headers, cells, chunks) is `domain.csvparse`'s, which needs no database.

On SQLite the whole import holds the database's write lock: other writers wait for it (up to
their busy timeout), so large files are best imported outside opening hours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.session import Database
from domain import audit, csvparse
from domain.csvimport.common import ACTOR, MAX_ERRORS_KEPT, Importer, ImportResult, Run
from domain.csvimport.members import MembersImporter
from domain.csvimport.vehicles import VehiclesImporter
from domain.csvimport.visits import VisitsImporter
from domain.csvparse import RowContext, RowError
from domain.shop import LoyaltyRules

__all__ = [
    "CHUNK_ROWS",
    "MAX_ERRORS_KEPT",
    "ImportKind",
    "ImportResult",
    "RowError",
    "import_file",
]

ImportKind = Literal["members", "vehicles", "visits"]

CHUNK_ROWS = 5_000  # rows per chunk; read here at each import, so a test may change it
SQLITE_CACHE_KIB = 64 * 1024

_IMPORTERS: dict[str, Callable[[Run], Importer]] = {
    "members": MembersImporter,
    "vehicles": VehiclesImporter,
    "visits": VisitsImporter,
}


class _Rollback(Exception):
    """Raised inside the transaction to undo it: the file had bad rows, or it is a dry run."""


async def import_file(
    db: Database,
    kind: ImportKind,
    path: Path,
    rules: LoyaltyRules,
    *,
    dry_run: bool = False,
    earn_points: bool = True,
    region: str = "CN",
    progress: Callable[[int], None] | None = None,
    today: date | None = None,
) -> ImportResult:
    """Import one CSV export; nothing is written unless every row is good and it is no dry run.

    `progress` is called after each chunk with the number of bytes of the file read so far
    (compare with the file's size). `today` is the business day that dates opening points and
    mileage readings and bounds visit dates; by default the first store's local date. Bad rows
    never raise: they are in the result. A missing file raises OSError.
    """
    result = ImportResult(kind=kind, dry_run=dry_run)
    try:
        with csvparse.open_table(path, kind) as table:
            result.encoding = table.encoding
            result.ignored_columns = list(table.header.ignored)
            try:
                async with db.transaction() as session, _roomy_cache(session):
                    run = await Run.start(session, rules, result, today, earn_points, region)
                    await _import_rows(run, table, progress)
                    await _record(run, path)
                    if result.error_count or dry_run:
                        raise _Rollback
            except _Rollback:
                pass
            else:
                result.written = True
    except csvparse.HeaderError as exc:
        result.add_error(RowError(1, str(exc)))
    return result


@asynccontextmanager
async def _roomy_cache(session: AsyncSession) -> AsyncIterator[None]:
    """A bigger SQLite page cache for the import's connection, put back afterwards.

    Indexes keyed by member take random inserts; with SQLite's default 2 MB cache, pages are
    spilled to the WAL and rewritten many times over. This changes speed and memory only, never
    durability.
    """
    if session.bind.dialect.name != "sqlite":
        yield
        return
    previous = int(await session.scalar(text("PRAGMA cache_size")) or -2000)
    restore = text(f"PRAGMA cache_size={previous}")
    await session.execute(text(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}"))
    try:
        yield
    except BaseException:
        # Never let the clean-up hide why the import stopped.
        with suppress(SQLAlchemyError):
            await session.execute(restore)
        raise
    await session.execute(restore)


async def _import_rows(
    run: Run, table: csvparse.CsvTable, progress: Callable[[int], None] | None
) -> None:
    """Hand the file to the kind's importer chunk by chunk, bad rows reported in line order.

    Rows of a chunk never repeat a key (see csvparse.chunks), so a repeated row is compared
    with the database after its twin was written: it is unchanged or an update, never a second
    insert.
    """
    importer = _IMPORTERS[table.kind](run)
    await importer.prepare()
    ctx = RowContext(today=run.today, region=run.region)
    for chunk in csvparse.chunks(table, ctx, importer.keys, CHUNK_ROWS):
        run.result.rows_read += chunk.records
        if chunk.rows:
            await importer.write(chunk.rows)
        for error in sorted(chunk.errors + run.take_errors(), key=lambda e: e.line):
            run.result.add_error(error)
        if progress:
            progress(chunk.bytes_read)
    await importer.finish()


async def _record(run: Run, path: Path) -> None:
    r = run.result
    await audit.record(
        run.session,
        actor=ACTOR,
        action=f"import.{r.kind}",
        entity="file",
        entity_id=None,
        detail={
            "file": path.name,
            "rows_read": r.rows_read,
            "created": r.created,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "points_credited": r.points_credited,
            "tier_upgrades": r.tier_upgrades,
        },
    )
