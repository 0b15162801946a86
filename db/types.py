"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always hands back aware UTC values.

    SQLite has no time zone support and returns naive values; without this the same model
    would yield naive times on SQLite and aware ones on PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC time is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Int64(TypeDecorator[int]):
    """Money (cents) and points: BIGINT on PostgreSQL, whose INTEGER is 32 bits (21 million
    yuan in cents), and SQLite's INTEGER, which is already 64 bits, so SQLite's tables need
    no rebuild (migration 0008).

    Sums come back as int: PostgreSQL sums a BIGINT as NUMERIC, which the driver would hand
    back as a Decimal, and a Decimal cannot go into the JSON columns (audit, outbox context).
    SQLAlchemy types `sum(col)`, `coalesce(sum(col), 0)` and `case(…, col)` as the column, so
    this covers every sum of these columns.
    """

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(Integer() if dialect.name == "sqlite" else BigInteger())

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name == "sqlite":
            return None  # already an int; no call per value on the import's hot paths
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def utcnow() -> datetime:
    """The current time, aware and in UTC, the only form times are stored in."""
    return datetime.now(UTC)
