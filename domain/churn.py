"""Churn risk per member as of a day, with the reasons behind it in words staff can act on.

What "churn" means here. A member churns when they do not come back within the horizon
(`ChurnConfig.horizon_days`, 180 by default): `churn_risk` is the model's probability of no visit
in the next horizon, so it ranks members by their chance of not coming back.

How the model is trained: on the shop's own earlier history, never on the future. For an as-of
day D the features are computed as of D - H (H = the horizon) and the label is whether each
member who had visited by then came back in (D - H, D]; both use only visits on or before D. An
L2-regularised logistic regression is fitted by Newton's method (IRLS) on standardised features
and then applied to the features as of D. The blend (the default) adds one more feature, the
visits Pareto/NBD expects in the next H days, so the learnt model starts from the best classic
model and adds what that model cannot see: a member's own rhythm, lengthening gaps, falling
spend, a low satisfaction score, messages left unanswered. Pareto/NBD (`domain.btyd`'s
likelihood) is fitted once, on a sample of the history as of D - H, and that fit feeds both the
training and the scoring feature, so nothing from the label window reaches the feature the
label is learnt against. Its search is `quick_pareto_fit` (L-BFGS-B only), because on a car
chain's data one likelihood evaluation costs 10-60 ms and `fit_pareto_nbd`'s thorough search
took a minute on 5,000 members.

Why this and not P(alive) alone: on CDNOW held out 39 + 39 weeks, BG/NBD's P(alive) ranks worse
than chance (AUC 0.32: it is 1 for every one-time buyer, and most churners are one-time
buyers); Pareto/NBD's expected purchases rank at 0.78, this model at 0.78 too, and on a chain
whose members keep their own rhythm it is ahead (bench/README.md has the table).

Features (from `History`, one SQL statement over visits up to the day; `_design`):

    recency          log(1 + days since the last visit)
    overdue          log(1 + days since the last visit) - log(1 + the member's own average
                     interval; the chain's median interval for a member with one visit day)
    past_due         max(0, overdue): being late weighs more than being early (measured: +0.005
                     AUC on the simulated chain, which is where a member's rhythm matters)
    visits           log(distinct visit days)
    tenure           log(1 + days since the first visit)
    gap_trend        log(1 + last gap) - log(1 + the average gap before it) (3+ visit days)
    frequency_trend  log(1 + visit days in the last 12 months) - log(1 + in the 12 before)
    spend_trend      log(1 + spend in the last 12 months) - log(1 + in the 12 before), yuan
    ticket           log(1 + spend per visit day), yuan
    dissatisfaction  10 - the last satisfaction score given (0 when none was given)
    rated            1 when a satisfaction score was ever given
    unanswered       log(1 + messages sent after the last visit that no visit followed)
    expected_visits  log(1 + Pareto/NBD expected visits in the next H days) (the blend only)

Reasons come from the same fitted model: a member's contribution of feature j to the risk
log-odds is -w_j * z_ij (w the coefficient of "came back", z the feature standardised against
the training members, so an average member contributes 0). Contributions are summed per reason
key (`REASON_OF`), and the largest positive ones above `REASON_MIN_LOGIT` are shown, at most
`ChurnConfig.max_reasons`. A reason is stored as a compact code, `overdue:days=45`, and worded
by `reason_text` in zh_CN or en (keyed templates in `REASON_WORDS`; these are staff-facing
labels, not member messages, so they are not approved templates under templates/messages).

When the history is too short to train (fewer than `min_train_members` members had visited by
D - H, or fewer than `min_class_members` came back or stayed away), the risk comes from
Pareto/NBD alone, the probability of no visit in the horizon; with fewer than
`MIN_BTYD_MEMBERS` members with visits no model can be fitted at all and a fixed rule against
the member's own cadence is used. `Assessment.method` and `Assessment.note` say which.

Members who never visited (prospects) cannot be scored by visit history: their risk is the
share of the members who had not visited by D - H and still had not visited by D (smoothed),
with the reason `no_visit`.

Scale: the features of every member are streamed in partitions into numpy arrays (about 100
bytes a member); the history as of D - H is read only for a 1-in-k sample of members by id, k
chosen so about `train_sample` remain, and Pareto/NBD is fitted on `btyd_sample` of them. See
bench/README.md for the measured time and memory at a million members.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit
from sqlalchemy import DateTime, Integer, Select, case, cast, distinct, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from db.models import Member, OutboxMessage, OutboxStatus, Visit
from domain import segments
from domain.btyd import ParetoNbd
from domain.errors import InvalidInput
from domain.locales import LOCALES
from domain.queries import end_of_day
from domain.segments import FALLBACK_CADENCE_DAYS, MIN_CADENCE_DAYS, PRE_CHURN_CADENCE_FACTOR
from domain.tiers import WINDOW_DAYS

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

SENT = OutboxStatus.SENT
MIN_BTYD_MEMBERS = 30
REASON_MIN_LOGIT = 0.25
_PARTITION = 100_000
_WEEK = 7.0

TRAINED, BTYD_ONLY, RULE = "trained", "btyd", "rule"

FEATURES: tuple[str, ...] = (
    "recency",
    "overdue",
    "past_due",
    "visits",
    "tenure",
    "gap_trend",
    "frequency_trend",
    "spend_trend",
    "ticket",
    "dissatisfaction",
    "rated",
    "unanswered",
)
BTYD_FEATURE = "expected_visits"

# Which reason a feature's contribution counts toward; None: it moves the risk but is nothing
# staff could act on (how long someone has been a member, whether they ever rated a visit).
REASON_OF: dict[str, str | None] = {
    "recency": "overdue",
    "overdue": "overdue",
    "past_due": "overdue",
    "visits": "few_visits",
    "tenure": None,
    "gap_trend": "longer_gaps",
    "frequency_trend": "fewer_visits",
    "spend_trend": "lower_spend",
    "ticket": "low_ticket",
    "dissatisfaction": "low_satisfaction",
    "rated": None,
    "unanswered": "unanswered",
    BTYD_FEATURE: "few_expected",
}

# zh_CN and en wording per reason key; the fields come from the stored code.
REASON_WORDS: dict[str, tuple[str, str]] = {
    "overdue": (
        "超过平时到店周期 {days} 天",
        "{days} days past their usual visit interval",
    ),
    "absent": ("已 {days} 天未到店", "{days} days since their last visit"),
    "few_visits": ("仅到店 {visits} 次", "only {visits} visit day(s) so far"),
    "longer_gaps": (
        "到店间隔拉长：最近一次 {last} 天，以往平均 {usual} 天",
        "visits further apart: last gap {last} days, usually {usual}",
    ),
    "fewer_visits": (
        "到店变少：近12个月 {recent} 次，之前12个月 {earlier} 次",
        "coming less: {recent} visit day(s) in the last 12 months, {earlier} in the 12 before",
    ),
    "lower_spend": (
        "消费下降：近12个月 ¥{recent}，之前12个月 ¥{earlier}",
        "spending less: ¥{recent} in the last 12 months, ¥{earlier} in the 12 before",
    ),
    "low_ticket": ("客单价低：平均每次 ¥{ticket}", "low spend per visit: ¥{ticket} on average"),
    "low_satisfaction": (
        "最近一次满意度评分 {score} 分",
        "last satisfaction score {score}/10",
    ),
    "unanswered": (
        "上次到店后 {count} 条消息未见回应",
        "{count} message(s) since their last visit went unanswered",
    ),
    "few_expected": (
        "按到店规律，未来 {days} 天预计仅到店 {expected} 次",
        "their visit pattern predicts only {expected} visit(s) in the next {days} days",
    ),
    "no_visit": ("入会后从未到店", "never visited since joining"),
}
REASON_KEYS: tuple[str, ...] = tuple(REASON_WORDS)
_KEY = {key: k for k, key in enumerate(REASON_KEYS)}


@dataclass(frozen=True)
class ChurnConfig:
    """How the churn model is trained; the defaults suit a car-service chain."""

    horizon_days: int = 180
    l2: float = 1.0
    train_sample: int = 100_000
    btyd_sample: int = 2_000
    use_btyd: bool = True
    min_train_members: int = 200
    min_class_members: int = 20
    max_reasons: int = 3
    seed: int = 20_261_124

    def __post_init__(self) -> None:
        if self.horizon_days < 7:
            raise InvalidInput(
                "the churn horizon must be at least 7 days", horizon=self.horizon_days
            )


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
            (self.first_age - self.last_age) / _WEEK,
            self.first_age / _WEEK,
        )


@dataclass(frozen=True)
class Reason:
    key: str
    values: dict[str, int | float]
    weight: float

    @property
    def code(self) -> str:
        fields = ",".join(f"{k}={_plain(v)}" for k, v in self.values.items())
        return f"{self.key}:{fields}" if fields else self.key


@dataclass(frozen=True)
class ChurnModel:
    """A fitted model: `coef` weighs standardised features toward "comes back"."""

    method: str
    horizon_days: int
    features: tuple[str, ...] = ()
    mean: FloatArray = field(default_factory=lambda: np.zeros(0))
    scale: FloatArray = field(default_factory=lambda: np.ones(0))
    coef: FloatArray = field(default_factory=lambda: np.zeros(0))
    intercept: float = 0.0
    pareto: ParetoNbd | None = None
    prospect_risk: float = 0.5
    trained_on: date | None = None
    train_members: int = 0
    note: str = ""

    def coefficients(self) -> dict[str, float]:
        """Per feature, the weight toward churn (positive raises the risk), per standard
        deviation: what the model learnt, for a report or a test."""
        return {name: float(-w) for name, w in zip(self.features, self.coef, strict=True)}


@dataclass(frozen=True)
class Assessment:
    """Everyone's risk as of a day, aligned with `history`. Reasons are kept as the indices of
    each member's top reason keys (-1: none) and built on demand, so a million members do not
    hold millions of small objects."""

    model: ChurnModel
    history: History
    risk: FloatArray
    top: IntArray
    top_weight: FloatArray
    cadence: FloatArray
    expected: FloatArray

    @property
    def method(self) -> str:
        return self.model.method

    @property
    def note(self) -> str:
        return self.model.note

    def index_of(self) -> dict[int, int]:
        return {int(mid): i for i, mid in enumerate(self.history.member_id)}

    def reasons(self, i: int) -> tuple[Reason, ...]:
        """Member i's reasons, strongest first, with the figures a person can check."""
        return tuple(
            self._reason(REASON_KEYS[k], i, float(w))
            for k, w in zip(self.top[i], self.top_weight[i], strict=True)
            if k >= 0
        )

    def _reason(self, key: str, i: int, weight: float) -> Reason:
        h = self.history
        if key == "overdue":
            last_age, usual = int(h.last_age[i]), float(self.cadence[i])
            if h.visit_days[i] >= 2 and last_age > usual:
                return Reason("overdue", {"days": round(last_age - usual)}, weight)
            return Reason("absent", {"days": last_age}, weight)
        values: dict[str, int | float]
        if key == "few_visits":
            values = {"visits": int(h.visit_days[i])}
        elif key == "longer_gaps":
            usual = (h.first_age[i] - h.prev_age[i]) / max(int(h.visit_days[i]) - 2, 1)
            values = {"last": int(h.prev_age[i] - h.last_age[i]), "usual": round(usual)}
        elif key == "fewer_visits":
            values = {"recent": int(h.recent_days[i]), "earlier": int(h.earlier_days[i])}
        elif key == "lower_spend":
            values = {
                "recent": int(h.recent_spend[i]) // 100,
                "earlier": int(h.earlier_spend[i]) // 100,
            }
        elif key == "low_ticket":
            values = {"ticket": int(h.total_spend[i] / max(int(h.visit_days[i]), 1) / 100)}
        elif key == "low_satisfaction":
            values = {"score": int(h.last_satisfaction[i])}
        elif key == "unanswered":
            values = {"count": int(h.unanswered[i])}
        elif key == "few_expected":
            values = {
                "expected": round(float(self.expected[i]), 1),
                "days": self.model.horizon_days,
            }
        else:
            values = {}
        return Reason(key, values, weight)


