"""Builders of what tests set up again and again: members (with a chat bound to them), their
cars and visits, stores, invite codes, a chat linked the way a member links it, and queued
outbox messages.

Each builder runs in a transaction of its own, through the domain functions where the domain
has one (`members.create`, `visits.record`, `binding.create_invite`), and returns ids. The
defaults are the plain case (王先生, 13812345678, zh_CN, no marketing consent, no home store);
keyword arguments name what a test cares about, so the test reads as its own story.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from bot.conversation import COMMAND, Chat, Event
from db.models import ChatBinding, OutboxMessage, Store, Vehicle
from db.session import Database
from domain import binding, members, visits
from domain.outgoing import Reply
from domain.shop import LoyaltyRules
from scheduler import outbox
from scheduler.outbox import Intent

TELEGRAM = "telegram"
PHONE = "13812345678"


async def new_member(
    db: Database,
    ref: str = "M1",
    phone: str | None = PHONE,
    *,
    name: str = "王先生",
    locale: str = "zh_CN",
    birthday: date | None = None,
    tags: list[str] | None = None,
    home_store_id: int | None = None,
    consent: str | None = None,
    chat: int | str | None = None,
    channel: str = TELEGRAM,
) -> int:
    """A member; `consent` is where marketing consent was given ("counter", …), None for none;
    with `chat`, that chat on `channel` is bound to them as a redeemed invite leaves it."""
    async with db.transaction() as session:
        member = await members.create(
            session,
            member_ref=ref,
            name=name,
            phone=phone,
            locale=locale,
            birthday=birthday,
            tags=tags,
            home_store_id=home_store_id,
            marketing_consent=consent is not None,
            consent_source=consent,
        )
        assert member.id is not None
        if chat is not None:
            session.add(_binding(member.id, chat, channel))
        return member.id


async def new_members(
    db: Database,
    count: int,
    *,
    ref: str = "M{n}",
    name: str = "车主{n}",
    phone: str | None = None,
    first_chat: int | None = None,
    channel: str = TELEGRAM,
) -> list[int]:
    """`count` members in one transaction, numbered n = 0, 1, … into `ref`, `name` and `phone`
    (e.g. `phone="1381234{n:04d}"`); with `first_chat`, member n's chat is `first_chat + n`."""
    async with db.transaction() as session:
        ids = []
        for n in range(count):
            member = await members.create(
                session,
                member_ref=ref.format(n=n),
                name=name.format(n=n),
                phone=None if phone is None else phone.format(n=n),
            )
            assert member.id is not None
            ids.append(member.id)
            if first_chat is not None:
                session.add(_binding(member.id, first_chat + n, channel))
        return ids


def _binding(member_id: int, chat: int | str, channel: str) -> ChatBinding:
    return ChatBinding(channel=channel, address=str(chat), member_id=member_id, via="invite")


async def bind_chat(db: Database, member_id: int, chat: int | str, channel: str = TELEGRAM) -> None:
    """Bind `chat` on `channel` to the member, as a redeemed invite leaves it (without the
    conversation: no interaction is recorded)."""
    async with db.transaction() as session:
        session.add(_binding(member_id, chat, channel))


async def add_car(db: Database, member_id: int, plate: str, **fields: Any) -> int:
    """A car of the member; `fields` are further `Vehicle` columns (make, model, vin, dates)."""
    return await _insert(db, Vehicle(member_id=member_id, plate=plate, **fields))


async def add_visit(
    db: Database,
    member_id: int,
    day: date,
    cents: int,
    rules: LoyaltyRules | None = None,
    **details: Any,
) -> int:
    """A recorded visit (earning points under `rules`, the default loyalty rules if None);
    `details` go to `visits.record` (store_id, vehicle_id, mileage_km, services, …)."""
    async with db.transaction() as session:
        visit = await visits.record(
            session, member_id, day, cents, rules or LoyaltyRules(), **details
        )
        assert visit.id is not None
        return visit.id


async def main_store(db: Database, **changes: Any) -> int:
    """The id of the shop's main store (code "main", in every test database), after setting
    `changes` (opening_hours, bays, …) on it."""
    async with db.transaction() as session:
        store = await session.scalar(select(Store).where(Store.code == "main"))
        assert store is not None and store.id is not None
        for column, value in changes.items():
            setattr(store, column, value)
        session.add(store)
        return store.id


async def add_store(db: Database, code: str, name: str, **fields: Any) -> int:
    """A further store; `fields` are `Store` columns (timezone, bays, opening_hours, …)."""
    return await _insert(db, Store(code=code, name=name, **fields))


async def _insert(db: Database, row: Vehicle | Store) -> int:
    async with db.transaction() as session:
        session.add(row)
        await session.flush()
        assert row.id is not None
        return row.id


async def invite_code(db: Database, member_id: int, now: datetime, actor: str = "staff:1") -> str:
    """A fresh one-time invite code for the member, created at `now` by `actor`."""
    async with db.transaction() as session:
        return await binding.create_invite(session, member_id, now, actor=actor)


async def link_chat(
    chat: Chat, member_id: int, address: str, channel: str = TELEGRAM
) -> list[Reply]:
    """The member links `address` the way a member does: staff make an invite code at the
    chat's time and the chat sends `/start CODE`. Checks the chat is now theirs; returns the
    replies."""
    code = await invite_code(chat.db, member_id, chat.clock())
    replies = await chat.handle(Event(channel, address, COMMAND, command="start", text=code))
    async with chat.db.read() as session:
        bound = await binding.member_for(session, channel, address)
    assert bound is not None and bound.id == member_id, [reply.text for reply in replies]
    return replies


async def queued(db: Database, intent: Intent, body: str) -> int:
    """Queue `intent` with its text already written (`body`), as if rendered; its row's id."""
    async with db.transaction() as session:
        await outbox.enqueue(session, [intent])
        row = await session.scalar(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == intent.idempotency_key)
        )
        assert row is not None and row.id is not None
        row.body = body
        session.add(row)
    return row.id
