"""Maintenance reminders: cars falling due for a service, by time or by estimated mileage.

Which cars are due is the domain's rule, kept in `domain.maintenance` beside its Python
original (`due_by_time`, `due_by_mileage`); this selector adds who may be told and what the
message says. A car is reminded once per service cycle: the occurrence is (car, service, day of
the last service), the same whether it fell due by time or by mileage.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Row

from db.models import Visit
from domain import maintenance
from scheduler.ruleconfig import MaintenanceDue
from scheduler.selectors.query import (
    MEMBER_COLUMNS,
    VEHICLE_COLUMNS,
    Candidate,
    CandidateQuery,
    ChainDay,
    ServiceInfo,
    candidate,
    common_context,
    member_may_receive,
    row_locale,
    vehicle_context,
)

# The columns a maintenance reminder reads: the owner, the car and the last service visit.
SERVICE_COLUMNS = (
    *MEMBER_COLUMNS,
    *VEHICLE_COLUMNS,
    Visit.id.label("visit_id"),
    Visit.visited_on.label("visited_on"),
    Visit.store_id.label("visit_store_id"),
    Visit.mileage_km.label("mileage_km"),
)


def maintenance_due(rule: MaintenanceDue, chain: ChainDay) -> list[CandidateQuery]:
    """Per service with an interval: cars falling due by time on the day (or in the catch-up
    days), and cars crossing the km interval by their projected odometer, not yet due by time."""
    queries: list[CandidateQuery] = []
    for info in chain.services.values():
        if info.interval_months:
            due = maintenance.due_by_time(
                SERVICE_COLUMNS,
                info.code,
                info.interval_months,
                day=chain.day,
                catch_up_days=rule.catch_up_days,
                dialect=chain.dialect,
            )
            if due is not None:
                queries.append(_reminders(rule, chain, info, due, "time"))
        if info.interval_km:
            due = maintenance.due_by_mileage(
                SERVICE_COLUMNS,
                info.code,
                info.interval_km,
                info.interval_months,
                day=chain.day,
                catch_up_days=rule.catch_up_days,
                min_span_days=rule.min_span_days,
                dialect=chain.dialect,
            )
            queries.append(_reminders(rule, chain, info, due, "mileage"))
    return queries


def _reminders(
    rule: MaintenanceDue, chain: ChainDay, info: ServiceInfo, due: Select[Any], due_by: str
) -> CandidateQuery:
    """The cars in `due` whose owner the rule may speak to, a reminder each."""

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        last: date = row.visited_on
        context = common_context(row, chain, locale, row.visit_store_id)
        context["vehicle"] = vehicle_context(row)
        context["service"] = {"code": info.code, "name": info.name(locale)}
        estimated = getattr(row, "estimated_km", None)
        at_service = row.mileage_km
        context["maintenance"] = {
            "due_by": due_by,
            "last_service_on": last,
            "interval_months": info.interval_months,
            "interval_km": info.interval_km,
            "estimated_km": int(estimated) if estimated is not None else None,
            "km_since_service": int(estimated - at_service)
            if estimated is not None and at_service is not None
            else None,
        }
        occurrence = f"{row.vehicle_id}:{info.code}:{last.isoformat()}"
        return [candidate(row, occurrence, locale, context)]

    return CandidateQuery(due.where(*member_may_receive(rule)), to_candidates)