# --------------------------------------------------------------------------------------------
# History: one statement in SQL, or the same from plain visit lists
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Features and the model
# --------------------------------------------------------------------------------------------


def chain_cadence(hist: History) -> float:
    """The median of members' own average intervals (days), for members without a rhythm."""
    repeat = hist.visit_days >= 2
    if not repeat.any():
        return float(FALLBACK_CADENCE_DAYS)
    own = (hist.first_age[repeat] - hist.last_age[repeat]) / (hist.visit_days[repeat] - 1)
    return float(np.median(own))


def own_cadence(hist: History, chain: float) -> FloatArray:
    """Each visitor's average interval in days (the chain's for one visit day), floored so
    two visits in one week do not make a member overdue a week later."""
    with np.errstate(invalid="ignore", divide="ignore"):
        own = (hist.first_age - hist.last_age) / (hist.visit_days - 1)
    own = np.where(hist.visit_days >= 2, own, chain)
    return np.maximum(own, MIN_CADENCE_DAYS)


def _design(hist: History, chain: float, expected: FloatArray | None) -> FloatArray:
    """The feature matrix (module docstring) for visitors only."""
    n = hist.visit_days.astype(np.float64)
    cadence = own_cadence(hist, chain)
    with np.errstate(invalid="ignore", divide="ignore"):
        earlier_gap = (hist.first_age - hist.prev_age) / (n - 2)
        last_gap = hist.prev_age - hist.last_age
        gap_trend = np.where(n >= 3, np.log1p(last_gap) - np.log1p(earlier_gap), 0.0)
    satisfaction = hist.last_satisfaction
    overdue = np.log1p(hist.last_age) - np.log1p(cadence)
    columns = [
        np.log1p(hist.last_age),
        overdue,
        np.maximum(overdue, 0.0),
        np.log(n),
        np.log1p(hist.first_age),
        gap_trend,
        np.log1p(hist.recent_days) - np.log1p(hist.earlier_days),
        np.log1p(hist.recent_spend / 100) - np.log1p(hist.earlier_spend / 100),
        np.log1p(hist.total_spend / 100 / n),
        np.where(np.isnan(satisfaction), 0.0, 10.0 - satisfaction),
        (~np.isnan(satisfaction)).astype(np.float64),
        np.log1p(hist.unanswered),
    ]
    if expected is not None:
        columns.append(np.log1p(expected))
    return np.column_stack(columns)


