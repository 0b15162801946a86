"""Recording a visit at the counter, and voiding one recorded by mistake.

A visit is recorded with the services of the shop's configuration, whose categories it
carries, so the next day's survey and the care rules select it as they select an imported one;
its odometer reading goes to the car's readings. Voiding takes back the points it earned
through the ledger (refused, like any debit, when the member has spent them), drops the
messages queued about it, and deletes it, so no rule, tier spend or segment counts it again;
the audit line keeps what it was. Voiding twice is a no-op: the second gets the first answer.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Member,
    MileageReading,
    OutboxMessage,
    OutboxStatus,
    PointsEntry,
    PointsKind,
    Service,
    Vehicle,
    Visit,
)
from domain import points, staff
from domain import visits as visit_records
from domain.counter import receipts
from domain.counter.acting import at_store, on_entity
from domain.errors import InvalidInput, NotFound
from domain.shop import LoyaltyRules

RECORD, VOID = "visit.record", "visit.void"


async def _categories(session: AsyncSession, services: list[str]) -> list[str]:
    """The categories of the services named, in order; every service must be configured."""
    if not services:
        raise InvalidInput("a visit needs at least one service")
    rows = await session.scalars(
        select(Service).where(Service.code.in_(services), Service.active.is_(True))
    )
    by_code = {service.code: service for service in rows.all()}
    unknown = [code for code in services if code not in by_code]
    if unknown:
        raise InvalidInput("unknown service", service=", ".join(unknown))
    return list(dict.fromkeys(by_code[code].category for code in services))


async def _check_car(
    session: AsyncSession, member_id: int, vehicle_id: int | None, mileage_km: int | None
) -> None:
    if mileage_km is not None and (mileage_km < 0 or vehicle_id is None):
        raise InvalidInput("a mileage reading needs the car and cannot be negative")
    if vehicle_id is not None:
        car = await session.get(Vehicle, vehicle_id)
        if car is None or car.member_id != member_id:
            raise InvalidInput("not the member's car", vehicle_id=vehicle_id)


async def earned_by(session: AsyncSession, visit_id: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
            PointsEntry.visit_id == visit_id, PointsEntry.kind == PointsKind.EARN
        )
    )
    return int(total or 0)


async def record_visit(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    amount_cents: int,
    services: list[str],
    today: date,
    rules: LoyaltyRules,
    store_id: int | None = None,
    vehicle_id: int | None = None,
    mileage_km: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Record today's visit at the store (default: the account's own): points by the rules,
    the tier, the odometer reading. With `key`, a retry records nothing more."""
    person, store = await at_store(session, who, RECORD, store_id)
    categories = await _categories(session, services)
    await _check_car(session, member_id, vehicle_id, mileage_km)

    async def work() -> dict[str, object]:
        ref = receipts.full_key(RECORD, key)
        visit = await visit_records.record(
            session,
            member_id,
            today,
            amount_cents,
            rules,
            store_id=store,
            vehicle_id=vehicle_id,
            services=list(services),
            categories=categories,
            mileage_km=mileage_km,
            visit_ref=f"counter:{ref}"[:64] if ref else None,
        )
        assert visit.id is not None
        member = await session.get(Member, member_id)
        return {
            "visit_id": visit.id,
            "amount_cents": amount_cents,
            "services": list(services),
            "points_earned": await earned_by(session, visit.id),
            "tier": member.tier_code if member else None,
        }

    return await receipts.once(
        session, person, action=RECORD, store_id=store, member_id=member_id, key=key, work=work
    )


async def void_visit(
    session: AsyncSession, who: int | str, *, visit_id: int, today: date, reason: str
) -> receipts.Receipt:
    """Take back a visit recorded by mistake, as staff of its store or a chain-wide account."""
    if not reason or not reason.strip():
        raise InvalidInput("voiding a visit needs a reason")
    visit = await session.get(Visit, visit_id)
    if visit is None:
        done = await receipts.seen(session, VOID, str(visit_id))
        if done is None or done.member_id is None:
            raise NotFound("no such visit", visit_id=visit_id)
        await on_entity(session, who, VOID, done.store_id)
        return receipts.Receipt.from_stored(done.result)
    person = await on_entity(session, who, VOID, visit.store_id)
    member_id, store_id = visit.member_id, visit.store_id

    async def work() -> dict[str, object]:
        earned = await earned_by(session, visit_id)
        if earned > 0:
            await points.debit(
                session,
                member_id,
                earned,
                today,
                kind=PointsKind.ADJUST,
                key=f"void:visit:{visit_id}",
                reason=f"visit {visit_id} voided: {reason.strip()}"[:255],
                actor=staff.actor_name(person),
            )
        voided = {
            "visit_id": visit_id,
            "visited_on": visit.visited_on.isoformat(),
            "amount_cents": visit.amount_cents,
            "services": list(visit.services),
            "points_returned": earned,
            "reason": reason.strip(),
        }
        await _forget(session, visit)
        return voided

    return await receipts.once(
        session,
        person,
        action=VOID,
        store_id=store_id,
        member_id=member_id,
        key=str(visit_id),
        work=work,
    )


def _names_visit(row: OutboxMessage, visit: Visit) -> bool:
    """Whether a queued message is about `visit`: its key ends in the visit's id (as the visit
    rules name their occurrence) and its context holds that visit, not a year or a car."""
    return (row.context or {}).get("visit", {}).get("id") == visit.id


async def _forget(session: AsyncSession, visit: Visit) -> None:
    """Drop what the visit left behind: queued messages about it, its odometer reading (unless
    another visit of that car that day read the same), then the visit itself."""
    queued = await session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.member_id == visit.member_id,
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.idempotency_key.like(f"%:member:{visit.member_id}:{visit.id}"),
        )
    )
    about = [row.id for row in queued.all() if _names_visit(row, visit)]
    if about:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(about))
            .values(status=OutboxStatus.SKIPPED, last_error="visit_voided")
            .execution_options(synchronize_session=False)
        )
    if visit.vehicle_id is not None and visit.mileage_km is not None:
        twin = await session.scalar(
            select(Visit.id).where(
                Visit.vehicle_id == visit.vehicle_id,
                Visit.visited_on == visit.visited_on,
                Visit.mileage_km == visit.mileage_km,
                Visit.id != visit.id,
            )
        )
        if twin is None:
            await session.execute(
                delete(MileageReading).where(
                    MileageReading.vehicle_id == visit.vehicle_id,
                    MileageReading.read_on == visit.visited_on,
                    MileageReading.km == visit.mileage_km,
                )
            )
    await session.execute(delete(Visit).where(Visit.id == visit.id))
    session.expunge(visit)
