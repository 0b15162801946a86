"""BG/NBD and Pareto/NBD against the published CDNOW figures, against brute-force integration of
the individual-level models, and on the properties a churn ranking relies on.

The CDNOW sample (2,357 customers, 39-week calibration) ships inside the `lifetimes` wheel,
which is in the `dev` extra purely as a data source: it is never imported (it breaks on pandas
3); only its data files are read.
"""

from __future__ import annotations

import csv
import importlib.util
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss
from scipy import stats

from domain.btyd import BgNbd, ParetoNbd, fit_bgnbd, fit_pareto_nbd, summarize

CALIBRATION_END = date(1997, 9, 30)


def _datasets_dir() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    return path if (path / "cdnow_customers_summary.csv").exists() else None


DATASETS = _datasets_dir()
needs_cdnow = pytest.mark.skipif(
    DATASETS is None,
    reason="CDNOW data not found: install the dev extra (or pip install --no-deps lifetimes)",
)


@pytest.fixture(scope="module")
def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert DATASETS is not None
    with (DATASETS / "cdnow_customers_summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([float(r["frequency"]) for r in rows])
    t_x = np.array([float(r["recency"]) for r in rows])
    T = np.array([float(r["T"]) for r in rows])
    return x, t_x, T


@pytest.fixture(scope="module")
def cdnow_transactions() -> list[list[date]]:
    """Raw purchase dates per customer over the full 78 weeks (calibration + holdout)."""
    assert DATASETS is not None
    by_customer: dict[int, list[date]] = {}
    with (DATASETS / "CDNOW_sample.txt").open() as fh:
        for line in fh:
            fields = line.split()
            day = datetime.strptime(fields[2], "%Y%m%d").date()
            by_customer.setdefault(int(fields[0]), []).append(day)
    return [by_customer[k] for k in sorted(by_customer)]


@pytest.fixture(scope="module")
def fitted(cdnow: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, object]:
    x, t_x, T = cdnow
    return {"bg": fit_bgnbd(x, t_x, T), "pareto": fit_pareto_nbd(x, t_x, T)}


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    ranks = stats.rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- Published figures (Fader, Hardie & Lee 2005) ---------------------------------------------


@needs_cdnow
def test_likelihoods_at_published_estimates_match_published_values(cdnow) -> None:
    x, t_x, T = cdnow
    assert BgNbd(0.243, 4.414, 0.793, 2.426).log_likelihood(x, t_x, T).sum() == pytest.approx(
        -9582.4, abs=0.1
    )
    pareto = ParetoNbd(0.553, 10.578, 0.606, 11.669)
    assert pareto.log_likelihood(x, t_x, T).sum() == pytest.approx(-9595.0, abs=0.1)


@needs_cdnow
def test_bgnbd_mle_on_cdnow_matches_paper(cdnow, fitted) -> None:
    x, t_x, T = cdnow
    bg: BgNbd = fitted["bg"]
    assert bg.r == pytest.approx(0.243, rel=0.01)
    assert bg.alpha == pytest.approx(4.414, rel=0.02)
    assert bg.a == pytest.approx(0.793, rel=0.01)
    assert bg.b == pytest.approx(2.426, rel=0.02)
    assert bg.log_likelihood(x, t_x, T).sum() == pytest.approx(-9582.4, abs=0.5)


@needs_cdnow
def test_pareto_nbd_mle_on_cdnow_matches_paper(cdnow, fitted) -> None:
    x, t_x, T = cdnow
    pareto: ParetoNbd = fitted["pareto"]
    assert pareto.r == pytest.approx(0.553, rel=0.01)
    assert pareto.alpha == pytest.approx(10.578, rel=0.02)
    assert pareto.s == pytest.approx(0.606, rel=0.01)
    assert pareto.beta == pytest.approx(11.669, rel=0.02)
    assert pareto.log_likelihood(x, t_x, T).sum() == pytest.approx(-9595.0, abs=0.5)


@needs_cdnow
def test_summarize_reproduces_published_cdnow_summary(cdnow, cdnow_transactions) -> None:
    """Raw CDNOW purchases cut at the calibration end give exactly the published summary
    (as a multiset: the two files number customers differently)."""
    x, t_x, T = summarize(cdnow_transactions, CALIBRATION_END)
    ours = np.round(np.column_stack([x, t_x, T]), 2)
    published = np.column_stack(cdnow)
    ours = ours[np.lexsort(ours.T[::-1])]
    published = published[np.lexsort(published.T[::-1])]
    np.testing.assert_allclose(ours, published, atol=0.006)


@needs_cdnow
def test_models_rank_holdout_returners_ahead(cdnow_transactions) -> None:
    """Fitted on calibration data only, the scores separate customers who bought again in the
    39-week holdout from those who did not. BG/NBD's P(alive) is deliberately not used alone:
    it is 1 for every customer without a repeat purchase (the model lets customers drop out
    only right after a purchase), so it ranks one-time buyers as the safest."""
    x, t_x, T = summarize(cdnow_transactions, CALIBRATION_END)
    returned = np.array([any(d > CALIBRATION_END for d in days) for days in cdnow_transactions])
    bg = fit_bgnbd(x, t_x, T)
    pareto = fit_pareto_nbd(x, t_x, T)
    assert _auc(bg.expected_purchases(39, x, t_x, T), returned) > 0.75
    assert _auc(pareto.expected_purchases(39, x, t_x, T), returned) > 0.75
    assert _auc(pareto.p_alive(x, t_x, T), returned) > 0.7
    # Aggregate forecast of holdout purchase days is in the right range (actual: 1,882).
    actual = sum(len({d for d in days if d > CALIBRATION_END}) for days in cdnow_transactions)
    assert bg.expected_purchases(39, x, t_x, T).sum() == pytest.approx(actual, rel=0.15)


# --- Closed forms against brute-force integration of the individual-level model ----------------

_NODES, _WEIGHTS = leggauss(300)
_U = (_NODES + 1) / 2
_W = _WEIGHTS / 2


def _posterior_mean(integrand_alive, integrand_total, dist_a, dist_b) -> tuple[float, float]:
    """∫∫ f(θ1, θ2) dG1 dG2 over quantile space (smooth even where the densities are not)."""
    theta1 = dist_a.ppf(_U)[:, None]
    theta2 = dist_b.ppf(_U)[None, :]
    weights = _W[:, None] * _W[None, :]
    total = float((integrand_total(theta1, theta2) * weights).sum())
    alive = float((integrand_alive(theta1, theta2) * weights).sum())
    return total, alive


@pytest.mark.parametrize(("x", "t_x", "T"), [(0, 0.0, 30.0), (2, 30.43, 38.86), (7, 20.0, 38.0)])
def test_bgnbd_closed_forms_match_numerical_integration(x: int, t_x: float, T: float) -> None:
    model = BgNbd(r=0.8, alpha=4.0, a=1.7, b=3.0)
    horizon = 20.0

    def likelihood(lam, p):
        alive = (1 - p) ** x * lam**x * np.exp(-lam * T)
        dead = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
        return alive + dead

    def alive_part(lam, p):
        return (1 - p) ** x * lam**x * np.exp(-lam * T)

    lam_dist = stats.gamma(model.r, scale=1 / model.alpha)
    p_dist = stats.beta(model.a, model.b)
    total, alive = _posterior_mean(alive_part, likelihood, lam_dist, p_dist)
    assert model.log_likelihood(x, t_x, T) == pytest.approx(np.log(total), abs=1e-4)
    assert model.p_alive(x, t_x, T) == pytest.approx(alive / total, abs=1e-4)
    _, expected = _posterior_mean(
        lambda lam, p: alive_part(lam, p) * (1 - np.exp(-lam * p * horizon)) / p,
        likelihood,
        lam_dist,
        p_dist,
    )
    assert model.expected_purchases(horizon, x, t_x, T) == pytest.approx(expected / total, rel=1e-3)


@pytest.mark.parametrize(
    ("alpha", "beta"), [(10.0, 4.0), (4.0, 10.0)], ids=["alpha>=beta", "alpha<beta"]
)
@pytest.mark.parametrize(("x", "t_x", "T"), [(0, 0.0, 30.0), (3, 12.0, 38.0), (9, 35.0, 36.0)])
def test_pareto_closed_forms_match_numerical_integration(
    alpha: float, beta: float, x: int, t_x: float, T: float
) -> None:
    """Both branches of A0 (α ≥ β and α < β) against the individual-level likelihood."""
    model = ParetoNbd(r=0.9, alpha=alpha, s=1.4, beta=beta)
    horizon = 20.0

    def alive_part(lam, mu):
        return lam**x * np.exp(-(lam + mu) * T)

    def likelihood(lam, mu):
        dead = mu / (lam + mu) * lam**x * (np.exp(-(lam + mu) * t_x) - np.exp(-(lam + mu) * T))
        return alive_part(lam, mu) + dead

    lam_dist = stats.gamma(model.r, scale=1 / model.alpha)
    mu_dist = stats.gamma(model.s, scale=1 / model.beta)
    total, alive = _posterior_mean(alive_part, likelihood, lam_dist, mu_dist)
    assert model.log_likelihood(x, t_x, T) == pytest.approx(np.log(total), abs=1e-4)
    assert model.p_alive(x, t_x, T) == pytest.approx(alive / total, abs=1e-4)
    _, expected = _posterior_mean(
        lambda lam, mu: alive_part(lam, mu) * lam / mu * (1 - np.exp(-mu * horizon)),
        likelihood,
        lam_dist,
        mu_dist,
    )
    assert model.expected_purchases(horizon, x, t_x, T) == pytest.approx(expected / total, rel=1e-3)


# --- P(alive) properties the churn ranking relies on --------------------------------------------

BG = BgNbd(0.243, 4.414, 0.793, 2.426)
PARETO = ParetoNbd(0.553, 10.578, 0.606, 11.669)


def test_bgnbd_without_repeat_purchase_is_alive() -> None:
    assert np.all(BG.p_alive([0, 0, 0], [0.0, 0.0, 0.0], [1.0, 20.0, 80.0]) == 1.0)


@pytest.mark.parametrize("model", [BG, PARETO], ids=["bgnbd", "pareto"])
def test_p_alive_falls_as_the_silence_grows(model) -> None:
    silence = np.linspace(0.0, 60.0, 61)
    t_x = 20.0
    p = model.p_alive(4, t_x, t_x + silence)
    assert np.all(np.diff(p) < 0)
    # Just after a purchase BG/NBD still allows "dropped out at it": 1/(1 + a/(b+x-1)) = 0.87.
    assert p[0] > 0.85 and p[-1] < 0.2


@pytest.mark.parametrize("model", [BG, PARETO], ids=["bgnbd", "pareto"])
def test_vectorized_outputs_match_scalar_calls(model) -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 30, 200).astype(float)
    T = rng.uniform(0.5, 80.0, 200)
    t_x = np.where(x > 0, rng.uniform(0.0, 1.0, 200) * T, 0.0)
    vectorized = (
        model.log_likelihood(x, t_x, T),
        model.p_alive(x, t_x, T),
        model.expected_purchases(13.0, x, t_x, T),
    )
    for i in range(len(x)):
        assert vectorized[0][i] == pytest.approx(float(model.log_likelihood(x[i], t_x[i], T[i])))
        assert vectorized[1][i] == pytest.approx(float(model.p_alive(x[i], t_x[i], T[i])))
        assert vectorized[2][i] == pytest.approx(
            float(model.expected_purchases(13.0, x[i], t_x[i], T[i]))
        )
    assert np.all(np.isfinite(vectorized[0])) and np.all(
        (vectorized[1] >= 0) & (vectorized[1] <= 1)
    )