def fit_logistic(x: FloatArray, y: FloatArray, l2: float, max_iter: int = 50) -> FloatArray:
    """L2-regularised logistic regression by Newton's method (IRLS); returns the intercept
    followed by the weights. The intercept is not penalised, and the penalty keeps the Newton
    system well conditioned when a feature is constant in a small shop."""
    design = np.column_stack([np.ones(len(x)), x])
    penalty = np.full(design.shape[1], float(l2))
    penalty[0] = 0.0
    w = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = expit(design @ w)
        gradient = design.T @ (y - p) - penalty * w
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w = w + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def _sample(count: int, limit: int, rng: np.random.Generator) -> IntArray:
    if count <= limit:
        return np.arange(count)
    return np.sort(rng.choice(count, size=limit, replace=False))


def fit_pareto(hist: History, config: ChurnConfig) -> ParetoNbd | None:
    """Pareto/NBD on a sample of the visitors' histories; None when there is too little."""
    visitors = hist.take(hist.visited)
    if len(visitors) < MIN_BTYD_MEMBERS or not (visitors.visit_days > 1).any():
        return None
    rng = np.random.default_rng(config.seed)
    x, t_x, T = visitors.take(_sample(len(visitors), config.btyd_sample, rng)).btyd_summary()
    with np.errstate(all="ignore"):
        return quick_pareto_fit(x, t_x, T)


