"""What the demo's closing summary holds, read back from the database it built.

The questions are the domain's (domain.reports for the chain, domain.profiles for one member);
this module only picks the demo's windows and list lengths and turns the answers into lines
ready to print, with phones and plates masked as they are taken in, so nothing later can print
them in clear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member
from domain import csvimport, reports
from domain.identity import mask_phone, mask_plate
from domain.profiles import MemberProfile, profile
from memberbot import runtime
from memberbot.demo.activity import Played
from memberbot.demo.generator import MEMBER_PREFIX
from scheduler.rules import RunSummary

LISTED = 5
INSURANCE_DAYS = 60
INSPECTION_DAYS = 30


@dataclass(frozen=True)
class Due:
    """One line of a 'coming up' list: when, whose, and the details (masked where personal)."""

    day: date | None
    member_ref: str
    name: str
    details: tuple[str, str]


@dataclass
class DemoSummary:
    """Everything the closing summary shows, gathered with a few read-only queries."""

    chain: str
    today: date
    database_url: str
    export: Path | None
    stores: list[reports.StoreOverview]
    members: int
    vehicles: int
    visits: int
    points_issued: int
    points_expired: int
    points_outstanding: int
    tiers: list[tuple[str, int]]
    activity: dict[str, int]
    expiring_days: int
    expiring_members: int
    expiring_points: int
    expiring: list[Due]
    insurance_days: int
    insurance_count: int
    insurance: list[Due]
    inspection_days: int
    inspection_count: int
    inspections: list[Due]
    sample: MemberProfile | None
    loyalty: reports.LoyaltyTotals
    imports: list[csvimport.ImportResult] = field(default_factory=list)
    played: Played | None = None
    lifecycle: RunSummary | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _expiring_lines(expiring: reports.ExpiringPoints) -> list[Due]:
    return [
        Due(
            line.first_expiry,
            line.member.member_ref,
            line.member.name,
            (f"{line.points:,}", mask_phone(line.member.phone)),
        )
        for line in expiring.largest
    ]


def _car_lines(due: reports.CarsDue) -> list[Due]:
    return [
        Due(
            line.due_on,
            line.member.member_ref,
            line.member.name,
            (
                mask_plate(line.vehicle.plate),
                f"{line.vehicle.make or ''} {line.vehicle.model or ''}".strip(),
            ),
        )
        for line in due.first
    ]


async def summarize(
    rt: runtime.Runtime, today: date, sample_ref: str, export: Path | None = None
) -> DemoSummary:
    """Read back what the import and the loyalty activity built: the questions a new owner asks
    on day one."""
    rules = rt.config.loyalty
    async with rt.db.read() as session:
        ledger = await reports.ledger_totals(session)
        expiring = await reports.expiring_points(
            session, today, rules.expiring_notice_days, limit=LISTED
        )
        insurance = await reports.insurance_due(session, today, INSURANCE_DAYS, limit=LISTED)
        inspections = await reports.inspections_due(session, today, INSPECTION_DAYS, limit=LISTED)
        member = await _sample(session, sample_ref)
        size = await reports.chain_size(session)
        return DemoSummary(
            chain=rt.config.chain.name,
            today=today,
            database_url=rt.settings.database_url,
            export=export,
            stores=await reports.store_overview(session, today),
            members=size.members,
            vehicles=size.vehicles,
            visits=size.visits,
            points_issued=ledger.issued,
            points_expired=ledger.expired,
            points_outstanding=ledger.outstanding,
            tiers=[
                (f"{t.name_en} / {t.name_zh}", t.members)
                for t in await reports.tier_distribution(session)
            ],
            activity=asdict(await reports.activity(session, today)),
            expiring_days=rules.expiring_notice_days,
            expiring_members=expiring.members,
            expiring_points=expiring.points,
            expiring=_expiring_lines(expiring),
            insurance_days=INSURANCE_DAYS,
            insurance_count=insurance.count,
            insurance=_car_lines(insurance),
            inspection_days=INSPECTION_DAYS,
            inspection_count=inspections.count,
            inspections=_car_lines(inspections),
            sample=await profile(session, member, today, rules) if member else None,
            loyalty=await reports.loyalty_totals(session, today),
        )


async def _sample(session: AsyncSession, preferred: str) -> Member | None:
    """The generator's showcase member; in a kept database built with other options, the
    first demo member instead."""
    member = await session.scalar(select(Member).where(Member.member_ref == preferred))
    if member is None:
        member = await session.scalar(
            select(Member)
            .where(Member.member_ref.like(f"{MEMBER_PREFIX}%"), Member.erased_at.is_(None))
            .order_by(Member.member_ref)
            .limit(1)
        )
    return member
