"""The counter clerk's page on one member, gathered from the domain and drawn with rich."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon, Member, Reward, Service, Store, Vehicle, Visit
from domain import coupons, members, points, punchcards, tiers, wallet
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
    stored_value_cents: int = 0
    punch_cards: list[tuple[punchcards.CardStatus, str]] = field(default_factory=list)
    coupons: list[tuple[Coupon, Reward | None]] = field(default_factory=list)


def yuan(cents: int) -> str:
    return f"¥{cents / 100:,.2f}"


def coupon_terms(coupon: Coupon) -> str:
    """`¥50.00 off from ¥300.00` or `10% off`: what the clerk reads to the customer."""
    amount = (
        f"{coupon.percent_off}%" if coupon.kind == coupons.PERCENT else yuan(coupon.value_cents)
    )
    floor = f" from {yuan(coupon.min_spend_cents)}" if coupon.min_spend_cents else ""
    return f"{amount} off{floor}"


async def _service_names(session: AsyncSession, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = await session.execute(
        select(Service.code, Service.name_en, Service.name_zh).where(Service.code.in_(codes))
    )
    return {code: f"{en} / {zh}" for code, en, zh in rows.all()}


async def _coupons_with_rewards(
    session: AsyncSession, member_id: int, today: date
) -> list[tuple[Coupon, Reward | None]]:
    valid = await coupons.valid_for_member(session, member_id, today)
    by_id = await coupons.rewards_for(session, valid)
    return [(c, by_id.get(c.reward_id) if c.reward_id else None) for c in valid]


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
    cards = await punchcards.cards_of(session, member.id, today)
    names = await _service_names(session, {c.card.service_code for c in cards})
    return MemberView(
        member=member,
        home_store=home.name if home else None,
        tags=await members.tags_of(session, member.id),
        points=await points.summary(session, member.id, today, rules),
        tier=await tiers.progress(session, member.id, today),
        vehicles=list(cars.all()),
        visits=[(visit, store) for visit, store in recent.all()],
        visit_count=int(count or 0),
        stored_value_cents=await wallet.balance(session, member.id),
        punch_cards=[(c, names.get(c.card.service_code, c.card.service_code)) for c in cards],
        coupons=await _coupons_with_rewards(session, member.id, today),
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
    console.print(f"Stored value [bold]{yuan(view.stored_value_cents)}[/bold]")
    if view.punch_cards:
        cards = Table("Service", "Left", "Expires", title="Punch cards")
        for status, service in view.punch_cards:
            cards.add_row(
                service,
                f"{status.remaining} of {status.card.total_uses}",
                str(status.expires_on or "-"),
            )
        console.print(cards)
    if view.coupons:
        vouchers = Table("Code", "Value", "For", "Valid until", title="Valid coupons")
        for coupon, reward in view.coupons:
            vouchers.add_row(
                coupon.code,
                coupon_terms(coupon),
                f"{reward.name_en} / {reward.name_zh}" if reward else coupon.source,
                str(coupon.valid_until),
            )
        console.print(vouchers)
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