def test_heavy_buyer_stays_finite() -> None:
    """(α+T)^(r+x) overflows a float for heavy buyers; the log-space forms must not."""
    for model in (BG, PARETO):
        assert np.isfinite(model.log_likelihood(400, 70.0, 78.0))
        assert 0.0 < model.p_alive(400, 70.0, 78.0) < 1.0
        assert np.isfinite(model.expected_purchases(39.0, 400, 77.0, 78.0))


# --- summarize ----------------------------------------------------------------------------------


def test_summarize_uses_only_history_up_to_as_of_and_merges_same_day() -> None:
    start = date(2026, 1, 5)
    history = [
        [start, start, start + timedelta(days=14), start + timedelta(days=21)],
        [start + timedelta(days=7)],
        [start + timedelta(days=30)],  # first visit after as_of: nothing to score yet
    ]
    as_of = start + timedelta(days=14)
    x, t_x, T = summarize(history, as_of)
    assert x[:2].tolist() == [1.0, 0.0]
    assert t_x[:2].tolist() == [2.0, 0.0]
    assert T[:2].tolist() == [2.0, 1.0]
    assert np.isnan(x[2]) and np.isnan(t_x[2]) and np.isnan(T[2])
    x_days, t_days, T_days = summarize(history[:1], as_of, unit_days=1)
    assert (x_days[0], t_days[0], T_days[0]) == (1.0, 14.0, 14.0)


def test_fit_refuses_customers_without_history() -> None:
    x, t_x, T = summarize([[date(2026, 1, 1)], [date(2026, 3, 1)]], date(2026, 2, 1))
    with pytest.raises(ValueError, match="NaN"):
        fit_bgnbd(x, t_x, T)
    with pytest.raises(ValueError, match="NaN"):
        fit_pareto_nbd(x, t_x, T)