def quick_pareto_fit(x: FloatArray, t_x: FloatArray, T: FloatArray) -> ParetoNbd | None:
    """Pareto/NBD maximum likelihood with `domain.btyd`'s likelihood but a cheaper search:
    L-BFGS-B from two starts, no Nelder-Mead polish. On a car chain's histories one likelihood
    evaluation costs 10-60 ms (the hypergeometric terms are slow where s and β are large), and
    `fit_pareto_nbd`'s thorough multi-start search needs thousands; this needs ~100-300 and
    reaches the published CDNOW optimum (tests/test_churn.py)."""
    rows = np.column_stack([x, t_x, T])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    ux, ut, uT = unique.T
    weights = counts / counts.sum()

    def neg_ll(theta: FloatArray) -> float:
        r, alpha, s, beta = np.exp(theta)
        value = -float(np.dot(weights, ParetoNbd(r, alpha, s, beta).log_likelihood(ux, ut, uT)))
        return value if math.isfinite(value) else 1e300

    best: Any = None
    for start in ((1.0, 1.0, 1.0, 1.0), (0.5, 10.0, 0.5, 10.0)):
        found = minimize(
            neg_ll,
            np.log(start),
            method="L-BFGS-B",
            bounds=[(-12.0, 12.0)] * 4,
            options={"maxfun": 400},
        )
        if math.isfinite(found.fun) and (best is None or found.fun < best.fun):
            best = found
    if best is None or best.fun >= 1e300:
        return None
    r, alpha, s, beta = (float(v) for v in np.exp(best.x))
    return ParetoNbd(r, alpha, s, beta)


