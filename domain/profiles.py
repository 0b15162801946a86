"""One member as a whole: who they are, their cars and latest visits, and every balance they hold.

The counter clerk's page shows it today; the chat and the manager reports will show the same
member, so it is gathered once, here, from the domain's own reads (points, tiers, wallet, punch
cards, coupons) and handed over unformatted: each adapter decides how much of the personal
data it may show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon, Member, MemberScore, Reward, Service, Store, Vehicle, Visit
from domain import bookings, coupons, members, points, punchcards, tiers, wallet
from domain.shop import LoyaltyRules


@dataclass
class MemberProfile:
    """`visits` are the latest few (each with its store's name), newest first; `visit_count`
    counts them all. Punch cards carry their service (None if no longer configured), coupons
    their reward if any."""

    member: Member
    home_store: str | None
    tags: list[str]
    points: points.PointsSummary
    tier: tiers.TierProgress
    vehicles: list[Vehicle]
    visits: list[tuple[Visit, str | None]]
    visit_count: int
    stored_value_cents: int = 0
    punch_cards: list[tuple[punchcards.CardStatus, Service | None]] = field(default_factory=list)
    coupons: list[tuple[Coupon, Reward | None]] = field(default_factory=list)
    score: MemberScore | None = None  # last night's segment and churn risk, if computed
    no_shows: int = 0  # bookings the member did not come to


async def _services(session: AsyncSession, codes: set[str]) -> dict[str, Service]:
    if not codes:
        return {}
    rows = await session.scalars(select(Service).where(Service.code.in_(codes)))
    return {service.code: service for service in rows.all()}


async def profile(
    session: AsyncSession, member: Member, today: date, rules: LoyaltyRules, visits: int = 10
) -> MemberProfile:
    """Everything about `member` as of `today`, with the latest `visits` visits."""
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
    services = await _services(session, {c.card.service_code for c in cards})
    return MemberProfile(
        member=member,
        home_store=home.name if home else None,
        tags=await members.tags_of(session, member.id),
        points=await points.summary(session, member.id, today, rules),
        tier=await tiers.progress(session, member.id, today),
        vehicles=list(cars.all()),
        visits=[(visit, store) for visit, store in recent.all()],
        visit_count=int(count or 0),
        stored_value_cents=await wallet.balance(session, member.id),
        punch_cards=[(c, services.get(c.card.service_code)) for c in cards],
        coupons=await coupons.valid_with_rewards(session, member.id, today),
        score=await session.get(MemberScore, member.id),
        no_shows=await bookings.no_shows(session, member.id),
    )
