"""Reminders about a dated event: a visit (the survey, the care tip), a birthday, a car's
insurance and inspection dates, and a booking.

Each event is picked at a fixed distance from its date (`days_after` a visit, `days_before` a
car's date, `hours_before` a booking, a birthday on the day), so a run selects one day's worth.
The occurrence names the event, and the offset where a rule has several (`<car>:<date>:<n>d`,
`<booking>:<hours>h`), so each reminder is keyed, and sent, once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, extract, or_, select
from sqlalchemy.engine import Row

from db.models import Booking, Member, SurveyResponse, Vehicle, Visit
from domain import feedback
from domain.queries import date_literal, json_list_has_any
from scheduler.ruleconfig import (
    Birthday,
    BookingReminder,
    InspectionDue,
    InsuranceRenewal,
    VisitCare,
    VisitSurvey,
)
from scheduler.selectors.query import (
    MEMBER_COLUMNS,
    VEHICLE_COLUMNS,
    VISIT_COLUMNS,
    Candidate,
    CandidateQuery,
    ChainDay,
    candidate,
    common_context,
    member_may_receive,
    row_locale,
    vehicle_context,
    visit_context,
)


def survey_buttons(visit_id: int) -> list[list[dict[str, str]]]:
    """The 0-10 answer buttons as the template context holds them (rows of label and data)."""
    return [
        [{"label": label, "data": data} for label, data in row]
        for row in feedback.score_buttons(visit_id)
    ]


def visit_survey(rule: VisitSurvey, chain: ChainDay) -> list[CandidateQuery]:
    """Visits `days_after` days ago not yet scored, one survey each."""
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .where(
            Visit.visited_on == date_literal(chain.day - timedelta(days=rule.days_after)),
            Visit.satisfaction.is_(None),
            ~exists().where(SurveyResponse.visit_id == Visit.id),
            *member_may_receive(rule),
        )
        .order_by(Visit.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        context = common_context(row, chain, locale, row.visit_store_id)
        context["visit"] = visit_context(row, chain, locale)
        context["buttons"] = survey_buttons(int(row.visit_id))
        return [candidate(row, str(row.visit_id), locale, context)]

    return [CandidateQuery(statement, to_candidates)]


def visit_care(rule: VisitCare, chain: ChainDay) -> list[CandidateQuery]:
    """Visits `days_after` days ago with a service of the rule's categories, one message each."""
    conditions = [Visit.visited_on == date_literal(chain.day - timedelta(days=rule.days_after))]
    if rule.categories:
        conditions.append(json_list_has_any(chain.dialect, Visit.categories, rule.categories))
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS, *VEHICLE_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .outerjoin(Vehicle, Vehicle.id == Visit.vehicle_id)
        .where(*conditions, *member_may_receive(rule))
        .order_by(Visit.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        context = common_context(row, chain, locale, row.visit_store_id)
        context["visit"] = visit_context(row, chain, locale)
        if row.vehicle_id is not None:
            context["vehicle"] = vehicle_context(row)
        return [candidate(row, str(row.visit_id), locale, context)]

    return [CandidateQuery(statement, to_candidates)]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def birthday(rule: Birthday, chain: ChainDay) -> list[CandidateQuery]:
    """Birthdays on the day; 29 February ones on 28 February in common years."""
    month, day = chain.day.month, chain.day.day
    on_day = and_(
        extract("month", Member.birthday) == month, extract("day", Member.birthday) == day
    )
    if (month, day) == (2, 28) and not _is_leap(chain.day.year):
        on_day = or_(
            on_day,
            and_(extract("month", Member.birthday) == 2, extract("day", Member.birthday) == 29),
        )
    statement = (
        select(*MEMBER_COLUMNS)
        .where(Member.birthday.is_not(None), on_day, *member_may_receive(rule))
        .order_by(Member.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        return [candidate(row, str(chain.day.year), locale, common_context(row, chain, locale))]

    return [CandidateQuery(statement, to_candidates)]


def _car_dates(
    rule: InsuranceRenewal | InspectionDue, chain: ChainDay, column: Any
) -> list[CandidateQuery]:
    """Cars whose date in `column` lies exactly one of the rule's `days_before` after the day."""
    targets = {chain.day + timedelta(days=n): n for n in rule.days_before}
    statement = (
        select(*MEMBER_COLUMNS, *VEHICLE_COLUMNS)
        .join(Member, Member.id == Vehicle.member_id)
        .where(column.in_([date_literal(d) for d in sorted(targets)]), *member_may_receive(rule))
        .order_by(Vehicle.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        due: date = getattr(row, column.key)
        context = common_context(row, chain, locale)
        context["vehicle"] = vehicle_context(row)
        occurrence = f"{row.vehicle_id}:{due.isoformat()}:{targets[due]}d"
        return [candidate(row, occurrence, locale, context)]

    return [CandidateQuery(statement, to_candidates)]


def insurance_renewal(rule: InsuranceRenewal, chain: ChainDay) -> list[CandidateQuery]:
    """Cars whose insurance runs out exactly `days_before` days after the day."""
    return _car_dates(rule, chain, Vehicle.insurance_expiry)


def inspection_due(rule: InspectionDue, chain: ChainDay) -> list[CandidateQuery]:
    """Cars whose annual inspection falls due exactly `days_before` days after the day."""
    return _car_dates(rule, chain, Vehicle.inspection_due)


def booking_reminder(rule: BookingReminder, chain: ChainDay) -> list[CandidateQuery]:
    """Bookings starting on the day or the next (in their store's time zone), one reminder per
    offset whose instant falls on or after the day's start (earlier ones were due yesterday)."""
    windows = []
    starts = {}
    for store_id, store in chain.stores.items():
        zone = ZoneInfo(store["timezone"])
        start = chain.start_of(chain.day, zone)
        starts[store_id] = start
        end = chain.start_of(chain.day + timedelta(days=2), zone)
        windows.append(
            and_(Booking.store_id == store_id, Booking.starts_at >= start, Booking.starts_at < end)
        )
    if not windows:
        return []
    statement = (
        select(
            *MEMBER_COLUMNS,
            *VEHICLE_COLUMNS,
            Booking.id.label("booking_id"),
            Booking.store_id.label("booking_store_id"),
            Booking.service_code.label("service_code"),
            Booking.starts_at.label("starts_at"),
        )
        .join(Member, Member.id == Booking.member_id)
        .outerjoin(Vehicle, Vehicle.id == Booking.vehicle_id)
        .where(Booking.status == "booked", or_(*windows), *member_may_receive(rule))
        .order_by(Booking.starts_at, Booking.id)
    )
    offsets = sorted(set(rule.hours_before), reverse=True)

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        starts_at: datetime = row.starts_at
        if starts_at.tzinfo is None:
            starts_at = starts_at.replace(tzinfo=UTC)
        store = chain.store(row.booking_store_id)
        found = []
        for hours in offsets:
            at = starts_at - timedelta(hours=hours)
            if at < starts[row.booking_store_id]:
                continue
            context = common_context(row, chain, locale, row.booking_store_id)
            context["booking"] = {
                "ref": f"B{int(row.booking_id):06d}",
                "service": chain.service_name(row.service_code, locale),
                "starts_at": starts_at,
                "store_name": store["name"],
            }
            context["reminder"] = {"hours_before": hours}
            if row.vehicle_id is not None:
                context["vehicle"] = vehicle_context(row)
            occurrence = f"{row.booking_id}:{hours}h"
            found.append(candidate(row, occurrence, locale, context, not_before=at))
        return found

    return [CandidateQuery(statement, to_candidates)]
