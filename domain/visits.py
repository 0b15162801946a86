"""Recording a visit: the one place a payment turns into points, mileage and tier."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, MileageReading, Tier, Visit
from db.session import upsert_insert
from domain import points, tiers
from domain.errors import InvalidInput, NotFound
from domain.limits import MAX_AMOUNT_CENTS, MAX_AMOUNT_YUAN, MAX_KM
from domain.shop import LoyaltyRules


async def record(
    session: AsyncSession,
    member_id: int,
    visited_on: date,
    amount_cents: int,
    rules: LoyaltyRules,
    *,
    store_id: int | None = None,
    vehicle_id: int | None = None,
    services: list[str] | None = None,
    categories: list[str] | None = None,
    mileage_km: int | None = None,
    satisfaction: int | None = None,
    visit_ref: str | None = None,
    earn_points: bool = True,
) -> Visit:
    """Store the visit, credit its points at the member's current tier, then upgrade the tier.

    A `visit_ref` seen before returns the stored visit unchanged, so a POS that retries does
    not pay points twice.
    """
    if amount_cents < 0:
        raise InvalidInput("amount cannot be negative", amount_cents=amount_cents)
    if amount_cents > MAX_AMOUNT_CENTS:
        raise InvalidInput(
            f"an amount is at most {MAX_AMOUNT_YUAN:,} yuan", amount_cents=amount_cents
        )
    if mileage_km is not None and not 0 <= mileage_km <= MAX_KM:
        raise InvalidInput(f"mileage is 0 to {MAX_KM:,} km", mileage_km=mileage_km)
    if satisfaction is not None and not 0 <= satisfaction <= 10:
        raise InvalidInput("satisfaction is 0 to 10", satisfaction=satisfaction)
    if visit_ref and (
        seen := await session.scalar(select(Visit).where(Visit.visit_ref == visit_ref))
    ):
        return seen
    member = await session.get(Member, member_id)
    if member is None:
        raise NotFound("no such member", member_id=member_id)
    visit = Visit(
        visit_ref=visit_ref,
        member_id=member_id,
        store_id=store_id,
        vehicle_id=vehicle_id,
        visited_on=visited_on,
        amount_cents=amount_cents,
        services=list(services or []),
        categories=list(categories or []),
        mileage_km=mileage_km,
        satisfaction=satisfaction,
    )
    session.add(visit)
    await session.flush()
    if vehicle_id is not None and mileage_km is not None:
        # Two visits on one day with the same odometer reading are one reading.
        await session.execute(
            upsert_insert(session, MileageReading)
            .values(vehicle_id=vehicle_id, read_on=visited_on, km=mileage_km, source="visit")
            .on_conflict_do_nothing()
        )
    if earn_points:
        tier = await session.get(Tier, member.tier_code)
        earned = points.points_for_spend(
            amount_cents, rules, tier.multiplier_permille if tier else 1000
        )
        if earned > 0:
            await points.credit(
                session,
                member_id,
                earned,
                visited_on,
                rules,
                key=f"visit:{visit.id}",
                visit_id=visit.id,
            )
    await tiers.upgrade_if_due(session, member_id, visited_on)
    return visit
