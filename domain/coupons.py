"""Coupons: single-use vouchers with unguessable codes, a value or a percentage off.

A code is read aloud at the counter and typed by a clerk, so it uses Crockford's base32 (no I, L,
O or U, which look or sound like other characters), is shown as two groups of five, and is
accepted in any case, with or without the dash, with O/I/L typed for 0/1/1. Ten characters are
50 random bits: guessing one is hopeless, and a coupon is bound to its member besides.

Single use holds under concurrency without a lock: the redemption is a conditional UPDATE that
only the first of two racing requests can match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog, Coupon, CouponKind, Reward
from db.session import upsert_insert
from db.types import utcnow
from domain import audit, ledger
from domain.codes import clean, random_code
from domain.errors import CouponUnavailable, InvalidInput

CODE_LENGTH = 10
GROUP = 5
VALUE, PERCENT = CouponKind.VALUE, CouponKind.PERCENT
_MAX_ATTEMPTS = 8
_BATCH = 500  # rows per INSERT: about 15 columns each, well under SQLite's parameter limit


@dataclass(frozen=True)
class Redemption:
    """A coupon just used, and how much it took off the bill."""

    coupon: Coupon
    discount_cents: int


def generate_code() -> str:
    """A fresh random code such as `7KQ2M-9XD4R` (50 bits from `secrets`)."""
    raw = random_code(CODE_LENGTH)
    return f"{raw[:GROUP]}-{raw[GROUP:]}"


def normalize_code(text: str) -> str:
    """The stored form of what a clerk typed: `7kq2m 9xd4r` → `7KQ2M-9XD4R`."""
    raw = clean(text, CODE_LENGTH)
    return f"{raw[:GROUP]}-{raw[GROUP:]}" if raw else ""


async def _unused_code(session: AsyncSession) -> str:
    """A code no coupon has yet; a collision is a 1-in-2^50 event per existing coupon."""
    for _ in range(_MAX_ATTEMPTS):
        code = generate_code()
        if await session.scalar(select(Coupon.id).where(Coupon.code == code)) is None:
            return code
    raise RuntimeError("could not draw an unused coupon code; is the random source broken?")


def _check_terms(
    kind: str,
    value_cents: int,
    percent_off: int,
    min_spend_cents: int,
    valid_from: date,
    valid_until: date,
) -> None:
    if kind == VALUE:
        if value_cents <= 0 or percent_off != 0:
            raise InvalidInput("a value coupon needs a value above 0 and no percentage")
    elif kind == PERCENT:
        if not 0 < percent_off < 100 or value_cents != 0:
            raise InvalidInput("a percent coupon needs 1 to 99 percent and no value")
    else:
        raise InvalidInput("unknown coupon kind", kind=kind)
    if min_spend_cents < 0:
        raise InvalidInput("minimum spend cannot be negative", min_spend_cents=min_spend_cents)
    if valid_until < valid_from:
        raise InvalidInput("a coupon cannot end before it starts")


async def issue(
    session: AsyncSession,
    member_id: int,
    *,
    kind: str,
    value_cents: int = 0,
    percent_off: int = 0,
    min_spend_cents: int = 0,
    valid_from: date,
    valid_until: date,
    store_id: int | None = None,
    source: str,
    reward_id: int | None = None,
    key: str | None = None,
    actor: str = "system",
) -> Coupon:
    """Give a member a coupon. With a `key`, a retried request returns the first coupon."""
    _check_terms(kind, value_cents, percent_off, min_spend_cents, valid_from, valid_until)
    if not source.strip():
        raise InvalidInput("a coupon needs a source")
    await ledger.lock_existing_member(session, member_id)
    if (previous := await ledger.replay(session, Coupon, key)) is not None:
        return previous
    coupon = await ledger.append(
        session,
        Coupon(
            code=await _unused_code(session),
            member_id=member_id,
            kind=kind,
            value_cents=value_cents,
            percent_off=percent_off,
            min_spend_cents=min_spend_cents,
            valid_from=valid_from,
            valid_until=valid_until,
            store_id=store_id,
            source=source,
            reward_id=reward_id,
            key=key,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="coupon.issue",
        entity="coupon",
        entity_id=coupon.id,
        detail={"member_id": member_id, "source": source, "reward_id": reward_id},
    )
    return coupon


@dataclass(frozen=True)
class KeyedCoupon:
    """One coupon of a batch; `key` names the occasion, so it is issued at most once."""

    key: str
    member_id: int
    kind: str
    valid_from: date
    valid_until: date
    source: str
    value_cents: int = 0
    percent_off: int = 0
    min_spend_cents: int = 0


async def issue_many(
    session: AsyncSession, wanted: Sequence[KeyedCoupon], *, actor: str = "system"
) -> dict[str, Coupon]:
    """Keyed coupons in bulk (the lifecycle rules give thousands a day), by key.

    The same guarantee as `issue` with a key, without a lock or a round trip per coupon: rows
    go in with ON CONFLICT DO NOTHING, so a key issued before (a rerun, a racing process) keeps
    its first coupon and code, and whatever was not inserted is read back. A fresh code that
    collides with an existing one (1 in 2^50) is simply drawn again. Audited like `issue`.
    """
    for c in wanted:
        _check_terms(
            c.kind, c.value_cents, c.percent_off, c.min_spend_cents, c.valid_from, c.valid_until
        )
        if not c.source.strip():
            raise InvalidInput("a coupon needs a source")
    pending = {c.key: c for c in wanted}
    found: dict[str, Coupon] = {}
    for _ in range(_MAX_ATTEMPTS):
        keys = [key for key in pending if key not in found]
        if not keys:
            return found
        for start in range(0, len(keys), _BATCH):
            await _insert_new(session, [pending[k] for k in keys[start : start + _BATCH]], actor)
            rows = await session.scalars(
                select(Coupon).where(Coupon.key.in_(keys[start : start + _BATCH]))
            )
            found.update({coupon.key: coupon for coupon in rows.all() if coupon.key})
    if len(found) < len(pending):
        raise RuntimeError("could not draw unused coupon codes; is the random source broken?")
    return found


async def _insert_new(session: AsyncSession, batch: Sequence[KeyedCoupon], actor: str) -> None:
    issued_at = utcnow()
    rows = [
        {
            "code": generate_code(),
            "member_id": c.member_id,
            "kind": c.kind,
            "value_cents": c.value_cents,
            "percent_off": c.percent_off,
            "min_spend_cents": c.min_spend_cents,
            "valid_from": c.valid_from,
            "valid_until": c.valid_until,
            "store_id": None,
            "source": c.source,
            "reward_id": None,
            "key": c.key,
            "issued_at": issued_at,
        }
        for c in batch
    ]
    inserted = (
        await session.execute(
            upsert_insert(session, Coupon)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(Coupon.id, Coupon.member_id, Coupon.source)
        )
    ).all()
    if inserted:
        await session.execute(
            insert(AuditLog),
            [
                {
                    "actor": actor,
                    "action": "coupon.issue",
                    "entity": "coupon",
                    "entity_id": coupon_id,
                    "detail": {"member_id": member_id, "source": source, "reward_id": None},
                    "created_at": issued_at,
                }
                for coupon_id, member_id, source in inserted
            ],
        )


async def valid_for_member(session: AsyncSession, member_id: int, today: date) -> list[Coupon]:
    """The member's coupons usable today, the soonest to lapse first."""
    result = await session.scalars(
        select(Coupon)
        .where(
            Coupon.member_id == member_id,
            Coupon.used_at.is_(None),
            Coupon.valid_from <= today,
            Coupon.valid_until >= today,
        )
        .order_by(Coupon.valid_until, Coupon.id)
    )
    return list(result.all())


