"""The points ledger: earning, spending, expiry oldest-first, adjustments, and no overdraft under
concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Date, func, literal, select

from db.models import AuditLog, PointsEntry
from db.session import Database
from domain import members, points
from domain.errors import InsufficientPoints, InvalidInput
from domain.shop import LoyaltyRules
from tests.support.builders import new_member

RULES = LoyaltyRules()
DAY = date(2026, 3, 1)


def test_points_for_spend_rounds_down_whole_yuan() -> None:
    assert points.points_for_spend(12_999, RULES, 1000) == 129
    assert points.points_for_spend(10_000, RULES, 1200) == 120
    assert points.points_for_spend(33_300, RULES, 1500) == 499
    assert points.points_for_spend(99, RULES, 2000) == 0


def test_add_months_clamps_to_month_end() -> None:
    assert points.add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert points.add_months(date(2024, 3, 5), 24) == date(2026, 3, 5)
    assert points.add_months(date(2025, 11, 30), 3) == date(2026, 2, 28)


# ---------------------------------------------------------------- the SQL twins of the rules


async def test_lot_expiry_sql_equals_lot_expiry(db: Database) -> None:
    """Every day of six years, with a short and a long expiry: month ends and leap days."""
    dialect = db.dialect
    days = [date(2023, 1, 1) + timedelta(days=n) for n in range(0, 6 * 366)]
    for months in (1, 24):
        rules = LoyaltyRules(expiry_months=months)
        async with db.read() as session:
            for start in range(0, len(days), 400):
                batch = days[start : start + 400]
                row = (
                    await session.execute(
                        select(
                            *[
                                points.lot_expiry_sql(literal(d, Date), rules, dialect)
                                for d in batch
                            ]
                        )
                    )
                ).one()
                got = [d if isinstance(d, date) else date.fromisoformat(d) for d in row]
                assert got == [points.lot_expiry(d, rules) for d in batch]


async def test_points_for_spend_sql_equals_points_for_spend(db: Database) -> None:
    """Amounts from nothing to 20M yuan, at several earn rates and tier multipliers."""
    amounts = [0, 99, 100, 12_999, 33_300, 10_000_001, 2_000_000_000]
    for earn in (Decimal(1), Decimal("0.5"), Decimal("1.5"), Decimal("0.333")):
        rules = LoyaltyRules(earn_per_yuan=earn)
        cases = [(a, m) for a in amounts for m in (1000, 1200, 1500, 2000, 1333)]
        async with db.read() as session:
            row = (
                await session.execute(
                    select(
                        *[
                            points.points_for_spend_sql(literal(a), literal(m), rules)
                            for a, m in cases
                        ]
                    )
                )
            ).one()
        assert list(row) == [points.points_for_spend(a, rules, m) for a, m in cases]


async def test_earn_redeem_and_summary(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        await points.credit(session, member_id, 500, DAY, RULES, key="visit:1")
        await points.credit(session, member_id, 500, DAY, RULES, key="visit:1")  # retried
        await points.debit(session, member_id, 200, DAY, key="redeem:abc")
        await points.debit(session, member_id, 200, DAY, key="redeem:abc")  # retried
    async with db.read() as session:
        assert await points.balance(session, member_id) == 300
        summary = await points.summary(session, member_id, DAY, RULES)
    assert summary.balance == 300
    assert summary.expiring_soon == 0
    assert summary.next_expiry == date(2028, 3, 1)


async def test_redeem_more_than_balance_changes_nothing(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        await points.credit(session, member_id, 100, DAY, RULES)
    with pytest.raises(InsufficientPoints):
        async with db.transaction() as session:
            await points.debit(session, member_id, 101, DAY)
    async with db.read() as session:
        assert await points.balance(session, member_id) == 100


async def test_expiry_takes_oldest_lots_after_spending(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        await points.credit(session, member_id, 100, date(2024, 1, 10), RULES)  # lapses 2026-01-10
        await points.credit(session, member_id, 300, date(2024, 6, 1), RULES)  # lapses 2026-06-01
        await points.debit(session, member_id, 150, date(2025, 1, 1))  # eats the first lot + 50
    async with db.read() as session:
        soon = await points.summary(session, member_id, date(2026, 5, 10), RULES)
    assert soon.balance == 250
    assert soon.expiring_soon == 250  # nothing of the January lot is left; the June lot remains
    async with db.transaction() as session:
        assert await points.expire(session, date(2026, 1, 11)) == 0
        assert await points.expire(session, date(2026, 6, 2)) == 250
        assert await points.expire(session, date(2026, 6, 2)) == 0  # rerun adds nothing
    async with db.read() as session:
        assert await points.balance(session, member_id) == 0


async def test_adjustment_needs_reason_and_is_audited(db: Database) -> None:
    member_id = await new_member(db)
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await points.adjust(session, member_id, 50, DAY, RULES, reason=" ", actor="staff:1")
    async with db.transaction() as session:
        await points.adjust(session, member_id, 50, DAY, RULES, reason="goodwill", actor="staff:1")
    with pytest.raises(InsufficientPoints):
        async with db.transaction() as session:
            await points.adjust(session, member_id, -60, DAY, RULES, reason="typo", actor="staff:1")
    async with db.read() as session:
        assert await points.balance(session, member_id) == 50
        logs = (await session.scalars(select(AuditLog))).all()
    assert [(log.action, log.detail["delta"], log.detail["reason"]) for log in logs] == [
        ("points.adjust", 50, "goodwill")
    ]


async def test_an_adjustment_past_the_cap_is_refused_and_changes_nothing(db: Database) -> None:
    member_id = await new_member(db)
    for delta in (points.MAX_POINTS + 1, -(points.MAX_POINTS + 1), 10**20, -(10**20)):
        with pytest.raises(InvalidInput, match="at most 100,000,000 points"):
            async with db.transaction() as session:
                await points.adjust(session, member_id, delta, DAY, RULES, reason="x", actor="t")
    async with db.transaction() as session:
        await points.adjust(
            session, member_id, points.MAX_POINTS, DAY, RULES, reason="x", actor="t"
        )
    async with db.read() as session:
        assert await points.balance(session, member_id) == points.MAX_POINTS
        assert len((await session.scalars(select(AuditLog))).all()) == 1


async def test_concurrent_redemptions_never_overdraw(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        await points.credit(session, member_id, 1000, DAY, RULES)

    async def attempt(n: int) -> bool:
        try:
            async with db.transaction() as session:
                await points.debit(session, member_id, 100, DAY, key=f"redeem:{n}")
            return True
        except InsufficientPoints:
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(50)))
    assert sum(results) == 10
    async with db.read() as session:
        assert await points.balance(session, member_id) == 0
        redeemed = await session.scalar(
            select(func.count()).where(PointsEntry.member_id == member_id, PointsEntry.points < 0)
        )
    assert redeemed == 10


class LedgerModel:
    """A plain FIFO model of lots: what the ledger must agree with."""

    def __init__(self) -> None:
        self.lots: list[list] = []  # [expires_on, seq, remaining]
        self.seq = 0

    def credit(self, points_: int, expires_on: date) -> None:
        self.seq += 1
        self.lots.append([expires_on, self.seq, points_])
        self.lots.sort(key=lambda lot: (lot[0], lot[1]))

    def balance(self) -> int:
        return sum(lot[2] for lot in self.lots)

    def debit(self, amount: int) -> None:
        for lot in self.lots:
            take = min(lot[2], amount)
            lot[2] -= take
            amount -= take

    def expire(self, as_of: date) -> int:
        lapsed = sum(lot[2] for lot in self.lots if lot[0] < as_of)
        for lot in self.lots:
            if lot[0] < as_of:
                lot[2] = 0
        return lapsed


operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 500), st.integers(0, 20)),
        st.tuples(st.just("redeem"), st.integers(1, 600), st.integers(0, 20)),
        st.tuples(st.just("adjust"), st.integers(-300, 300).filter(bool), st.integers(0, 20)),
        st.tuples(st.just("expire"), st.just(0), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
async def test_ledger_matches_fifo_model(db: Database, ops: list[tuple[str, int, int]]) -> None:
    async with db.transaction() as session:
        ref = f"P{await session.scalar(select(func.count()).select_from(PointsEntry))}-{len(ops)}"
        member = await members.create(session, member_ref=ref + str(id(ops)), name="x", phone=None)
    member_id = member.id
    model = LedgerModel()
    rules = LoyaltyRules(expiry_months=1)
    day = date(2025, 1, 1)
    for kind, amount, offset in ops:
        day += timedelta(days=offset)  # the clock only moves forward, as at a real counter
        async with db.transaction() as session:
            if kind == "earn" or (kind == "adjust" and amount > 0):
                await points.credit(session, member_id, amount, day, rules, kind=kind)
                model.credit(amount, points.lot_expiry(day, rules))
            elif kind in ("redeem", "adjust"):
                spend = abs(amount)
                if spend > model.balance():
                    with pytest.raises(InsufficientPoints):
                        await points.debit(session, member_id, spend, day)
                else:
                    await points.debit(session, member_id, spend, day)
                    model.debit(spend)
            else:
                assert await points.expire(session, day, member_id=member_id) == model.expire(day)
        async with db.read() as session:
            ledger_sum = await session.scalar(
                select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
                    PointsEntry.member_id == member_id
                )
            )
            balance = await points.balance(session, member_id)
        assert balance == ledger_sum == model.balance()
        assert balance >= 0


async def test_racing_retries_of_one_credit_write_it_once(db: Database) -> None:
    member_id = await new_member(db)

    async def credit_once() -> int:
        async with db.transaction() as session:
            entry = await points.credit(session, member_id, 80, DAY, RULES, key="visit:77")
            return entry.id

    ids = await asyncio.gather(*(credit_once() for _ in range(8)))
    assert len(set(ids)) == 1
    async with db.read() as session:
        assert await points.balance(session, member_id) == 80


async def test_points_pay_part_of_a_bill(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        await points.credit(session, member_id, 1_000, DAY, RULES)
        assert await points.offset(session, member_id, 550, 20_000, DAY, RULES, actor="s:1") == 550
    for spend, bill, error in [(500, 300, InvalidInput), (460, 90_000, InsufficientPoints)]:
        with pytest.raises(error):
            async with db.transaction() as session:
                await points.offset(session, member_id, spend, bill, DAY, RULES, actor="s:1")
    off = LoyaltyRules(offset_points_per_yuan=0)
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await points.offset(session, member_id, 100, 20_000, DAY, off, actor="s:1")
    async with db.read() as session:
        assert await points.balance(session, member_id) == 450
        kinds = await session.scalars(
            select(PointsEntry.kind).where(PointsEntry.points < 0).order_by(PointsEntry.id)
        )
    assert kinds.all() == ["offset"]
