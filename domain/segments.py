"""Who each member is to the chain on a given day: RFM scores and segment, stickiness,
lifecycle stage, and the stage of each car. The groundwork lifecycle rules and campaigns build on.

Everything is computed *as of* a date from the visits on or before it, so the answer for a past
day never changes when later visits arrive, and a rule can be replayed on history. Nothing is
written; no table is added.

Who is counted. Members not erased who existed on the as-of day: created on or before it (UTC
date), or with a visit on or before it. The second half matters because a CSV import creates
members today with years of history; without it every back-dated report would drop them. For the
same reason a member's start (`days_since_joined`) is the earlier of their creation date and
first visit.

Metrics (`member_metrics`). One set-based statement: visits on or before the day grouped per
member, outer-joined to members, plus a correlated subquery for the latest satisfaction score.
"The last 12 months" is the tier window (`tiers.window_start`: the day and the 364 before it), so
a member's monetary value is exactly the spend their tier is reviewed on.

RFM scores (1-5). Quintiles over the *scored population*: members with at least one visit on or
before the day. R ranks recency (fewer days is better), F the visits and M the spend of the last
12 months. A member's score is 1 + floor(5 x (members strictly worse) / population), so equal
values always share a score (no arbitrary split of a tie by member id, unlike SQL NTILE), and the
result does not depend on row order. With 10 distinct values the scores run 1,1,2,2,3,3,4,4,5,5.
Members who never visited are not ranked and get R=F=M=1. Scoring is done in Python over the
metrics list: a few sorts in memory, about 1 KB a member with its segment (measured ~0.5 KB for
the metrics alone), so ~1 GB at a million members; past that, move the ranking into SQL (RANK()
over the same orderings) and keep these functions as the spec. 20,000 members with 200,000
visits segment in about 0.4 s on SQLite.
Scores are relative to the whole chain, so `segment_members(..., member_ids=...)` still ranks
everyone and only filters what it returns.

RFM segments. The first matching row wins ("hi" = score >= 4, "mid+" = score >= 3, "lo" <= 2):

    key                 zh_CN           en                  rule
    prospect            潜在客户        Prospect            never visited (no RFM to speak of)
    champions           重要价值客户    Champions           R hi, F hi, M hi
    loyal               重要保持客户    Loyal               R mid+, F hi, M mid+
    at_risk             重要挽留客户    At risk             R lo, F mid+, M mid+
    new                 新客户          New                 R hi, F = 1
    potential_loyalist  重要发展客户    Potential loyalist  R hi, M mid+
    general_value       一般价值客户    Regular             R mid+, F mid+ (spend low)
    promising           一般发展客户    Promising           R hi (rest: recent, rare, small)
    need_attention      需要关注        Need attention      R = 3 (rest)
    about_to_sleep      即将流失        About to sleep      R = 2 (rest)
    lost                流失客户        Lost                R = 1 (rest)

Every (R, F, M) in 1..5 falls in exactly one row. The keys are stable: rules refer to them.

Stickiness (强粘性 strong / 弱粘性 weak / 预流失 pre_churn), measured against the member's own
rhythm rather than one chain-wide clock, because a weekly washer gone a month is slipping while
a twice-a-year maintenance customer gone a month is right on time:

- pre_churn: the last satisfaction score is PRE_CHURN_SATISFACTION (6) or lower (a detractor in
  NPS terms), or the days since the last visit exceed PRE_CHURN_CADENCE_FACTOR (1.5) times their
  own average interval (never below MIN_CADENCE_DAYS, so two visits on one day do not make a
  member pre-churn the next morning), or, with fewer than two visits and so no rhythm of their
  own, exceed NEW_CADENCE_FACTOR (2) times the chain's median interval (FALLBACK_CADENCE_DAYS
  when no member has two visits yet);
- strong: at least STRONG_MIN_FREQUENCY (4) visits in 12 months, 12-month spend at or above the
  chain median (over members who spent in the window), and a last satisfaction of
  STRONG_MIN_SATISFACTION (8) or more, or none given;
- weak: the rest, including members who never visited (nothing to be attached to yet; the
  lifecycle stage tells a fresh sign-up from a dormant one).

Lifecycle stage, with reports.ACTIVE_DAYS and reports.LOST_DAYS so segments and the manager
report agree: new (a member for at most NEW_MEMBER_DAYS, or at most one visit and that within
NEW_MEMBER_DAYS), active (last visit at most ACTIVE_DAYS ago), lapsing (up to LOST_DAYS), lost
(older, or never visited and a member for longer than NEW_MEMBER_DAYS).

Car stage, by the purchase date's anniversaries as of the day: new_car before the 3rd, middle from
the 3rd through the 6th, old after the 6th, unknown without a purchase date (or one after the
day). `CAR_STAGES` lists per stage the service categories (shop.yaml's) worth offering.

Churn risk is a later, separate model. `MemberSegment` is a frozen dataclass whose fields are all
plain values, so `churn_risk: float | None = None` and `reasons: tuple[str, ...] = ()` can be
appended with defaults without changing any caller or this module's functions.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import Member, Vehicle, Visit
from domain.errors import InvalidInput
from domain.locales import LOCALES, localized
from domain.queries import end_of_day
from domain.reports import ACTIVE_DAYS, LOST_DAYS
from domain.tiers import window_start

# A member's first 90 days: the same span as "active", so a new member never falls in a gap.
NEW_MEMBER_DAYS = ACTIVE_DAYS

SCORE_HIGH = 4
SCORE_MID = 3

PRE_CHURN_SATISFACTION = 6
PRE_CHURN_CADENCE_FACTOR = 1.5
NEW_CADENCE_FACTOR = 2.0
MIN_CADENCE_DAYS = 14.0
FALLBACK_CADENCE_DAYS = ACTIVE_DAYS / 2
STRONG_MIN_FREQUENCY = 4
STRONG_MIN_SATISFACTION = 8

NEW_CAR_YEARS = 3
OLD_CAR_YEARS = 6


@dataclass(frozen=True)
class MemberMetrics:
    """A member's visit history summed up as of a day; dates and days, money in cents."""

    member_id: int
    member_ref: str
    as_of: date
    recency_days: int | None
    frequency: int
    monetary_cents: int
    lifetime_visits: int
    lifetime_spend_cents: int
    first_visit: date | None
    last_visit: date | None
    last_satisfaction: int | None
    avg_interval_days: float | None
    days_since_joined: int


