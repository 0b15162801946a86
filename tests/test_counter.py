"""Counter work as use cases: every staff action authorised by role and store, refusals
audited after their rollback, receipts once per key, member codes, visits recorded and voided,
money in and out. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog, MileageReading, Visit
from db.session import Database
from domain import audit, coupons, membercodes, points, punchcards, staff, wallet
from domain.counter import acting, lookup, money, visits
from domain.counter.receipts import Receipt
from domain.errors import CouponUnavailable, InsufficientPoints
from domain.membercodes import MemberCodeInvalid
from domain.shop import LoyaltyRules
from domain.staff import NotAllowed
from tests.support.builders import add_car, add_store, main_store, new_member, new_members

TODAY = date(2026, 12, 10)
NOW = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
RULES = LoyaltyRules()


class Shop:
    """Two stores, a clerk and a manager of the main store, a clerk of the east store, a
    deactivated clerk and a chain manager; a member with a car, 500 points and ¥100 stored."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def build(self) -> Shop:
        self.main = await main_store(self.db)
        self.east = await add_store(self.db, "east", "东店")
        await new_members(self.db, 6, ref="X{n}", phone=None)  # member ids above staff ids
        self.member = await new_member(self.db, "C-1", "13812345678", home_store_id=self.main)
        self.car = await add_car(self.db, self.member, "沪A12345")
        async with self.db.transaction() as session:
            add = staff.add
            self.clerk = (
                await add(session, name="小李", role="staff", store_code="main", actor="t")
            ).id
            self.east_clerk = (
                await add(session, name="小王", role="staff", store_code="east", actor="t")
            ).id
            gone = await add(session, name="老张", role="staff", store_code="main", actor="t")
            self.gone = gone.id
            self.boss = (await add(session, name="陈总", role="manager", actor="t")).id
            await points.credit(session, self.member, 500, TODAY, RULES, kind="adjust")
            await wallet.top_up(session, self.member, 10_000, actor="t")
        async with self.db.transaction() as session:
            await staff.deactivate(session, self.gone, actor="t")
        return self

    async def coupon(self, **terms: Any) -> str:
        fields: dict[str, Any] = {
            "kind": "value",
            "value_cents": 5_000,
            "valid_from": TODAY,
            "valid_until": TODAY + timedelta(days=30),
            "source": "test",
        }
        fields.update(terms)
        async with self.db.transaction() as session:
            return (await coupons.issue(session, self.member, **fields)).code

    async def run(
        self, who: int | str, action: str, work: Callable[[AsyncSession], Awaitable[Any]]
    ) -> Any:
        return await acting.guarded(self.db, work, who=who, action=action)


@pytest.fixture
async def shop(db: Database) -> Shop:
    return await Shop(db).build()


async def audit_lines(db: Database, action: str) -> list[AuditLog]:
    async with db.read() as session:
        return await audit.entries(session, action=action)


async def state(db: Database, member_id: int) -> tuple[int, int, int]:
    async with db.read() as session:
        visits_count = await session.scalar(
            select(func.count()).where(Visit.member_id == member_id)
        )
        return (
            await points.balance(session, member_id),
            await wallet.balance(session, member_id),
            int(visits_count or 0),
        )


# ------------------------------------------------------------------ authorisation


def actions(
    shop: Shop,
) -> dict[str, Callable[[int | str], Callable[[AsyncSession], Awaitable[Any]]]]:
    """Every counter action at the main store, as `who` would ask for it."""
    m = shop.member
    return {
        "visit.record": lambda who: (
            lambda s: visits.record_visit(
                s,
                who,
                member_id=m,
                amount_cents=30_000,
                services=["wash"],
                today=TODAY,
                rules=RULES,
                store_id=shop.main,
                key="k1",
            )
        ),
        "wallet.top_up": lambda who: (
            lambda s: money.top_up(
                s, who, member_id=m, amount_cents=5_000, store_id=shop.main, key="k2"
            )
        ),
        "wallet.spend": lambda who: (
            lambda s: money.spend(
                s, who, member_id=m, amount_cents=5_000, store_id=shop.main, key="k3"
            )
        ),
        "points.pay": lambda who: (
            lambda s: money.pay_with_points(
                s,
                who,
                member_id=m,
                points_used=100,
                bill_cents=10_000,
                today=TODAY,
                rules=RULES,
                store_id=shop.main,
                key="k4",
            )
        ),
        "card.sell": lambda who: (
            lambda s: money.sell_card(
                s,
                who,
                member_id=m,
                service_code="wash",
                uses=10,
                expires_on=None,
                store_id=shop.main,
                key="k5",
            )
        ),
        "member.find": lambda who: (
            lambda s: lookup.find(s, who, "C-1", now=NOW, today=TODAY, rules=RULES)
        ),
    }


