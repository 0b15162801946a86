"""Win-back offers: a first offer to members who just turned pre-churn, a second to those who
ignored the first.

Pre-churn is `domain.segments`' rule on the same numbers: gone longer than their own rhythm
allows (the chain's median rhythm for members with one visit), or a detractor's score on their
latest rated visit. A member is picked on the days it turns true (`within_days` of catch-up),
gets a first offer at most every `every_days`, and a second one `second_after_days` after a
first that brought no visit and whose coupon was not used. Both are keyed by the lapse's last
visit (`<stage>:<day>`), which is how the second finds its first in the outbox.
"""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, exists, func, literal, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import Coupon, Member, OutboxMessage, Visit
from domain import segments
from domain.queries import date_literal, days_between, iso_date_text
from scheduler.ruleconfig import WinBack
from scheduler.selectors.query import (
    MEMBER_COLUMNS,
    VISIT_COLUMNS,
    Candidate,
    CandidateQuery,
    ChainDay,
    RowToCandidates,
    candidate,
    common_context,
    member_may_receive,
    row_locale,
    visit_context,
)

# How a first offer's idempotency key ends, as a LIKE pattern: stage 1, then the lapse's last
# visit day (`<rule>:member:<member id>:1:2026-05-01`); a second offer's ends `:2:<day>`.
FIRST_OFFER_KEY_END = ":1:____-__-__"


async def win_back(session: AsyncSession, rule: WinBack, chain: ChainDay) -> list[CandidateQuery]:
    """First offers to members who turned pre-churn within `within_days`; second offers to
    those who ignored a first one sent `second_after_days` ago."""
    median = await chain_median_interval(session, chain)
    return [
        *_turned_by_cadence(rule, chain, median),
        *_turned_by_score(rule, chain),
        *_second_offers(rule, chain),
    ]


async def chain_median_interval(session: AsyncSession, chain: ChainDay) -> float:
    """The chain's median of members' average days between visits, as domain.segments has it
    (members not erased with two or more visits up to the day)."""
    days = days_between(chain.dialect, func.max(Visit.visited_on), func.min(Visit.visited_on))
    intervals = (
        select(cast(days, Float) / (func.count() - 1))
        .join(Member, Member.id == Visit.member_id)
        .where(Visit.visited_on <= date_literal(chain.day), Member.erased_at.is_(None))
        .group_by(Visit.member_id)
        .having(func.count() >= 2)
    )
    values: list[float] = []
    stream = await session.stream_scalars(intervals.execution_options(yield_per=20_000))
    async for partition in stream.partitions():
        values.extend(float(v) for v in partition)
    return statistics.median(values) if values else segments.FALLBACK_CADENCE_DAYS


def _recent_first_offer(rule: WinBack, chain: ChainDay) -> Any:
    """The member got a first offer of this rule within the last `every_days` days."""
    return exists().where(
        OutboxMessage.member_id == Member.id,
        OutboxMessage.rule == rule.key,
        OutboxMessage.idempotency_key.like(f"{rule.key}:member:%{FIRST_OFFER_KEY_END}"),
        OutboxMessage.not_before >= chain.start_of(chain.day - timedelta(days=rule.every_days - 1)),
    )


