"""What members tell the chain: a 0-10 answer after a visit (NPS) with an optional comment, and
complaints that staff answer.

A survey answer belongs to one of the member's own visits and is given once: a second tap on an
old survey message changes nothing, so a member cannot swing the score by tapping twice. The
score is also written to `Visit.satisfaction`, which the segments and churn rules read.

Complaints stay open until a staff member of the member's home store (or a chain-wide manager)
answers; the answer is returned so the caller can deliver it to the member. What staff do is
audited with ids only: complaint texts and answers may hold personal details and stay out of
the audit log.

The survey's answer buttons are written and read here, in one format, because two sides meet on
it: the scheduler puts them under the survey it sends after a visit, and the chat's feedback
flow reads the pressed one back with no saved state (`score_buttons`, `read_score_button`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Complaint, ComplaintStatus, Member, Staff, Store, SurveyResponse, Visit
from db.session import lock_member
from domain import audit, members, staff, staffchats
from domain.binding import CHANNELS as CHAT_CHANNELS
from domain.binding import TELEGRAM
from domain.errors import InvalidInput, NotFound
from domain.queries import tally

SCORE_MIN, SCORE_MAX = 0, 10
PROMOTER_MIN = 9  # 9 and 10 recommend us
DETRACTOR_MAX = 6  # 0 to 6 warn others off; 7 and 8 are passive
TEXT_MAX = 1000
# Where feedback arrives: the chat channels, and the counter when staff type it in for a member.
CHANNELS = (*CHAT_CHANNELS, "counter")
OPEN, ANSWERED, CLOSED = ComplaintStatus.OPEN, ComplaintStatus.ANSWERED, ComplaintStatus.CLOSED
OPEN_LIST_MAX = 500


@dataclass(frozen=True)
class VisitToRate:
    """The visit a survey asks about and the member's answer, when they already gave one."""

    visit_id: int
    visited_on: date
    store_name: str | None
    response: SurveyResponse | None


@dataclass(frozen=True)
class Rating:
    """A member's answer about a visit; `again` when the visit was rated before this tap (the
    first answer stands)."""

    response: SurveyResponse
    again: bool


@dataclass(frozen=True)
class Filed:
    """A complaint just filed and the staff to alert about it (Telegram user ids)."""

    complaint: Complaint
    recipients: list[str]


@dataclass(frozen=True)
class OpenComplaint:
    """A complaint waiting for an answer, with what staff need to place the member. `phone` is
    in clear: views mask it."""

    complaint: Complaint
    member_ref: str
    phone: str | None
    home_store_id: int | None
    home_store_code: str | None


@dataclass(frozen=True)
class ComplaintAnswer:
    """What the member should be told, and to whom: the delivery is the caller's job."""

    complaint_id: int
    member_id: int
    locale: str
    filed_at: datetime
    answer: str
    answered_at: datetime


@dataclass(frozen=True)
class NpsReport:
    """Net Promoter Score over a period: % promoters minus % detractors, None without answers."""

    promoters: int
    passives: int
    detractors: int

    @property
    def total(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> int | None:
        if self.total == 0:
            return None
        return _percent(self.promoters - self.detractors, self.total)


def _percent(part: int, whole: int) -> int:
    """100 * part / whole rounded half away from zero, in integers (no float drift)."""
    magnitude = (200 * abs(part) + whole) // (2 * whole)
    return magnitude if part >= 0 else -magnitude


def _text(value: str | None, what: str) -> str:
    """Stripped member or staff text of 1..TEXT_MAX characters."""
    text = (value or "").strip()
    if not text:
        raise InvalidInput(f"the {what} is empty", reason="empty")
    if len(text) > TEXT_MAX:
        raise InvalidInput(
            f"the {what} is longer than {TEXT_MAX} characters", reason="too_long", limit=TEXT_MAX
        )
    return text


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise InvalidInput("unknown feedback channel", channel=channel)


def _check_score(score: object) -> int:
    # bool is an int in Python; True is not a score.
    if isinstance(score, bool) or not isinstance(score, int) or not SCORE_MIN <= score <= SCORE_MAX:
        raise InvalidInput("a score is a whole number from 0 to 10", score=str(score))
    return score


# --------------------------------------------------------------------- survey answer buttons

# `feedback:score:<visit id>:<score>`: the chat's feedback flow, its `score` action, then the
# answer. Both numbers are read back as plain digits, nine at most.
SCORE_BUTTON_DATA = "feedback:score:{visit_id}:{score}"
SCORE_ROWS = ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10))
_BUTTON_NUMBER = re.compile(r"[0-9]{1,9}")


