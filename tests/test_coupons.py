"""Coupons: unguessable codes, terms, every refusal a clerk can meet, and single use under
concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import select, update

from db.models import AuditLog, Coupon
from db.session import Database
from db.types import utcnow
from domain import coupons
from domain.codes import ALPHABET
from domain.errors import CouponUnavailable, InvalidInput, NotFound
from tests.support.builders import add_store, main_store, new_member

DAY = date(2026, 3, 1)
CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$")


async def store_ids(db: Database) -> tuple[int, int]:
    """The shop's main store and a second one, for store-scoped coupons."""
    return await main_store(db), await add_store(db, "east", "东店")


async def give(db: Database, member_id: int, **terms: object) -> Coupon:
    fields: dict[str, object] = {
        "kind": "value",
        "value_cents": 5_000,
        "valid_from": DAY,
        "valid_until": DAY + timedelta(days=30),
        "source": "test",
    }
    fields.update(terms)
    async with db.transaction() as session:
        return await coupons.issue(session, member_id, **fields)  # type: ignore[arg-type]


def test_codes_are_distinct_readable_and_random() -> None:
    codes = [coupons.generate_code() for _ in range(10_000)]
    assert len(set(codes)) == len(codes)
    assert all(CODE.match(code) for code in codes)
    assert not set("ILOU") & set("".join(codes))
    assert len(ALPHABET) ** coupons.CODE_LENGTH >= 2**50
    # Every symbol at every position about 10,000/32 ≈ 312 times (σ ≈ 17): a skewed or
    # constant position would fall far outside these bounds.
    for position in (0, 4, 6, 10):
        counts = Counter(code[position] for code in codes)
        assert set(counts) == set(ALPHABET)
        assert min(counts.values()) > 200 and max(counts.values()) < 430


def test_typed_codes_are_normalized() -> None:
    assert coupons.normalize_code("7kq2m 9xd4r") == "7KQ2M-9XD4R"
    assert coupons.normalize_code(" 7KQ2M-9XD4R ") == "7KQ2M-9XD4R"
    assert coupons.normalize_code("OIL2M-9XD4R") == "0112M-9XD4R"
    assert coupons.normalize_code("7KQ2M-9XD4") == ""
    assert coupons.normalize_code("7KQ2M-9XD4U") == ""
    assert coupons.normalize_code("") == ""


def test_discount_caps_value_and_rounds_percent_down() -> None:
    value = Coupon(
        code="x",
        member_id=1,
        kind="value",
        value_cents=5_000,
        valid_from=DAY,
        valid_until=DAY,
        source="t",
    )
    percent = Coupon(
        code="y",
        member_id=1,
        kind="percent",
        percent_off=15,
        valid_from=DAY,
        valid_until=DAY,
        source="t",
    )
    assert coupons.discount_for(value, 12_000) == 5_000
    assert coupons.discount_for(value, 3_999) == 3_999
    assert coupons.discount_for(value, 0) == 0
    assert coupons.discount_for(percent, 12_345) == 1_851  # 1851.75 rounded down
    assert coupons.discount_for(percent, 6) == 0
    with pytest.raises(InvalidInput):
        coupons.discount_for(value, -1)


@pytest.mark.parametrize(
    "terms",
    [
        {"kind": "value", "value_cents": 0},
        {"kind": "value", "value_cents": 100, "percent_off": 10},
        {"kind": "percent", "value_cents": 0, "percent_off": 0},
        {"kind": "percent", "value_cents": 0, "percent_off": 100},
        {"kind": "gift", "value_cents": 100},
        {"min_spend_cents": -1},
        {"valid_until": DAY - timedelta(days=1)},
        {"source": " "},
    ],
)
async def test_issue_refuses_bad_terms(db: Database, terms: dict[str, object]) -> None:
    member_id = await new_member(db)
    with pytest.raises(InvalidInput):
        await give(db, member_id, **terms)
    async with db.read() as session:
        assert (await session.scalars(select(Coupon))).all() == []


async def test_issue_for_unknown_member_is_refused(db: Database) -> None:
    with pytest.raises(NotFound):
        await give(db, 999)


async def test_issue_is_idempotent_on_key(db: Database) -> None:
    member_id = await new_member(db)
    first = await give(db, member_id, key="birthday:2026")
    again = await give(db, member_id, key="birthday:2026")
    other = await give(db, member_id, key="birthday:2027")
    assert again.id == first.id and again.code == first.code
    assert other.code != first.code
    async with db.read() as session:
        assert len((await session.scalars(select(Coupon))).all()) == 2
        actions = (await session.scalars(select(AuditLog.action))).all()
    assert actions == ["coupon.issue", "coupon.issue"]


