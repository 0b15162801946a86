"""Money at the counter: a coupon against a bill, points paying part of it, stored value in
and out, punch cards sold and used. Each answers with the member's new balances, and each is
kept once per key (`receipts.once`), with the key handed down to the ledger entry as a second
guard: a double tap or a retry never charges twice. Two counters redeeming one coupon with
different keys still redeem it once: `coupons.redeem` claims it with a conditional UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon
from domain import coupons, points, punchcards, staff, wallet
from domain.counter import receipts
from domain.counter.acting import at_store
from domain.errors import CouponUnavailable
from domain.shop import LoyaltyRules

REDEEM, PAY_POINTS = "coupon.redeem", "points.pay"
TOP_UP, SPEND = "wallet.top_up", "wallet.spend"
SELL_CARD, USE_CARD = "card.sell", "card.use"


async def _coupon_owner(session: AsyncSession, code: str) -> int:
    """The member a coupon belongs to: the code a member shows names them."""
    normalized = coupons.normalize_code(code)
    owner = (
        await session.scalar(select(Coupon.member_id).where(Coupon.code == normalized))
        if normalized
        else None
    )
    if owner is None:
        raise CouponUnavailable("coupon cannot be used: not_found", reason="not_found")
    return int(owner)


async def redeem_coupon(
    session: AsyncSession,
    who: int | str,
    *,
    code: str,
    bill_cents: int,
    today: date,
    member_id: int | None = None,
    services: Sequence[str] | None = None,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Use the coupon `code` on a bill at the store: validity, minimum spend, store and service
    scope are the coupon's rules. Without `member_id`, the coupon's own member."""
    person, store = await at_store(session, who, REDEEM, store_id)
    owner = member_id if member_id is not None else await _coupon_owner(session, code)

    async def work() -> dict[str, object]:
        used = await coupons.redeem(
            session,
            code,
            member_id=owner,
            store_id=store,
            spend_cents=bill_cents,
            today=today,
            actor=staff.actor_name(person),
            services=services,
        )
        return {
            "coupon_id": used.coupon.id,
            "bill_cents": bill_cents,
            "discount_cents": used.discount_cents,
            "to_pay_cents": bill_cents - used.discount_cents,
        }

    return await receipts.once(
        session, person, action=REDEEM, store_id=store, member_id=owner, key=key, work=work
    )


async def pay_with_points(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    points_used: int,
    bill_cents: int,
    today: date,
    rules: LoyaltyRules,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Take `points_used` points off the member as part payment of a bill."""
    person, store = await at_store(session, who, PAY_POINTS, store_id)

    async def work() -> dict[str, object]:
        value = await points.offset(
            session,
            member_id,
            points_used,
            bill_cents,
            today,
            rules,
            actor=staff.actor_name(person),
            key=receipts.ledger_key(PAY_POINTS, key),
        )
        return {
            "points_used": points_used,
            "bill_cents": bill_cents,
            "offset_cents": value,
            "to_pay_cents": bill_cents - value,
        }

    return await receipts.once(
        session, person, action=PAY_POINTS, store_id=store, member_id=member_id, key=key, work=work
    )


async def top_up(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    amount_cents: int,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Credit money the member paid in to their stored value."""
    return await _wallet(session, who, TOP_UP, member_id, amount_cents, store_id, key)


async def spend(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    amount_cents: int,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Pay from the member's stored value, never below zero."""
    return await _wallet(session, who, SPEND, member_id, amount_cents, store_id, key)


async def _wallet(
    session: AsyncSession,
    who: int | str,
    action: str,
    member_id: int,
    amount_cents: int,
    store_id: int | None,
    key: str | None,
) -> receipts.Receipt:
    person, store = await at_store(session, who, action, store_id)
    move = wallet.top_up if action == TOP_UP else wallet.spend

    async def work() -> dict[str, object]:
        entry = await move(
            session,
            member_id,
            amount_cents,
            actor=staff.actor_name(person),
            store_id=store,
            key=receipts.ledger_key(action, key),
        )
        return {"amount_cents": amount_cents, "entry_id": entry.id}

    return await receipts.once(
        session, person, action=action, store_id=store, member_id=member_id, key=key, work=work
    )


async def sell_card(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    service_code: str,
    uses: int,
    expires_on: date | None,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Sell the member a punch card of `uses` services (paid for at the till)."""
    person, store = await at_store(session, who, SELL_CARD, store_id)

    async def work() -> dict[str, object]:
        card = await punchcards.issue(
            session,
            member_id,
            service_code,
            uses,
            expires_on,
            store,
            receipts.ledger_key(SELL_CARD, key),
            actor=staff.actor_name(person),
        )
        assert card.id is not None
        return {
            "card_id": card.id,
            "service_code": service_code,
            "uses": uses,
            "remaining": await punchcards.remaining(session, card.id),
        }

    return await receipts.once(
        session, person, action=SELL_CARD, store_id=store, member_id=member_id, key=key, work=work
    )


async def use_card(
    session: AsyncSession,
    who: int | str,
    *,
    member_id: int,
    card_id: int,
    today: date,
    store_id: int | None = None,
    key: str | None = None,
) -> receipts.Receipt:
    """Punch one use off the member's card; cards are honoured at every store."""
    person, store = await at_store(session, who, USE_CARD, store_id)

    async def work() -> dict[str, object]:
        entry = await punchcards.use(
            session,
            card_id,
            member_id=member_id,
            store_id=store,
            today=today,
            key=receipts.ledger_key(USE_CARD, key),
            actor=staff.actor_name(person),
        )
        return {
            "card_id": card_id,
            "entry_id": entry.id,
            "remaining": await punchcards.remaining(session, card_id),
        }

    return await receipts.once(
        session, person, action=USE_CARD, store_id=store, member_id=member_id, key=key, work=work
    )
