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

from domain.churn.history import History, history, history_from_visits, history_statement
from domain.churn.model import (
    BTYD_ONLY,
    FEATURES,
    RULE,
    TRAINED,
    Assessment,
    ChurnConfig,
    ChurnModel,
    assess,
    assess_history,
    btyd_no_visit,
    quick_pareto_fit,
    train,
)
from domain.churn.reasons import REASON_KEYS, Reason, parse_reason, reason_text

__all__ = [
    "BTYD_ONLY",
    "FEATURES",
    "REASON_KEYS",
    "RULE",
    "TRAINED",
    "Assessment",
    "ChurnConfig",
    "ChurnModel",
    "History",
    "Reason",
    "assess",
    "assess_history",
    "btyd_no_visit",
    "history",
    "history_from_visits",
    "history_statement",
    "parse_reason",
    "quick_pareto_fit",
    "reason_text",
    "train",
]
