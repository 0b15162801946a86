"""Pieces the set-based queries share, written once for both databases (SQLite and
PostgreSQL), so that each is written, and fixed, in one place.

Each piece takes the dialect's name (`session.bind.dialect.name`) where the two databases
differ. Dates are compared as dates: a Python `date` enters a statement as a typed literal, so
both databases compare it with a DATE column, not as text. Stored times are aware UTC; "on or
before day D" for a stored time is therefore `< end_of_day(D)`, never `<= D`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    String,
    case,
    cast,
    func,
    literal,
    or_,
    type_coerce,
)


def tally(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of a group meet `condition` (0 for none), as one aggregate column."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def end_of_day(day: date) -> datetime:
    """The first instant after `day` in UTC: "created on or before the day" is `< end_of_day`."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def date_literal(value: date) -> ColumnElement[date]:
    """`value` as a DATE literal in a statement."""
    return literal(value, Date)


def days_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[int]:
    """Whole days from `earlier` to `later` (two date expressions), as an integer."""
    if dialect == "postgresql":
        return type_coerce(later - earlier, Integer)
    return cast(func.julianday(later) - func.julianday(earlier), Integer)


def json_list_has_any(dialect: str, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """The JSON list of codes in `column` holds one of `values`.

    Matched on the stored text (`"code"` with its quotes): service and category codes are ASCII
    letters, digits, `_` and `-` (shop.yaml's pattern), which JSON writes verbatim, so the match
    is exact, and a text search is many times cheaper than unpacking JSON on every visit."""
    text = cast(column, String)
    find = func.strpos if dialect == "postgresql" else func.instr
    return or_(*(find(text, f'"{value}"') > 0 for value in values))


def iso_date_text(dialect: str, expression: Any) -> ColumnElement[str]:
    """A date expression as 'YYYY-MM-DD' text, for comparing with keys built in Python."""
    if dialect == "postgresql":
        return func.to_char(expression, "YYYY-MM-DD")
    return func.date(expression)
