"""What the visits up to a day say about each member, as aligned numpy arrays: read with one
SQL statement streamed in partitions (about 100 bytes a member), or built from plain visit lists
(the tests, the simulations and the CDNOW benchmark use the same `History`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import DateTime, Integer, Select, case, cast, distinct, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from db.models import Member, OutboxMessage, OutboxStatus, Visit
from domain import segments
from domain.queries import end_of_day
from domain.tiers import WINDOW_DAYS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

SENT = OutboxStatus.SENT
WEEK_DAYS = 7.0
_PARTITION = 100_000


@dataclass(frozen=True)
class History:
    """Per member, what the visits up to `as_of` say, as aligned arrays ordered by member id.
    Ages are days before `as_of` (NaN when there is no such visit); money is cents."""

    as_of: date
    member_id: IntArray
    visit_days: IntArray
    first_age: FloatArray
    last_age: FloatArray
    prev_age: FloatArray
    recent_days: IntArray
    earlier_days: IntArray
    recent_spend: IntArray
    earlier_spend: IntArray
    total_spend: IntArray
    last_satisfaction: FloatArray
    unanswered: IntArray

    def __len__(self) -> int:
        return int(self.member_id.size)

    def take(self, index: IntArray | BoolArray) -> History:
        arrays = {
            name: getattr(self, name)[index]
            for name in self.__dataclass_fields__
            if name != "as_of"
        }
        return History(as_of=self.as_of, **arrays)

    @property
    def visited(self) -> BoolArray:
        return np.asarray(self.visit_days > 0)

    def btyd_summary(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(x, t_x, T) in weeks, as `domain.btyd.summarize` builds it (visitors only)."""
        return (
            (self.visit_days - 1).astype(np.float64),
            (self.first_age - self.last_age) / WEEK_DAYS,
            self.first_age / WEEK_DAYS,
        )


def _days_before(as_of: date, column: Any, dialect: str) -> ColumnElement[int]:
    """Whole days from `column` (a date) to `as_of`, computed by the database."""
    if dialect == "sqlite":
        return cast(func.julianday(as_of.isoformat()) - func.julianday(column), Integer)
    return cast(literal(as_of) - column, Integer)


def _day_after(column: Any, dialect: str) -> ColumnElement[Any]:
    """The first instant (UTC) of the day after a date, comparable with a stored UTC time."""
    if dialect == "sqlite":
        # Stored times are 'YYYY-MM-DD HH:MM:SS...' text, so a bare date compares as midnight.
        return func.date(column, "+1 day")
    return func.timezone("UTC", cast(column + 1, DateTime()))


def history_statement(as_of: date, dialect: str, stride: int = 1) -> Select[Any]:
    """The per-member history as of the day: visits grouped once, plus three index lookups
    per member (the visit day before the last, the last satisfaction score, unanswered
    messages). Same population as `segments.member_metrics`: not erased, and created by the
    day or with a visit by it. `stride` > 1 keeps only members whose id is a multiple of it:
    a deterministic sample for training, so a big chain's second pass reads a fraction."""
    recent = as_of - timedelta(days=WINDOW_DAYS - 1)
    earlier = recent - timedelta(days=WINDOW_DAYS)
    in_recent = Visit.visited_on >= recent
    in_earlier = (Visit.visited_on >= earlier) & (Visit.visited_on < recent)
    agg = (
        select(
            Visit.member_id.label("member_id"),
            func.count(distinct(Visit.visited_on)).label("days"),
            func.min(Visit.visited_on).label("first"),
            func.max(Visit.visited_on).label("last"),
            func.count(distinct(case((in_recent, Visit.visited_on)))).label("recent_days"),
            func.count(distinct(case((in_earlier, Visit.visited_on)))).label("earlier_days"),
            func.sum(case((in_recent, Visit.amount_cents), else_=0)).label("recent_spend"),
            func.sum(case((in_earlier, Visit.amount_cents), else_=0)).label("earlier_spend"),
            func.sum(Visit.amount_cents).label("spend"),
        )
        .where(Visit.visited_on <= as_of, *_every(Visit.member_id, stride))
        .group_by(Visit.member_id)
        .subquery()
    )
    before = aliased(Visit)
    prev = (
        select(func.max(before.visited_on))
        .where(before.member_id == agg.c.member_id, before.visited_on < agg.c.last)
        .scalar_subquery()
    )
    satisfaction = segments.last_satisfaction_sql(as_of)
    sent = OutboxMessage
    unanswered = (
        select(func.count())
        .select_from(sent)
        .where(
            sent.member_id == Member.id,
            sent.status == SENT,
            sent.sent_at < end_of_day(as_of),
            or_(agg.c.last.is_(None), sent.created_at >= _day_after(agg.c.last, dialect)),
        )
        .scalar_subquery()
    )
    return (
        select(
            Member.id,
            func.coalesce(agg.c.days, 0),
            _days_before(as_of, agg.c.first, dialect),
            _days_before(as_of, agg.c.last, dialect),
            _days_before(as_of, prev, dialect),
            func.coalesce(agg.c.recent_days, 0),
            func.coalesce(agg.c.earlier_days, 0),
            func.coalesce(agg.c.recent_spend, 0),
            func.coalesce(agg.c.earlier_spend, 0),
            func.coalesce(agg.c.spend, 0),
            satisfaction,
            unanswered,
        )
        .outerjoin(agg, agg.c.member_id == Member.id)
        .where(
            Member.erased_at.is_(None),
            or_(Member.created_at < end_of_day(as_of), agg.c.member_id.is_not(None)),
            *_every(Member.id, stride),
        )
        .order_by(Member.id)
    )


