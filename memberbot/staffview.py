"""The counter clerk's page on one member, gathered from the domain and drawn with rich."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, Store, Vehicle, Visit
from domain import members, points, tiers
from domain.identity import mask_phone
from domain.shop import LoyaltyRules


@dataclass
class MemberView:
    member: Member
    home_store: str | None
    tags: list[str]
    points: points.PointsSummary
    tier: tiers.TierProgress
    vehicles: list[Vehicle]
    visits: list[tuple[Visit, str | None]]
    visit_count: int


def yuan(cents: int) -> str:
    return f"¥{cents / 100:,.2f}"


async def build(
    session: AsyncSession, member: Member, today: date, rules: LoyaltyRules, visits: int = 10
) -> MemberView:
    assert member.id is not None
    home = await session.get(Store, member.home_store_id) if member.home_store_id else None
    cars = await session.scalars(
        select(Vehicle).where(Vehicle.member_id == member.id).order_by(Vehicle.id)
    )
    recent = await session.execute(
        select(Visit, Store.name)
        .outerjoin(Store, Store.id == Visit.store_id)
        .where(Visit.member_id == member.id)
        .order_by(Visit.visited_on.desc(), Visit.id.desc())
        .limit(visits)
    )
    count = await session.scalar(select(func.count()).where(Visit.member_id == member.id))
    return MemberView(
        member=member,
        home_store=home.name if home else None,
        tags=await members.tags_of(session, member.id),
        points=await points.summary(session, member.id, today, rules),
        tier=await tiers.progress(session, member.id, today),
        vehicles=list(cars.all()),
        visits=[(visit, store) for visit, store in recent.all()],
        visit_count=int(count or 0),
    )


def render(console: Console, view: MemberView) -> None:
    m = view.member
    console.rule(f"[bold]{m.name}[/bold]  {m.member_ref}")
    consent = "yes" if m.marketing_consent else "no"
    console.print(
        f"Phone {mask_phone(m.phone)} · birthday {'on file' if m.birthday else '-'} · "
        f"locale {m.locale} · home store {view.home_store or '-'} · marketing consent {consent}"
    )
    if view.tags:
        console.print("Tags: " + ", ".join(view.tags))
    t = view.tier
    nxt = (
        f"{yuan(t.missing_cents)} more to {t.next_tier.name_en} / {t.next_tier.name_zh}"
        if t.next_tier
        else "top tier"
    )
    console.print(
        f"Tier [bold]{t.tier.name_en} / {t.tier.name_zh}[/bold] · 12-month spend "
        f"{yuan(t.spend_cents)} · {nxt}"
    )
    p = view.points
    expiry = f", next expiry {p.next_expiry}" if p.next_expiry else ""
    console.print(
        f"Points [bold]{p.balance}[/bold] · {p.expiring_soon} expiring by {p.expiring_by}{expiry}"
    )
    cars = Table("Plate", "Car", "Bought", "Insurance", "Inspection", title="Cars")
    for car in view.vehicles:
        name = " ".join(x for x in (car.make, car.model) if x) or "-"
        cars.add_row(
            car.plate,
            name,
            str(car.purchase_date or "-"),
            str(car.insurance_expiry or "-"),
            str(car.inspection_due or "-"),
        )
    console.print(cars)
    visits = Table(
        "Date",
        "Store",
        "Amount",
        "Services",
        "km",
        "Score",
        title=f"Latest visits ({len(view.visits)} of {view.visit_count})",
    )
    for visit, store in view.visits:
        visits.add_row(
            str(visit.visited_on),
            store or "-",
            yuan(visit.amount_cents),
            ", ".join(visit.services) or "-",
            str(visit.mileage_km or "-"),
            "-" if visit.satisfaction is None else str(visit.satisfaction),
        )
    console.print(visits)
