"""The front desk as use cases: today's bookings, arrived and no-show (counted on the member's
page, the bays freed), complaints and low survey scores answered (queued for the member) and
closed, each refused to another store's staff and audited. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from db.models import Booking, OutboxMessage, Store
from db.session import Database
from domain import bookings, feedback, profiles
from domain.counter import desk
from domain.errors import BookingUnavailable, InvalidInput
from domain.shop import BookingRules, LoyaltyRules
from domain.staff import NotAllowed
from scheduler import notices
from tests.support.builders import add_visit
from tests.test_counter import Shop, audit_lines

BOOKED_AT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Shanghai
BEFORE = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
WED = date(2026, 12, 2)


@pytest.fixture
async def shop(db: Database) -> Shop:
    built = await Shop(db).build()
    async with db.transaction() as session:
        store = await session.get(Store, built.main)
        assert store is not None
        store.bays = 1
        session.add(store)
    return built


async def book(shop: Shop) -> int:
    async with shop.db.transaction() as session:
        booking = await bookings.reserve(
            session,
            shop.member,
            shop.main,
            "wash",
            BOOKED_AT,
            BEFORE,
            BookingRules(),
            source="staff",
        )
        assert booking.id is not None
        return booking.id


async def test_a_no_show_is_counted_and_frees_the_bay(shop: Shop) -> None:
    booking_id = await book(shop)
    lines = await shop.run(
        shop.clerk, desk.TODAY, lambda s: desk.todays_bookings(s, shop.clerk, day=WED)
    )
    assert [line.booking.id for line in lines] == [booking_id]
    with pytest.raises(NotAllowed):
        await shop.run(
            shop.east_clerk,
            desk.NO_SHOW,
            lambda s: desk.mark_no_show(s, shop.east_clerk, booking_id=booking_id, now=BOOKED_AT),
        )
    with pytest.raises(BookingUnavailable) as early:
        await shop.run(
            shop.clerk,
            desk.NO_SHOW,
            lambda s: desk.mark_no_show(s, shop.clerk, booking_id=booking_id, now=BEFORE),
        )
    assert early.value.reason == "not_started"
    for _ in range(2):  # twice is once
        await shop.run(
            shop.clerk,
            desk.NO_SHOW,
            lambda s: desk.mark_no_show(
                s, shop.clerk, booking_id=booking_id, now=BOOKED_AT + timedelta(minutes=15)
            ),
        )
    async with shop.db.read() as session:
        member = await session.get(profiles.Member, shop.member)
        assert member is not None
        page = await profiles.profile(session, member, WED, LoyaltyRules())
        free = await bookings.slots(session, shop.main, "wash", WED, BEFORE, BookingRules())
    assert page.no_shows == 1
    assert next(s for s in free if s.starts_at == BOOKED_AT).remaining == 1
    assert len(await audit_lines(shop.db, "booking.no_show")) == 2  # one done, one refused


async def test_arrived_marks_the_booking_completed(shop: Shop) -> None:
    booking_id = await book(shop)
    done = await shop.run(
        shop.clerk,
        desk.ARRIVE,
        lambda s: desk.mark_arrived(s, shop.clerk, booking_id=booking_id, now=BOOKED_AT),
    )
    assert done.status == bookings.COMPLETED


async def test_complaints_are_answered_for_the_member_and_closed_with_a_note(shop: Shop) -> None:
    async with shop.db.transaction() as session:
        filed = await feedback.file_complaint(
            session, shop.member, "洗得不干净", "telegram", BEFORE
        )
    assert filed.id is not None
    listed = await shop.run(
        shop.clerk, desk.COMPLAINTS, lambda s: desk.open_complaints(s, shop.clerk)
    )
    assert [c.complaint.id for c in listed] == [filed.id]
    with pytest.raises(NotAllowed):
        await shop.run(
            shop.east_clerk,
            desk.ANSWER,
            lambda s: desk.answer_complaint(
                s, shop.east_clerk, complaint_id=filed.id, text="x", now=BEFORE
            ),
        )

    async def answer(session):  # type: ignore[no-untyped-def]
        answered = await desk.answer_complaint(
            session, shop.clerk, complaint_id=filed.id, text="明天免费重洗", now=BEFORE
        )
        await notices.complaint_answered(session, answered)

    await shop.run(shop.clerk, desk.ANSWER, answer)
    closed = await shop.run(
        shop.clerk,
        desk.CLOSE,
        lambda s: desk.close_complaint(
            s, shop.clerk, complaint_id=filed.id, note="rewashed", now=BEFORE
        ),
    )
    assert closed.status == feedback.CLOSED and closed.close_note == "rewashed"
    async with shop.db.read() as session:
        queued = (await session.scalars(select(OutboxMessage.body))).all()
    assert any("明天免费重洗" in (body or "") for body in queued)
    assert len(await audit_lines(shop.db, "refused.complaint.answer")) == 1


async def test_low_scores_are_answered_once_and_closed(shop: Shop) -> None:
    visit = await add_visit(shop.db, shop.member, date(2026, 11, 30), 10_000, store_id=shop.main)
    async with shop.db.transaction() as session:
        low = await feedback.answer_survey(
            session,
            shop.member,
            visit_id=visit,
            score=4,
            comment=None,
            channel="telegram",
            now=BEFORE,
        )
    assert low.id is not None
    listed = await shop.run(shop.clerk, desk.LOW_SCORES, lambda s: desk.low_scores(s, shop.clerk))
    assert [row.response.id for row in listed] == [low.id]

    async def answer(session):  # type: ignore[no-untyped-def]
        answered = await desk.answer_low_score(
            session, shop.clerk, response_id=low.id, text="请再给我们一次机会", now=BEFORE
        )
        await notices.survey_answered(session, answered)

    await shop.run(shop.clerk, desk.SURVEY_ANSWER, answer)
    with pytest.raises(InvalidInput):
        await shop.run(shop.clerk, desk.SURVEY_ANSWER, answer)
    with pytest.raises(NotAllowed):
        await shop.run(
            shop.east_clerk,
            desk.SURVEY_CLOSE,
            lambda s: desk.close_low_score(
                s, shop.east_clerk, response_id=low.id, note="n", now=BEFORE
            ),
        )
    await shop.run(
        shop.clerk,
        desk.SURVEY_CLOSE,
        lambda s: desk.close_low_score(
            s, shop.clerk, response_id=low.id, note="called", now=BEFORE
        ),
    )
    assert (
        await shop.run(shop.clerk, desk.LOW_SCORES, lambda s: desk.low_scores(s, shop.clerk)) == []
    )
    async with shop.db.read() as session:
        keys = (await session.scalars(select(OutboxMessage.idempotency_key))).all()
        assert (await session.scalars(select(Booking))).all() == []
    assert f"survey_answer:member:{shop.member}:{low.id}" in keys
