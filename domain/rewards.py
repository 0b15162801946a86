"""The rewards catalogue: what points buy. Redeeming debits the points and issues the reward's
coupon in the caller's one transaction, so a member never pays without getting the coupon, and
the client's key makes a retried redemption return the same coupon without charging again.

A redemption's ledger line names the reward it bought in its reason (`reward <code>`), written
and read back only here: a member's statement shows each redemption by the reward's name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon, PointsEntry, Reward
from domain import audit, coupons, ledger, points
from domain.errors import InvalidInput, RewardUnavailable

SOURCE = "reward"
_KEY_PREFIX = "reward:"
_KEY_ROOM = 96 - len(_KEY_PREFIX)
_REASON_PREFIX = "reward "


@dataclass(frozen=True)
class Shelf:
    """The active rewards, cheapest first, and the member's balance to buy them with."""

    rewards: list[Reward]
    balance: int


@dataclass(frozen=True)
class Offer:
    """One active reward and the member's balance: enough to buy it, or short by how much."""

    reward: Reward
    balance: int


@dataclass(frozen=True)
class Purchase:
    """A redeemed reward, its coupon and the balance left."""

    reward: Reward
    coupon: Coupon
    balance: int


@dataclass(frozen=True)
class StatementLine:
    """A ledger line; `reward` is what a redemption bought, while that reward is offered."""

    entry: PointsEntry
    reward: Reward | None


@dataclass(frozen=True)
class Statement:
    """A member's latest ledger lines, newest first, and their balance."""

    lines: list[StatementLine]
    balance: int


async def catalogue(session: AsyncSession) -> list[Reward]:
    """Active rewards, cheapest first."""
    result = await session.scalars(
        select(Reward).where(Reward.active.is_(True)).order_by(Reward.points_cost, Reward.code)
    )
    return list(result.all())


async def shelf(session: AsyncSession, member_id: int) -> Shelf:
    """What the member could buy, with what they hold."""
    return Shelf(await catalogue(session), await points.balance(session, member_id))


async def offer(session: AsyncSession, member_id: int, reward_code: str) -> Offer:
    """One reward the member is looking at; `RewardUnavailable` unless it is offered."""
    reward = await _active_reward(session, reward_code)
    return Offer(reward, await points.balance(session, member_id))


async def statement(session: AsyncSession, member_id: int, limit: int) -> Statement:
    """The member's latest `limit` ledger lines, each redemption with its reward."""
    entries = await points.history(session, member_id, limit=limit)
    balance = await points.balance(session, member_id)
    offered = {reward.code: reward for reward in await catalogue(session)} if entries else {}
    return Statement([StatementLine(entry, _bought(entry, offered)) for entry in entries], balance)


def _bought(entry: PointsEntry, offered: dict[str, Reward]) -> Reward | None:
    reason = entry.reason or ""
    if entry.kind != points.REDEEM or not reason.startswith(_REASON_PREFIX):
        return None
    return offered.get(reason.removeprefix(_REASON_PREFIX))


def valid_until(reward: Reward, today: date) -> date:
    """A reward coupon is usable for `valid_days` days counting the day it was bought."""
    return today + timedelta(days=reward.valid_days - 1)


async def _active_reward(session: AsyncSession, reward_code: str) -> Reward:
    reward = await session.scalar(select(Reward).where(Reward.code == reward_code))
    if reward is None:
        raise RewardUnavailable("no such reward", reason="not_found", reward_code=reward_code)
    if not reward.active:
        raise RewardUnavailable("reward withdrawn", reason="inactive", reward_code=reward_code)
    return reward


def _check_key(key: str) -> str:
    cleaned = key.strip()
    if not cleaned or len(cleaned) > _KEY_ROOM:
        raise InvalidInput(f"a redemption key is 1 to {_KEY_ROOM} characters")
    return _KEY_PREFIX + cleaned


async def redeem(
    session: AsyncSession,
    member_id: int,
    reward_code: str,
    *,
    today: date,
    key: str,
    actor: str,
) -> Coupon:
    """Buy a reward with points and return its coupon, all or nothing.

    A retry with the same key returns the coupon of the first call and charges nothing; the same
    key for another member or reward is a client error. Too few points raise InsufficientPoints
    before anything is written.
    """
    ledger_key = _check_key(key)
    reward = await _active_reward(session, reward_code)
    await ledger.lock_existing_member(session, member_id)
    if (previous := await ledger.replay(session, Coupon, ledger_key)) is not None:
        if previous.member_id != member_id or previous.reward_id != reward.id:
            raise InvalidInput("this redemption key was used for another redemption")
        return previous
    entry = await points.debit(
        session,
        member_id,
        reward.points_cost,
        today,
        kind=points.REDEEM,
        key=ledger_key,
        reason=f"{_REASON_PREFIX}{reward.code}",
        actor=actor,
    )
    coupon = await coupons.issue(
        session,
        member_id,
        kind=reward.coupon_kind,
        value_cents=reward.coupon_value_cents if reward.coupon_kind == coupons.VALUE else 0,
        percent_off=reward.coupon_percent if reward.coupon_kind == coupons.PERCENT else 0,
        min_spend_cents=reward.min_spend_cents,
        valid_from=today,
        valid_until=valid_until(reward, today),
        store_id=None,
        source=SOURCE,
        reward_id=reward.id,
        key=ledger_key,
        actor=actor,
    )
    await audit.record(
        session,
        actor=actor,
        action="reward.redeem",
        entity="member",
        entity_id=member_id,
        detail={
            "reward": reward.code,
            "points": reward.points_cost,
            "points_entry_id": entry.id,
            "coupon_id": coupon.id,
        },
    )
    return coupon


async def buy(
    session: AsyncSession,
    member_id: int,
    reward_code: str,
    *,
    today: date,
    key: str,
    actor: str,
) -> Purchase:
    """`redeem`, answered with the reward bought and the balance left: what a member is shown."""
    coupon = await redeem(session, member_id, reward_code, today=today, key=key, actor=actor)
    reward = await _active_reward(session, reward_code)
    return Purchase(reward, coupon, await points.balance(session, member_id))
