"""A simulated chain whose true churn is known, for measuring churn models (tests/test_churn.py
and bench/bench_churn.py import it as `tests.support.churn_sim`).

Every member has a latent drop-out day drawn before any visit is simulated, so "who truly left"
is a fact of the simulation rather than a guess from silence. Between joining and dropping out a
member comes back at their own cadence with their own regularity (a maintenance regular keeps
near-clockwork intervals, a casual washer is closer to Poisson), which is exactly where a
Poisson-based BTYD model and a member's own rhythm disagree. Knobs a shop would recognise:

* some leavers fade first: in their last months gaps stretch and tickets shrink;
* when `satisfaction_matters`, a visit rated 5 or lower makes the member leave soon after with
  a high probability; otherwise scores are drawn the same way but change nothing.

Pure and deterministic (one numpy generator per seed); dates come back as `date`s and money as
integer cents, the shapes the database and `domain.churn.history_from_visits` take.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

# How members rate a visit (0-10); an unhappy minority draws from the lower table.
HAPPY_SCORES = ((10, 45), (9, 28), (8, 15), (7, 6), (6, 3), (5, 2), (4, 1))
UNHAPPY_SCORES = ((9, 10), (8, 15), (7, 15), (6, 15), (5, 15), (4, 12), (3, 10), (2, 8))
LOW_SCORE = 5


@dataclass(frozen=True)
class SimOptions:
    members: int = 4_000
    start: date = date(2023, 1, 1)
    end: date = date(2026, 6, 30)
    satisfaction_matters: bool = True
    seed: int = 7
    cadence_days: float = 45.0
    lifetime_days: float = 700.0
    rated_share: float = 0.6
    prospect_share: float = 0.03


@dataclass(frozen=True)
class SimMember:
    joined: date
    dropout: date  # latent: no visit after this day
    visits: list[tuple[date, int, int | None]]


def _scores(table: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([v for v, _ in table])
    weights = np.array([w for _, w in table], dtype=float)
    return values, weights / weights.sum()


def simulate(options: SimOptions) -> list[SimMember]:
    """Members in join order; the first visit is on the join day (prospects never visit)."""
    rng = np.random.default_rng(options.seed)
    span = (options.end - options.start).days
    happy, unhappy = _scores(HAPPY_SCORES), _scores(UNHAPPY_SCORES)
    out: list[SimMember] = []
    for _ in range(options.members):
        joined = int(rng.integers(0, max(1, span - 120)))
        lifetime = rng.exponential(rng.lognormal(np.log(options.lifetime_days), 0.6))
        dropout = joined + lifetime
        if rng.random() < options.prospect_share:
            out.append(SimMember(_day(options, joined), _day(options, dropout), []))
            continue
        cadence = float(np.clip(rng.lognormal(np.log(options.cadence_days), 0.6), 7, 240))
        shape = float(rng.choice((1.0, 3.0, 10.0), p=(0.3, 0.4, 0.3)))
        ticket = rng.lognormal(np.log(15_000), 0.8)
        fades = rng.random() < 0.5
        scores = unhappy if rng.random() < 0.15 else happy
        visits: list[tuple[date, int, int | None]] = []
        t = float(joined)
        while t <= min(dropout, span):
            fading = fades and t > dropout - 180
            cents = int(round(ticket * rng.lognormal(0.0, 0.3) * (0.6 if fading else 1.0), -2))
            score: int | None = None
            if rng.random() < options.rated_share:
                score = int(rng.choice(scores[0], p=scores[1]))
                if options.satisfaction_matters and score <= LOW_SCORE and rng.random() < 0.7:
                    dropout = min(dropout, t + rng.uniform(1, 20))
            visits.append((_day(options, t), max(cents, 100), score))
            gap = rng.gamma(shape, cadence / shape)
            if fades and t + gap > dropout - 180:
                gap *= 1.8
            t += max(gap, 1.0)
        out.append(SimMember(_day(options, joined), _day(options, dropout), visits))
    return out


def _day(options: SimOptions, offset: float) -> date:
    return options.start + timedelta(days=int(offset))


def truly_gone(members: list[SimMember], as_of: date) -> np.ndarray:
    """Whether each member had (latently) dropped out by the day: the truth a model estimates."""
    return np.array([m.dropout <= as_of for m in members])