def score_buttons(visit_id: int) -> list[list[tuple[str, str]]]:
    """The eleven answers about a visit, 0 to 10, as (label, data) in two rows that fit a phone
    screen. Digits read the same in every language, so they need no label template."""
    return [
        [(str(n), SCORE_BUTTON_DATA.format(visit_id=visit_id, score=n)) for n in row]
        for row in SCORE_ROWS
    ]


def read_score_button(args: Sequence[str]) -> tuple[int, int] | None:
    """(visit id, score) from a pressed answer button's arguments (what follows
    `feedback:score:`), or None for anything a real button never carries: its data comes back
    from the chat, where an old message or a forged one may send anything."""
    if len(args) != 2 or not all(_BUTTON_NUMBER.fullmatch(arg) for arg in args):
        return None
    visit_id, score = int(args[0]), int(args[1])
    if visit_id < 1 or not SCORE_MIN <= score <= SCORE_MAX:
        return None
    return visit_id, score


async def _visit(session: AsyncSession, member_id: int, visit_id: int | None) -> Visit:
    """The member's own visit, or their most recent one; NotFound otherwise, the same answer
    for a visit that does not exist and one that is someone else's."""
    if visit_id is None:
        visit = await session.scalar(
            select(Visit)
            .where(Visit.member_id == member_id)
            .order_by(Visit.visited_on.desc(), Visit.id.desc())
            .limit(1)
        )
    else:
        visit = await session.get(Visit, visit_id)
    if visit is None or visit.member_id != member_id:
        raise NotFound("no such visit", query_kind="visit")
    return visit


async def find_response(
    session: AsyncSession, member_id: int, visit_id: int
) -> SurveyResponse | None:
    """The member's answer about one visit, if given."""
    return await session.scalar(
        select(SurveyResponse).where(
            SurveyResponse.member_id == member_id, SurveyResponse.visit_id == visit_id
        )
    )


async def visit_to_rate(
    session: AsyncSession, member_id: int, visit_id: int | None = None
) -> VisitToRate | None:
    """The visit a survey asks about: the given one (NotFound unless it is the member's) or the
    most recent one (None when the member has no visit yet)."""
    await members.get(session, member_id)
    try:
        visit = await _visit(session, member_id, visit_id)
    except NotFound:
        if visit_id is None:
            return None
        raise
    assert visit.id is not None
    store = await session.get(Store, visit.store_id) if visit.store_id is not None else None
    return VisitToRate(
        visit_id=visit.id,
        visited_on=visit.visited_on,
        store_name=store.name if store else None,
        response=await find_response(session, member_id, visit.id),
    )


async def answer_survey(
    session: AsyncSession,
    member_id: int,
    *,
    visit_id: int | None,
    score: int,
    comment: str | None,
    channel: str,
    now: datetime,
) -> SurveyResponse:
    """Record the member's 0-10 answer about one of their visits (the latest when `visit_id` is
    None), once. Answering again returns the first answer unchanged, except that a comment is
    added when the first answer had none."""
    score = _check_score(score)
    _check_channel(channel)
    note = _text(comment, "comment") if comment is not None and comment.strip() else None
    await members.get(session, member_id)
    # Two taps at once must not both find no answer and both insert.
    await lock_member(session, member_id)
    visit = await _visit(session, member_id, visit_id)
    assert visit.id is not None
    existing = await find_response(session, member_id, visit.id)
    if existing is not None:
        if note is not None and existing.comment is None:
            existing.comment = note
            session.add(existing)
            await session.flush()
        return existing
    response = SurveyResponse(
        member_id=member_id,
        visit_id=visit.id,
        score=score,
        comment=note,
        channel=channel,
        created_at=now,
    )
    session.add(response)
    visit.satisfaction = score
    session.add(visit)
    await session.flush()
    return response