def expected_visits(pareto: ParetoNbd, hist: History, horizon_days: int) -> FloatArray:
    """Pareto/NBD expected visit days in the next horizon, per visitor of `hist`."""
    x, t_x, T = hist.btyd_summary()
    with np.errstate(all="ignore"):
        expected = pareto.expected_purchases(horizon_days / _WEEK, x, t_x, T)
    return np.nan_to_num(expected, nan=0.0, posinf=0.0)


def btyd_no_visit(pareto: ParetoNbd, hist: History, horizon_days: int) -> FloatArray:
    """Pareto/NBD probability of no visit in the next horizon: dead, or alive and no purchase
    in the window, with the rate at its posterior Gamma(r + x, α + T). Dying within the window
    is not added, so it slightly understates the risk; the ranking is what it is used for."""
    x, _, T = hist.btyd_summary()
    with np.errstate(all="ignore"):
        alive = pareto.p_alive(*hist.btyd_summary())
        quiet = np.exp(
            (pareto.r + x)
            * (np.log(pareto.alpha + T) - np.log(pareto.alpha + T + horizon_days / _WEEK))
        )
    return np.clip(1.0 - alive * (1.0 - quiet), 0.0, 1.0)


def train(then: History, now: History, config: ChurnConfig) -> ChurnModel:
    """The model for `now.as_of`, trained on `then` (as of now - horizon) with the label
    "visited again by now"; falls back to Pareto/NBD, then to a rule, when history is short."""
    horizon = config.horizon_days
    if then.as_of != now.as_of - timedelta(days=horizon):
        raise InvalidInput("training history must be one horizon before the as-of day")
    came_back = came_back_by(then, now)
    visitors = then.visited
    x_then = then.take(visitors)
    y = came_back[visitors].astype(np.float64)
    returned, stayed = int(y.sum()), int(len(y) - y.sum())
    base = ChurnModel(
        method=BTYD_ONLY,
        horizon_days=horizon,
        prospect_risk=_prospect_risk(then, came_back),
        trained_on=then.as_of,
        train_members=len(x_then),
    )
    if len(x_then) < config.min_train_members or min(returned, stayed) < config.min_class_members:
        why = (
            f"{len(x_then):,} member(s) had visited by {then.as_of}: {returned:,} came back "
            f"within {horizon} days, {stayed:,} did not; too few to train on the shop's history"
        )
        pareto_now = fit_pareto(now, config)
        if pareto_now is None:
            note = f"{why}, and too few for Pareto/NBD: risk from days past each own cadence"
            return replace(base, method=RULE, note=note)
        return replace(base, pareto=pareto_now, note=f"{why}: Pareto/NBD only (BTYD)")
    rng = np.random.default_rng(config.seed)
    pick = _sample(len(x_then), config.train_sample, rng)
    x_then, y = x_then.take(pick), y[pick]
    # Fitted once, as of the training day, and used for the training and the scoring feature
    # alike: nothing from the label window reaches the feature the label is learnt against.
    pareto = fit_pareto(then, config) if config.use_btyd else None
    expected = expected_visits(pareto, x_then, horizon) if pareto is not None else None
    design = _design(x_then, chain_cadence(then), expected)
    mean = design.mean(axis=0)
    scale = design.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    weights = fit_logistic((design - mean) / scale, y, config.l2)
    blended = expected is not None
    kind = "blended with Pareto/NBD expected visits" if blended else "without BTYD"
    return replace(
        base,
        method=TRAINED,
        features=FEATURES + ((BTYD_FEATURE,) if blended else ()),
        mean=mean,
        scale=scale,
        coef=weights[1:],
        intercept=float(weights[0]),
        pareto=pareto,
        train_members=len(x_then),
        note=(
            f"logistic model {kind}, trained on {len(x_then):,} members as of {then.as_of} "
            f"(came back within {horizon} days: {returned:,}; did not: {stayed:,})"
        ),
    )


def came_back_by(then: History, now: History) -> BoolArray:
    """For each member of `then`: a visit after then.as_of and on or before now.as_of."""
    gap = (now.as_of - then.as_of).days
    if len(now) == 0:
        return np.zeros(len(then), dtype=bool)
    where = np.minimum(np.searchsorted(now.member_id, then.member_id), len(now) - 1)
    found = now.member_id[where] == then.member_id
    with np.errstate(invalid="ignore"):
        return np.asarray(found & (now.last_age[where] < gap))


