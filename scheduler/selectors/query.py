"""What every selector is built from: the day and the chain it selects for (`ChainDay`), the
shape of its answer (`CandidateQuery` yielding `Candidate`s), the member, car and visit columns
its statements share, the condition every rule puts on a member, and the pieces of template
context built from a row.

Invariants: no rule ever selects an erased member, and a marketing rule only members who agreed
to marketing (`member_may_receive`); a candidate's context holds plain values (dates stay dates
until the outbox stores them), so a template sees the same thing on every database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, Service, Store, Tier, Vehicle, Visit
from domain.locales import localized, resolve_locale
from scheduler.outbox import MARKETING
from scheduler.ruleconfig import CouponSpec, Rule


@dataclass(frozen=True)
class Candidate:
    """One message a rule wants to send: to whom, about which occurrence, in what words."""

    member_id: int
    member_ref: str
    occurrence: str
    locale: str
    context: dict[str, Any]
    not_before: datetime | None = None  # None: the start of the day (see ChainDay.not_before)
    coupon: CouponSpec | None = None


# Turns one result row into the messages it stands for: usually one, a booking one per offset.
RowToCandidates = Callable[[Row[Any]], list[Candidate]]


@dataclass(frozen=True)
class CandidateQuery:
    """One SELECT of a rule and how its rows become candidates. The caller streams `statement`
    in chunks and maps each row with `to_candidates`, so no rule holds all its rows at once."""

    statement: Select[Any]
    to_candidates: RowToCandidates


@dataclass(frozen=True)
class ServiceInfo:
    """A service as reminders name it; intervals are None for an inactive service (it is never
    due)."""

    code: str
    name_zh: str
    name_en: str
    interval_months: int | None
    interval_km: int | None

    def name(self, locale: str) -> str:
        return localized(locale, self.name_zh, self.name_en)


@dataclass(frozen=True)
class TierInfo:
    """A tier as the upgrade message describes it."""

    code: str
    rank: int
    name_zh: str
    name_en: str
    threshold_cents: int
    privileges_zh: tuple[str, ...]
    privileges_en: tuple[str, ...]


@dataclass
class ChainDay:
    """The day a run selects for and the chain as it stands (stores, services, tiers): what every
    selector needs, loaded once per run so no selector reads them per row.

    `dialect` is the database's (`sqlite`, `postgresql`), for the few expressions that differ."""

    day: date
    now: datetime
    zone: ZoneInfo
    dialect: str
    stores: dict[int, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    tiers: list[TierInfo] = field(default_factory=list)

    def start_of(self, day: date, zone: ZoneInfo | None = None) -> datetime:
        """The first instant of `day` in `zone` (the chain's by default), in UTC."""
        return datetime.combine(day, time(), tzinfo=zone or self.zone).astimezone(UTC)

    @property
    def not_before(self) -> datetime:
        """Messages about the day are due from its start, or now for a day already begun."""
        return max(self.now, self.start_of(self.day))

    def store(self, store_id: int | None) -> dict[str, Any]:
        """The store's template fields; the chain's first store for none or an unknown one."""
        if store_id is not None and store_id in self.stores:
            return self.stores[store_id]
        return next(iter(self.stores.values()))

    def service_name(self, code: str, locale: str) -> str:
        info = self.services.get(code)
        return info.name(locale) if info else code


async def load_chain_day(
    session: AsyncSession, day: date, now: datetime, zone: ZoneInfo
) -> ChainDay:
    """The chain as it stands, for selecting on `day` (in `zone`) at `now`."""
    chain = ChainDay(day=day, now=now, zone=zone, dialect=session.bind.dialect.name)
    for store in (await session.scalars(select(Store).order_by(Store.id))).all():
        chain.stores[int(store.id or 0)] = {
            "code": store.code,
            "name": store.name,
            "address": store.address,
            "timezone": store.timezone,
        }
    for service in (await session.scalars(select(Service).order_by(Service.id))).all():
        chain.services[service.code] = ServiceInfo(
            service.code,
            service.name_zh,
            service.name_en,
            service.interval_months if service.active else None,
            service.interval_km if service.active else None,
        )
    chain.tiers = [
        TierInfo(
            t.code,
            t.rank,
            t.name_zh,
            t.name_en,
            t.threshold_cents,
            tuple(t.privileges_zh),
            tuple(t.privileges_en),
        )
        for t in (await session.scalars(select(Tier).order_by(Tier.rank))).all()
    ]
    return chain


# ---------------------------------------------------------------------------- shared columns

MEMBER_COLUMNS = (
    Member.id.label("member_id"),
    Member.member_ref.label("member_ref"),
    Member.name.label("member_name"),
    Member.locale.label("member_locale"),
    Member.birthday.label("member_birthday"),
    Member.home_store_id.label("home_store_id"),
)
VEHICLE_COLUMNS = (
    Vehicle.id.label("vehicle_id"),
    Vehicle.plate.label("plate"),
    Vehicle.make.label("make"),
    Vehicle.model.label("model"),
    Vehicle.inspection_due.label("inspection_due"),
    Vehicle.insurance_expiry.label("insurance_expiry"),
)
VISIT_COLUMNS = (
    Visit.id.label("visit_id"),
    Visit.visited_on.label("visited_on"),
    Visit.store_id.label("visit_store_id"),
    Visit.services.label("services"),
)


def member_may_receive(rule: Rule) -> list[ColumnElement[bool]]:
    """Conditions on `Member` that every rule adds: never the erased; for marketing, only who
    agreed to it (the dispatcher checks consent again when it sends)."""
    conditions: list[ColumnElement[bool]] = [Member.erased_at.is_(None)]
    if rule.category == MARKETING:
        conditions.append(Member.marketing_consent.is_(True))
    return conditions


# --------------------------------------------------------------------------- context pieces


def row_locale(row: Row[Any]) -> str:
    """The language the row's member reads (the chain's default for none or an unknown one)."""
    return resolve_locale(row.member_locale)


def common_context(
    row: Row[Any], chain: ChainDay, locale: str, store_id: int | None = None
) -> dict[str, Any]:
    """The context every message starts from: the member, a store (the given one, else the
    member's home store) and the day."""
    return {
        "member": {
            "name": row.member_name,
            "member_ref": row.member_ref,
            "locale": locale,
            "birthday": row.member_birthday,
        },
        "store": chain.store(store_id if store_id is not None else row.home_store_id),
        "today": chain.day,
    }


def vehicle_context(row: Row[Any]) -> dict[str, Any]:
    """The car of a row selected with VEHICLE_COLUMNS."""
    return {
        "plate": row.plate,
        "make": row.make,
        "model": row.model,
        "inspection_due": row.inspection_due,
        "insurance_expiry": row.insurance_expiry,
    }


def visit_context(row: Row[Any], chain: ChainDay, locale: str) -> dict[str, Any]:
    """The visit of a row selected with VISIT_COLUMNS, its services named in `locale`."""
    return {
        "id": row.visit_id,
        "visited_on": row.visited_on,
        "store_name": chain.store(row.visit_store_id)["name"] if row.visit_store_id else None,
        "services": [chain.service_name(code, locale) for code in (row.services or [])],
    }


def candidate(
    row: Row[Any],
    occurrence: str,
    locale: str,
    context: dict[str, Any],
    *,
    not_before: datetime | None = None,
    coupon: CouponSpec | None = None,
) -> Candidate:
    """The row's member as a candidate for `occurrence`."""
    return Candidate(
        member_id=int(row.member_id),
        member_ref=row.member_ref,
        occurrence=occurrence,
        locale=locale,
        context=context,
        not_before=not_before,
        coupon=coupon,
    )
