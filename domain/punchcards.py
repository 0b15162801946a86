"""Punch cards: prepaid bundles of one service (10 washes, say), each with its own small ledger.

Issuing writes one positive line with all the uses; every use writes -1; expiry writes minus
what was left. What remains is the sum, and it never goes below zero: a use locks its card (a
row lock on PostgreSQL; SQLite's write transaction already excludes every other writer) before
it counts what is left.

A card names the store that sold it; it is honoured at every store of the chain. It is usable
up to and including its expiry date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import String, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import PunchCard, PunchEntry, PunchKind, Service
from db.session import upsert_insert
from db.types import UTCDateTime, utcnow
from domain import audit, ledger
from domain.errors import InvalidInput, NotFound, PunchCardUnavailable

ISSUE, USE, EXPIRE = PunchKind.ISSUE, PunchKind.USE, PunchKind.EXPIRE


@dataclass(frozen=True)
class CardStatus:
    """A card as a member or a clerk sees it."""

    card: PunchCard
    remaining: int

    @property
    def expires_on(self) -> date | None:
        return self.card.expires_on


def _unavailable(reason: str, card_id: int) -> PunchCardUnavailable:
    return PunchCardUnavailable(
        f"punch card cannot be used: {reason}", reason=reason, card_id=card_id
    )


async def issue(
    session: AsyncSession,
    member_id: int,
    service_code: str,
    uses: int,
    expires_on: date | None,
    store_id: int | None,
    key: str | None = None,
    *,
    actor: str = "system",
) -> PunchCard:
    """Sell a member a card of `uses` services. With a `key`, a retry returns the first card."""
    if uses <= 0:
        raise InvalidInput("a punch card needs at least one use", uses=uses)
    if await session.scalar(select(Service.id).where(Service.code == service_code)) is None:
        raise NotFound("no such service", service_code=service_code)
    written = await ledger.put(
        session,
        member_id,
        model=PunchCard,
        key=key,
        entry=lambda: PunchCard(
            member_id=member_id,
            service_code=service_code,
            total_uses=uses,
            expires_on=expires_on,
            store_id=store_id,
            key=key,
        ),
    )
    card = written.entry
    if written.new:
        assert card.id is not None
        await ledger.append(
            session,
            PunchEntry(
                card_id=card.id,
                kind=ISSUE,
                uses=uses,
                store_id=store_id,
                key=f"punch-issue:{card.id}",
                actor=actor,
            ),
        )
        await audit.record(
            session,
            actor=actor,
            action="punchcard.issue",
            entity="punch_card",
            entity_id=card.id,
            detail={"member_id": member_id, "service_code": service_code, "uses": uses},
        )
    return card


async def remaining(session: AsyncSession, card_id: int) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(PunchEntry.uses), 0)).where(PunchEntry.card_id == card_id)
    )
    return int(total or 0)


async def _locked_card(session: AsyncSession, card_id: int) -> PunchCard | None:
    """The card, row-locked on PostgreSQL (SQLite renders no FOR UPDATE and needs none)."""
    return await session.scalar(
        select(PunchCard)
        .where(PunchCard.id == card_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def use(
    session: AsyncSession,
    card_id: int,
    *,
    member_id: int,
    store_id: int | None,
    today: date,
    key: str | None,
    actor: str,
) -> PunchEntry:
    """Punch one use off the card. A retried request (same key) returns the first punch."""
    card = await _locked_card(session, card_id)
    if card is None:
        raise _unavailable("not_found", card_id)
    if card.member_id != member_id:
        raise _unavailable("not_yours", card_id)
    if (previous := await ledger.replay(session, PunchEntry, key)) is not None:
        return previous
    if card.expires_on is not None and today > card.expires_on:
        raise _unavailable("expired", card_id)
    if await remaining(session, card_id) < 1:
        raise _unavailable("used_up", card_id)
    entry = await ledger.append(
        session,
        PunchEntry(card_id=card_id, kind=USE, uses=-1, store_id=store_id, key=key, actor=actor),
    )
    await audit.record(
        session,
        actor=actor,
        action="punchcard.use",
        entity="punch_card",
        entity_id=card_id,
        detail={"member_id": member_id, "store_id": store_id, "entry_id": entry.id},
    )
    return entry


async def cards_of(
    session: AsyncSession, member_id: int, today: date, *, include_finished: bool = False
) -> list[CardStatus]:
    """The member's cards with what is left, soonest expiry first.

    By default only cards still usable today; `include_finished` adds used-up and expired ones.
    """
    left = func.coalesce(func.sum(PunchEntry.uses), 0)
    query = (
        select(PunchCard, left)
        .outerjoin(PunchEntry, PunchEntry.card_id == PunchCard.id)
        .where(PunchCard.member_id == member_id)
        .group_by(PunchCard.id)
        .order_by(PunchCard.expires_on.is_(None), PunchCard.expires_on, PunchCard.id)
    )
    if not include_finished:
        query = query.where(
            (PunchCard.expires_on.is_(None)) | (PunchCard.expires_on >= today)
        ).having(left > 0)
    rows = await session.execute(query)
    return [CardStatus(card=card, remaining=int(count)) for card, count in rows.all()]


async def expire(session: AsyncSession, as_of: date) -> int:
    """Write off what is left on every card whose expiry date is before `as_of`; set-based.

    Returns how many cards were written off. Keyed per card, so a rerun or a second process
    writes nothing more; on PostgreSQL the cards are locked first, so a use running at the same
    moment either lands before the write-off (which then takes one less) or is refused.
    """
    left = func.sum(PunchEntry.uses)
    lapsed_cards = (
        select(PunchCard.id.label("card_id"), left.label("left"))
        .join(PunchEntry, PunchEntry.card_id == PunchCard.id)
        .where(PunchCard.expires_on < as_of)
        .group_by(PunchCard.id)
        .having(left > 0)
    )
    if session.bind.dialect.name == "postgresql":
        await session.execute(
            select(PunchCard.id)
            .where(PunchCard.id.in_(select(lapsed_cards.subquery().c.card_id)))
            .order_by(PunchCard.id)
            .with_for_update()
        )
    lapsed = lapsed_cards.subquery()
    rows = select(
        lapsed.c.card_id,
        literal(EXPIRE),
        -lapsed.c.left,
        literal("punch-expire:") + cast(lapsed.c.card_id, String),
        literal("system"),
        literal(utcnow(), UTCDateTime),
    ).where(lapsed.c.left > 0)  # also keeps SQLite from reading ON CONFLICT as a join clause
    statement = (
        upsert_insert(session, PunchEntry)
        .from_select(["card_id", "kind", "uses", "key", "actor", "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(PunchEntry.card_id)
    )
    return len((await session.scalars(statement)).all())
