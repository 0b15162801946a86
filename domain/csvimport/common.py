"""What every kind of CSV import shares: the result it reports, the context of one run, the
Importer base class each kind implements, and the fast paths that look up and write a chunk.

Invariants:
* nothing here commits or rolls back: `domain.csvimport.import_file` owns the transaction;
* a bad row found by database work is reported through `Run.bad` with its line, never raised;
* a chunk's lookups cost one query per table (`among` binds one parameter on SQLite, so the
  statement is prepared once), and `DriverInsert` stores exactly what a Core insert would;
* ImportResult counts every bad row and keeps the first MAX_ERRORS_KEPT of them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import String, Table, column, func, literal, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, Store
from db.types import utcnow
from domain.csvparse import RowError
from domain.shop import LoyaltyRules

MAX_ERRORS_KEPT = 200
ACTOR = "import"

_member = cast(Table, Member.__table__)


@dataclass
class ImportResult:
    """What an import did, or would have done: counts, and the bad rows (the first 200 kept)."""

    kind: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    written: bool = False
    dry_run: bool = False
    encoding: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    points_credited: int = 0
    tier_upgrades: int = 0

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)


@dataclass
class Run:
    """What every chunk of one import needs: the session, the rules and the shop's codes."""

    session: AsyncSession
    rules: LoyaltyRules
    result: ImportResult
    today: date
    earn_points: bool
    region: str
    stores: dict[str, int]
    now: datetime
    pending: list[RowError] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        session: AsyncSession,
        rules: LoyaltyRules,
        result: ImportResult,
        today: date | None,
        earn_points: bool,
        region: str,
    ) -> Run:
        rows = (await session.execute(select(Store.code, Store.id, Store.timezone))).all()
        stores = {code: store_id for code, store_id, _ in rows}
        for code, store_id, _ in rows:
            stores.setdefault(code.casefold(), store_id)
        if today is None:
            zone = min(rows, key=lambda r: r[1])[2] if rows else "Asia/Shanghai"
            today = datetime.now(ZoneInfo(zone)).date()
        return cls(session, rules, result, today, earn_points, region, stores, utcnow())

    def store_id(self, code: str | None) -> int | None:
        """The store's id; KeyError for a code the shop configuration does not have."""
        if code is None:
            return None
        found = self.stores.get(code)
        return found if found is not None else self.stores[code.casefold()]

    def bad(self, row: Any, reason: str) -> None:
        self.pending.append(RowError(row.line, reason))

    def take_errors(self) -> list[RowError]:
        """The bad rows the database work of the current chunk found."""
        errors, self.pending = self.pending, []
        return errors


class Importer(ABC):
    """One kind of file: how its rows are keyed, written chunk by chunk, and finished."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.session = run.session
        self.dialect: str = run.session.bind.dialect.name

    async def prepare(self) -> None:  # noqa: B027 - a hook; most kinds need nothing here
        """Load what is small and shared by every chunk (tiers, services)."""

    @abstractmethod
    def keys(self, row: Any) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        """(keys this row must not share with the current chunk, keys it adds to the chunk)."""

    @abstractmethod
    async def write(self, rows: list[Any]) -> None:
        """Look up, classify and write one chunk; bad rows go to `run.bad`."""

    async def finish(self) -> None:  # noqa: B027 - a hook; only visits need it
        """Set-based work after the last chunk."""

    def known_stores(self, rows: Sequence[Any]) -> list[Any]:
        """The rows whose store code exists; the others are reported."""
        good = []
        for row in rows:
            try:
                self.run.store_id(row.store)
            except KeyError:
                self.run.bad(row, f"store {row.store!r} is not a store of the shop configuration")
            else:
                good.append(row)
        return good

    async def members_by_ref(self, refs: Iterable[str], *columns: Any) -> dict[str, Any]:
        query = select(_member.c.member_ref, _member.c.id, _member.c.erased_at, *columns)
        rows = await self.session.execute(
            query.where(among(_member.c.member_ref, set(refs), self.dialect))
        )
        return {row.member_ref: row for row in rows}

    async def member_ids(self, refs: Iterable[str]) -> dict[str, tuple[int, bool]]:
        """(id, erased) of the members with these refs: the per-chunk lookup of vehicles and
        visits, which need nothing else of the member."""
        c = _member.c
        query = select(c.member_ref, c.id, c.erased_at.is_not(None)).where(
            among(c.member_ref, set(refs), self.dialect)
        )
        return {ref: (mid, bool(erased)) for ref, mid, erased in await self.session.execute(query)}

    def live_member(self, row: Any, members: dict[str, tuple[int, bool]]) -> int | None:
        """The id of the row's member, from `member_ids`; None when the row is done with: a bad
        row if there is no such member, unchanged if the member was erased for privacy."""
        member = members.get(row.member_ref)
        if member is None:
            self.run.bad(row, _missing_member(row.member_ref))
            return None
        member_id, erased = member
        if erased:
            self.run.result.unchanged += 1
            return None
        return member_id

    async def executemany(self, statement: Any, params: list[dict[str, Any]]) -> None:
        if params:
            await self.session.execute(statement, params)


def among(col: Any, keys: Iterable[Any], dialect: str) -> Any:
    """`col IN keys`; on SQLite with the keys passed as one JSON array.

    A plain in_() of a chunk's few thousand keys renders and binds one parameter per key, and
    as the SQL text changes with the count, SQLite prepares it afresh every chunk: about half
    of the member lookups' 5 s in 1M visits. With one parameter the statement stays the same, and
    SQLite still searches `col`'s index once per key (EXPLAIN QUERY PLAN: SEARCH … USING
    INDEX, LIST SUBQUERY over json_each).
    """
    if dialect != "sqlite":
        return col.in_(keys)
    listed = func.json_each(literal(json.dumps(list(keys)), String))
    return col.in_(select(column("value")).select_from(listed))


MEMO_LIMIT = 10_000


def memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert` remembering its answers (lists by their items), forgetting them all past
    MEMO_LIMIT so that memory stays bounded: days, timestamps and service lists repeat a lot.

    Values are matched by equality, which is safe for what is converted here: one column holds
    one type (dates, aware datetimes stored as UTC, booleans, lists of strings), and equal
    values of one such type are stored alike.
    """
    memo: dict[Hashable, Any] = {}

    def remembered(value: Any) -> Any:
        key = tuple(value) if isinstance(value, list) else value
        found = memo.get(key, memo)
        if found is memo:
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            found = memo[key] = convert(value)
        return found

    return remembered


class DriverInsert:
    """An INSERT of many rows handed straight to the SQLite driver.

    A Core executemany sends every column of every row through SQLAlchemy's per-row parameter
    machinery: about 7 s of the 52 s 1M visits took, 1.5 s of the 9 s of 200k members. Here
    only the columns that need it are converted, by their own bind processors (so SQLite
    stores what Core would store), each distinct value once and then remembered.
    """

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self.columns = tuple(columns)
        self.sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in self.columns)}) "
            f"VALUES ({', '.join('?' * len(self.columns))})"
        )
        self.converters: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.converters.append((index, memoized(process)))

    def bound(self, params: dict[str, Any]) -> tuple[Any, ...]:
        row = [params[name] for name in self.columns]
        for index, convert in self.converters:
            row[index] = convert(row[index])
        return tuple(row)

    async def __call__(self, session: AsyncSession, params: list[dict[str, Any]]) -> None:
        connection = await session.connection()
        await connection.exec_driver_sql(self.sql, [self.bound(p) for p in params])


def _missing_member(ref: str) -> str:
    return f"member_ref {ref!r} is not a member (import the members file first)"
