"""Members, visits and tiers: identifiers are normalized, a visit earns points at the member's
tier, tiers rise at once and fall only at the review."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from db.models import Member, MileageReading, PointsEntry, TierChange, Vehicle, Visit
from db.session import Database
from domain import members, points, tiers, visits
from domain.errors import InvalidInput, NotFound
from domain.identity import mask_phone, mask_plate, normalize_phone, normalize_plate
from domain.shop import LoyaltyRules
from tests.support.builders import add_car, new_member

RULES = LoyaltyRules()


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "138 1234 5678",
        "+86 138-1234-5678",
        "008613812345678",
        "１３８１２３４５６７８",
    ],
)
def test_phones_normalize_to_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+8613812345678"


@pytest.mark.parametrize("raw", ["", "12345", "not a phone", "1381234567"])
def test_bad_phones_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_phone(raw)


@pytest.mark.parametrize(
    ("raw", "plate"),
    [("沪a·12345", "沪A12345"), ("粤B D12345", "粤BD12345"), ("京Ａ-８８８８８", "京A88888")],
)
def test_plates_normalize(raw: str, plate: str) -> None:
    assert normalize_plate(raw) == plate


def test_masks_hide_the_middle() -> None:
    assert mask_phone("+8613812345678") == "+86138****5678"
    assert mask_plate("沪A12345") == "沪A***45"


async def _member(db: Database) -> int:
    member_id = await new_member(db, "A-1", "139 0000 1111", name="李女士", tags=["新能源", "VIP"])
    await add_car(db, member_id, normalize_plate("沪A·12345"))
    return member_id


async def test_find_by_ref_phone_or_plate(db: Database) -> None:
    member_id = await _member(db)
    async with db.read() as session:
        for query in ("A-1", "13900001111", "+86 139 0000 1111", "沪a12345"):
            assert (await members.find(session, query)).id == member_id
        with pytest.raises(NotFound):
            await members.find(session, "13900009999")
        assert await members.tags_of(session, member_id) == ["VIP", "新能源"]


async def test_visit_earns_points_and_upgrades_at_once(db: Database) -> None:
    member_id = await _member(db)
    async with db.transaction() as session:
        car = await session.scalar(select(Vehicle).where(Vehicle.member_id == member_id))
        await visits.record(
            session,
            member_id,
            date(2026, 1, 5),
            150_000,
            RULES,
            vehicle_id=car.id,
            mileage_km=12_000,
        )
        # 1,500 yuan at standard (x1.0): 1,500 points; spend not yet at silver's 2,000 yuan.
        assert await points.balance(session, member_id) == 1500
        await visits.record(session, member_id, date(2026, 2, 5), 60_000, RULES, visit_ref="POS-9")
        # Earned at standard (x1.0), then upgraded to silver: 2,100 yuan in 12 months.
        assert await points.balance(session, member_id) == 2100
        await visits.record(session, member_id, date(2026, 2, 5), 60_000, RULES, visit_ref="POS-9")
        assert await points.balance(session, member_id) == 2100  # retried POS call: no double
        await visits.record(session, member_id, date(2026, 3, 5), 10_000, RULES)
        assert await points.balance(session, member_id) == 2220  # 100 yuan at silver x1.2
        readings = (await session.scalars(select(MileageReading))).all()
        assert [(r.km, r.read_on) for r in readings] == [(12_000, date(2026, 1, 5))]
    async with db.read() as session:
        progress = await tiers.progress(session, member_id, date(2026, 3, 5))
        earns = await session.scalars(select(PointsEntry.key).order_by(PointsEntry.id))
    assert progress.tier.code == "silver"
    assert progress.spend_cents == 220_000
    assert progress.next_tier is not None and progress.next_tier.code == "gold"
    assert progress.missing_cents == 580_000
    assert all(key.startswith("visit:") for key in earns.all())


async def test_tiers_fall_only_at_review(db: Database) -> None:
    member_id = await _member(db)
    async with db.transaction() as session:
        await visits.record(session, member_id, date(2025, 1, 10), 900_000, RULES)
    async with db.read() as session:
        assert (await members.get(session, member_id)).tier_code == "gold"
    later = date(2026, 3, 1)  # the spend has left the 12-month window
    async with db.transaction() as session:
        assert await tiers.upgrade_if_due(session, member_id, later) is None
        assert await tiers.review(session, later, downgrade=False) == 0
    async with db.read() as session:
        assert (await members.get(session, member_id)).tier_code == "gold"
    async with db.transaction() as session:
        assert await tiers.review(session, later) == 1
        assert await tiers.review(session, later) == 0
    async with db.read() as session:
        assert (await members.get(session, member_id)).tier_code == "standard"
        changes = (await session.scalars(select(TierChange).order_by(TierChange.id))).all()
    assert [(c.from_tier, c.to_tier, c.reason) for c in changes] == [
        ("standard", "gold", "upgrade"),
        ("gold", "standard", "review"),
    ]


async def test_review_sql_gives_the_tier_tier_for_spend_gives(db: Database) -> None:
    """The review's SQL (`tiers._target_rank_sql`) and its Python original `tier_for_spend` agree
    on every threshold and one cent either side of it; visits just outside the 12-month window
    (a day before its first day, a day after `as_of`) count for neither."""
    as_of = date(2026, 3, 1)
    first_day = tiers.window_start(as_of)
    async with db.read() as session:
        ladder = await tiers.all_tiers(session)
    assert len(ladder) >= 3
    spends = sorted({max(0, t.threshold_cents + d) for t in ladder for d in (-1, 0, 1)})
    spend_of: dict[int, int] = {}
    async with db.transaction() as session:
        for n, spend in enumerate(spends):
            member = await members.create(
                session, member_ref=f"T{n}", name="t", phone=f"1380013{n:04d}"
            )
            assert member.id is not None
            spend_of[member.id] = spend
            outside = 10**9  # would reach every tier, if it counted
            for day, cents in (
                (first_day, spend // 2),
                (as_of, spend - spend // 2),
                (first_day - timedelta(days=1), outside),
                (as_of + timedelta(days=1), outside),
            ):
                session.add(Visit(member_id=member.id, visited_on=day, amount_cents=cents))
    async with db.transaction() as session:
        await tiers.review(session, as_of)
    async with db.read() as session:
        rows = await session.execute(
            select(Member.id, Member.tier_code).where(Member.id.in_(spend_of))
        )
        got = dict(rows.all())
    assert got == {mid: tiers.tier_for_spend(ladder, spend).code for mid, spend in spend_of.items()}


async def test_two_visits_with_one_odometer_reading_keep_one_reading(db: Database) -> None:
    member_id = await _member(db)
    async with db.transaction() as session:
        car = await session.scalar(select(Vehicle).where(Vehicle.member_id == member_id))
        for amount in (4_500, 48_000):  # a wash and an oil service on the same morning
            await visits.record(
                session,
                member_id,
                date(2026, 4, 1),
                amount,
                RULES,
                vehicle_id=car.id,
                mileage_km=30_000,
            )
    async with db.read() as session:
        readings = (await session.scalars(select(MileageReading))).all()
    assert [(r.read_on, r.km) for r in readings] == [(date(2026, 4, 1), 30_000)]
