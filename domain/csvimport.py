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
earlier row of the same file is matched against it the same way. What an import does:

* members: new `member_ref` → created; existing → updated when a non-empty cell differs (empty
  cells never erase what is stored), tags are added (never removed), `opening_points` are
  credited once per member (ledger key `opening:<member id>`, dated the import day). Members
  erased for privacy are never changed or re-created: their rows count as unchanged.
* vehicles: new plate → created for the member; a plate of another member is a bad row;
  `mileage_km` adds a reading dated the import day only when the car has no reading that high.
* visits: new visits are stored with their points and mileage readings; afterwards the affected
  members get the tier upgrades their spend earns (never a downgrade). Points are those
  `domain.visits.record` gives (kind "earn", key `visit:<visit id>`, at the member's tier as it
  was before the file), computed set-based by points.points_for_spend_sql and
  points.lot_expiry_sql, the SQL twins of points.points_for_spend and points.lot_expiry. An
  existing visit is left as it is and counts as unchanged; a `visit_ref` seen before with another
  member, day or amount is a bad row. Lots already past their expiry date are written as earned and
  then expired in the same transaction (`points.expire` as of the import day), so balances are
  right at once instead of after the next nightly run.

On SQLite the whole import holds the database's write lock: other writers wait for it (up to
their busy timeout), so large files are best imported outside opening hours.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
    values,
)
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Member,
    MemberTag,
    MileageReading,
    PointsEntry,
    Service,
    Store,
    Tier,
    Vehicle,
    Visit,
)
from db.session import Database, upsert_insert
from db.types import UTCDateTime, utcnow
from domain import audit, csvparse, points, tiers
from domain.csvparse import MemberRow, RowContext, RowError, VehicleRow, VisitRow
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

CHUNK_ROWS = 5_000
SQLITE_CACHE_KIB = 64 * 1024
MAX_ERRORS_KEPT = 200
ACTOR = "import"

_member = cast(Table, Member.__table__)
_tag = cast(Table, MemberTag.__table__)
_vehicle = cast(Table, Vehicle.__table__)
_reading = cast(Table, MileageReading.__table__)
_visit = cast(Table, Visit.__table__)
_entry = cast(Table, PointsEntry.__table__)


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
                    run = await _Run.start(session, rules, result, today, earn_points, region)
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


# ---------------------------------------------------------------- the shared loop


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


@dataclass
class _Run:
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
    ) -> _Run:
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


async def _import_rows(
    run: _Run, table: csvparse.CsvTable, progress: Callable[[int], None] | None
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


async def _record(run: _Run, path: Path) -> None:
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


class _Importer(ABC):
    """One kind of file: how its rows are keyed, written chunk by chunk, and finished."""

    def __init__(self, run: _Run) -> None:
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
            query.where(_among(_member.c.member_ref, set(refs), self.dialect))
        )
        return {row.member_ref: row for row in rows}

    async def member_ids(self, refs: Iterable[str]) -> dict[str, tuple[int, bool]]:
        """(id, erased) of the members with these refs: the per-chunk lookup of vehicles and
        visits, which need nothing else of the member."""
        c = _member.c
        query = select(c.member_ref, c.id, c.erased_at.is_not(None)).where(
            _among(c.member_ref, set(refs), self.dialect)
        )
        return {ref: (mid, bool(erased)) for ref, mid, erased in await self.session.execute(query)}

    async def executemany(self, statement: Any, params: list[dict[str, Any]]) -> None:
        if params:
            await self.session.execute(statement, params)


def _among(col: Any, keys: Iterable[Any], dialect: str) -> Any:
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


_MEMO_LIMIT = 10_000