@dataclass(frozen=True)
class MemberSegment:
    """Everything the segmentation says about one member on one day (see the module docstring
    for how `churn_risk` and `reasons` join later)."""

    member_id: int
    member_ref: str
    metrics: MemberMetrics
    r: int
    f: int
    m: int
    rfm_score: str
    rfm_segment: str
    stickiness: str
    lifecycle_stage: str


@dataclass(frozen=True)
class ChainNorms:
    """The chain's yardsticks on the day, against which a member with no rhythm is measured."""

    median_monetary_cents: int
    median_interval_days: float


@dataclass(frozen=True)
class CarStage:
    key: str
    name_zh: str
    name_en: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class VehicleStage:
    """A car's stage on the day; the plate stays out, it is personal data."""

    vehicle_id: int
    member_id: int
    purchase_date: date | None
    stage: str


@dataclass(frozen=True)
class _Segment:
    key: str
    name_zh: str
    name_en: str
    matches: Callable[[int, int, int], bool]


def _hi(score: int) -> bool:
    return score >= SCORE_HIGH


def _mid(score: int) -> bool:
    return score >= SCORE_MID


def _lo(score: int) -> bool:
    return score < SCORE_MID


PROSPECT = _Segment("prospect", "潜在客户", "Prospect", lambda r, f, m: False)
RFM_SEGMENTS: tuple[_Segment, ...] = (
    _Segment(
        "champions", "重要价值客户", "Champions", lambda r, f, m: _hi(r) and _hi(f) and _hi(m)
    ),
    _Segment("loyal", "重要保持客户", "Loyal", lambda r, f, m: _mid(r) and _hi(f) and _mid(m)),
    _Segment("at_risk", "重要挽留客户", "At risk", lambda r, f, m: _lo(r) and _mid(f) and _mid(m)),
    _Segment("new", "新客户", "New", lambda r, f, m: _hi(r) and f == 1),
    _Segment(
        "potential_loyalist",
        "重要发展客户",
        "Potential loyalist",
        lambda r, f, m: _hi(r) and _mid(m),
    ),
    _Segment("general_value", "一般价值客户", "Regular", lambda r, f, m: _mid(r) and _mid(f)),
    _Segment("promising", "一般发展客户", "Promising", lambda r, f, m: _hi(r)),
    _Segment("need_attention", "需要关注", "Need attention", lambda r, f, m: r == SCORE_MID),
    _Segment("about_to_sleep", "即将流失", "About to sleep", lambda r, f, m: r == 2),
    _Segment("lost", "流失客户", "Lost", lambda r, f, m: r == 1),
)
_SEGMENT_NAMES = {s.key: (s.name_zh, s.name_en) for s in (PROSPECT, *RFM_SEGMENTS)}

