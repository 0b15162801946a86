"""The outbox: intents are stored once whatever reruns, due rows go to exactly one worker at a
time, a crashed worker's lease returns its rows, and only the owner records an outcome; on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from db.models import OutboxMessage
from db.session import Database
from scheduler import outbox
from scheduler.outbox import Intent, OutboxCount
from tests.support.builders import new_members

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def intent(
    member_id: int,
    occurrence: str = "2026",
    *,
    rule: str = "birthday",
    due: datetime = NOW,
    category: str = outbox.MARKETING,
) -> Intent:
    return Intent(
        member_id=member_id,
        rule=rule,
        occurrence=occurrence,
        category=category,
        template_key=rule,
        locale="zh_CN",
        not_before=due,
        context={"member": {"name": "李女士"}, "points": 120},
    )


async def enqueue(db: Database, intents: list[Intent]) -> int:
    async with db.transaction() as session:
        return await outbox.enqueue(session, intents)


async def claim(db: Database, worker: str, now: datetime, **kwargs: int) -> list[OutboxMessage]:
    async with db.transaction() as session:
        return await outbox.claim(session, worker, now, **kwargs)


async def row(db: Database, message_id: int) -> OutboxMessage:
    async with db.read() as session:
        found = await session.get(OutboxMessage, message_id)
    assert found is not None
    return found


def test_intent_key_names_rule_member_and_occurrence() -> None:
    assert intent(123).idempotency_key == "birthday:member:123:2026"
    with pytest.raises(ValueError):
        intent(1, due=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        intent(1, category="spam")
    with pytest.raises(ValueError):
        intent(1, occurrence="x" * 160)


async def test_enqueue_twice_adds_nothing(db: Database) -> None:
    m1, m2 = await new_members(db, 2)
    first = [intent(m1), intent(m2), intent(m1, rule="maintenance_due", category="service")]
    assert await enqueue(db, first) == 3
    assert await enqueue(db, first) == 0
    assert await enqueue(db, [intent(m1), intent(m1, "2027"), intent(m1, "2027")]) == 1
    async with db.read() as session:
        rows = (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    assert [r.idempotency_key for r in rows] == [
        f"birthday:member:{m1}:2026",
        f"birthday:member:{m2}:2026",
        f"maintenance_due:member:{m1}:2026",
        f"birthday:member:{m1}:2027",
    ]
    stored = rows[0]
    assert stored.status == outbox.PENDING
    assert stored.attempts == 0
    assert stored.channel is None and stored.body is None
    assert stored.context == {"member": {"name": "李女士"}, "points": 120}
    assert stored.not_before == NOW


async def test_sent_message_is_never_queued_again(db: Database) -> None:
    (m1,) = await new_members(db, 1)
    await enqueue(db, [intent(m1)])
    (message,) = await claim(db, "w1", NOW)
    async with db.transaction() as session:
        assert await outbox.mark_sent(session, message.id, "w1", NOW)
    assert await enqueue(db, [intent(m1)]) == 0
    assert await claim(db, "w1", NOW + timedelta(days=400)) == []


async def test_only_due_rows_are_claimed_oldest_first(db: Database) -> None:
    (m1,) = await new_members(db, 1)
    later = NOW + timedelta(hours=2)
    await enqueue(
        db,
        [
            intent(m1, "later", due=later),
            intent(m1, "now", due=NOW),
            intent(m1, "earlier", due=NOW - timedelta(hours=1)),
        ],
    )
    claimed = await claim(db, "w1", NOW, lease_seconds=3 * 3600)
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in claimed] == ["earlier", "now"]
    for message in claimed:
        assert message.status == outbox.CLAIMED
        assert message.claimed_by == "w1"
        assert message.claimed_until == NOW + timedelta(hours=3)
        assert message.attempts == 1
    assert await claim(db, "w2", later - timedelta(seconds=1)) == []
    (due_later,) = await claim(db, "w2", later)
    assert due_later.idempotency_key.endswith(":later")


async def test_claim_respects_limit(db: Database) -> None:
    member_ids = await new_members(db, 3)
    await enqueue(db, [intent(m) for m in member_ids])
    assert len(await claim(db, "w1", NOW, limit=2)) == 2
    assert len(await claim(db, "w2", NOW, limit=2)) == 1


async def test_expired_lease_returns_row_and_late_worker_cannot_overwrite(db: Database) -> None:
    (m1,) = await new_members(db, 1)
    await enqueue(db, [intent(m1)])
    (first,) = await claim(db, "crashed", NOW, lease_seconds=60)
    assert await claim(db, "w2", NOW + timedelta(seconds=59)) == []
    (again,) = await claim(db, "w2", NOW + timedelta(seconds=60), lease_seconds=60)
    assert again.id == first.id
    assert again.claimed_by == "w2"
    assert again.attempts == 2
    async with db.transaction() as session:
        assert not await outbox.mark_sent(session, first.id, "crashed", NOW)
        assert not await outbox.mark_failed(session, first.id, "crashed", NOW, "timeout")
    assert (await row(db, first.id)).claimed_by == "w2"
    async with db.transaction() as session:
        assert await outbox.mark_sent(session, first.id, "w2", NOW + timedelta(seconds=61))
    sent = await row(db, first.id)
    assert sent.status == outbox.SENT
    assert sent.sent_at == NOW + timedelta(seconds=61)
    assert sent.claimed_until is None
    # Once recorded, no one (not even the owner) can record a second outcome.
    async with db.transaction() as session:
        assert not await outbox.mark_failed(session, first.id, "w2", NOW, "late")
    assert (await row(db, first.id)).status == outbox.SENT


async def test_outcomes_apply_only_for_the_owning_worker(db: Database) -> None:
    m1, m2 = await new_members(db, 2)
    await enqueue(db, [intent(m1), intent(m2)])
    skipped, unreachable = await claim(db, "w1", NOW)
    async with db.transaction() as session:
        assert not await outbox.mark_skipped(session, skipped.id, "w2", "no consent")
        assert not await outbox.mark_unreachable(session, unreachable.id, "w2", "no chat")
    assert (await row(db, skipped.id)).status == outbox.CLAIMED
    async with db.transaction() as session:
        assert await outbox.mark_skipped(session, skipped.id, "w1", "no consent")
        assert await outbox.mark_unreachable(session, unreachable.id, "w1", "no chat")
    assert (await row(db, skipped.id)).status == outbox.SKIPPED
    assert (await row(db, skipped.id)).last_error == "no consent"
    assert (await row(db, unreachable.id)).status == outbox.UNREACHABLE
    assert await claim(db, "w3", NOW + timedelta(days=1)) == []


async def test_failed_with_retry_goes_back_to_pool_then_final_failure(db: Database) -> None:
    (m1,) = await new_members(db, 1)
    await enqueue(db, [intent(m1)])
    (message,) = await claim(db, "w1", NOW)
    retry_at = NOW + timedelta(minutes=10)
    async with db.transaction() as session:
        assert await outbox.mark_failed(
            session, message.id, "w1", NOW, "telegram 502", retry_at=retry_at
        )
    waiting = await row(db, message.id)
    assert (waiting.status, waiting.not_before) == (outbox.PENDING, retry_at)
    assert waiting.claimed_by is None and waiting.claimed_until is None
    assert waiting.last_error == "telegram 502"
    assert await claim(db, "w2", retry_at - timedelta(seconds=1)) == []
    (retried,) = await claim(db, "w2", retry_at)
    assert retried.attempts == 2
    async with db.transaction() as session:
        assert await outbox.mark_failed(session, message.id, "w2", retry_at, "x" * 1000)
    failed = await row(db, message.id)
    assert failed.status == outbox.FAILED
    assert failed.last_error == "x" * outbox.ERROR_MAX
    # A final failure stays put, even after its lease would have run out.
    assert await claim(db, "w3", retry_at + timedelta(days=1)) == []


async def test_concurrent_claimers_take_every_row_exactly_once(db: Database) -> None:
    member_ids = await new_members(db, 6)
    intents = [intent(m, f"visit-{n}") for m in member_ids for n in range(100)]
    assert await enqueue(db, intents) == 600

    async def worker(name: str) -> list[int]:
        taken: list[int] = []
        while True:
            batch = await claim(db, name, NOW, limit=50)
            if not batch:
                return taken
            assert all(m.claimed_by == name for m in batch)
            taken.extend(m.id for m in batch)
            await asyncio.sleep(0)

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(5)))
    claimed = [message_id for taken in results for message_id in taken]
    assert len(claimed) == len(set(claimed)) == 600
    async with db.read() as session:
        owners = dict(
            (await session.execute(select(OutboxMessage.id, OutboxMessage.claimed_by))).all()
        )
        attempts = await session.scalar(select(func.max(OutboxMessage.attempts)))
    assert set(claimed) == set(owners)
    for name, taken in zip([f"w{i}" for i in range(5)], results, strict=True):
        assert all(owners[message_id] == name for message_id in taken)
    assert attempts == 1


async def test_status_counts_by_status_rule_and_channel(db: Database) -> None:
    m1, m2, m3 = await new_members(db, 3)
    await enqueue(
        db,
        [
            intent(m1),
            intent(m2),
            intent(m3),
            intent(m1, rule="maintenance_due", category="service"),
        ],
    )
    first, second, *_ = await claim(db, "w1", NOW, limit=2)
    async with db.transaction() as session:
        # The dispatcher picks the channel; here the first message went out on Telegram.
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id == first.id).values(channel="telegram")
        )
        await outbox.mark_sent(session, first.id, "w1", NOW)
        await outbox.mark_skipped(session, second.id, "w1", "quiet hours")
    async with db.read() as session:
        counts = await outbox.status_counts(session)
    assert counts == [
        OutboxCount(outbox.PENDING, "birthday", None, 1),
        OutboxCount(outbox.PENDING, "maintenance_due", None, 1),
        OutboxCount(outbox.SENT, "birthday", "telegram", 1),
        OutboxCount(outbox.SKIPPED, "birthday", None, 1),
    ]