def _memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert` remembering its answers (lists by their items), forgetting them all past
    _MEMO_LIMIT so that memory stays bounded: days, timestamps and service lists repeat a lot.

    Values are matched by equality, which is safe for what is converted here: one column holds
    one type (dates, aware datetimes stored as UTC, booleans, lists of strings), and equal
    values of one such type are stored alike.
    """
    memo: dict[Hashable, Any] = {}

    def remembered(value: Any) -> Any:
        key = tuple(value) if isinstance(value, list) else value
        found = memo.get(key, memo)
        if found is memo:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            found = memo[key] = convert(value)
        return found

    return remembered


class _DriverInsert:
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
                self.converters.append((index, _memoized(process)))

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


# ---------------------------------------------------------------- members

_MEMBER_FIELDS = ("name", "phone", "birthday", "locale", "home_store_id", "marketing_consent")


_MEMBER_INSERT_COLUMNS = (
    "member_ref",
    "name",
    "phone",
    "birthday",
    "locale",
    "home_store_id",
    "tier_code",
    "tier_since",
    "created_at",
    "updated_at",
    "marketing_consent",
    "consent_at",
    "consent_source",
)


class _Members(_Importer):
    async def prepare(self) -> None:
        self.default_tier = await self.session.scalar(
            select(Tier.code).order_by(Tier.rank).limit(1)
        )
        self.opening_expiry = points.lot_expiry(self.run.today, self.run.rules)
        self.insert_members = _DriverInsert(
            _member, _MEMBER_INSERT_COLUMNS, self.session.bind.dialect
        )

    def keys(self, row: MemberRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        return (row.member_ref,), (row.member_ref,)

    async def write(self, rows: list[MemberRow]) -> None:
        rows = self.known_stores(rows)
        c = _member.c
        columns = [getattr(c, name) for name in _MEMBER_FIELDS]
        existing = await self.members_by_ref(
            (r.member_ref for r in rows), *columns, c.consent_at, c.consent_source
        )
        new = [r for r in rows if r.member_ref not in existing]
        old = [(r, existing[r.member_ref]) for r in rows if r.member_ref in existing]
        live = [(r, m) for r, m in old if m.erased_at is None]
        created = await self._create(new)
        touched = await self._update(live)
        touched |= await self._add_tags(
            [(m.id, r.tags) for r, m in live], [(created[r.member_ref], r.tags) for r in new]
        )
        touched |= await self._credit_opening(
            [(m.id, r.opening_points) for r, m in live],
            [(created[r.member_ref], r.opening_points) for r in new],
        )
        self.run.result.created += len(new)
        self.run.result.updated += len(touched)
        self.run.result.unchanged += len(old) - len(touched)

    def _given(self, row: MemberRow) -> dict[str, Any]:
        """The member columns this row sets: only its non-empty cells."""
        values: dict[str, Any] = {"phone": row.phone}
        if row.name:
            values["name"] = row.name
        if row.birthday is not None:
            values["birthday"] = row.birthday
        if row.locale is not None:
            values["locale"] = row.locale
        if row.store is not None:
            values["home_store_id"] = self.run.store_id(row.store)
        if row.marketing_consent is not None:
            values["marketing_consent"] = row.marketing_consent
        return values

    def _consent(self, given: bool) -> dict[str, Any]:
        """Like members.create: consent carries when and where it was given; no consent, none."""
        return {
            "marketing_consent": given,
            "consent_at": self.run.now if given else None,
            "consent_source": ACTOR if given else None,
        }

    async def _create(self, rows: list[MemberRow]) -> dict[str, int]:
        if not rows:
            return {}
        now = self.run.now
        params = [
            {
                "member_ref": row.member_ref,
                "name": row.name,
                "phone": row.phone,
                "birthday": row.birthday,
                "locale": row.locale or "zh_CN",
                "home_store_id": self.run.store_id(row.store),
                "tier_code": self.default_tier,
                "tier_since": now,
                "created_at": now,
                "updated_at": now,
                **self._consent(bool(row.marketing_consent)),
            }
            for row in rows
        ]
        c = _member.c
        if self.dialect != "sqlite":
            statement = insert(_member).returning(c.member_ref, c.id)
            return dict((await self.session.execute(statement, params)).all())
        # Under SQLite's write lock every member above the highest id before the insert is one
        # of these; reading them back costs less than RETURNING through Core.
        before = int(await self.session.scalar(select(func.max(c.id))) or 0)
        await self.insert_members(self.session, params)
        created = await self.session.execute(select(c.member_ref, c.id).where(c.id > before))
        return dict(created.all())

    async def _update(self, pairs: list[tuple[MemberRow, Any]]) -> set[int]:
        """Write the members whose non-empty cells differ from what is stored; their ids."""
        params = []
        for row, member in pairs:
            stored = {name: getattr(member, name) for name in _MEMBER_FIELDS}
            wanted = stored | self._given(row)
            if wanted == stored:
                continue
            consent = (
                self._consent(wanted["marketing_consent"])
                if wanted["marketing_consent"] != member.marketing_consent
                else {"consent_at": member.consent_at, "consent_source": member.consent_source}
            )
            params.append({"_id": member.id, **wanted, **consent, "updated_at": self.run.now})
        await self.executemany(update(_member).where(_member.c.id == bindparam("_id")), params)
        return {p["_id"] for p in params}

    async def _add_tags(
        self, old: list[tuple[int, tuple[str, ...]]], new: list[tuple[int, tuple[str, ...]]]
    ) -> set[int]:
        """Insert the tags members do not have yet; the ids of existing members that got one."""
        wanted = dict.fromkeys((mid, tag) for mid, tags in old + new for tag in tags)
        if not wanted:
            return set()
        old_ids = {mid for mid, tags in old if tags}
        have: set[tuple[int, str]] = set()
        if old_ids:
            rows = await self.session.execute(
                select(_tag.c.member_id, _tag.c.tag).where(
                    _among(_tag.c.member_id, old_ids, self.dialect)
                )
            )
            have = set(rows.all())
        missing = [pair for pair in wanted if pair not in have]
        await self.executemany(
            insert(_tag), [{"member_id": mid, "tag": tag} for mid, tag in missing]
        )
        return {mid for mid, _ in missing} & old_ids

    async def _credit_opening(
        self, old: list[tuple[int, int | None]], new: list[tuple[int, int | None]]
    ) -> set[int]:
        """Opening balances, once per member ever; the ids of existing members credited now."""
        if not self.run.earn_points:
            return set()
        wanted = {f"opening:{mid}": (mid, pts) for mid, pts in old + new if pts}
        if not wanted:
            return set()
        old_keys = [f"opening:{mid}" for mid, pts in old if pts]
        done: set[str] = set()
        if old_keys:
            found = await self.session.scalars(
                select(_entry.c.key).where(_among(_entry.c.key, old_keys, self.dialect))
            )
            done = set(found.all())
        params = [
            {
                "member_id": mid,
                "kind": points.OPENING,
                "points": pts,
                "occurred_on": self.run.today,
                "expires_on": self.opening_expiry,
                "key": key,
                "reason": "opening balance from import",
                "actor": ACTOR,
                "created_at": self.run.now,
            }
            for key, (mid, pts) in wanted.items()
            if key not in done
        ]
        await self.executemany(insert(_entry), params)
        self.run.result.points_credited += sum(p["points"] for p in params)
        return {p["member_id"] for p in params} & {mid for mid, pts in old if pts}


# ---------------------------------------------------------------- vehicles

_VEHICLE_FIELDS = (
    "vin",
    "make",
    "model",
    "purchase_date",
    "insurance_expiry",
    "inspection_due",
)


class _Vehicles(_Importer):
    def keys(self, row: VehicleRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        return (row.plate,), (row.plate,)

    async def write(self, rows: list[VehicleRow]) -> None:
        run, c = self.run, _vehicle.c
        owners = await self.member_ids(r.member_ref for r in rows)
        found = await self.session.execute(
            select(c.id, c.plate, c.member_id, *(getattr(c, f) for f in _VEHICLE_FIELDS)).where(
                _among(c.plate, {r.plate for r in rows}, self.dialect)
            )
        )
        cars = {car.plate: car for car in found}
        top_km = await self._top_readings([car.id for car in cars.values()])
        new: list[tuple[VehicleRow, int]] = []
        changes: list[dict[str, Any]] = []
        readings: list[tuple[int, int]] = []
        for row in rows:
            owner = owners.get(row.member_ref)
            if owner is None:
                run.bad(row, _missing_member(row.member_ref))
                continue
            owner_id, erased = owner
            if erased:
                run.result.unchanged += 1
                continue
            car = cars.get(row.plate)
            if car is None:
                new.append((row, owner_id))
                continue
            if car.member_id != owner_id:
                run.bad(row, "plate belongs to another member")
                continue
            stored = {f: getattr(car, f) for f in _VEHICLE_FIELDS}
            wanted = stored | {f: getattr(row, f) for f in _VEHICLE_FIELDS if getattr(row, f)}
            read = row.mileage_km is not None and row.mileage_km > top_km.get(car.id, -1)
            if wanted != stored:
                changes.append({"_id": car.id, **wanted})
            if read:
                readings.append((car.id, cast(int, row.mileage_km)))
            if wanted != stored or read:
                run.result.updated += 1
            else:
                run.result.unchanged += 1
        created = await self._create(new)
        readings += [(created[r.plate], r.mileage_km) for r, _ in new if r.mileage_km is not None]
        await self.executemany(update(_vehicle).where(_vehicle.c.id == bindparam("_id")), changes)
        await _add_readings(self.session, [(vid, run.today, km) for vid, km in readings])
        run.result.created += len(new)

    async def _top_readings(self, vehicle_ids: list[int]) -> dict[int, int]:
        if not vehicle_ids:
            return {}
        rows = await self.session.execute(
            select(_reading.c.vehicle_id, func.max(_reading.c.km))
            .where(_among(_reading.c.vehicle_id, vehicle_ids, self.dialect))
            .group_by(_reading.c.vehicle_id)
        )
        return dict(rows.all())

    async def _create(self, rows: list[tuple[VehicleRow, int]]) -> dict[str, int]:
        if not rows:
            return {}
        params = [
            {
                "member_id": member_id,
                "plate": row.plate,
                **{f: getattr(row, f) for f in _VEHICLE_FIELDS},
                "created_at": self.run.now,
            }
            for row, member_id in rows
        ]
        statement = insert(_vehicle).returning(_vehicle.c.plate, _vehicle.c.id)
        return dict((await self.session.execute(statement, params)).all())


async def _add_readings(session: AsyncSession, readings: list[tuple[int, date, int]]) -> None:
    """Odometer readings, skipping any the car already has for that day and distance."""
    if not readings:
        return
    params = [
        {"vehicle_id": vid, "read_on": day, "km": km, "source": ACTOR}
        for vid, day, km in dict.fromkeys(readings)
    ]
    statement = upsert_insert(session, _reading).on_conflict_do_nothing(
        index_elements=["vehicle_id", "read_on", "km"]
    )
    await session.execute(statement, params)


# ---------------------------------------------------------------- visits


_VISIT_COLUMNS = (
    "visit_ref",
    "member_id",
    "store_id",
    "vehicle_id",
    "visited_on",
    "amount_cents",
    "services",
    "categories",
    "mileage_km",
    "satisfaction",
    "created_at",
)


class _Visits(_Importer):
    async def prepare(self) -> None:
        session = self.session
        self.services: dict[str, tuple[str, str]] = {}
        for code, zh, en, category in await session.execute(
            select(Service.code, Service.name_zh, Service.name_en, Service.category)
        ):
            for name in (en.casefold(), zh.casefold(), code.casefold(), code):
                self.services[name] = (code, category)
        self.service_lists: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
        self.first_new_id = int(await session.scalar(select(func.max(_visit.c.id))) or 0)
        self.last_id = self.first_new_id
        self.first_entry_id = int(await session.scalar(select(func.max(_entry.c.id))) or 0)
        dialect = session.bind.dialect
        self.insert_visits = _DriverInsert(_visit, _VISIT_COLUMNS, dialect)
        self._stored_day = _memoized(
            _visit.c.visited_on.type.dialect_impl(dialect).bind_processor(dialect) or str
        )

    def keys(self, row: VisitRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        same_day = ("day", row.member_ref, row.visited_on, row.amount_cents)
        if row.visit_ref is None:
            return (same_day,), (same_day,)
        return (("ref", row.visit_ref),), (("ref", row.visit_ref), same_day)

    def _services(self, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Service codes where the shop knows the service (by code or name), else the name as
        written; and the categories of the known ones. Remembered: cells repeat a lot."""
        if (known := self.service_lists.get(names)) is not None:
            return known
        codes: list[str] = []
        categories: dict[str, None] = {}
        for name in names:
            service = self.services.get(name) or self.services.get(name.casefold())
            if service is None:
                codes.append(name)
            else:
                codes.append(service[0])
                categories.setdefault(service[1], None)
        if len(self.service_lists) >= 10_000:
            self.service_lists.clear()
        self.service_lists[names] = (codes, list(categories))
        return codes, list(categories)

    async def write(self, rows: list[VisitRow]) -> None:
        run = self.run
        rows = self.known_stores(rows)
        members = await self.member_ids(r.member_ref for r in rows)
        cars = await self._cars({r.plate for r in rows if r.plate})
        by_ref = await self._visits_by_ref([r.visit_ref for r in rows if r.visit_ref])
        pending: list[tuple[VisitRow, int, int | None]] = []
        for row in rows:
            member = members.get(row.member_ref)
            if member is None:
                run.bad(row, _missing_member(row.member_ref))
                continue
            member_id, erased = member
            if erased:
                run.result.unchanged += 1
                continue
            vehicle_id = None
            if row.plate:
                car = cars.get(row.plate)
                if car is None or car[1] != member_id:
                    run.bad(row, "plate is not a car of this member (import the vehicles file)")
                    continue
                vehicle_id = car[0]
            if row.visit_ref and (seen := by_ref.get(row.visit_ref)) is not None:
                if seen != (member_id, row.visited_on, row.amount_cents):
                    run.bad(
                        row,
                        f"visit_ref {row.visit_ref!r} was imported before with another "
                        "member, day or amount",
                    )
                else:
                    run.result.unchanged += 1
                continue
            pending.append((row, member_id, vehicle_id))
        known_days = await self._visits_by_day(
            [(mid, r.visited_on, r.amount_cents) for r, mid, _ in pending if not r.visit_ref]
        )
        new = [
            (row, mid, vid)
            for row, mid, vid in pending
            if row.visit_ref or (mid, row.visited_on, row.amount_cents) not in known_days
        ]
        run.result.unchanged += len(pending) - len(new)
        await self._create(new)

    async def _cars(self, plates: set[str]) -> dict[str, tuple[int, int]]:
        if not plates:
            return {}
        c = _vehicle.c
        rows = await self.session.execute(
            select(c.plate, c.id, c.member_id).where(_among(c.plate, plates, self.dialect))
        )
        return {plate: (vid, mid) for plate, vid, mid in rows}

    async def _visits_by_ref(self, refs: list[str]) -> dict[str, tuple[int, date, int]]:
        if not refs:
            return {}
        c = _visit.c
        rows = await self.session.execute(
            select(c.visit_ref, c.member_id, c.visited_on, c.amount_cents).where(
                _among(c.visit_ref, set(refs), self.dialect)
            )
        )
        return {ref: (mid, day, cents) for ref, mid, day, cents in rows}

    async def _visits_by_day(self, keys: list[tuple[int, date, int]]) -> set[tuple[int, date, int]]:
        """Which (member, day, amount) already have a visit, with or without a visit_ref."""
        if not keys:
            return set()
        c = _visit.c
        columns = (c.member_id, c.visited_on, c.amount_cents)
        keys = list(dict.fromkeys(keys))
        if self.dialect == "postgresql":
            # A join with the keys as a VALUES list: PostgreSQL probes the (member, day, amount)
            # index per key, where a row-value IN would test every key against every row.
            wanted = values(
                column("member_id", Integer),
                column("visited_on", Date),
                column("amount_cents", Integer),
                name="wanted",
            ).data(keys)
            query = select(*columns).join(
                wanted,
                and_(*(col == getattr(wanted.c, col.name) for col in columns)),
            )
        else:
            # SQLite cannot name the columns of a VALUES list; a row-value IN over the keys as
            # one JSON array of [member, day as stored, amount] does the same, searching the
            # (member, day, amount) index once per key, with one parameter instead of four per
            # key (see _among).
            day = self._stored_day
            listed = func.json_each(
                literal(json.dumps([[mid, day(on), cents] for mid, on, cents in keys]), String)
            )
            item = column("value")
            wanted = select(*(func.json_extract(item, f"$[{i}]") for i in range(3)))
            query = select(*columns).where(tuple_(*columns).in_(wanted.select_from(listed)))
        return {(mid, day, cents) for mid, day, cents in await self.session.execute(query)}

    async def _create(self, new: list[tuple[VisitRow, int, int | None]]) -> None:
        if not new:
            return
        run = self.run
        now, store_id, services = run.now, run.store_id, self._services
        params = []
        for row, member_id, vehicle_id in new:
            codes, categories = services(row.services)
            params.append(
                {
                    "visit_ref": row.visit_ref,
                    "member_id": member_id,
                    "store_id": store_id(row.store),
                    "vehicle_id": vehicle_id,
                    "visited_on": row.visited_on,
                    "amount_cents": row.amount_cents,
                    "services": codes,
                    "categories": categories,
                    "mileage_km": row.mileage_km,
                    "satisfaction": row.satisfaction,
                    "created_at": now,
                }
            )
        scope = await self._insert(params)
        run.result.created += len(new)
        if run.earn_points:
            await self._earn(scope)
        await self._read_mileage(scope)

    async def _insert(self, params: list[dict[str, Any]]) -> Any:
        """Insert visits; a WHERE clause that selects exactly the visits just inserted."""
        c = _visit.c
        if self.dialect != "sqlite":
            inserted = await self.session.execute(insert(_visit).returning(c.id), params)
            return c.id.in_(list(inserted.scalars()))
        await self.insert_visits(self.session, params)
        # This transaction holds SQLite's write lock, so every visit above the highest id seen
        # so far is one we just inserted; that costs far less than RETURNING.
        before, self.last_id = self.last_id, int(await self.session.scalar(select(func.max(c.id))))
        return c.id > before

    async def _earn(self, new_visits: Any) -> None:
        """One lot per new visit with points, keyed and dated like domain.visits.record writes
        it, at the member's tier as it is now (upgrades come after the whole file)."""
        v, m, t = _visit.c, _member.c, Tier.__table__.c
        earned = points.points_for_spend_sql(v.amount_cents, t.multiplier_permille, self.run.rules)
        lots = (
            select(
                v.member_id,
                literal(points.EARN),
                earned,
                v.visited_on,
                points.lot_expiry_sql(v.visited_on, self.run.rules, self.dialect),
                v.id,
                literal("visit:") + cast_(v.id, String),
                literal(ACTOR),
                literal(self.run.now, UTCDateTime),
            )
            .join_from(_visit, _member, m.id == v.member_id)
            .join(Tier.__table__, t.code == m.tier_code)
            .where(new_visits, earned > 0)
        )
        columns = [
            "member_id",
            "kind",
            "points",
            "occurred_on",
            "expires_on",
            "visit_id",
            "key",
            "actor",
            "created_at",
        ]
        await self.session.execute(insert(_entry).from_select(columns, lots))

    async def _read_mileage(self, new_visits: Any) -> None:
        """The odometer readings the new visits carry, skipping any the car already has."""
        v = _visit.c
        readings = select(v.vehicle_id, v.visited_on, v.mileage_km, literal(ACTOR)).where(
            new_visits, v.vehicle_id.is_not(None), v.mileage_km.is_not(None)
        )
        statement = (
            upsert_insert(self.session, _reading)
            .from_select(["vehicle_id", "read_on", "km", "source"], readings)
            .on_conflict_do_nothing(index_elements=["vehicle_id", "read_on", "km"])
        )
        await self.session.execute(statement)

    async def finish(self) -> None:
        """Points total, upgrades for the members who got new visits, then the expiry of lots
        that had already lapsed."""
        if not self.run.result.created:
            return
        # Rows above the ids seen at the start are this import's; on PostgreSQL another writer's
        # could be among them too, which only adds a member to the (upgrade-only) review.
        e = _entry.c
        if self.run.earn_points:
            self.run.result.points_credited = int(
                await self.session.scalar(
                    select(func.coalesce(func.sum(e.points), 0)).where(
                        e.id > self.first_entry_id, e.kind == points.EARN, e.actor == ACTOR
                    )
                )
                or 0
            )
        affected = select(_visit.c.member_id).where(_visit.c.id > self.first_new_id)
        self.run.result.tier_upgrades = await tiers.review(
            self.session,
            self.run.today,
            downgrade=False,
            member_ids=affected,
            upgrade_reason=tiers.IMPORTED,
        )
        if self.run.result.points_credited:
            await points.expire(self.session, self.run.today)


_IMPORTERS: dict[str, Callable[[_Run], _Importer]] = {
    "members": _Members,
    "vehicles": _Vehicles,
    "visits": _Visits,
}