STORE_ACTIONS = ["visit.record", "wallet.top_up", "wallet.spend", "points.pay", "card.sell"]
REFUSALS = [
    *[
        (action, asker)
        for action in STORE_ACTIONS
        for asker in ("member", "other_store", "deactivated")
    ],
    # Finding a member is done at the asker's own store: any active account may.
    ("member.find", "member"),
    ("member.find", "deactivated"),
]


@pytest.mark.parametrize(("action", "asker"), REFUSALS)
async def test_refused_attempts_are_audited_and_change_nothing(
    shop: Shop, action: str, asker: str
) -> None:
    who = {"member": shop.member, "other_store": shop.east_clerk, "deactivated": shop.gone}[asker]
    reason = {"member": "not_staff", "other_store": "other_store", "deactivated": "deactivated"}
    before = await state(shop.db, shop.member)
    work = actions(shop)[action](who)
    with pytest.raises(NotAllowed) as refused:
        await shop.run(who, action, work)
    assert refused.value.params["reason"] == reason[asker]
    assert await state(shop.db, shop.member) == before
    [line] = await audit_lines(shop.db, "refused.")
    assert line.action == f"refused.{action}"
    assert line.detail["reason"] == reason[asker]
    unplaced = action == "member.find" and asker == "member"
    assert line.detail["store_id"] == (None if unplaced else shop.main)
    expected = f"unknown:{who}" if asker == "member" else f"staff:{who}"
    assert line.actor == expected
    assert await audit_lines(shop.db, "counter.") == []


async def test_staff_act_at_their_store_and_chain_managers_anywhere(shop: Shop) -> None:
    clerk = await shop.run(shop.clerk, "wallet.top_up", actions(shop)["wallet.top_up"](shop.clerk))
    assert clerk.store_id == shop.main
    east = await shop.run(
        shop.boss,
        "wallet.top_up",
        lambda s: money.top_up(
            s, shop.boss, member_id=shop.member, amount_cents=100, store_id=shop.east
        ),
    )
    assert east.store_id == shop.east
    by_name = await shop.run(
        "小李",
        "wallet.top_up",
        lambda s: money.top_up(s, "小李", member_id=shop.member, amount_cents=100),
    )
    assert by_name.store_id == shop.main and by_name.after.stored_value_cents == 15_200


# ------------------------------------------------------------------ receipts once per key


async def test_the_same_key_twice_is_one_effect_and_the_same_answer(shop: Shop) -> None:
    work = actions(shop)["wallet.spend"](shop.clerk)
    first = await shop.run(shop.clerk, "wallet.spend", work)
    again = await shop.run(shop.clerk, "wallet.spend", work)
    assert (first.before.stored_value_cents, first.after.stored_value_cents) == (10_000, 5_000)
    assert again.replayed and not first.replayed
    assert (again.before, again.after, again.detail) == (first.before, first.after, first.detail)
    assert (await state(shop.db, shop.member))[1] == 5_000
    lines = await audit_lines(shop.db, "counter.wallet.spend")
    assert len(lines) == 1
    assert lines[0].actor == f"staff:{shop.clerk}"
    assert lines[0].detail["before"] == {"points": 500, "stored_value_cents": 10_000}
    assert lines[0].detail["after"] == {"points": 500, "stored_value_cents": 5_000}


