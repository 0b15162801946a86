"""Pieces the domain's set-based queries share, so that each is written (and fixed) once.

Days are calendar days and stored times are aware UTC; "on or before day D" for a stored time
is therefore `< end_of_day(D)`, never `<= D`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, case, func


def tally(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of a group meet `condition` (0 for none), as one aggregate column."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def end_of_day(day: date) -> datetime:
    """The first instant after `day` in UTC: "created on or before the day" is `< end_of_day`."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
