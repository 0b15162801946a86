"""What a text-only chat keeps in the database, on SQLite and PostgreSQL: deliveries a chat
service repeats (claimed once, settled with one reply, pruned when old) and a chat's numbered
choices (replaced by every reply, lapsing with the flow state)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from db.models import InboundMessage
from db.session import Database
from domain import choices, inbound

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
ALICE = "oAliceAbCdEfGhIjKlMnOpQrStU"


async def _claim(db: Database, key: str, when: datetime = NOW) -> bool:
    async with db.transaction() as session:
        return await inbound.claim(session, "wechat", key, ALICE, when)


async def _outcome(db: Database, key: str) -> inbound.Outcome | None:
    async with db.read() as session:
        return await inbound.outcome(session, "wechat", key)


async def test_one_claim_wins_and_its_reply_is_what_repeats_read(db: Database) -> None:
    key = inbound.message_key(7_000_000_001)
    won = await asyncio.gather(*(_claim(db, key) for _ in range(4)))
    assert sorted(won) == [False, False, False, True]
    assert await _outcome(db, key) == inbound.Outcome(inbound.PENDING, None)

    async with db.transaction() as session:
        await inbound.settle(session, "wechat", key, "您的积分：300", NOW, owed=False)
        # Only a pending claim is settled: a late second settle changes nothing.
        await inbound.settle(session, "wechat", key, "something else", NOW, owed=True)
    assert await _outcome(db, key) == inbound.Outcome(inbound.ANSWERED, "您的积分：300")
    assert not await _claim(db, key)


async def test_a_released_claim_can_be_claimed_again_and_owed_replies_are_kept(
    db: Database,
) -> None:
    key = inbound.event_key(ALICE, "subscribe", 1_700_000_000, "ABCD2345")
    assert key.startswith("evt:") and ALICE not in key and len(key) <= 64
    assert key != inbound.event_key(ALICE, "subscribe", 1_700_000_001, "ABCD2345")
    assert await _claim(db, key)
    async with db.transaction() as session:
        await inbound.release(session, "wechat", key)
    assert await _outcome(db, key) is None
    assert await _claim(db, key)
    async with db.transaction() as session:
        await inbound.settle(session, "wechat", key, "欢迎", NOW, owed=True)
        await inbound.release(session, "wechat", key)  # a settled claim is never released
    assert await _outcome(db, key) == inbound.Outcome(inbound.OWED, "欢迎")


async def test_old_deliveries_are_pruned(db: Database) -> None:
    assert await _claim(db, "msg:1", NOW - inbound.KEEP - timedelta(minutes=1))
    assert await _claim(db, "msg:2", NOW)
    async with db.transaction() as session:
        assert await inbound.prune(session, NOW) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(InboundMessage)) == 1


async def test_choices_are_replaced_by_every_reply_and_lapse(db: Database) -> None:
    async def recall(when: datetime) -> dict[str, str]:
        async with db.read() as session:
            return await choices.recall(session, "wechat", ALICE, when)

    async def remember(offered: dict[str, str]) -> None:
        async with db.transaction() as session:
            await choices.remember(session, "wechat", ALICE, offered, NOW, 30)

    await remember({"1": "go:points", "2": "go:menu"})
    assert await recall(NOW) == {"1": "go:points", "2": "go:menu"}
    await remember({"1": "booking:svc:abcd1234:1"})
    assert await recall(NOW) == {"1": "booking:svc:abcd1234:1"}
    assert await recall(NOW + timedelta(minutes=31)) == {}
    await remember({})
    assert await recall(NOW) == {}
