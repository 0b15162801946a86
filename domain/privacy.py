"""A member's rights over their data: consent to marketing, a copy of everything held, erasure.

Erasure removes what identifies the person (name, phone, birthday, plates, VINs, tags) but keeps
the visits and ledgers with their amounts, because the shop's accounts must still add up; the
member row stays as an anonymous shell so the shop's own reference is never re-imported as a
new person.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from db.models import (
    Booking,
    ChatBinding,
    Complaint,
    ConversationState,
    Coupon,
    InviteCode,
    Member,
    MemberTag,
    MileageReading,
    OutboxMessage,
    PointsEntry,
    PunchCard,
    PunchEntry,
    StoredValueEntry,
    SurveyResponse,
    TierChange,
    Vehicle,
    Visit,
)
from db.types import utcnow
from domain import audit, members
from domain.errors import InvalidInput

CONSENT_SOURCES = ("counter", "chat", "import", "form", "wechat", "telegram")


async def set_consent(
    session: AsyncSession, member_id: int, consent: bool, *, source: str, actor: str
) -> Member:
    """Record a yes or no to marketing with when and where it was said; service reminders are
    not marketing and are unaffected."""
    if source not in CONSENT_SOURCES:
        raise InvalidInput("unknown consent source", source=source)
    member = await members.get(session, member_id)
    member.marketing_consent = consent
    member.consent_at = utcnow()
    member.consent_source = source
    member.updated_at = utcnow()
    session.add(member)
    await audit.record(
        session,
        actor=actor,
        action="member.consent",
        entity="member",
        entity_id=member_id,
        detail={"consent": consent, "source": source},
    )
    await session.flush()
    return member


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _rows(rows: list[SQLModel], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.model_dump().items() if k not in skip} for row in rows]


async def _all(session: AsyncSession, statement: Any) -> list[SQLModel]:
    return list((await session.scalars(statement)).all())


async def export(session: AsyncSession, member_id: int, *, actor: str) -> dict[str, Any]:
    """Everything held about one member, as plain JSON-ready data (a subject access request).

    The export itself is audited: who took a copy of whose data, and when.
    """
    member = await members.get(session, member_id)
    vehicle_ids = select(Vehicle.id).where(Vehicle.member_id == member_id)
    card_ids = select(PunchCard.id).where(PunchCard.member_id == member_id)
    data = {
        "member": _rows([member])[0],
        "tags": list(await members.tags_of(session, member_id)),
        "vehicles": _rows(
            await _all(session, select(Vehicle).where(Vehicle.member_id == member_id))
        ),
        "mileage_readings": _rows(
            await _all(
                session, select(MileageReading).where(MileageReading.vehicle_id.in_(vehicle_ids))
            )
        ),
        "visits": _rows(
            await _all(
                session, select(Visit).where(Visit.member_id == member_id).order_by(Visit.id)
            )
        ),
        "points": _rows(
            await _all(
                session,
                select(PointsEntry)
                .where(PointsEntry.member_id == member_id)
                .order_by(PointsEntry.id),
            )
        ),
        "stored_value": _rows(
            await _all(
                session,
                select(StoredValueEntry)
                .where(StoredValueEntry.member_id == member_id)
                .order_by(StoredValueEntry.id),
            )
        ),
        "punch_cards": _rows(
            await _all(session, select(PunchCard).where(PunchCard.member_id == member_id))
        ),
        "punch_entries": _rows(
            await _all(session, select(PunchEntry).where(PunchEntry.card_id.in_(card_ids)))
        ),
        "coupons": _rows(await _all(session, select(Coupon).where(Coupon.member_id == member_id))),
        "tier_changes": _rows(
            await _all(session, select(TierChange).where(TierChange.member_id == member_id))
        ),
        "bookings": _rows(
            await _all(session, select(Booking).where(Booking.member_id == member_id))
        ),
        "chats": _rows(
            await _all(session, select(ChatBinding).where(ChatBinding.member_id == member_id))
        ),
        "messages": _rows(
            await _all(session, select(OutboxMessage).where(OutboxMessage.member_id == member_id))
        ),
        "survey_responses": _rows(
            await _all(session, select(SurveyResponse).where(SurveyResponse.member_id == member_id))
        ),
        "complaints": _rows(
            await _all(session, select(Complaint).where(Complaint.member_id == member_id))
        ),
    }
    await audit.record(
        session, actor=actor, action="member.export", entity="member", entity_id=member_id
    )
    return data


async def _forget_chats(session: AsyncSession, member_id: int) -> None:
    """Chat addresses identify the person: drop the bindings, their half-finished flows and any
    unused invite codes."""
    chats = (
        await session.execute(
            select(ChatBinding.channel, ChatBinding.address).where(
                ChatBinding.member_id == member_id
            )
        )
    ).all()
    for channel, address in chats:
        await session.execute(
            delete(ConversationState).where(
                ConversationState.channel == channel, ConversationState.address == address
            )
        )
    await session.execute(delete(ChatBinding).where(ChatBinding.member_id == member_id))
    await session.execute(delete(InviteCode).where(InviteCode.member_id == member_id))


async def erase(session: AsyncSession, member_id: int, *, actor: str, reason: str) -> None:
    """Remove what identifies the member; keep amounts so the books still balance."""
    if not reason.strip():
        raise InvalidInput("an erasure needs a reason (for example: the member asked)")
    member = await members.get(session, member_id)
    now = utcnow()
    member.name = ""
    member.phone = None
    member.birthday = None
    member.marketing_consent = False
    member.consent_at = now
    member.consent_source = "erasure"
    member.erased_at = now
    member.updated_at = now
    session.add(member)
    await session.execute(delete(MemberTag).where(MemberTag.member_id == member_id))
    await _forget_chats(session, member_id)
    # Messages hold names and rendered texts; an erased member is never written to again.
    await session.execute(delete(OutboxMessage).where(OutboxMessage.member_id == member_id))
    await session.execute(update(Booking).where(Booking.member_id == member_id).values(note=None))
    # Scores stay for the NPS history; the member's own words (comments, complaints) go.
    await session.execute(
        update(SurveyResponse).where(SurveyResponse.member_id == member_id).values(comment=None)
    )
    await session.execute(delete(Complaint).where(Complaint.member_id == member_id))
    cars = (await session.scalars(select(Vehicle.id).where(Vehicle.member_id == member_id))).all()
    for car_id in cars:
        # Plates are unique and required; a placeholder no real plate can match keeps both.
        await session.execute(
            update(Vehicle)
            .where(Vehicle.id == car_id)
            .values(plate=f"ERASED-{car_id}", vin=None, make=None, model=None)
        )
    await audit.record(
        session,
        actor=actor,
        action="member.erase",
        entity="member",
        entity_id=member_id,
        detail={"reason": reason.strip(), "vehicles": len(cars)},
    )
    await session.flush()