STICKINESS: dict[str, tuple[str, str]] = {
    "strong": ("强粘性", "Strong"),
    "weak": ("弱粘性", "Weak"),
    "pre_churn": ("预流失", "Pre-churn"),
}

LIFECYCLE_STAGES: dict[str, tuple[str, str]] = {
    "new": ("新会员", "New"),
    "active": ("活跃", "Active"),
    "lapsing": ("沉睡中", "Lapsing"),
    "lost": ("已流失", "Lost"),
}

CAR_STAGES: dict[str, CarStage] = {
    stage.key: stage
    for stage in (
        # Under warranty and cared for: looks and the scheduled services the dealer expects.
        CarStage("new_car", "新车", "New car", ("wash", "detailing", "maintenance")),
        # Out of warranty: owners shop around for maintenance, and tyres come due.
        CarStage("middle", "中年车", "Middle years", ("maintenance", "tyres", "wash")),
        # Wear shows: repairs, keeping it running, and the stricter inspections of older cars.
        CarStage("old", "老旧车", "Old car", ("repair", "maintenance", "inspection")),
        CarStage("unknown", "车龄未知", "Age unknown", ("wash", "maintenance")),
    )
}


def _name(names: dict[str, tuple[str, str]], key: str, locale: str) -> str:
    if locale not in LOCALES:
        raise InvalidInput("unknown locale", locale=locale)
    if key not in names:
        raise InvalidInput("unknown key", key=key)
    zh, en = names[key]
    return localized(locale, zh, en)


def segment_name(key: str, locale: str) -> str:
    return _name(_SEGMENT_NAMES, key, locale)


def stickiness_name(key: str, locale: str) -> str:
    return _name(STICKINESS, key, locale)


def lifecycle_name(key: str, locale: str) -> str:
    return _name(LIFECYCLE_STAGES, key, locale)


def car_stage_name(key: str, locale: str) -> str:
    names = {k: (s.name_zh, s.name_en) for k, s in CAR_STAGES.items()}
    return _name(names, key, locale)


async def member_metrics(
    session: AsyncSession, as_of: date, *, member_ids: Iterable[int] | None = None
) -> list[MemberMetrics]:
    """Per-member metrics in one statement, ordered by member id."""
    since = window_start(as_of)
    in_window = Visit.visited_on >= since
    visits = select(
        Visit.member_id,
        func.count().label("visits"),
        func.coalesce(func.sum(Visit.amount_cents), 0).label("spend"),
        func.coalesce(func.sum(case((in_window, 1), else_=0)), 0).label("frequency"),
        func.coalesce(func.sum(case((in_window, Visit.amount_cents), else_=0)), 0).label(
            "monetary"
        ),
        func.min(Visit.visited_on).label("first"),
        func.max(Visit.visited_on).label("last"),
    ).where(Visit.visited_on <= as_of)
    last_satisfaction = last_satisfaction_sql(as_of)
    wanted = [Member.erased_at.is_(None)]
    if member_ids is not None:
        ids = sorted(set(member_ids))
        visits = visits.where(Visit.member_id.in_(ids))
        wanted.append(Member.id.in_(ids))
    agg = visits.group_by(Visit.member_id).subquery()
    rows = await session.execute(
        select(
            Member.id,
            Member.member_ref,
            Member.created_at,
            agg.c.visits,
            agg.c.spend,
            agg.c.frequency,
            agg.c.monetary,
            agg.c.first,
            agg.c.last,
            last_satisfaction,
        )
        .outerjoin(agg, agg.c.member_id == Member.id)
        .where(*wanted, or_(Member.created_at < end_of_day(as_of), agg.c.member_id.is_not(None)))
        .order_by(Member.id)
    )
    return [_metrics(as_of, *row) for row in rows.all()]


