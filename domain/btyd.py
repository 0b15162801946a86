"""Buy-till-you-die models: how likely a member is still "alive" (will come back) and how many
visits to expect, from nothing but the dates of their past visits.

Why these models. A car-wash member who has not been seen for six weeks is worrying if they used
to come weekly and normal if they come twice a year. BG/NBD (Fader, Hardie & Lee 2005, "Counting
Your Customers the Easy Way") and Pareto/NBD (Schmittlein, Morrison & Colombo 1987) turn exactly
that intuition into a probability: each member buys at their own Poisson rate while alive and
drops out unobservably at some point; the heterogeneity of rates and drop-out across members is
learned from the whole chain. P(alive) then ranks members by their chance of not coming back.

Why implemented here. The reference Python package (`lifetimes`) is unmaintained and does not
import on pandas 3, so both models are written out from the papers in numpy/scipy and tested
against the published CDNOW estimates (tests/test_btyd.py).

Inputs are the classic per-customer summary in one time unit (weeks by default in `summarize`):
x = number of repeat purchases (distinct purchase days after the first), t_x = time from the
first to the last purchase, T = time from the first purchase to the as-of date. Everything is
vectorized over customers; all likelihood terms are kept in log space because (α+T)^(r+x) and
the Gaussian hypergeometric terms overflow or cancel for frequent customers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

FloatArray = NDArray[np.float64]

# Starting points (in natural parameters) for the multi-start MLE. Spread over the ranges seen in
# published retail fits so one poor basin does not decide the answer.
_BGNBD_STARTS: tuple[tuple[float, float, float, float], ...] = (
    (1.0, 1.0, 1.0, 1.0),
    (0.5, 5.0, 0.8, 2.5),
    (0.2, 20.0, 2.0, 8.0),
)
_PARETO_STARTS: tuple[tuple[float, float, float, float], ...] = (
    (1.0, 1.0, 1.0, 1.0),
    (0.5, 10.0, 0.5, 10.0),
    (0.3, 3.0, 1.5, 30.0),
)
# Log-parameters are boxed so the optimizer cannot wander into overflow territory; real fits sit
# orders of magnitude inside these bounds.
_LOG_BOUNDS = (-12.0, 12.0)


def _as_summary(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[FloatArray, ...]:
    """Broadcast the summary to float arrays once so every formula below can be vectorized."""
    xa, ta, Ta = np.broadcast_arrays(
        np.asarray(x, dtype=np.float64),
        np.asarray(t_x, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
    )
    return xa, ta, Ta


def _validate_for_fit(x: FloatArray, t_x: FloatArray, T: FloatArray) -> None:
    """Reject data that would silently bias the MLE (NaN rows from `summarize`, t_x > T...)."""
    if x.size == 0:
        raise ValueError("cannot fit a model on zero customers")
    if not (np.isfinite(x).all() and np.isfinite(t_x).all() and np.isfinite(T).all()):
        raise ValueError("summary contains NaN/inf (customers with no purchase by as_of?)")
    if (x < 0).any() or (x != np.round(x)).any():
        raise ValueError("x must be non-negative integers")
    if (t_x < 0).any() or (t_x > T + 1e-9).any():
        raise ValueError("need 0 <= t_x <= T")
    if ((x == 0) & (t_x != 0)).any():
        raise ValueError("t_x must be 0 when x == 0")


def _compress(
    x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Collapse identical (x, t_x, T) rows into weights: most customers share a few summaries
    (one-time buyers of the same cohort), which makes each likelihood evaluation much cheaper."""
    rows = np.column_stack([x.ravel(), t_x.ravel(), T.ravel()])
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique[:, 0], unique[:, 1], unique[:, 2], counts.astype(np.float64)


def _fit(
    neg_ll: Callable[[FloatArray], float],
    starts: Sequence[tuple[float, float, float, float]],
) -> tuple[FloatArray, float]:
    """Maximize the likelihood from several starts on log-parameters (keeps them positive without
    constraints) and polish the best with Nelder-Mead, which is robust where the numeric gradient
    of the hypergeometric terms is noisy."""
    best_theta: FloatArray | None = None
    best_value = math.inf
    for start in starts:
        result = minimize(
            neg_ll,
            np.log(np.asarray(start, dtype=np.float64)),
            method="L-BFGS-B",
            bounds=[_LOG_BOUNDS] * len(start),
        )
        if np.isfinite(result.fun) and result.fun < best_value:
            best_value, best_theta = float(result.fun), np.asarray(result.x, dtype=np.float64)
    if best_theta is None:
        raise RuntimeError("likelihood could not be evaluated at any starting point")
    polish = minimize(
        neg_ll,
        best_theta,
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000, "maxfev": 8000},
    )
    if np.isfinite(polish.fun) and polish.fun < best_value:
        best_value, best_theta = float(polish.fun), np.asarray(polish.x, dtype=np.float64)
    return np.exp(best_theta), best_value