async def rate_visit(
    session: AsyncSession, member_id: int, visit_id: int, score: int, channel: str, now: datetime
) -> Rating:
    """A tapped score about one of the member's visits, without a comment (`answer_survey`),
    and whether the visit had been rated before it."""
    before = await find_response(session, member_id, visit_id)
    response = await answer_survey(
        session,
        member_id,
        visit_id=visit_id,
        score=score,
        comment=None,
        channel=channel,
        now=now,
    )
    return Rating(response, again=before is not None)


async def add_comment(
    session: AsyncSession, member_id: int, response_id: int, comment: str
) -> SurveyResponse:
    """Add the member's words to their answer. A comment is never replaced: what a member said
    stays what they said."""
    note = _text(comment, "comment")
    await lock_member(session, member_id)
    response = await session.get(SurveyResponse, response_id)
    if response is None or response.member_id != member_id:
        raise NotFound("no such survey answer", query_kind="survey_response")
    if response.comment is not None:
        raise InvalidInput("this answer already has a comment", reason="already_commented")
    response.comment = note
    session.add(response)
    await session.flush()
    return response


async def file_complaint(
    session: AsyncSession, member_id: int, body: str, channel: str, now: datetime
) -> Complaint:
    """Open a complaint for staff to answer."""
    text = _text(body, "complaint")
    _check_channel(channel)
    await members.get(session, member_id)
    complaint = Complaint(
        member_id=member_id, channel=channel, body=text, status=OPEN, created_at=now
    )
    session.add(complaint)
    await session.flush()
    return complaint


async def store_id_for_code(session: AsyncSession, code: str) -> int:
    """The id of a store named by its code, as staff type it."""
    store_id = await session.scalar(select(Store.id).where(Store.code == code.strip()))
    if store_id is None:
        raise NotFound("no such store", store=code)
    return int(store_id)


async def open_complaints(
    session: AsyncSession, store_id: int | None = None, limit: int = 50
) -> list[OpenComplaint]:
    """Open complaints, oldest first (the longest wait is answered first), optionally only
    those of members whose home store is `store_id`."""
    if not 1 <= limit <= OPEN_LIST_MAX:
        raise InvalidInput(f"limit is 1 to {OPEN_LIST_MAX}", limit=limit)
    query = (
        select(Complaint, Member.member_ref, Member.phone, Member.home_store_id, Store.code)
        .join(Member, Member.id == Complaint.member_id)
        .outerjoin(Store, Store.id == Member.home_store_id)
        .where(Complaint.status == OPEN, Member.erased_at.is_(None))
        .order_by(Complaint.created_at, Complaint.id)
        .limit(limit)
    )
    if store_id is not None:
        query = query.where(Member.home_store_id == store_id)
    rows = await session.execute(query)
    return [
        OpenComplaint(
            complaint=complaint,
            member_ref=ref,
            phone=phone,
            home_store_id=home,
            home_store_code=code,
        )
        for complaint, ref, phone, home, code in rows.all()
    ]


def _may_answer(person: Staff, home_store_id: int | None) -> None:
    """Staff of the member's home store, or a chain-wide manager: a chain-wide account that is
    not a manager is not enough."""
    staff.require(person, store_id=home_store_id, manager=person.store_id is None)


async def _complaint_for(
    session: AsyncSession, complaint_id: int, staff_id: int
) -> tuple[Complaint, Member]:
    """The complaint, row-locked, and its member, once the account may handle it."""
    person = await session.get(Staff, staff_id)
    if person is None:
        raise NotFound("no such staff account", staff_id=staff_id)
    # The row lock (PostgreSQL) or the write lock (SQLite) makes a second answer wait and then
    # see the first.
    complaint = await session.scalar(
        select(Complaint).where(Complaint.id == complaint_id).with_for_update()
    )
    member = await session.get(Member, complaint.member_id) if complaint else None
    if complaint is None or member is None or member.erased_at is not None:
        raise NotFound("no such complaint", query_kind="complaint", complaint_id=complaint_id)
    _may_answer(person, member.home_store_id)
    return complaint, member


