"""The churn model's arithmetic (`domain.churn`), no database: what a member's visits say as of
a day, who came back within the horizon, a member's own rhythm against the chain's, and the
logistic regression the model is fitted with. (BG/NBD and Pareto/NBD: tests/test_btyd.py.)"""

from __future__ import annotations

import sys
from datetime import date, timedelta

import numpy as np
import pytest
from scipy.special import expit

from domain import churn
from domain.segments import FALLBACK_CADENCE_DAYS, MIN_CADENCE_DAYS

AS_OF = date(2026, 6, 1)
model = sys.modules[churn.train.__module__]  # the module of the model's arithmetic


def every(first: date, gap_days: int, count: int) -> list[tuple[date, int, int | None]]:
    return [(first + timedelta(days=gap_days * k), 20_000, None) for k in range(count)]


def test_history_reads_visits_up_to_the_day_one_visit_day_at_a_time() -> None:
    regular = [
        (date(2026, 1, 1), 20_000, None),
        (date(2026, 3, 2), 10_000, 9),
        (date(2026, 3, 2), 5_000, 4),  # same day, recorded later: one visit day, its score last
        (date(2026, 5, 2), 30_000, None),
        (date(2026, 6, 2), 99_000, 1),  # the day after: not known yet
    ]
    returning = [(date(2024, 12, 1), 50_000, None), (date(2026, 5, 1), 8_000, None)]
    hist = churn.history_from_visits([1, 2, 3], [regular, [], returning], AS_OF)

    assert hist.visit_days.tolist() == [3, 0, 2]
    assert (hist.first_age[0], hist.prev_age[0], hist.last_age[0]) == (151, 91, 30)
    assert hist.total_spend.tolist() == [65_000, 0, 58_000]
    assert hist.last_satisfaction[0] == 4
    assert np.isnan(hist.last_age[1]) and np.isnan(hist.last_satisfaction[2])
    # The last twelve months against the twelve before them.
    assert (hist.recent_days[2], hist.earlier_days[2]) == (1, 1)
    assert (hist.recent_spend[2], hist.earlier_spend[2]) == (8_000, 50_000)


def test_came_back_means_a_visit_after_the_earlier_day_and_by_the_later() -> None:
    returned = [(date(2025, 10, 1), 20_000, None), (date(2026, 1, 10), 20_000, None)]
    stayed_away = [(date(2025, 9, 1), 20_000, None)]
    returned_too_late = [(date(2025, 11, 1), 20_000, None), (date(2026, 7, 1), 20_000, None)]
    visits = [returned, stayed_away, returned_too_late]
    then = churn.history_from_visits([1, 2, 3], visits, date(2025, 12, 1))
    now = churn.history_from_visits([1, 2, 3], visits, AS_OF)
    assert model.came_back_by(then, now).tolist() == [True, False, False]


def test_a_members_own_rhythm_and_the_chains() -> None:
    visits = [
        every(date(2026, 1, 1), 20, 4),
        every(date(2025, 12, 1), 40, 3),
        [(date(2026, 2, 1), 20_000, None)],  # one visit: no rhythm of their own
        every(date(2026, 5, 1), 3, 2),  # twice in one week
    ]
    hist = churn.history_from_visits([1, 2, 3, 4], visits, AS_OF)
    chain = model.chain_cadence(hist)
    assert chain == 20.0  # the median of 20, 40 and 3 days
    assert model.own_cadence(hist, chain).tolist() == [20.0, 40.0, 20.0, MIN_CADENCE_DAYS]
    nobody_came_twice = churn.history_from_visits([1], [visits[2]], AS_OF)
    assert model.chain_cadence(nobody_came_twice) == FALLBACK_CADENCE_DAYS


def test_the_regression_recovers_the_weights_that_made_the_data() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_000, 2))
    truth = np.array([-0.5, 1.5, -2.0])  # intercept, then one weight per feature
    y = (rng.random(len(x)) < expit(truth[0] + x @ truth[1:])).astype(np.float64)
    assert model.fit_logistic(x, y, l2=1e-3) == pytest.approx(truth, abs=0.1)


def test_a_feature_constant_in_a_small_shop_learns_nothing_and_breaks_nothing() -> None:
    spend = np.linspace(-1.0, 1.0, 40)
    x = np.column_stack([spend, np.ones(40)])  # the second feature is the same for everyone
    y = (spend > 0.5).astype(np.float64)  # separable, as a tiny shop's data can be
    intercept, weight, constant = model.fit_logistic(x, y, l2=1.0)
    assert np.isfinite([intercept, weight, constant]).all()
    assert weight > 0 and abs(constant) < 1e-6