def _one_minus_power_over(exponent: FloatArray | float, log_base: FloatArray) -> FloatArray:
    """(1 - base**exponent) / exponent, continuous at exponent = 0 (where it is -log(base)), so
    the expected-purchase formulas do not blow up when a shape parameter is exactly 1."""
    exponent_arr = np.asarray(exponent, dtype=np.float64)
    safe = np.where(np.abs(exponent_arr) < 1e-12, 1.0, exponent_arr)
    general = -np.expm1(exponent_arr * log_base) / safe
    return np.where(np.abs(exponent_arr) < 1e-12, -log_base, general)


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD: purchase rates ~ Gamma(r, α); after each purchase the customer drops out
    with probability p ~ Beta(a, b). Cheap to fit and the usual default for churn ranking."""

    r: float
    alpha: float
    a: float
    b: float

    def _log_dropout_odds(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """log of δ(x>0)·a/(b+x−1)·((α+T)/(α+t_x))^(r+x): the odds of "dropped out after the last
        purchase" against "still alive"; −inf for x = 0 (nobody drops out before a repeat)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (
                math.log(self.a)
                - np.log(self.b + x - 1.0)
                + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x))
            )
        return np.where(x > 0, log_odds, -np.inf)

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood (FHL 2005 eq. 6); summed, it is what the MLE maximizes."""
        xa, ta, Ta = _as_summary(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        base = (
            gammaln(r + xa)
            - gammaln(r)
            + r * math.log(alpha)
            + betaln(a, b + xa)
            - betaln(a, b)
            - (r + xa) * np.log(alpha + Ta)
        )
        return base + np.logaddexp(0.0, self._log_dropout_odds(xa, ta, Ta))

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """P(still alive | history) (FHL 2005 eq. 11); 1 − this is the churn risk."""
        xa, ta, Ta = _as_summary(x, t_x, T)
        return expit(-self._log_dropout_odds(xa, ta, Ta))

    def expected_purchases(
        self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next t periods (FHL 2005 eq. 10); ranks
        members by value at risk rather than by probability alone."""
        ta_, xa, txa, Ta = np.broadcast_arrays(
            np.asarray(t, dtype=np.float64), *_as_summary(x, t_x, T)
        )
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = ta_ / (alpha + Ta + ta_)
        log_ratio = (r + xa) * (np.log(alpha + Ta) - np.log(alpha + Ta + ta_))
        hyp = hyp2f1(r + xa, b + xa, a + b + xa - 1.0, z)
        numerator = (a + b + xa - 1.0) / (a - 1.0) * (1.0 - np.exp(log_ratio) * hyp)
        return numerator * expit(-self._log_dropout_odds(xa, txa, Ta))


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BgNbd:
    """Maximum-likelihood BG/NBD on a customer summary, from several starting points."""
    xa, ta, Ta = _as_summary(x, t_x, T)
    _validate_for_fit(xa, ta, Ta)
    ux, ut, uT, weights = _compress(xa, ta, Ta)
    total = float(weights.sum())

    def neg_ll(theta: FloatArray) -> float:
        r, alpha, a, b = np.exp(theta)
        ll = BgNbd(float(r), float(alpha), float(a), float(b)).log_likelihood(ux, ut, uT)
        value = -float(np.dot(weights, ll)) / total
        return value if math.isfinite(value) else math.inf

    params, _ = _fit(neg_ll, _BGNBD_STARTS)
    return BgNbd(*(float(p) for p in params))