async def answer_complaint(
    session: AsyncSession, complaint_id: int, *, staff_id: int, answer: str, now: datetime
) -> ComplaintAnswer:
    """Answer an open complaint once; the answer comes back for delivery to the member."""
    text = _text(answer, "answer")
    complaint, member = await _complaint_for(session, complaint_id, staff_id)
    if complaint.status != OPEN:
        raise InvalidInput("this complaint has already been answered", reason="answered")
    complaint.status = ANSWERED
    complaint.answer = text
    complaint.answered_at = now
    complaint.answered_by = f"staff:{staff_id}"
    session.add(complaint)
    await audit.record(
        session,
        actor=f"staff:{staff_id}",
        action="complaint.answer",
        entity="complaint",
        entity_id=complaint_id,
        detail={"member_id": member.id, "store_id": member.home_store_id},
    )
    await session.flush()
    assert member.id is not None
    return ComplaintAnswer(
        complaint_id=complaint_id,
        member_id=member.id,
        locale=member.locale,
        filed_at=complaint.created_at,
        answer=text,
        answered_at=now,
    )


async def nps(
    session: AsyncSession, start: datetime, end: datetime, store_id: int | None = None
) -> NpsReport:
    """Promoters, passives and detractors among answers given in [start, end), optionally for
    visits at one store, for the managers' report."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("the period needs aware UTC times")
    if end < start:
        raise InvalidInput("the period ends before it starts")
    score = SurveyResponse.score
    query = select(
        tally(score >= PROMOTER_MIN),
        tally(and_(score > DETRACTOR_MAX, score < PROMOTER_MIN)),
        tally(score <= DETRACTOR_MAX),
    )
    query = query.select_from(SurveyResponse).where(
        SurveyResponse.created_at >= start, SurveyResponse.created_at < end
    )
    if store_id is not None:
        query = query.join(Visit, Visit.id == SurveyResponse.visit_id).where(
            Visit.store_id == store_id
        )
    promoters, passives, detractors = (await session.execute(query)).one()
    return NpsReport(promoters=int(promoters), passives=int(passives), detractors=int(detractors))


async def complaint_recipients(session: AsyncSession, member_id: int) -> list[str]:
    """The Telegram chats to alert when the member complains: those of the active staff of
    their home store and of the chain-wide managers, the same people who may answer it (their
    bound staff chats, and the Telegram user id an account was given by hand)."""
    member = await members.get(session, member_id)
    at_store = Staff.store_id == member.home_store_id if member.home_store_id else None
    chain_manager = and_(Staff.store_id.is_(None), Staff.role == staff.MANAGER)
    who = chain_manager if at_store is None else (at_store | chain_manager)
    rows = (
        await session.execute(
            select(Staff.id, Staff.telegram_user_id)
            .where(Staff.active.is_(True), who)
            .order_by(Staff.id)
        )
    ).all()
    given = [str(user_id) for _, user_id in rows if user_id is not None]
    bound = await staffchats.chats_of(session, [staff_id for staff_id, _ in rows], TELEGRAM)
    return list(dict.fromkeys([*bound, *given]))


async def complain(
    session: AsyncSession, member_id: int, body: str, channel: str, now: datetime
) -> Filed:
    """File the member's complaint (`file_complaint`) and name who should hear of it."""
    complaint = await file_complaint(session, member_id, body, channel, now)
    return Filed(complaint, await complaint_recipients(session, member_id))


# ---------------------------------------------------------------- following up at the counter