def _prospect_risk(then: History, came_back: BoolArray) -> float:
    """Share of then's never-visited members still without a visit now, smoothed (+1/+2)."""
    came = came_back[~then.visited]
    return float((len(came) - came.sum() + 1) / (len(came) + 2))


def assess_history(now: History, model: ChurnModel, config: ChurnConfig) -> Assessment:
    """Risk and reasons for every member of `now` under a fitted model."""
    risk = np.full(len(now), model.prospect_risk)
    weights = np.zeros((len(now), len(REASON_KEYS)))
    weights[:, _KEY["no_visit"]] = 1.0
    visitors = np.flatnonzero(now.visited)
    hist = now.take(visitors)
    chain = chain_cadence(now)
    cadence = own_cadence(hist, chain)
    expected = np.full(len(now), np.nan)
    own = np.zeros((len(hist), len(REASON_KEYS)))
    if model.method == TRAINED:
        fed = expected_visits(model.pareto, hist, model.horizon_days) if model.pareto else None
        z = _design(hist, chain, fed)
        z -= model.mean  # in place: at a million members each copy is ~100 MB
        z /= model.scale
        risk[visitors] = expit(-(model.intercept + z @ model.coef))
        for j, name in enumerate(model.features):
            key = REASON_OF[name]
            if key is not None:
                own[:, _KEY[key]] -= model.coef[j] * z[:, j]
        del z
        # No score given is not a low score, whatever the average member's score was.
        own[np.isnan(hist.last_satisfaction), _KEY["low_satisfaction"]] = 0.0
        if fed is not None:
            expected[visitors] = fed
    elif model.method == BTYD_ONLY and model.pareto is not None:
        risk[visitors] = btyd_no_visit(model.pareto, hist, model.horizon_days)
        x, _, T = hist.btyd_summary()
        interval = (model.pareto.alpha + T) / (model.pareto.r + x) * _WEEK
        own[:, _KEY["overdue"]] = np.log(np.maximum(hist.last_age, 1.0) / interval)
        own[:, _KEY["few_visits"]] = np.where(x < 1, 1.0, 0.0)
    else:
        ratio = hist.last_age / (PRE_CHURN_CADENCE_FACTOR * cadence)
        risk[visitors] = 1.0 - np.exp(-math.log(2) * ratio)
        own[:, _KEY["overdue"]] = np.log(np.maximum(hist.last_age, 1.0) / cadence)
    weights[visitors] = own
    del own, hist
    order = np.argsort(-weights, axis=1, kind="stable")[:, : config.max_reasons]
    top_weight = np.take_along_axis(weights, order, axis=1)
    order = np.where(top_weight > REASON_MIN_LOGIT, order, -1)
    full_cadence = np.full(len(now), np.nan)
    full_cadence[visitors] = cadence
    return Assessment(
        model=model,
        history=now,
        risk=risk,
        top=order,
        top_weight=top_weight,
        cadence=full_cadence,
        expected=expected,
    )


async def assess(
    session: AsyncSession, as_of: date, config: ChurnConfig | None = None
) -> Assessment:
    """Train on the shop's history up to `as_of` and score every counted member as of it."""
    config = config or ChurnConfig()
    now = await history(session, as_of)
    stride = max(1, math.ceil(len(now) / config.train_sample))
    then = await history(session, as_of - timedelta(days=config.horizon_days), stride=stride)
    return assess_history(now, train(then, now, config), config)


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------


def _plain(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_reason(code: str) -> tuple[str, dict[str, str]]:
    """`overdue:days=45` → ("overdue", {"days": "45"})."""
    key, _, rest = code.partition(":")
    values = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    return key, values


def reason_text(code: str, locale: str) -> str:
    """A stored reason code in words, in zh_CN or en."""
    if locale not in LOCALES:
        raise InvalidInput("unknown locale", locale=locale)
    key, values = parse_reason(code)
    if key not in REASON_WORDS:
        raise InvalidInput("unknown churn reason", reason=key)
    zh, en = REASON_WORDS[key]
    template = zh if locale == "zh_CN" else en
    money = {"recent", "earlier", "ticket"} if key in ("lower_spend", "low_ticket") else set()
    shown = {k: f"{int(v):,}" if k in money else v for k, v in values.items()}
    try:
        return template.format(**shown)
    except KeyError as exc:
        raise InvalidInput("churn reason lacks a value", reason=code) from exc
