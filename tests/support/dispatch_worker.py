"""A dispatcher process for the crash test (tests/test_dispatch_crash.py): it sends what the
outbox holds until nothing is left to send, then prints its totals as JSON and exits 0.

Configured like `memberbot serve`, from `MEMBERBOT_*` variables (database URL, Telegram token
and base URL, rates, batch), plus `DISPATCH_WORKER_LEASE_SECONDS` so a restarted process does
not wait five minutes for the killed one's leases.

    python -m tests.support.dispatch_worker    # from the repository root
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict

from sqlalchemy import func, insert, literal, select, update

from bot.channels.telegram import TelegramSender
from db.models import ChatBinding, Member, OutboxMessage
from db.session import Database
from db.types import utcnow
from domain.shop import load_shop_config
from memberbot.app import dispatch_policy
from memberbot.settings import Settings
from scheduler import outbox
from scheduler.dispatch import Dispatcher, DispatchSummary
from scheduler.outbox import Intent

ROWS_PER_EXECUTE = 5_000


async def fill(
    db: Database, members: int, *, prefix: str, chat_base: int, per_member: int = 1
) -> list[int]:
    """`members` members, each with a Telegram chat (`chat_base` + member id) and
    `per_member` queued service messages whose text names the message: the load the crash
    test and the dispatch benchmark both send. Returns the member ids."""
    now = utcnow()
    async with db.transaction() as session:
        for start in range(0, members, ROWS_PER_EXECUTE):
            await session.execute(
                insert(Member),
                [
                    {
                        "member_ref": f"{prefix}{i:06d}",
                        "name": "",
                        "locale": "zh_CN",
                        "tier_code": "standard",
                        "tier_since": now,
                        "marketing_consent": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(start + ROWS_PER_EXECUTE, members))
                ],
            )
        ids = list(
            (
                await session.scalars(select(Member.id).where(Member.member_ref.like(f"{prefix}%")))
            ).all()
        )
        for start in range(0, len(ids), ROWS_PER_EXECUTE):
            await session.execute(
                insert(ChatBinding),
                [
                    {
                        "channel": "telegram",
                        "address": str(chat_base + member_id),
                        "member_id": member_id,
                        "bound_at": now,
                        "via": "invite",
                        "active": True,
                    }
                    for member_id in ids[start : start + ROWS_PER_EXECUTE]
                ],
            )
        intents = [
            Intent(
                member_id=member_id,
                rule=prefix.lower(),
                occurrence=str(n),
                category=outbox.SERVICE,
                template_key=prefix.lower(),
                locale="zh_CN",
                not_before=now,
            )
            for member_id in ids
            for n in range(per_member)
        ]
        assert await outbox.enqueue(session, intents) == len(intents)
        await session.execute(
            update(OutboxMessage).values(body=literal("message ") + OutboxMessage.idempotency_key)
        )
    return ids


async def dispatch_until_sent(dispatcher: Dispatcher, db: Database) -> DispatchSummary:
    """Rounds until nothing is left to send, waiting out retries and other workers' leases."""
    total = DispatchSummary()
    while True:
        summary = await dispatcher.run_once()
        total.add(summary)
        if summary.claimed:
            continue
        if not await unfinished(db):
            return total
        await asyncio.sleep(0.2)


async def unfinished(db: Database) -> int:
    """Rows still to be sent: pending, or claimed (perhaps by a process that died)."""
    async with db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status.in_((outbox.PENDING, outbox.CLAIMED)))
        )
    return int(count or 0)


async def main() -> int:
    settings = Settings()
    if not settings.telegram_token:
        print("MEMBERBOT_TELEGRAM_TOKEN is not set", file=sys.stderr)
        return 2
    lease = int(os.environ.get("DISPATCH_WORKER_LEASE_SECONDS", "300"))
    policy = dispatch_policy(
        settings,
        load_shop_config(settings.shop_config),
        lease_seconds=lease,
        lease_margin_seconds=min(30.0, lease / 4),
    )
    db = Database.from_url(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    total = DispatchSummary()
    try:
        async with TelegramSender(settings.telegram_token, settings.telegram_base_url) as sender:
            dispatcher = Dispatcher(db, {"telegram": sender}, policy)
            total = await dispatch_until_sent(dispatcher, db)
    finally:
        await db.dispose()
    print(json.dumps(asdict(total)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
