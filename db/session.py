"""The async engine and units of work.

SQLite needs help to be safe under concurrent writers: every write unit of work starts with
`BEGIN IMMEDIATE`, so two redemptions can never both read a balance and then both spend it; the
second waits (busy timeout) and then reads the first one's result. PostgreSQL gets the same
guarantee from row locks (`lock_member`).

SQLite admits one writer at a time anyway, and a writer that finds it busy sleeps in SQLite's
busy handler (up to 100 ms a nap), so under a burst some waited seconds while the others went
through. Within a process, write units of work on SQLite therefore take their turn on an
asyncio lock first (first come, first served, no sleeping); the busy handler is left for other
processes. The lock is re-entrant within a task, so a unit of work opened while the same task
holds one does not wait for itself.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.models import Member

_WRITE_OPTION = "memberbot_write"
_SNAPSHOT_OPTION = "memberbot_snapshot"


def _prepare_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves; the driver's implicit BEGIN is always DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(_WRITE_OPTION, False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif options.get(_SNAPSHOT_OPTION, True):
            conn.exec_driver_sql("BEGIN")
        # else: autocommit, each statement reads the newest data on its own


def create_engine(url: str, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> AsyncEngine:
    """An engine for `url`, with SQLite switched to WAL, foreign keys and immediate writes."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        # The chat handles many updates at once; connections beyond the pool would be opened
        # and closed (with their PRAGMAs) for every unit of work.
        kwargs["pool_size"] = 20
        kwargs["max_overflow"] = 20
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
    engine = create_async_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(engine, busy_timeout_ms)
    return engine


class Database:
    """An engine plus the two kinds of unit of work the domain needs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._one_writer = engine.dialect.name == "sqlite"
        # An asyncio lock belongs to one event loop; the CLI and tests run several.
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WriterTurn] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, *, busy_timeout_ms: int = 30_000) -> Database:
        return cls(create_engine(url, busy_timeout_ms=busy_timeout_ms))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write unit of work: commits on success, rolls back on any exception."""
        async with self._write_turn(), self._sessions() as session:
            await session.connection(execution_options={_WRITE_OPTION: True})
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """This process's turn to write (SQLite only; see the module's docstring)."""
        if not self._one_writer:
            yield
            return
        loop = asyncio.get_running_loop()
        turn = self._writers.get(loop)
        if turn is None:
            turn = self._writers[loop] = _WriterTurn()
        async with turn.hold():
            yield

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work that never holds the write lock: one consistent snapshot,
        or with `snapshot=False` (SQLite) each statement on its own, which spares the chat's
        short lookups a BEGIN and a ROLLBACK each."""
        async with self._sessions() as session:
            if not snapshot:
                await session.connection(execution_options={_SNAPSHOT_OPTION: False})
            # Closing ends the transaction without expiring what was loaded, so callers may
            # keep reading the objects they fetched.
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


class _WriterTurn:
    """One event loop's writer lock, re-entrant within the task that holds it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.owner: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self.owner:
            yield  # the task already holds the turn
            return
        async with self.lock:
            self.owner = task
            try:
                yield
            finally:
                self.owner = None


async def lock_member(session: AsyncSession, member_id: int) -> None:
    """Serialize writers of one member's ledgers until the transaction ends.

    On PostgreSQL this is a row lock; on SQLite the write transaction already holds the
    database's single write lock, so there is nothing more to take.
    """
    if session.bind.dialect.name == "postgresql":
        await session.execute(select(Member.id).where(Member.id == member_id).with_for_update())


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's own INSERT, which knows `ON CONFLICT DO NOTHING / DO UPDATE`."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
