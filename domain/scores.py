"""Each member's segment and churn risk on one day, together: the nightly `member_score`
snapshot, and the rows `memberbot segments export` writes.

Both come from one computation as of a day: `domain.segments` (RFM, segment, stickiness,
lifecycle) and `domain.churn` (risk and reasons, its model trained on the history up to the
day), joined on member id. The populations agree by construction (not erased; created by the
day or with a visit by it), so every row has both halves.

`refresh` replaces the snapshot: every member's row is upserted in chunks, and rows the run did
not write (members erased since, or a snapshot of another day) are deleted, so the table always
holds exactly one day's view. Reasons are stored as codes (`overdue:days=45`) and worded on
reading by `churn.reason_text`, in whichever language the reader wants.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MemberScore
from db.session import Database, upsert_insert
from db.types import utcnow
from domain import churn, segments
from domain.churn import Assessment, ChurnConfig, ChurnModel
from domain.segments import MemberSegment

# Eleven columns a row: well under SQLite's bound-parameter limit per statement.
_UPSERT_CHUNK = 1_000
ROWS_PER_COMMIT = 20_000
RISK_DECIMALS = 4


@dataclass(frozen=True)
class ScoreRow:
    member_id: int
    member_ref: str
    as_of: date
    recency_days: int | None
    frequency: int
    monetary_cents: int
    rfm_score: str
    rfm_segment: str
    stickiness: str
    lifecycle_stage: str
    churn_risk: float
    reasons: tuple[str, ...]


class ScoreSet:
    """Every counted member's row as of a day, built lazily while iterating so a big chain
    does not hold a million row objects at once."""

    def __init__(self, as_of: date, members: Sequence[MemberSegment], assessment: Assessment):
        self.as_of = as_of
        self._members = members
        self._assessment = assessment
        ids = assessment.history.member_id
        wanted = np.array([m.member_id for m in members], dtype=np.int64)
        where = np.minimum(np.searchsorted(ids, wanted), max(len(ids) - 1, 0))
        if len(wanted) and (len(ids) == 0 or not np.array_equal(ids[where], wanted)):
            raise RuntimeError("segments and churn scored different members")
        self._where = where

    @property
    def model(self) -> ChurnModel:
        return self._assessment.model

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[ScoreRow]:
        risk = self._assessment.risk
        for member, i in zip(self._members, self._where, strict=True):
            m = member.metrics
            yield ScoreRow(
                member_id=member.member_id,
                member_ref=member.member_ref,
                as_of=self.as_of,
                recency_days=m.recency_days,
                frequency=m.frequency,
                monetary_cents=m.monetary_cents,
                rfm_score=member.rfm_score,
                rfm_segment=member.rfm_segment,
                stickiness=member.stickiness,
                lifecycle_stage=member.lifecycle_stage,
                churn_risk=round(float(risk[i]), RISK_DECIMALS),
                reasons=tuple(r.code for r in self._assessment.reasons(int(i))),
            )


async def compute(
    session: AsyncSession, as_of: date, config: ChurnConfig | None = None
) -> ScoreSet:
    """Segments and churn as of the day, from the data up to it only."""
    members = await segments.segment_members(session, as_of)
    assessment = await churn.assess(session, as_of, config)
    return ScoreSet(as_of, members, assessment)


async def refresh(session: AsyncSession, as_of: date, config: ChurnConfig | None = None) -> int:
    """Rewrite the `member_score` snapshot as of the day; returns the rows written. Call it in
    a write unit of work (`Database.transaction()`). The nightly job instead computes in a read
    session and only `store`s in the write one, so the chat is not kept waiting while the
    models fit."""
    return await store(session, await compute(session, as_of, config))


async def store(session: AsyncSession, score_set: ScoreSet) -> int:
    """Write a computed snapshot over the previous one (members no longer scored, such as the
    erased, drop out)."""
    started = utcnow()
    written = await _write(session, score_set, started)
    await _drop_older(session, started)
    return written


async def store_in_batches(
    db: Database, score_set: ScoreSet, rows_per_commit: int = ROWS_PER_COMMIT
) -> int:
    """`store`, committed every `rows_per_commit` members: on SQLite a writer holds the whole
    database, and a million rows in one transaction would keep the chat's bookings and
    redemptions waiting past their timeout. Until the last batch commits, staff may see some
    members scored as of today and some as of yesterday."""
    started = utcnow()
    rows = iter(score_set)
    written = 0
    while batch := list(islice(rows, rows_per_commit)):
        async with db.transaction() as session:
            written += await _write(session, batch, started)
    async with db.transaction() as session:
        await _drop_older(session, started)
    return written


async def _write(session: AsyncSession, rows: Iterable[ScoreRow], computed_at: datetime) -> int:
    written = 0
    chunk: list[dict[str, object]] = []
    for row in rows:
        chunk.append(_values(row, computed_at))
        if len(chunk) >= _UPSERT_CHUNK:
            written += await _upsert(session, chunk)
            chunk = []
    if chunk:
        written += await _upsert(session, chunk)
    return written


async def _drop_older(session: AsyncSession, started: datetime) -> None:
    await session.execute(delete(MemberScore).where(MemberScore.computed_at < started))


def _values(row: ScoreRow, computed_at: object) -> dict[str, object]:
    return {
        "member_id": row.member_id,
        "as_of": row.as_of,
        "recency_days": row.recency_days,
        "frequency": row.frequency,
        "monetary_cents": row.monetary_cents,
        "rfm_score": row.rfm_score,
        "rfm_segment": row.rfm_segment,
        "stickiness": row.stickiness,
        "lifecycle": row.lifecycle_stage,
        "churn_risk": row.churn_risk,
        "reasons": list(row.reasons),
        "computed_at": computed_at,
    }


async def _upsert(session: AsyncSession, chunk: list[dict[str, object]]) -> int:
    table = MemberScore.__table__  # type: ignore[attr-defined]
    statement = upsert_insert(session, table).values(chunk)
    updated = {column: statement.excluded[column] for column in chunk[0] if column != "member_id"}
    await session.execute(
        statement.on_conflict_do_update(index_elements=["member_id"], set_=updated)
    )
    return len(chunk)


async def snapshot_size(session: AsyncSession) -> int:
    """How many members the last refresh scored (it leaves exactly those rows)."""
    return int(await session.scalar(select(func.count()).select_from(MemberScore)) or 0)