async def test_a_double_tap_racing_itself_charges_once(shop: Shop) -> None:
    async def tap() -> Receipt:
        return await shop.run(shop.clerk, "wallet.spend", actions(shop)["wallet.spend"](shop.clerk))

    first, second = await asyncio.gather(tap(), tap())
    assert {first.replayed, second.replayed} == {False, True}
    assert first.after == second.after
    assert (await state(shop.db, shop.member))[1] == 5_000


async def test_two_staff_redeeming_one_coupon_at_once_redeem_it_once(shop: Shop) -> None:
    code = await shop.coupon()

    async def redeem(who: int, key: str) -> Receipt | Exception:
        try:
            return await shop.run(
                who,
                "coupon.redeem",
                lambda s: money.redeem_coupon(
                    s, who, code=code, bill_cents=20_000, today=TODAY, key=key
                ),
            )
        except CouponUnavailable as refused:
            return refused

    results = await asyncio.gather(redeem(shop.clerk, "a"), redeem(shop.boss, "b"))
    won = [r for r in results if isinstance(r, Receipt)]
    lost = [r for r in results if isinstance(r, CouponUnavailable)]
    assert len(won) == 1 and len(lost) == 1
    assert won[0].detail["discount_cents"] == 5_000 and won[0].detail["to_pay_cents"] == 15_000
    assert lost[0].params["reason"] == "used"
    assert len(await audit_lines(shop.db, "counter.coupon.redeem")) == 1


async def test_coupon_scope_is_checked_at_the_counter(shop: Shop) -> None:
    east_only = await shop.coupon(store_id=shop.east)
    big_bills = await shop.coupon(min_spend_cents=50_000)
    for code, reason in ((east_only, "wrong_store"), (big_bills, "below_min_spend")):
        with pytest.raises(CouponUnavailable) as refused:
            await shop.run(
                shop.clerk,
                "coupon.redeem",
                lambda s, c=code: money.redeem_coupon(
                    s, shop.clerk, code=c, bill_cents=20_000, today=TODAY
                ),
            )
        assert refused.value.params["reason"] == reason


# ------------------------------------------------------------------ member codes and finding


async def test_a_member_code_finds_the_member_once_and_not_after_it_expires(shop: Shop) -> None:
    async with shop.db.transaction() as session:
        code = await membercodes.issue(session, shop.member, NOW)
        stale = await membercodes.issue(session, shop.member, NOW, ttl_minutes=1)
    assert code != stale

    async def find(text: str, at: datetime) -> lookup.Found:
        return await shop.run(
            shop.clerk,
            "member.find",
            lambda s: lookup.find(s, shop.clerk, text, now=at, today=TODAY, rules=RULES),
        )

    with pytest.raises(MemberCodeInvalid) as retired:
        await find(code, NOW)  # a newer code retires the older
    assert retired.value.reason == "expired"
    with pytest.raises(MemberCodeInvalid) as late:
        await find(stale, NOW + timedelta(minutes=2))
    assert late.value.reason == "expired"
    async with shop.db.transaction() as session:
        fresh = await membercodes.issue(session, shop.member, NOW)
    found = await find(fresh.lower().replace("-", " "), NOW + timedelta(minutes=1))
    assert found.member.id == shop.member and found.via == "member_code"
    assert found.phone_masked == "+86138****5678" and found.plates_masked == ["沪A***45"]
    with pytest.raises(MemberCodeInvalid) as used:
        await find(fresh, NOW + timedelta(minutes=2))
    assert used.value.reason == "used"
    by_plate = await find("沪a·12345", NOW)
    assert by_plate.member.id == shop.member and by_plate.via == "phone_or_plate"
    [line, *_] = await audit_lines(shop.db, "counter.member.find")
    assert "13812345678" not in str(line.detail) and "12345" not in str(line.detail)


# ------------------------------------------------------------------ visits