def discount_for(coupon: Coupon, spend_cents: int) -> int:
    """What the coupon takes off a bill: never more than the bill, percentages rounded down."""
    if spend_cents < 0:
        raise InvalidInput("spend cannot be negative", spend_cents=spend_cents)
    if coupon.kind == PERCENT:
        return spend_cents * coupon.percent_off // 100
    return min(coupon.value_cents, spend_cents)


def _refusal(
    coupon: Coupon | None, member_id: int, store_id: int | None, spend_cents: int, today: date
) -> str | None:
    """Why this coupon cannot pay this bill, first reason first; None when it can."""
    if coupon is None:
        return "not_found"
    if coupon.member_id != member_id:
        return "not_yours"
    if coupon.used_at is not None:
        return "used"
    if today < coupon.valid_from:
        return "not_yet_valid"
    if today > coupon.valid_until:
        return "expired"
    if coupon.store_id is not None and coupon.store_id != store_id:
        return "wrong_store"
    if spend_cents < coupon.min_spend_cents:
        return "below_min_spend"
    return None


async def redeem(
    session: AsyncSession,
    code: str,
    *,
    member_id: int,
    store_id: int | None,
    spend_cents: int,
    today: date,
    actor: str,
    services: Sequence[str] | None = None,
) -> Redemption:
    """Use a coupon on a bill, once: of two counters redeeming it together, exactly one wins.

    A coupon bought as a reward for one service (a free wash) only pays a bill that includes
    that service; `services` are the service codes on the bill, checked when given.
    """
    if spend_cents < 0:
        raise InvalidInput("spend cannot be negative", spend_cents=spend_cents)
    normalized = normalize_code(code)
    coupon = (
        await session.scalar(select(Coupon).where(Coupon.code == normalized))
        if normalized
        else None
    )
    reason = _refusal(coupon, member_id, store_id, spend_cents, today)
    if reason is None and services is not None and coupon is not None and coupon.reward_id:
        reward = await session.get(Reward, coupon.reward_id)
        if reward is not None and reward.service_code and reward.service_code not in services:
            reason = "wrong_service"
    if reason is not None:
        raise CouponUnavailable(f"coupon cannot be used: {reason}", reason=reason)
    assert coupon is not None
    claimed = await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon.id, Coupon.used_at.is_(None))
        .values(used_at=utcnow(), used_store_id=store_id)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        raise CouponUnavailable("coupon cannot be used: used", reason="used")
    await session.refresh(coupon)
    discount = discount_for(coupon, spend_cents)
    await audit.record(
        session,
        actor=actor,
        action="coupon.redeem",
        entity="coupon",
        entity_id=coupon.id,
        detail={
            "member_id": member_id,
            "store_id": store_id,
            "spend_cents": spend_cents,
            "discount_cents": discount,
        },
    )
    return Redemption(coupon=coupon, discount_cents=discount)


async def valid_with_rewards(
    session: AsyncSession, member_id: int, today: date
) -> list[tuple[Coupon, Reward | None]]:
    """The member's coupons usable today, soonest to lapse first, each with the reward it was
    bought as (None for a coupon that was given, not bought)."""
    valid = await valid_for_member(session, member_id, today)
    by_id = await rewards_for(session, valid)
    return [(c, by_id.get(c.reward_id) if c.reward_id else None) for c in valid]


async def rewards_for(session: AsyncSession, coupons: list[Coupon]) -> dict[int, Reward]:
    """The rewards these coupons were bought as, by reward id: what each coupon is for."""
    ids = {c.reward_id for c in coupons if c.reward_id is not None}
    if not ids:
        return {}
    rewards = await session.scalars(select(Reward).where(Reward.id.in_(ids)))
    return {r.id: r for r in rewards.all() if r.id is not None}
