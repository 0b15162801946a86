"""Stored value (储值): top-ups, spends, never below zero, retries that pay once, and concurrent
spends that never overdraw, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from db.models import AuditLog, StoredValueEntry
from db.session import Database
from domain import wallet
from domain.errors import InsufficientBalance, InvalidInput, NotFound
from tests.support.builders import new_member


async def top_up(db: Database, member_id: int, cents: int, key: str | None = None) -> None:
    async with db.transaction() as session:
        await wallet.top_up(session, member_id, cents, actor="staff:1", key=key)


async def test_top_up_spend_balance_and_history(db: Database) -> None:
    member_id = await new_member(db)
    await top_up(db, member_id, 100_000, key="pos:topup:1")
    async with db.transaction() as session:
        await wallet.spend(session, member_id, 4_500, actor="staff:2", key="pos:sale:1")
        await wallet.spend(session, member_id, 68_000, actor="staff:2", reason="detailing")
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 27_500
        lines = await wallet.history(session, member_id)
        assert [(e.kind, e.amount_cents) for e in await wallet.history(session, member_id, 2)] == [
            ("spend", -68_000),
            ("spend", -4_500),
        ]
    assert [(e.kind, e.amount_cents, e.actor) for e in lines] == [
        ("spend", -68_000, "staff:2"),
        ("spend", -4_500, "staff:2"),
        ("top_up", 100_000, "staff:1"),
    ]


async def test_balances_are_per_member(db: Database) -> None:
    first, second = await new_member(db), await new_member(db, "M2")
    await top_up(db, first, 5_000)
    async with db.read() as session:
        assert await wallet.balance(session, first) == 5_000
        assert await wallet.balance(session, second) == 0
    with pytest.raises(InsufficientBalance):
        async with db.transaction() as session:
            await wallet.spend(session, second, 1, actor="staff:1")


async def test_retries_with_the_same_key_count_once(db: Database) -> None:
    member_id = await new_member(db)
    for _ in range(3):
        await top_up(db, member_id, 20_000, key="pos:topup:9")
    async with db.transaction() as session:
        first = await wallet.spend(session, member_id, 5_000, actor="staff:1", key="pos:sale:9")
        again = await wallet.spend(session, member_id, 5_000, actor="staff:1", key="pos:sale:9")
    assert again.id == first.id
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 15_000
        actions = (await session.scalars(select(AuditLog.action).order_by(AuditLog.id))).all()
    assert actions == ["wallet.top_up", "wallet.spend"]


async def test_overspend_is_refused_and_writes_nothing(db: Database) -> None:
    member_id = await new_member(db)
    await top_up(db, member_id, 10_000)
    with pytest.raises(InsufficientBalance) as refused:
        async with db.transaction() as session:
            await wallet.spend(session, member_id, 10_001, actor="staff:1")
    assert refused.value.params == {"needed_cents": 10_001, "available_cents": 10_000}
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 10_000
        assert len(await wallet.history(session, member_id)) == 1
    async with db.transaction() as session:
        await wallet.spend(session, member_id, 10_000, actor="staff:1")  # exactly all is fine
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 0


@pytest.mark.parametrize("cents", [0, -500])
async def test_amounts_must_be_positive(db: Database, cents: int) -> None:
    member_id = await new_member(db)
    await top_up(db, member_id, 10_000)
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await wallet.top_up(session, member_id, cents, actor="staff:1")
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await wallet.spend(session, member_id, cents, actor="staff:1")
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 10_000


async def test_unknown_member_is_refused(db: Database) -> None:
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await wallet.top_up(session, 999, 1_000, actor="staff:1")


async def test_audit_holds_amounts_not_personal_data(db: Database) -> None:
    member_id = await new_member(db)
    async with db.transaction() as session:
        entry = await wallet.top_up(session, member_id, 30_000, actor="staff:4", store_id=None)
    async with db.read() as session:
        log = await session.scalar(select(AuditLog))
    assert log is not None
    assert (log.actor, log.action, log.entity, log.entity_id) == (
        "staff:4",
        "wallet.top_up",
        "member",
        member_id,
    )
    assert log.detail == {"amount_cents": 30_000, "store_id": None, "entry_id": entry.id}


async def test_concurrent_spends_never_overdraw(db: Database) -> None:
    member_id = await new_member(db)
    await top_up(db, member_id, 5 * 4_500)

    async def attempt(n: int) -> bool:
        try:
            async with db.transaction() as session:
                await wallet.spend(session, member_id, 4_500, actor="staff:1", key=f"sale:{n}")
            return True
        except InsufficientBalance:
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sum(results) == 5
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 0
        spends = await session.scalar(
            select(func.count()).where(
                StoredValueEntry.member_id == member_id, StoredValueEntry.amount_cents < 0
            )
        )
    assert spends == 5


async def test_concurrent_retries_of_one_spend_pay_once(db: Database) -> None:
    member_id = await new_member(db)
    await top_up(db, member_id, 50_000)

    async def attempt() -> int | None:
        async with db.transaction() as session:
            entry = await wallet.spend(session, member_id, 4_500, actor="pos", key="sale:once")
        return entry.id

    ids = await asyncio.gather(*(attempt() for _ in range(8)))
    assert len(set(ids)) == 1
    async with db.read() as session:
        assert await wallet.balance(session, member_id) == 45_500
