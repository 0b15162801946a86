"""A dispatcher process for the crash test (tests/test_dispatch_crash.py): it sends what the
outbox holds until nothing is left to send, then prints its totals as JSON and exits 0.

Configured like `memberbot serve`, from `MEMBERBOT_*` variables (database URL, Telegram token
and base URL, rates, batch), plus `DISPATCH_WORKER_LEASE_SECONDS` so a restarted process does
not wait five minutes for the killed one's leases.

    python tests/dispatch_worker.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict

from sqlalchemy import func, select

from bot.channels.telegram import TelegramSender
from db.models import OutboxMessage
from db.session import Database
from memberbot.settings import Settings
from scheduler import outbox
from scheduler.dispatch import Dispatcher, DispatchPolicy, DispatchSummary


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
    policy = DispatchPolicy.from_settings(
        settings, lease_seconds=lease, lease_margin_seconds=min(30.0, lease / 4)
    )
    db = Database.from_url(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    total = DispatchSummary()
    try:
        async with TelegramSender(settings.telegram_token, settings.telegram_base_url) as sender:
            dispatcher = Dispatcher(db, {"telegram": sender}, policy)
            while True:
                summary = await dispatcher.run_once()
                total.add(summary)
                if summary.claimed:
                    continue
                if not await unfinished(db):
                    break
                await asyncio.sleep(0.2)
    finally:
        await db.dispose()
    print(json.dumps(asdict(total)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
