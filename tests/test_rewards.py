"""Rewards: the catalogue from the shop config, and redemption that debits points and issues the
coupon all or nothing, once per client key, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from db.models import AuditLog, Coupon, PointsEntry, Reward
from db.session import Database
from domain import coupons, points, rewards
from domain.errors import CouponUnavailable, InsufficientPoints, InvalidInput, RewardUnavailable
from domain.shop import LoyaltyRules
from tests.support.builders import new_member

RULES = LoyaltyRules()
DAY = date(2026, 3, 1)


async def member_with_points(db: Database, balance: int, ref: str = "M1") -> int:
    member_id = await new_member(db, ref, "13612345678", name="赵女士")
    if balance:
        async with db.transaction() as session:
            await points.credit(session, member_id, balance, DAY, RULES)
    return member_id


async def redeem(db: Database, member_id: int, reward: str, key: str) -> Coupon:
    async with db.transaction() as session:
        return await rewards.redeem(
            session, member_id, reward, today=DAY, key=key, actor="member:app"
        )


async def balance(db: Database, member_id: int) -> int:
    async with db.read() as session:
        return await points.balance(session, member_id)


async def counts(db: Database) -> tuple[int, int, int]:
    """Coupons, points debits and audit lines: what a redemption writes."""
    async with db.read() as session:
        issued = await session.scalar(select(func.count()).select_from(Coupon))
        debits = await session.scalar(select(func.count()).where(PointsEntry.points < 0))
        logged = await session.scalar(select(func.count()).select_from(AuditLog))
    return int(issued or 0), int(debits or 0), int(logged or 0)


async def test_catalogue_lists_active_rewards_cheapest_first(db: Database) -> None:
    async with db.read() as session:
        shown = await rewards.catalogue(session)
    assert [(r.code, r.points_cost) for r in shown] == [
        ("free_wash", 300),
        ("oil_50", 500),
        ("detail_10pct", 800),
    ]
    async with db.transaction() as session:
        withdrawn = await session.scalar(select(Reward).where(Reward.code == "oil_50"))
        assert withdrawn is not None
        withdrawn.active = False
    async with db.read() as session:
        assert [r.code for r in await rewards.catalogue(session)] == ["free_wash", "detail_10pct"]


async def test_redeem_debits_points_and_issues_the_rewards_coupon(db: Database) -> None:
    member_id = await member_with_points(db, 1_000)
    coupon = await redeem(db, member_id, "oil_50", key="app:req:1")
    assert await balance(db, member_id) == 500
    assert (coupon.member_id, coupon.kind, coupon.value_cents, coupon.percent_off) == (
        member_id,
        "value",
        5_000,
        0,
    )
    assert coupon.min_spend_cents == 30_000
    assert (coupon.valid_from, coupon.valid_until) == (DAY, DAY + timedelta(days=89))
    assert (coupon.store_id, coupon.source, coupon.used_at) == (None, "reward", None)
    async with db.read() as session:
        reward = await session.get(Reward, coupon.reward_id)
        debit = await session.scalar(select(PointsEntry).where(PointsEntry.points < 0))
        valid = await coupons.valid_for_member(session, member_id, DAY)
        log = await session.scalar(select(AuditLog).where(AuditLog.action == "reward.redeem"))
    assert reward is not None and reward.code == "oil_50"
    assert debit is not None and (debit.kind, debit.points, debit.actor) == (
        "redeem",
        -500,
        "member:app",
    )
    assert [c.id for c in valid] == [coupon.id]
    assert log is not None and log.entity_id == member_id
    assert log.detail == {
        "reward": "oil_50",
        "points": 500,
        "points_entry_id": debit.id,
        "coupon_id": coupon.id,
    }


async def test_percent_reward_issues_a_percent_coupon(db: Database) -> None:
    member_id = await member_with_points(db, 800)
    coupon = await redeem(db, member_id, "detail_10pct", key="k")
    assert (coupon.kind, coupon.percent_off, coupon.value_cents) == ("percent", 10, 0)
    assert coupon.valid_until == DAY + timedelta(days=59)
    assert await balance(db, member_id) == 0


async def test_a_retried_redemption_charges_once_and_returns_the_same_coupon(
    db: Database,
) -> None:
    member_id = await member_with_points(db, 1_000)
    first = await redeem(db, member_id, "free_wash", key="app:req:7")
    again = await redeem(db, member_id, "free_wash", key="app:req:7")
    assert (again.id, again.code) == (first.id, first.code)
    assert await balance(db, member_id) == 700
    assert await counts(db) == (1, 1, 2)  # coupon.issue + reward.redeem, once
    second = await redeem(db, member_id, "free_wash", key="app:req:8")
    assert second.code != first.code
    assert await balance(db, member_id) == 400


async def test_a_key_reused_for_another_reward_is_refused(db: Database) -> None:
    member_id = await member_with_points(db, 1_000)
    await redeem(db, member_id, "free_wash", key="app:req:1")
    with pytest.raises(InvalidInput):
        await redeem(db, member_id, "oil_50", key="app:req:1")
    assert await balance(db, member_id) == 700


async def test_too_few_points_writes_nothing(db: Database) -> None:
    member_id = await member_with_points(db, 299)
    with pytest.raises(InsufficientPoints) as refused:
        await redeem(db, member_id, "free_wash", key="app:req:1")
    assert refused.value.params == {"needed": 300, "available": 299}
    assert await balance(db, member_id) == 299
    assert await counts(db) == (0, 0, 0)


async def test_unknown_or_withdrawn_rewards_are_refused(db: Database) -> None:
    member_id = await member_with_points(db, 1_000)
    async with db.transaction() as session:
        withdrawn = await session.scalar(select(Reward).where(Reward.code == "oil_50"))
        assert withdrawn is not None
        withdrawn.active = False
    for code, reason in (("no_such_reward", "not_found"), ("oil_50", "inactive")):
        with pytest.raises(RewardUnavailable) as refused:
            await redeem(db, member_id, code, key=f"req:{code}")
        assert refused.value.params["reason"] == reason
    with pytest.raises(InvalidInput):
        await redeem(db, member_id, "free_wash", key="  ")
    assert await balance(db, member_id) == 1_000
    assert await counts(db) == (0, 0, 0)


async def test_a_failure_after_the_debit_rolls_the_debit_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    member_id = await member_with_points(db, 1_000)

    async def broken_issue(*args: object, **kwargs: object) -> Coupon:
        raise RuntimeError("coupon store unavailable")

    monkeypatch.setattr(coupons, "issue", broken_issue)
    with pytest.raises(RuntimeError):
        await redeem(db, member_id, "free_wash", key="app:req:1")
    assert await balance(db, member_id) == 1_000
    assert await counts(db) == (0, 0, 0)


async def test_concurrent_redemptions_never_overdraw(db: Database) -> None:
    member_id = await member_with_points(db, 900)

    async def attempt(n: int) -> bool:
        try:
            await redeem(db, member_id, "free_wash", key=f"app:req:{n}")
            return True
        except InsufficientPoints:
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(10)))
    assert sum(results) == 3
    assert await balance(db, member_id) == 0
    issued, debits, _ = await counts(db)
    assert (issued, debits) == (3, 3)


async def test_concurrent_retries_of_one_redemption_issue_one_coupon(db: Database) -> None:
    member_id = await member_with_points(db, 1_000)
    results = await asyncio.gather(
        *(redeem(db, member_id, "free_wash", key="app:req:dup") for _ in range(6))
    )
    assert len({c.id for c in results}) == 1
    assert await balance(db, member_id) == 700
    issued, debits, _ = await counts(db)
    assert (issued, debits) == (1, 1)


async def test_a_reward_coupon_only_pays_for_its_service(db: Database) -> None:
    member_id = await member_with_points(db, 300)
    coupon = await redeem(db, member_id, "free_wash", key="wash-1")
    with pytest.raises(CouponUnavailable) as refused:
        async with db.transaction() as session:
            await coupons.redeem(
                session,
                coupon.code,
                member_id=member_id,
                store_id=None,
                spend_cents=48_000,
                today=DAY,
                actor="staff:1",
                services=["oil_service"],
            )
    assert refused.value.params["reason"] == "wrong_service"
    async with db.transaction() as session:
        used = await coupons.redeem(
            session,
            coupon.code,
            member_id=member_id,
            store_id=None,
            spend_cents=4_500,
            today=DAY,
            actor="staff:1",
            services=["wash"],
        )
    assert used.discount_cents == 4_500