def _last_rated(chain: ChainDay, member: Any) -> Any:
    """The score of the member's latest rated visit up to the day (NULL for none)."""
    rated = aliased(Visit)
    return (
        select(rated.satisfaction)
        .where(
            rated.member_id == member,
            rated.visited_on <= date_literal(chain.day),
            rated.satisfaction.is_not(None),
        )
        .order_by(rated.visited_on.desc(), rated.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _offers(rule: WinBack, chain: ChainDay, stage: int) -> RowToCandidates:
    """A row's member as the `stage` (1 or 2) offer about the lapse after the row's visit."""
    coupon = rule.coupon if stage == 1 else rule.second_coupon

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        context = common_context(row, chain, locale)
        context["visit"] = visit_context(row, chain, locale)
        context["stage"] = stage
        occurrence = f"{stage}:{row.visited_on.isoformat()}"
        return [candidate(row, occurrence, locale, context, coupon=coupon)]

    return to_candidates


def _latest_visit(chain: ChainDay, visit: Any) -> Any:
    """`visit` is its member's latest up to the day (the latest id among same-day visits)."""
    later = aliased(Visit)
    return ~exists().where(
        later.member_id == visit.member_id,
        later.visited_on <= date_literal(chain.day),
        or_(
            later.visited_on > visit.visited_on,
            and_(later.visited_on == visit.visited_on, later.id > visit.id),
        ),
    )


def _turned_by_cadence(rule: WinBack, chain: ChainDay, median: float) -> list[CandidateQuery]:
    """Gone longer than their rhythm allows today, but not `within_days` days ago: the same
    comparison as domain.segments.stickiness, on the same numbers."""
    n = func.count()
    gap = days_between(chain.dialect, func.max(Visit.visited_on), func.min(Visit.visited_on))
    recency = days_between(chain.dialect, date_literal(chain.day), func.max(Visit.visited_on))
    average = cast(gap, Float) / (n - 1)
    own = segments.PRE_CHURN_CADENCE_FACTOR * case(
        (average > segments.MIN_CADENCE_DAYS, average), else_=segments.MIN_CADENCE_DAYS
    )
    allowed = case((n >= 2, own), else_=literal(segments.NEW_CADENCE_FACTOR * median, Float))
    lapsed = (
        select(Visit.member_id.label("member_id"), func.max(Visit.visited_on).label("last"))
        .where(Visit.visited_on <= date_literal(chain.day))
        .group_by(Visit.member_id)
        .having(recency > allowed, recency - rule.within_days <= allowed)
        .subquery("lapsed")
    )
    score = _last_rated(chain, Member.id)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(lapsed)
        .join(Member, Member.id == lapsed.c.member_id)
        .join(Visit, and_(Visit.member_id == lapsed.c.member_id, Visit.visited_on == lapsed.c.last))
        .where(
            _latest_visit(chain, Visit),
            *member_may_receive(rule),
            or_(score.is_(None), score > segments.PRE_CHURN_SATISFACTION),
            ~_recent_first_offer(rule, chain),
        )
        .order_by(Member.id)
    )
    return [CandidateQuery(statement, _offers(rule, chain, 1))]


def _turned_by_score(rule: WinBack, chain: ChainDay) -> list[CandidateQuery]:
    """A detractor's score (PRE_CHURN_SATISFACTION or less) on their latest rated visit, given
    within `within_days`: pre-churn from that visit on."""
    rated = aliased(Visit)
    newer = aliased(Visit)
    low = (
        select(rated.member_id.label("member_id"))
        .where(
            rated.visited_on > date_literal(chain.day - timedelta(days=rule.within_days)),
            rated.visited_on <= date_literal(chain.day),
            rated.satisfaction <= segments.PRE_CHURN_SATISFACTION,
            ~exists().where(
                newer.member_id == rated.member_id,
                newer.satisfaction.is_not(None),
                newer.visited_on <= date_literal(chain.day),
                or_(
                    newer.visited_on > rated.visited_on,
                    and_(newer.visited_on == rated.visited_on, newer.id > rated.id),
                ),
            ),
        )
        .subquery("low")
    )
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(low)
        .join(Member, Member.id == low.c.member_id)
        .join(Visit, Visit.member_id == low.c.member_id)
        .where(
            Visit.visited_on <= date_literal(chain.day),
            _latest_visit(chain, Visit),
            *member_may_receive(rule),
            ~_recent_first_offer(rule, chain),
        )
        .order_by(Member.id)
    )
    return [CandidateQuery(statement, _offers(rule, chain, 1))]


def _second_offers(rule: WinBack, chain: ChainDay) -> list[CandidateQuery]:
    """First offers sent `second_after_days` ago (within the catch-up window), with no visit
    since the lapse they were about and their coupon, if any, unused."""
    if rule.second_coupon is None:
        return []
    first = OutboxMessage
    prefix = f"{rule.key}:member:"
    sent_from = chain.start_of(
        chain.day - timedelta(days=rule.second_after_days + rule.within_days - 1)
    )
    sent_until = chain.start_of(chain.day - timedelta(days=rule.second_after_days - 1))
    # The first offer's key ends with the lapse's last visit day ("...:1:2026-05-01").
    lapse_day = func.substr(first.idempotency_key, func.length(first.idempotency_key) - 9)
    used = aliased(Coupon)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .select_from(first)
        .join(Member, Member.id == first.member_id)
        .join(Visit, Visit.member_id == first.member_id)
        .where(
            first.idempotency_key >= prefix,
            first.idempotency_key < prefix[:-1] + ";",
            first.rule == rule.key,
            first.idempotency_key.like(f"{prefix}%{FIRST_OFFER_KEY_END}"),
            first.not_before >= sent_from,
            first.not_before < sent_until,
            iso_date_text(chain.dialect, Visit.visited_on) == lapse_day,
            _latest_visit(chain, Visit),
            ~exists().where(
                used.key == literal("rule:") + first.idempotency_key, used.used_at.is_not(None)
            ),
            *member_may_receive(rule),
        )
        .order_by(Member.id)
    )
    return [CandidateQuery(statement, _offers(rule, chain, 2))]
