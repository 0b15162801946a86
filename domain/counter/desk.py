"""The front desk: today's bookings at the store, who came and who did not, and what members
are unhappy about (open complaints, survey answers of 6 or less) to answer and close.

Each use case authorises the account first: bookings belong to their store, complaints to the
member's home store, a low score to its visit's store. An answer is returned for the caller to
deliver through the outbox (`scheduler.notices`), since the domain sends nothing itself.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Booking, Complaint, Member, Staff, SurveyResponse
from domain import audit, bookings, feedback, staff
from domain.counter.acting import at_store, on_entity
from domain.errors import NotFound

TODAY, ARRIVE, NO_SHOW = "booking.today", "booking.arrive", "booking.no_show"
COMPLAINTS, ANSWER, CLOSE = "complaint.list", "complaint.answer", "complaint.close"
LOW_SCORES, SURVEY_ANSWER, SURVEY_CLOSE = "survey.list", "survey.answer", "survey.close"


async def todays_bookings(
    session: AsyncSession, who: int | str, *, day: date, store_id: int | None = None
) -> list[bookings.BookingLine]:
    """The store's bookings of `day` (default store: the account's own), cancelled left out.
    Phones and plates in the lines are in clear: mask them where they are shown."""
    _, store = await at_store(session, who, TODAY, store_id)
    if store is None:
        raise NotFound("name the store whose bookings to show", store_id=None)
    return await bookings.day_sheet(session, store, day)


async def mark_arrived(
    session: AsyncSession, who: int | str, *, booking_id: int, now: datetime
) -> Booking:
    """The member came for their booking."""
    return await _attendance(session, who, booking_id, now, arrived=True)


async def mark_no_show(
    session: AsyncSession, who: int | str, *, booking_id: int, now: datetime
) -> Booking:
    """The member did not come: recorded, counted on their page, and the bays are free."""
    return await _attendance(session, who, booking_id, now, arrived=False)


async def _attendance(
    session: AsyncSession, who: int | str, booking_id: int, now: datetime, *, arrived: bool
) -> Booking:
    booking = await session.get(Booking, booking_id)
    if booking is None:
        raise NotFound("no such booking", booking_id=booking_id)
    person = await on_entity(session, who, ARRIVE if arrived else NO_SHOW, booking.store_id)
    return await bookings.mark_attendance(
        session, booking_id, arrived=arrived, now=now, actor=staff.actor_name(person)
    )


async def open_complaints(
    session: AsyncSession, who: int | str, *, limit: int = 50
) -> list[feedback.OpenComplaint]:
    """Open complaints of the account's store's members (a chain-wide account: all)."""
    person = await staff.acting(session, who, action=COMPLAINTS, store_id=None, own_store=True)
    return await feedback.open_complaints(session, store_id=person.store_id, limit=limit)


async def answer_complaint(
    session: AsyncSession, who: int | str, *, complaint_id: int, text: str, now: datetime
) -> feedback.ComplaintAnswer:
    """Answer a complaint once; the answer comes back to be queued for the member."""
    person = await _complaint_staff(session, who, complaint_id, ANSWER)
    assert person.id is not None
    return await feedback.answer_complaint(
        session, complaint_id, staff_id=person.id, answer=text, now=now
    )


async def close_complaint(
    session: AsyncSession, who: int | str, *, complaint_id: int, note: str, now: datetime
) -> Complaint:
    """Close a complaint with a note for the shop's records."""
    person = await _complaint_staff(session, who, complaint_id, CLOSE)
    assert person.id is not None
    return await feedback.close_complaint(
        session, complaint_id, staff_id=person.id, note=note, now=now
    )


async def _complaint_staff(
    session: AsyncSession, who: int | str, complaint_id: int, action: str
) -> Staff:
    """The account, allowed for the complaint's member's home store (a chain-wide account
    must be a manager, as `feedback` asks)."""
    complaint = await session.get(Complaint, complaint_id)
    member = await session.get(Member, complaint.member_id) if complaint else None
    if complaint is None or member is None:
        raise NotFound("no such complaint", query_kind="complaint", complaint_id=complaint_id)
    person = await staff.acting(session, who, action=action, store_id=member.home_store_id)
    if person.store_id is None and person.role != staff.MANAGER:
        raise staff.NotAllowed(
            "only a manager may do this",
            reason="not_manager",
            action=action,
            store_id=member.home_store_id,
            actor=staff.actor_name(person),
        )
    return person


async def low_scores(
    session: AsyncSession, who: int | str, *, limit: int = 50
) -> list[feedback.LowScore]:
    """Survey answers of 6 or less still open, of visits at the account's store (chain: all)."""
    person = await staff.acting(session, who, action=LOW_SCORES, store_id=None, own_store=True)
    return await feedback.low_scores(session, store_id=person.store_id, limit=limit)


async def answer_low_score(
    session: AsyncSession, who: int | str, *, response_id: int, text: str, now: datetime
) -> feedback.ComplaintAnswer:
    """Answer a low survey score once; the answer comes back to be queued for the member."""
    low = await feedback.low_score(session, response_id)
    person = await on_entity(session, who, SURVEY_ANSWER, low.store_id)
    answered = await feedback.answer_low_score(
        session, low, actor=staff.actor_name(person), answer=text, now=now
    )
    await _audit_low(session, person, SURVEY_ANSWER, low)
    return answered


async def close_low_score(
    session: AsyncSession, who: int | str, *, response_id: int, note: str, now: datetime
) -> SurveyResponse:
    """Close a low survey score with a note for the shop's records."""
    low = await feedback.low_score(session, response_id)
    person = await on_entity(session, who, SURVEY_CLOSE, low.store_id)
    closed = await feedback.close_low_score(
        session, low, actor=staff.actor_name(person), note=note, now=now
    )
    await _audit_low(session, person, SURVEY_CLOSE, low)
    return closed


async def _audit_low(
    session: AsyncSession, person: Staff, action: str, low: feedback.LowScore
) -> None:
    """Ids only: the score's comment, the answer and the note may hold personal details."""
    await audit.record(
        session,
        actor=staff.actor_name(person),
        action="counter." + action,
        entity="survey_response",
        entity_id=low.response.id,
        detail={"member_id": low.response.member_id, "store_id": low.store_id},
    )