def _every(column: Any, stride: int) -> list[ColumnElement[bool]]:
    return [column % stride == 0] if stride > 1 else []


_COLUMNS = 12


async def history(session: AsyncSession, as_of: date, *, stride: int = 1) -> History:
    """Every counted member's history as of the day (or a 1-in-`stride` sample by id),
    streamed into arrays a partition at a time."""
    dialect = session.bind.dialect.name
    blocks: list[NDArray[np.float64]] = []
    result = await session.stream(history_statement(as_of, dialect, stride))
    async for rows in result.partitions(_PARTITION):
        # Plain tuples first: numpy reads them ten times faster than Row objects.
        blocks.append(np.array([tuple(r) for r in rows], dtype=np.float64).reshape(-1, _COLUMNS))
    table = np.concatenate(blocks) if blocks else np.zeros((0, _COLUMNS))
    return _history_from_table(as_of, table)


def _history_from_table(as_of: date, table: FloatArray) -> History:
    """Rows of (id, days, first_age, last_age, prev_age, recent_days, earlier_days,
    recent_spend, earlier_spend, spend, satisfaction, unanswered), NaN for missing."""
    col = table.T
    return History(
        as_of=as_of,
        member_id=col[0].astype(np.int64),
        visit_days=col[1].astype(np.int64),
        first_age=col[2].copy(),
        last_age=col[3].copy(),
        prev_age=col[4].copy(),
        recent_days=col[5].astype(np.int64),
        earlier_days=col[6].astype(np.int64),
        recent_spend=col[7].astype(np.int64),
        earlier_spend=col[8].astype(np.int64),
        total_spend=col[9].astype(np.int64),
        last_satisfaction=col[10].copy(),
        unanswered=col[11].astype(np.int64),
    )


def history_from_visits(
    member_ids: Sequence[int],
    visits: Sequence[Sequence[tuple[date, int, int | None]]],
    as_of: date,
    unanswered: Sequence[int] | None = None,
) -> History:
    """The same `History` from plain lists of (day, cents, satisfaction) per member, in the
    order they were recorded; for evaluations on data that is not in a database (CDNOW, a
    simulation). Members are kept whether or not they visited by the day."""
    recent = as_of - timedelta(days=WINDOW_DAYS - 1)
    earlier = recent - timedelta(days=WINDOW_DAYS)
    nan = math.nan
    rows: list[tuple[float, ...]] = []
    for i, (member_id, own) in enumerate(zip(member_ids, visits, strict=True)):
        seen = [v for v in own if v[0] <= as_of]
        days = sorted({v[0] for v in seen})
        # sorted() is stable: within a day the later-recorded visit stays last, as `id` does.
        rated = [v[2] for v in sorted(seen, key=lambda v: v[0]) if v[2] is not None]
        ages = [(as_of - d).days for d in days]
        rows.append(
            (
                member_id,
                len(days),
                ages[0] if ages else nan,
                ages[-1] if ages else nan,
                ages[-2] if len(ages) > 1 else nan,
                sum(d >= recent for d in days),
                sum(earlier <= d < recent for d in days),
                sum(c for d, c, _ in seen if d >= recent),
                sum(c for d, c, _ in seen if earlier <= d < recent),
                sum(c for _, c, _ in seen),
                float(rated[-1]) if rated else nan,
                unanswered[i] if unanswered is not None else 0,
            )
        )
    table = np.array(rows, dtype=np.float64).reshape(-1, _COLUMNS)
    return _history_from_table(as_of, table)
