"""Who each lifecycle rule speaks to on a day: one set-based SELECT per rule kind (a few for
maintenance and win-back), never a Python loop over the members.

Each selector takes its rule (the typed classes of `scheduler.ruleconfig`) and the `ChainDay`,
and returns `CandidateQuery`s: a statement the caller streams in chunks, and a function turning
one result row into `Candidate`s (usually one; a booking yields one per reminder offset). A
candidate carries the member, the occurrence that makes its idempotency key stable, the member's
locale and the template context (plain values: dates stay dates until the outbox stores them).

Events are picked on the day they happen (a visit `days_after` days ago, a birthday, an expiry
exactly N days ahead, the day a member turns pre-churn or goes quiet for 180 days), so every
run, the first included, selects one day's worth; catch-up windows, where a rule has one, are
small and the idempotency key absorbs the overlap.

The selectors live by subject: `events` (visits, birthdays, car dates, bookings), `loyalty`
(points, tiers, wake-up), `maintenance`, `winback`; `query` holds what they share. This module
is the registry: `queries_for` picks the selector of a rule by its class.
"""

from __future__ import annotations

from typing import assert_never

from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.ruleconfig import (
    Birthday,
    BookingReminder,
    InspectionDue,
    InsuranceRenewal,
    MaintenanceDue,
    PointsExpiring,
    Rule,
    TierUpgrade,
    VisitCare,
    VisitSurvey,
    WakeUp,
    WinBack,
)
from scheduler.selectors.events import (
    birthday,
    booking_reminder,
    inspection_due,
    insurance_renewal,
    visit_care,
    visit_survey,
)
from scheduler.selectors.loyalty import points_expiring, tier_upgrade, wake_up
from scheduler.selectors.maintenance import maintenance_due
from scheduler.selectors.query import (
    Candidate,
    CandidateQuery,
    ChainDay,
    ServiceInfo,
    TierInfo,
    load_chain_day,
)
from scheduler.selectors.winback import win_back

__all__ = [
    "Candidate",
    "CandidateQuery",
    "ChainDay",
    "ServiceInfo",
    "TierInfo",
    "load_chain_day",
    "queries_for",
]


async def queries_for(session: AsyncSession, rule: Rule, chain: ChainDay) -> list[CandidateQuery]:
    """The statements that select `rule`'s members on `chain.day`."""
    match rule:
        case VisitSurvey():
            return visit_survey(rule, chain)
        case VisitCare():
            return visit_care(rule, chain)
        case Birthday():
            return birthday(rule, chain)
        case MaintenanceDue():
            return maintenance_due(rule, chain)
        case InsuranceRenewal():
            return insurance_renewal(rule, chain)
        case InspectionDue():
            return inspection_due(rule, chain)
        case BookingReminder():
            return booking_reminder(rule, chain)
        case PointsExpiring():
            return points_expiring(rule, chain)
        case TierUpgrade():
            return tier_upgrade(rule, chain)
        case WakeUp():
            return wake_up(rule, chain)
        case WinBack():
            # The one selector that reads first: the chain's median rhythm between visits.
            return await win_back(session, rule, chain)
        case _:
            assert_never(rule)
