"""A member's data rights (consent, export, erasure) and staff accounts with their limits."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from db.models import AuditLog, ChatBinding, InviteCode, OutboxMessage, Store, Vehicle
from db.session import Database
from domain import binding, members, points, privacy, reports, staff
from domain.errors import InvalidInput, NotFound
from domain.identity import normalize_plate
from domain.shop import LoyaltyRules
from scheduler import outbox
from tests.support.builders import add_car, add_visit, invite_code, new_member

RULES = LoyaltyRules()
DAY = date(2026, 5, 1)


async def member_with_history(db: Database) -> int:
    member_id = await new_member(
        db, "P-1", "13712345678", name="孙女士", birthday=date(1990, 2, 3), tags=["新能源"]
    )
    car = await add_car(db, member_id, normalize_plate("苏E·12345"), vin="LSVAU2180N2183294")
    await add_visit(db, member_id, DAY, 48_000, RULES, vehicle_id=car, mileage_km=20_000)
    return member_id


async def test_consent_is_recorded_with_time_and_source(db: Database) -> None:
    member_id = await member_with_history(db)
    async with db.transaction() as session:
        member = await privacy.set_consent(session, member_id, True, source="counter", actor="s:1")
        assert member.marketing_consent and member.consent_source == "counter"
        assert member.consent_at is not None
        with pytest.raises(InvalidInput):
            await privacy.set_consent(session, member_id, False, source="rumour", actor="s:1")


async def test_export_holds_everything_and_is_json(db: Database) -> None:
    member_id = await member_with_history(db)
    async with db.transaction() as session:
        exported = await privacy.export(session, member_id, actor="manager:1")
    text = json.dumps(exported, ensure_ascii=False)
    assert exported["member"]["phone"] == "+8613712345678"
    assert exported["member"]["birthday"] == "1990-02-03"
    assert exported["tags"] == ["新能源"]
    assert exported["vehicles"][0]["plate"] == "苏E12345"
    assert exported["mileage_readings"][0]["km"] == 20_000
    assert exported["visits"][0]["amount_cents"] == 48_000
    assert exported["points"][0]["points"] == 480
    assert "孙女士" in text
    async with db.read() as session:
        actions = (await session.scalars(select(AuditLog.action))).all()
    assert "member.export" in actions


async def test_erasure_removes_identity_and_keeps_the_books(db: Database) -> None:
    member_id = await member_with_history(db)
    now = datetime(2026, 5, 2, 2, 0, tzinfo=UTC)
    code = await invite_code(db, member_id, now, actor="s:1")
    async with db.transaction() as session:
        await binding.redeem_invite(session, "telegram", "4242", code, now)
        await binding.save_state(session, "telegram", "4242", "booking", {"store": 1}, now)
        intent = outbox.Intent(
            member_id=member_id,
            rule="care",
            occurrence="v1",
            category="service",
            template_key="care",
            locale="zh_CN",
            not_before=now,
            context={"name": "孙女士"},
        )
        assert await outbox.enqueue(session, [intent]) == 1
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await privacy.erase(session, member_id, actor="manager:1", reason=" ")
    async with db.transaction() as session:
        await privacy.erase(session, member_id, actor="manager:1", reason="member asked")
    async with db.read() as session:
        with pytest.raises(NotFound):
            await members.find(session, "13712345678")
        with pytest.raises(NotFound):
            await members.find(session, "苏E12345")
        car = await session.scalar(select(Vehicle).where(Vehicle.member_id == member_id))
        assert car is not None and car.plate.startswith("ERASED-") and car.vin is None
        assert await points.balance(session, member_id) == 480  # the ledger still adds up
        assert (await reports.chain_size(session)).members == 0
        log = await session.scalar(select(AuditLog).where(AuditLog.action == "member.erase"))
        assert await binding.member_for(session, "telegram", "4242") is None
        assert await binding.load_state(session, "telegram", "4242", now) is None
        for table in (ChatBinding, InviteCode, OutboxMessage):
            left = await session.scalar(
                select(func.count()).select_from(table).where(table.member_id == member_id)
            )
            assert left == 0, table.__name__
    assert log is not None and "13712345678" not in json.dumps(log.detail)


async def test_staff_roles_and_stores(db: Database) -> None:
    async with db.transaction() as session:
        store = await session.scalar(select(Store))
        assert store is not None
        clerk = await staff.add(
            session, name="小李", role="staff", store_code=store.code, actor="cli"
        )
        boss = await staff.add(session, name="王经理", role="manager", actor="cli")
        with pytest.raises(InvalidInput):
            await staff.add(session, name="x", role="owner", actor="cli")
        with pytest.raises(NotFound):
            await staff.add(session, name="x", role="staff", store_code="nowhere", actor="cli")
    staff.require(clerk, store_id=store.id)
    staff.require(boss, store_id=store.id, manager=True)
    staff.require(boss, store_id=None, manager=True)  # chain-wide
    with pytest.raises(staff.NotAllowed):
        staff.require(clerk, store_id=store.id, manager=True)
    with pytest.raises(staff.NotAllowed):
        staff.require(clerk, store_id=(store.id or 0) + 1)
    async with db.transaction() as session:
        await staff.deactivate(session, clerk.id, actor="cli")
        roster = await staff.roster(session)
    assert [(p.name, p.active, code) for p, code in roster] == [
        ("王经理", True, None),
        ("小李", False, store.code),
    ]
    with pytest.raises(staff.NotAllowed):
        staff.require(roster[1][0], store_id=store.id)