async def test_code_collision_draws_again(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    member_id = await new_member(db)
    taken = await give(db, member_id)
    draws = iter([taken.code, taken.code, "ABCDE-FGHJK"])
    monkeypatch.setattr(coupons, "generate_code", lambda: next(draws))
    fresh = await give(db, member_id)
    assert fresh.code == "ABCDE-FGHJK"


async def test_valid_for_member_lists_only_usable_coupons(db: Database) -> None:
    member_id = await new_member(db)
    other_id = await new_member(db, "M2")
    later = await give(db, member_id, valid_until=DAY + timedelta(days=60))
    sooner = await give(db, member_id, valid_until=DAY)
    await give(db, member_id, valid_from=DAY + timedelta(days=1))  # not yet valid
    await give(db, member_id, valid_from=DAY - timedelta(days=9), valid_until=DAY - timedelta(1))
    used = await give(db, member_id)
    await give(db, other_id)
    async with db.transaction() as session:
        await coupons.redeem(
            session,
            used.code,
            member_id=member_id,
            store_id=None,
            spend_cents=9_000,
            today=DAY,
            actor="staff:1",
        )
    async with db.read() as session:
        valid = await coupons.valid_for_member(session, member_id, DAY)
    assert [c.id for c in valid] == [sooner.id, later.id]


async def test_each_refusal_names_its_reason_and_uses_nothing(db: Database) -> None:
    member_id = await new_member(db)
    other_id = await new_member(db, "M2")
    main_id, east_id = await store_ids(db)
    coupon = await give(
        db,
        member_id,
        value_cents=5_000,
        min_spend_cents=30_000,
        store_id=main_id,
        valid_until=DAY + timedelta(days=10),
    )
    attempts = [
        ("ZZZZZ-ZZZZZ", member_id, main_id, 30_000, DAY, "not_found"),
        ("not a code", member_id, main_id, 30_000, DAY, "not_found"),
        (coupon.code, other_id, main_id, 30_000, DAY, "not_yours"),
        (coupon.code, member_id, main_id, 30_000, DAY - timedelta(days=1), "not_yet_valid"),
        (coupon.code, member_id, main_id, 30_000, DAY + timedelta(days=11), "expired"),
        (coupon.code, member_id, east_id, 30_000, DAY, "wrong_store"),
        (coupon.code, member_id, None, 30_000, DAY, "wrong_store"),
        (coupon.code, member_id, main_id, 29_999, DAY, "below_min_spend"),
    ]
    for code, who, store, spend, today, reason in attempts:
        with pytest.raises(CouponUnavailable) as refused:
            async with db.transaction() as session:
                await coupons.redeem(
                    session,
                    code,
                    member_id=who,
                    store_id=store,
                    spend_cents=spend,
                    today=today,
                    actor="staff:1",
                )
        assert refused.value.params["reason"] == reason, (code, reason)
    async with db.read() as session:
        stored = await session.get(Coupon, coupon.id)
        assert stored is not None and stored.used_at is None
        assert (await session.scalars(select(AuditLog.action))).all() == ["coupon.issue"]


async def test_redeem_uses_the_coupon_once_and_audits_without_personal_data(
    db: Database,
) -> None:
    member_id = await new_member(db)
    main_id, _ = await store_ids(db)
    coupon = await give(db, member_id, kind="percent", value_cents=0, percent_off=12)
    typed = coupon.code.lower().replace("-", " ")
    async with db.transaction() as session:
        done = await coupons.redeem(
            session,
            typed,
            member_id=member_id,
            store_id=main_id,
            spend_cents=45_050,
            today=DAY + timedelta(days=30),
            actor="staff:7",
        )
    assert done.discount_cents == 5_406  # 12% of 450.50 = 54.06
    assert done.coupon.used_at is not None and done.coupon.used_store_id == main_id
    with pytest.raises(CouponUnavailable) as again:
        async with db.transaction() as session:
            await coupons.redeem(
                session,
                coupon.code,
                member_id=member_id,
                store_id=main_id,
                spend_cents=45_050,
                today=DAY,
                actor="staff:7",
            )
    assert again.value.params["reason"] == "used"
    async with db.read() as session:
        log = await session.scalar(select(AuditLog).where(AuditLog.action == "coupon.redeem"))
    assert log is not None and log.actor == "staff:7" and log.entity_id == coupon.id
    assert log.detail == {
        "member_id": member_id,
        "store_id": main_id,
        "spend_cents": 45_050,
        "discount_cents": 5_406,
    }
    assert coupon.code not in str(log.detail) and "138" not in str(log.detail)


async def test_a_stale_read_still_cannot_use_a_coupon_twice(db: Database) -> None:
    """The conditional UPDATE is the real guard: even when this session's copy of the coupon
    still says unused, a coupon another counter just used is refused."""
    member_id = await new_member(db)
    coupon = await give(db, member_id)
    async with db.transaction() as session:
        loaded = await session.scalar(select(Coupon).where(Coupon.id == coupon.id))
        assert loaded is not None and loaded.used_at is None
        await session.execute(
            update(Coupon)
            .where(Coupon.id == coupon.id)
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        with pytest.raises(CouponUnavailable) as refused:
            await coupons.redeem(
                session,
                coupon.code,
                member_id=member_id,
                store_id=None,
                spend_cents=9_000,
                today=DAY,
                actor="staff:1",
            )
    assert refused.value.params["reason"] == "used"


@pytest.mark.parametrize("counters", [2, 10])
async def test_concurrent_redemptions_exactly_one_wins(db: Database, counters: int) -> None:
    member_id = await new_member(db)
    coupon = await give(db, member_id)

    async def attempt(store: int) -> int | None:
        try:
            async with db.transaction() as session:
                done = await coupons.redeem(
                    session,
                    coupon.code,
                    member_id=member_id,
                    store_id=None,
                    spend_cents=8_000,
                    today=DAY,
                    actor=f"staff:{store}",
                )
            return done.discount_cents
        except CouponUnavailable as exc:
            assert exc.params["reason"] == "used"
            return None

    results = await asyncio.gather(*(attempt(n) for n in range(counters)))
    assert sorted(results, key=lambda r: r is None) == [5_000] + [None] * (counters - 1)
    async with db.read() as session:
        redeemed = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "coupon.redeem"))
        ).all()
    assert len(redeemed) == 1