async def close_complaint(
    session: AsyncSession, complaint_id: int, *, staff_id: int, note: str, now: datetime
) -> Complaint:
    """Close a complaint with a note for the shop's records (not sent to the member), by the
    same people who may answer it; open or answered, closing twice is refused."""
    text = _text(note, "note")
    complaint, member = await _complaint_for(session, complaint_id, staff_id)
    if complaint.status == CLOSED:
        raise InvalidInput("this complaint is closed already", reason="closed")
    complaint.status, complaint.closed_at = CLOSED, now
    complaint.closed_by, complaint.close_note = f"staff:{staff_id}", text
    session.add(complaint)
    await audit.record(
        session,
        actor=f"staff:{staff_id}",
        action="complaint.close",
        entity="complaint",
        entity_id=complaint_id,
        detail={"member_id": member.id, "store_id": member.home_store_id},
    )
    await session.flush()
    return complaint


@dataclass(frozen=True)
class LowScore:
    """A survey answer of DETRACTOR_MAX or less still to follow up, with the visit's store."""

    response: SurveyResponse
    member_ref: str
    phone: str | None  # personal data: views mask it
    store_id: int | None


async def low_scores(
    session: AsyncSession, store_id: int | None = None, limit: int = 50
) -> list[LowScore]:
    """Survey answers of 6 or less not yet closed, oldest first, optionally of visits at one
    store."""
    if not 1 <= limit <= OPEN_LIST_MAX:
        raise InvalidInput(f"limit is 1 to {OPEN_LIST_MAX}", limit=limit)
    query = (
        select(SurveyResponse, Member.member_ref, Member.phone, Visit.store_id)
        .join(Member, Member.id == SurveyResponse.member_id)
        .outerjoin(Visit, Visit.id == SurveyResponse.visit_id)
        .where(
            SurveyResponse.score <= DETRACTOR_MAX,
            SurveyResponse.closed_at.is_(None),
            Member.erased_at.is_(None),
        )
        .order_by(SurveyResponse.created_at, SurveyResponse.id)
        .limit(limit)
    )
    if store_id is not None:
        query = query.where(Visit.store_id == store_id)
    rows = (await session.execute(query)).all()
    return [LowScore(r, ref, phone, store) for r, ref, phone, store in rows]


async def low_score(session: AsyncSession, response_id: int) -> LowScore:
    """One low answer, row-locked, with the store of its visit."""
    response = await session.scalar(
        select(SurveyResponse).where(SurveyResponse.id == response_id).with_for_update()
    )
    member = await session.get(Member, response.member_id) if response else None
    if response is None or member is None or member.erased_at is not None:
        raise NotFound("no such survey answer", response_id=response_id)
    if response.score > DETRACTOR_MAX:
        raise InvalidInput("only answers of 6 or less are followed up", score=response.score)
    visit = await session.get(Visit, response.visit_id) if response.visit_id else None
    return LowScore(response, member.member_ref, member.phone, visit.store_id if visit else None)


async def answer_low_score(
    session: AsyncSession, low: LowScore, *, actor: str, answer: str, now: datetime
) -> ComplaintAnswer:
    """Answer a low score once; the answer comes back for delivery like a complaint's (its
    `complaint_id` is the survey answer's id). The caller has authorised `actor`."""
    text = _text(answer, "answer")
    response = low.response
    if response.answered_at is not None or response.closed_at is not None:
        raise InvalidInput("this survey answer has been followed up already", reason="answered")
    response.answer, response.answered_at, response.answered_by = text, now, actor
    session.add(response)
    await session.flush()
    member = await members.get(session, response.member_id)
    assert response.id is not None
    return ComplaintAnswer(
        complaint_id=response.id,
        member_id=response.member_id,
        locale=member.locale,
        filed_at=response.created_at,
        answer=text,
        answered_at=now,
    )


async def close_low_score(
    session: AsyncSession, low: LowScore, *, actor: str, note: str, now: datetime
) -> SurveyResponse:
    """Close a low score with a note for the shop's records. The caller has authorised."""
    text = _text(note, "note")
    response = low.response
    if response.closed_at is not None:
        raise InvalidInput("this survey answer is closed already", reason="closed")
    response.closed_at, response.closed_by, response.close_note = now, actor, text
    session.add(response)
    await session.flush()
    return response