def _metrics(
    as_of: date,
    member_id: int,
    member_ref: str,
    created_at: datetime,
    visits: int | None,
    spend: int | None,
    frequency: int | None,
    monetary: int | None,
    first: date | None,
    last: date | None,
    satisfaction: int | None,
) -> MemberMetrics:
    count = int(visits or 0)
    joined = min(created_at.date(), first) if first else created_at.date()
    interval = (last - first).days / (count - 1) if first and last and count >= 2 else None
    return MemberMetrics(
        member_id=member_id,
        member_ref=member_ref,
        as_of=as_of,
        recency_days=(as_of - last).days if last else None,
        frequency=int(frequency or 0),
        monetary_cents=int(monetary or 0),
        lifetime_visits=count,
        lifetime_spend_cents=int(spend or 0),
        first_visit=first,
        last_visit=last,
        last_satisfaction=satisfaction,
        avg_interval_days=interval,
        days_since_joined=(as_of - joined).days,
    )


def quintile_scores(values: Sequence[float], *, lower_is_better: bool = False) -> list[int]:
    """1-5 for each value: 1 + floor(5 x (values strictly worse) / len), ties sharing a score."""
    worst_first = sorted(values, reverse=lower_is_better)
    worse_than: dict[float, int] = {}
    for position, value in enumerate(worst_first):
        worse_than.setdefault(value, position)
    return [1 + (5 * worse_than[value]) // len(values) for value in values]


def rfm_scores(metrics: Sequence[MemberMetrics]) -> dict[int, tuple[int, int, int]]:
    """(R, F, M) per member id; the never-visited are not ranked and get (1, 1, 1)."""
    ranked = [m for m in metrics if m.recency_days is not None]
    scores = {m.member_id: (1, 1, 1) for m in metrics}
    if not ranked:
        return scores
    r = quintile_scores([m.recency_days or 0 for m in ranked], lower_is_better=True)
    f = quintile_scores([m.frequency for m in ranked])
    m_ = quintile_scores([m.monetary_cents for m in ranked])
    for member, *rfm in zip(ranked, r, f, m_, strict=True):
        scores[member.member_id] = (rfm[0], rfm[1], rfm[2])
    return scores


def rfm_segment(r: int, f: int, m: int) -> str:
    """The segment key for scores 1-5 (the table in the module docstring)."""
    if not all(1 <= score <= 5 for score in (r, f, m)):
        raise InvalidInput("RFM scores are 1 to 5", r=r, f=f, m=m)
    return next(s.key for s in RFM_SEGMENTS if s.matches(r, f, m))


def chain_norms(metrics: Sequence[MemberMetrics]) -> ChainNorms:
    spenders = [m.monetary_cents for m in metrics if m.frequency > 0]
    intervals = [m.avg_interval_days for m in metrics if m.avg_interval_days is not None]
    return ChainNorms(
        median_monetary_cents=int(statistics.median(spenders)) if spenders else 0,
        median_interval_days=statistics.median(intervals) if intervals else FALLBACK_CADENCE_DAYS,
    )


def stickiness(metrics: MemberMetrics, norms: ChainNorms) -> str:
    """strong / weak / pre_churn (rules and reasons in the module docstring)."""
    if metrics.recency_days is None:
        return "weak"
    satisfaction = metrics.last_satisfaction
    if satisfaction is not None and satisfaction <= PRE_CHURN_SATISFACTION:
        return "pre_churn"
    if metrics.avg_interval_days is not None:
        allowed = PRE_CHURN_CADENCE_FACTOR * max(metrics.avg_interval_days, MIN_CADENCE_DAYS)
    else:
        allowed = NEW_CADENCE_FACTOR * norms.median_interval_days
    if metrics.recency_days > allowed:
        return "pre_churn"
    if (
        metrics.frequency >= STRONG_MIN_FREQUENCY
        and metrics.monetary_cents >= norms.median_monetary_cents
        and (satisfaction is None or satisfaction >= STRONG_MIN_SATISFACTION)
    ):
        return "strong"
    return "weak"


def lifecycle_stage(metrics: MemberMetrics) -> str:
    """new / active / lapsing / lost, on the same day boundaries as reports.activity."""
    recent_first = metrics.first_visit is not None and (
        (metrics.as_of - metrics.first_visit).days <= NEW_MEMBER_DAYS
    )
    if metrics.days_since_joined <= NEW_MEMBER_DAYS or (
        metrics.lifetime_visits <= 1 and recent_first
    ):
        return "new"
    if metrics.recency_days is None or metrics.recency_days > LOST_DAYS:
        return "lost"
    return "active" if metrics.recency_days <= ACTIVE_DAYS else "lapsing"


async def segment_members(
    session: AsyncSession, as_of: date, *, member_ids: Iterable[int] | None = None
) -> list[MemberSegment]:
    """Every member's segmentation; ranked against the whole chain even when filtered."""
    everyone = await member_metrics(session, as_of)
    scores = rfm_scores(everyone)
    norms = chain_norms(everyone)
    wanted = None if member_ids is None else set(member_ids)
    return [
        _segment(metrics, scores[metrics.member_id], norms)
        for metrics in everyone
        if wanted is None or metrics.member_id in wanted
    ]


def _segment(metrics: MemberMetrics, rfm: tuple[int, int, int], norms: ChainNorms) -> MemberSegment:
    r, f, m = rfm
    segment = PROSPECT.key if metrics.recency_days is None else rfm_segment(r, f, m)
    return MemberSegment(
        member_id=metrics.member_id,
        member_ref=metrics.member_ref,
        metrics=metrics,
        r=r,
        f=f,
        m=m,
        rfm_score=f"{r}{f}{m}",
        rfm_segment=segment,
        stickiness=stickiness(metrics, norms),
        lifecycle_stage=lifecycle_stage(metrics),
    )


def _anniversary(day: date, years: int) -> date:
    """`day` plus whole years; 29 February falls on the 28th in common years."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def car_stage(purchase_date: date | None, as_of: date) -> str:
    if purchase_date is None or purchase_date > as_of:
        return "unknown"
    if as_of < _anniversary(purchase_date, NEW_CAR_YEARS):
        return "new_car"
    if as_of <= _anniversary(purchase_date, OLD_CAR_YEARS):
        return "middle"
    return "old"


async def vehicle_stages(
    session: AsyncSession, as_of: date, *, member_ids: Iterable[int] | None = None
) -> list[VehicleStage]:
    """Cars of members not erased that the chain knew on the day (registered by then, or seen
    at a visit by then), ordered by vehicle id."""
    seen = exists().where(Visit.vehicle_id == Vehicle.id, Visit.visited_on <= as_of)
    query = (
        select(Vehicle.id, Vehicle.member_id, Vehicle.purchase_date)
        .join(Member, Member.id == Vehicle.member_id)
        .where(
            Member.erased_at.is_(None),
            or_(Vehicle.created_at < end_of_day(as_of), seen),
        )
        .order_by(Vehicle.id)
    )
    if member_ids is not None:
        query = query.where(Vehicle.member_id.in_(sorted(set(member_ids))))
    rows = await session.execute(query)
    return [
        VehicleStage(vehicle_id, member_id, purchase, car_stage(purchase, as_of))
        for vehicle_id, member_id, purchase in rows.all()
    ]


def last_satisfaction_sql(as_of: date):  # type: ignore[no-untyped-def]
    """SQL, correlated to `Member`: the member's most recent satisfaction score up to the day
    (segments' pre-churn test and the churn model's feature read the same one)."""
    rated = aliased(Visit)
    return (
        select(rated.satisfaction)
        .where(
            rated.member_id == Member.id,
            rated.visited_on <= as_of,
            rated.satisfaction.is_not(None),
        )
        .order_by(rated.visited_on.desc(), rated.id.desc())
        .limit(1)
        .correlate(Member)
        .scalar_subquery()
    )