async def test_a_visit_earns_points_reads_the_odometer_and_carries_its_categories(
    shop: Shop,
) -> None:
    receipt = await shop.run(
        shop.clerk,
        "visit.record",
        lambda s: visits.record_visit(
            s,
            shop.clerk,
            member_id=shop.member,
            amount_cents=30_050,
            services=["oil_service", "wash"],
            today=TODAY,
            rules=RULES,
            vehicle_id=shop.car,
            mileage_km=42_000,
            key="tap-1",
        ),
    )
    assert receipt.detail["points_earned"] == 300
    assert (receipt.before.points, receipt.after.points) == (500, 800)
    async with shop.db.read() as session:
        visit = await session.get(Visit, receipt.detail["visit_id"])
        assert visit is not None
        assert visit.categories == ["maintenance", "wash"] and visit.store_id == shop.main
        assert visit.visited_on == TODAY and visit.satisfaction is None
        readings = (await session.scalars(select(MileageReading.km))).all()
        assert list(readings) == [42_000]


async def test_voiding_returns_the_points_and_twice_is_a_no_op(shop: Shop) -> None:
    record = await shop.run(
        shop.clerk,
        "visit.record",
        lambda s: visits.record_visit(
            s,
            shop.clerk,
            member_id=shop.member,
            amount_cents=20_000,
            services=["wash"],
            today=TODAY,
            rules=RULES,
            vehicle_id=shop.car,
            mileage_km=10_000,
        ),
    )
    visit_id = record.detail["visit_id"]

    async def void(who: int) -> Receipt:
        return await shop.run(
            who,
            "visit.void",
            lambda s: visits.void_visit(s, who, visit_id=visit_id, today=TODAY, reason="typo"),
        )

    with pytest.raises(NotAllowed):
        await void(shop.east_clerk)
    first = await void(shop.clerk)
    again = await void(shop.clerk)
    assert first.detail["points_returned"] == 200
    assert (first.before.points, first.after.points) == (700, 500)
    assert again.replayed and again.after == first.after
    assert await state(shop.db, shop.member) == (500, 10_000, 0)
    async with shop.db.read() as session:
        assert (await session.scalars(select(MileageReading))).all() == []
    assert len(await audit_lines(shop.db, "counter.visit.void")) == 1
    assert len(await audit_lines(shop.db, "refused.counter.visit.void")) == 0
    assert len(await audit_lines(shop.db, "refused.visit.void")) == 1


async def test_a_void_whose_points_were_spent_is_refused(shop: Shop) -> None:
    record = await shop.run(
        shop.clerk,
        "visit.record",
        lambda s: visits.record_visit(
            s,
            shop.clerk,
            member_id=shop.member,
            amount_cents=90_000,
            services=["repair"],
            today=TODAY,
            rules=RULES,
        ),
    )
    async with shop.db.transaction() as session:
        await points.debit(session, shop.member, 1_300, TODAY)
    with pytest.raises(InsufficientPoints):
        await shop.run(
            shop.clerk,
            "visit.void",
            lambda s: visits.void_visit(
                s, shop.clerk, visit_id=record.detail["visit_id"], today=TODAY, reason="typo"
            ),
        )
    assert (await state(shop.db, shop.member))[2] == 1


# ------------------------------------------------------------------ money


async def test_points_pay_part_of_a_bill_and_cards_are_sold_and_used(shop: Shop) -> None:
    paid = await shop.run(shop.clerk, "points.pay", actions(shop)["points.pay"](shop.clerk))
    assert paid.detail["offset_cents"] == 100 and paid.after.points == 400
    sold = await shop.run(shop.clerk, "card.sell", actions(shop)["card.sell"](shop.clerk))
    card_id = sold.detail["card_id"]
    assert sold.detail["remaining"] == 10

    def use(key: str) -> Callable[[AsyncSession], Awaitable[Receipt]]:
        return lambda s: money.use_card(
            s, shop.clerk, member_id=shop.member, card_id=card_id, today=TODAY, key=key
        )

    first = await shop.run(shop.clerk, "card.use", use("u1"))
    again = await shop.run(shop.clerk, "card.use", use("u1"))
    other = await shop.run(shop.clerk, "card.use", use("u2"))
    assert (first.detail["remaining"], again.detail["remaining"], other.detail["remaining"]) == (
        9,
        9,
        8,
    )
    async with shop.db.read() as session:
        assert await punchcards.remaining(session, card_id) == 8
