"""Punch cards: issuing, punching, what is left, refusals, set-based expiry, and concurrent uses
that never punch below zero, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from db.models import AuditLog, PunchCard, PunchEntry
from db.session import Database
from domain import punchcards
from domain.errors import InvalidInput, NotFound, PunchCardUnavailable
from tests.support.builders import new_member

DAY = date(2026, 3, 1)
LATER = DAY + timedelta(days=365)


async def sell(
    db: Database,
    member_id: int,
    uses: int = 10,
    expires_on: date | None = LATER,
    key: str | None = None,
    service: str = "wash",
) -> int:
    async with db.transaction() as session:
        card = await punchcards.issue(session, member_id, service, uses, expires_on, None, key)
        assert card.id is not None
        return card.id


async def punch(
    db: Database, card_id: int, member_id: int, today: date = DAY, key: str | None = None
) -> PunchEntry:
    async with db.transaction() as session:
        return await punchcards.use(
            session,
            card_id,
            member_id=member_id,
            store_id=None,
            today=today,
            key=key,
            actor="staff:1",
        )


async def left(db: Database, card_id: int) -> int:
    async with db.read() as session:
        return await punchcards.remaining(session, card_id)


async def refusal(db: Database, card_id: int, member_id: int, today: date = DAY) -> str:
    with pytest.raises(PunchCardUnavailable) as refused:
        await punch(db, card_id, member_id, today)
    return str(refused.value.params["reason"])


async def test_issue_opens_the_card_with_all_its_uses(db: Database) -> None:
    member_id = await new_member(db)
    card_id = await sell(db, member_id, uses=10)
    assert await left(db, card_id) == 10
    async with db.read() as session:
        entries = (await session.scalars(select(PunchEntry))).all()
        card = await session.get(PunchCard, card_id)
    assert [(e.card_id, e.kind, e.uses) for e in entries] == [(card_id, "issue", 10)]
    assert card is not None and (card.service_code, card.total_uses) == ("wash", 10)


async def test_issue_is_idempotent_on_key(db: Database) -> None:
    member_id = await new_member(db)
    first = await sell(db, member_id, key="pos:card:1")
    again = await sell(db, member_id, key="pos:card:1")
    assert again == first
    assert await left(db, first) == 10
    async with db.read() as session:
        assert len((await session.scalars(select(PunchCard))).all()) == 1
        assert (await session.scalars(select(AuditLog.action))).all() == ["punchcard.issue"]


async def test_issue_refuses_bad_input(db: Database) -> None:
    member_id = await new_member(db)
    with pytest.raises(InvalidInput):
        await sell(db, member_id, uses=0)
    with pytest.raises(NotFound):
        await sell(db, member_id, service="no_such_service")
    with pytest.raises(NotFound):
        await sell(db, 999)
    async with db.read() as session:
        assert (await session.scalars(select(PunchCard))).all() == []


async def test_each_use_takes_one_and_a_retry_takes_nothing(db: Database) -> None:
    member_id = await new_member(db)
    card_id = await sell(db, member_id, uses=3)
    first = await punch(db, card_id, member_id, key="visit:1:punch")
    again = await punch(db, card_id, member_id, key="visit:1:punch")
    assert again.id == first.id and first.uses == -1
    assert await left(db, card_id) == 2
    await punch(db, card_id, member_id)
    await punch(db, card_id, member_id)
    assert await left(db, card_id) == 0
    assert await refusal(db, card_id, member_id) == "used_up"
    assert await left(db, card_id) == 0


async def test_refuses_cards_not_found_not_yours_and_expired(db: Database) -> None:
    member_id = await new_member(db)
    other_id = await new_member(db, "M2")
    card_id = await sell(db, member_id, uses=5, expires_on=DAY)
    assert await refusal(db, card_id + 100, member_id) == "not_found"
    assert await refusal(db, card_id, other_id) == "not_yours"
    assert await refusal(db, card_id, member_id, DAY + timedelta(days=1)) == "expired"
    await punch(db, card_id, member_id, DAY)  # the expiry day itself is still good
    assert await left(db, card_id) == 4
    async with db.read() as session:
        actions = (await session.scalars(select(AuditLog.action).order_by(AuditLog.id))).all()
    assert actions == ["punchcard.issue", "punchcard.use"]


async def test_a_retry_after_expiry_returns_the_first_punch(db: Database) -> None:
    member_id = await new_member(db)
    card_id = await sell(db, member_id, uses=2, expires_on=DAY)
    first = await punch(db, card_id, member_id, DAY, key="visit:7:punch")
    again = await punch(db, card_id, member_id, DAY + timedelta(days=1), key="visit:7:punch")
    assert again.id == first.id
    assert await left(db, card_id) == 1


async def test_cards_of_shows_what_is_left_and_when_it_lapses(db: Database) -> None:
    member_id = await new_member(db)
    other_id = await new_member(db, "M2")
    no_expiry = await sell(db, member_id, uses=2, expires_on=None, service="detailing")
    later = await sell(db, member_id, uses=10, expires_on=LATER)
    sooner = await sell(db, member_id, uses=5, expires_on=DAY + timedelta(days=10))
    lapsed = await sell(db, member_id, uses=5, expires_on=DAY - timedelta(days=1))
    used_up = await sell(db, member_id, uses=1)
    await sell(db, other_id)
    await punch(db, later, member_id)
    await punch(db, used_up, member_id)
    async with db.read() as session:
        usable = await punchcards.cards_of(session, member_id, DAY)
        every = await punchcards.cards_of(session, member_id, DAY, include_finished=True)
    assert [(s.card.id, s.remaining, s.expires_on) for s in usable] == [
        (sooner, 5, DAY + timedelta(days=10)),
        (later, 9, LATER),
        (no_expiry, 2, None),
    ]
    assert {s.card.id: s.remaining for s in every} == {
        lapsed: 5,
        sooner: 5,
        later: 9,
        used_up: 0,
        no_expiry: 2,
    }


async def test_expire_writes_off_what_is_left_once(db: Database) -> None:
    member_id = await new_member(db)
    partly_used = await sell(db, member_id, uses=10, expires_on=DAY)
    untouched = await sell(db, member_id, uses=3, expires_on=DAY - timedelta(days=30))
    used_up = await sell(db, member_id, uses=1, expires_on=DAY)
    running = await sell(db, member_id, uses=4, expires_on=DAY + timedelta(days=1))
    forever = await sell(db, member_id, uses=4, expires_on=None)
    for _ in range(4):
        await punch(db, partly_used, member_id)
    await punch(db, used_up, member_id)
    async with db.transaction() as session:
        assert await punchcards.expire(session, DAY) == 1  # only the card that lapsed last month
    async with db.transaction() as session:
        assert await punchcards.expire(session, DAY + timedelta(days=1)) == 1
        assert await punchcards.expire(session, DAY + timedelta(days=1)) == 0  # rerun: nothing
    remaining = {card: await left(db, card) for card in (partly_used, untouched, used_up)}
    assert remaining == {partly_used: 0, untouched: 0, used_up: 0}
    assert await left(db, running) == 4 and await left(db, forever) == 4
    async with db.read() as session:
        written = (
            await session.scalars(
                select(PunchEntry).where(PunchEntry.kind == "expire").order_by(PunchEntry.card_id)
            )
        ).all()
    assert [(e.card_id, e.uses) for e in written] == [(partly_used, -6), (untouched, -3)]


async def test_concurrent_uses_never_go_below_zero(db: Database) -> None:
    member_id = await new_member(db)
    card_id = await sell(db, member_id, uses=5)

    async def attempt(n: int) -> bool:
        try:
            await punch(db, card_id, member_id, key=f"visit:{n}:punch")
            return True
        except PunchCardUnavailable as exc:
            assert exc.params["reason"] == "used_up"
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sum(results) == 5
    assert await left(db, card_id) == 0
    async with db.read() as session:
        uses = (await session.scalars(select(PunchEntry).where(PunchEntry.kind == "use"))).all()
    assert len(uses) == 5
