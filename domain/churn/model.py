"""The churn model itself, pure numpy and scipy over a `History`: the features, the
L2-regularised logistic regression fitted by IRLS, the Pareto/NBD fit and blend, the fallbacks
for short histories, and each member's risk with its strongest reasons. `assess` is the one
entry point that reads the database (through `history`); everything else is testable without
one. The package docstring (`domain.churn`) explains the method and its measured quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sqlalchemy.ext.asyncio import AsyncSession

from domain.btyd import ParetoNbd
from domain.churn.history import WEEK_DAYS, BoolArray, FloatArray, History, IntArray, history
from domain.churn.reasons import REASON_INDEX, REASON_KEYS, Reason
from domain.errors import InvalidInput
from domain.segments import FALLBACK_CADENCE_DAYS, MIN_CADENCE_DAYS, PRE_CHURN_CADENCE_FACTOR

MIN_BTYD_MEMBERS = 30
REASON_MIN_LOGIT = 0.25

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
        expected = pareto.expected_purchases(horizon_days / WEEK_DAYS, x, t_x, T)
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
            * (np.log(pareto.alpha + T) - np.log(pareto.alpha + T + horizon_days / WEEK_DAYS))
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
    weights[:, REASON_INDEX["no_visit"]] = 1.0
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
                own[:, REASON_INDEX[key]] -= model.coef[j] * z[:, j]
        del z
        # No score given is not a low score, whatever the average member's score was.
        own[np.isnan(hist.last_satisfaction), REASON_INDEX["low_satisfaction"]] = 0.0
        if fed is not None:
            expected[visitors] = fed
    elif model.method == BTYD_ONLY and model.pareto is not None:
        risk[visitors] = btyd_no_visit(model.pareto, hist, model.horizon_days)
        x, _, T = hist.btyd_summary()
        interval = (model.pareto.alpha + T) / (model.pareto.r + x) * WEEK_DAYS
        own[:, REASON_INDEX["overdue"]] = np.log(np.maximum(hist.last_age, 1.0) / interval)
        own[:, REASON_INDEX["few_visits"]] = np.where(x < 1, 1.0, 0.0)
    else:
        ratio = hist.last_age / (PRE_CHURN_CADENCE_FACTOR * cadence)
        risk[visitors] = 1.0 - np.exp(-math.log(2) * ratio)
        own[:, REASON_INDEX["overdue"]] = np.log(np.maximum(hist.last_age, 1.0) / cadence)
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