@dataclass(frozen=True)
class ParetoNbd:
    """Fitted Pareto/NBD: purchase rates ~ Gamma(r, α), exponential lifetimes with death rates
    ~ Gamma(s, β). Drop-out can happen any time, not only right after a purchase, which makes it
    the more faithful (and costlier) model for irregular visitors."""

    r: float
    alpha: float
    s: float
    beta: float

    def _log_a0(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """log A0 (Fader & Hardie 2005 note, eq. 19-20): the probability mass of "died between
        the last purchase and T", as a difference of two 2F1 terms. The series argument is taken
        from the larger of α, β so it stays in [0, 1); the difference is formed in log space
        with log(−expm1) so it keeps full precision when t_x is close to T."""
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        c = r + s + x
        if alpha >= beta:
            second, shift = s + 1.0, alpha
            diff = alpha - beta
        else:
            second, shift = r + x, beta
            diff = beta - alpha
        log_at_tx = np.log(hyp2f1(c, second, c + 1.0, diff / (shift + t_x))) - c * np.log(
            shift + t_x
        )
        log_at_T = np.log(hyp2f1(c, second, c + 1.0, diff / (shift + T))) - c * np.log(shift + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.minimum(log_at_T - log_at_tx, 0.0)
            return log_at_tx + np.log(-np.expm1(gap))

    def _log_death_odds(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """log of (s/(r+s+x))·(α+T)^(r+x)·(β+T)^s·A0: odds of dead against alive at T."""
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        return (
            np.log(s / (r + s + x))
            + (r + x) * np.log(alpha + T)
            + s * np.log(beta + T)
            + self._log_a0(x, t_x, T)
        )

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood (Fader & Hardie 2005 note, eq. 22)."""
        xa, ta, Ta = _as_summary(x, t_x, T)
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        log_alive = -(r + xa) * np.log(alpha + Ta) - s * np.log(beta + Ta)
        log_dead = np.log(s / (r + s + xa)) + self._log_a0(xa, ta, Ta)
        return (
            gammaln(r + xa)
            - gammaln(r)
            + r * math.log(alpha)
            + s * math.log(beta)
            + np.logaddexp(log_alive, log_dead)
        )

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """P(still alive | history) (Fader & Hardie 2005 note, eq. 23); 1 − this is the churn
        risk."""
        xa, ta, Ta = _as_summary(x, t_x, T)
        return expit(-self._log_death_odds(xa, ta, Ta))

    def expected_purchases(
        self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T] (Schmittlein et al. 1987; note eq. 24): expected rate given the
        history, times the expected alive time in the next t, times P(alive)."""
        ta_, xa, txa, Ta = np.broadcast_arrays(
            np.asarray(t, dtype=np.float64), *_as_summary(x, t_x, T)
        )
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        log_base = np.log(beta + Ta) - np.log(beta + Ta + ta_)
        alive_time = (beta + Ta) * _one_minus_power_over(s - 1.0, log_base)
        rate = (r + xa) / (alpha + Ta)
        return rate * alive_time * expit(-self._log_death_odds(xa, txa, Ta))


def fit_pareto_nbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> ParetoNbd:
    """Maximum-likelihood Pareto/NBD on a customer summary, from several starting points."""
    xa, ta, Ta = _as_summary(x, t_x, T)
    _validate_for_fit(xa, ta, Ta)
    ux, ut, uT, weights = _compress(xa, ta, Ta)
    total = float(weights.sum())

    def neg_ll(theta: FloatArray) -> float:
        r, alpha, s, beta = np.exp(theta)
        model = ParetoNbd(float(r), float(alpha), float(s), float(beta))
        with np.errstate(all="ignore"):
            ll = model.log_likelihood(ux, ut, uT)
        value = -float(np.dot(weights, ll)) / total
        return value if math.isfinite(value) else math.inf

    params, _ = _fit(neg_ll, _PARETO_STARTS)
    return ParetoNbd(*(float(p) for p in params))


def summarize(
    purchase_days_per_customer: Sequence[Sequence[date]], as_of: date, unit_days: float = 7
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Build (x, t_x, T) per customer from purchase dates, using only days on or before `as_of`,
    so a fit for a past day never sees the future. Several purchases on one day count as one
    (a wash plus a wax in one visit is one decision to come back). The arrays stay aligned with
    the input; a customer with no purchase by `as_of` gets NaN in all three (they have no
    history to score yet) and the fit functions refuse such rows, so filter them first."""
    if unit_days <= 0:
        raise ValueError("unit_days must be positive")
    n = len(purchase_days_per_customer)
    x = np.full(n, np.nan)
    t_x = np.full(n, np.nan)
    T = np.full(n, np.nan)
    for i, days in enumerate(purchase_days_per_customer):
        distinct = sorted({d for d in days if d <= as_of})
        if not distinct:
            continue
        first = distinct[0]
        x[i] = len(distinct) - 1
        t_x[i] = (distinct[-1] - first).days / unit_days
        T[i] = (as_of - first).days / unit_days
    return x, t_x, T
