"""Dispatch benchmark: 10,000 queued messages through the local Bot API server with Telegram's
limits on (30 messages/s overall, 1/s per chat with bursts of 3).

Target (issue): sustained rate ≥ 95 % of the 30/s limit, no message lost, none doubled, 429
answers ≤ 1 % of sends.

Each message goes to its own member and chat (bulk inserted); the dispatcher runs with the
default settings (`memberbot.app.dispatch_policy(Settings(), …)`: batch 200, 30/s, 1 s per chat),
except quiet hours, which are switched off so the figure does not depend on the hour the
benchmark is run at. The server runs in this process, on 127.0.0.1, and the real
python-telegram-bot `Bot` (through `TelegramSender`) talks HTTP to it.

    python -m bench.bench_dispatch                       # SQLite file under bench/out/
    python -m bench.bench_dispatch --database-url postgresql+asyncpg://.../memberbot_bench

Exits 1 when a target is missed, 2 when the database already holds messages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.channels.telegram import TelegramSender
from db.models import OutboxMessage
from db.session import Database
from domain.shop import load_shop_config
from memberbot.app import dispatch_policy
from memberbot.runtime import prepare
from memberbot.settings import Settings
from scheduler import outbox
from scheduler.dispatch import Dispatcher, DispatchSummary
from tests.support.botapi_server import BotApiServer
from tests.support.dispatch_worker import dispatch_until_sent, fill

OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_URL = f"sqlite+aiosqlite:///{OUT_DIR / 'bench_dispatch.db'}"
TELEGRAM_RATE = 30.0
TARGET_RATE_SHARE = 0.95
TARGET_429_SHARE = 0.01
CHAT_BASE = 500_000_000


@dataclass(frozen=True)
class Result:
    messages: int
    accepted: int
    rejected_429: int
    lost: int
    doubled: int
    span_seconds: float
    wall_seconds: float
    summary: DispatchSummary

    @property
    def rate(self) -> float:
        return (self.accepted - 1) / self.span_seconds if self.span_seconds > 0 else 0.0

    @property
    def share_429(self) -> float:
        attempts = self.accepted + self.rejected_429
        return self.rejected_429 / attempts if attempts else 0.0


async def dispatch_all(db: Database, server: BotApiServer) -> DispatchSummary:
    """What `memberbot serve` does, until the queue is empty."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    policy = dispatch_policy(settings, load_shop_config(None), quiet_hours=None)
    async with TelegramSender(server.token, server.base_url) as sender:
        dispatcher = Dispatcher(db, {"telegram": sender}, policy)
        return await dispatch_until_sent(dispatcher, db)


async def measure(db: Database, count: int) -> Result:
    async with BotApiServer() as server:
        started = time.monotonic()
        summary = await dispatch_all(db, server)
        wall = time.monotonic() - started
        sent = list(server.sent)
        rejected = server.rejected_429
    async with db.read() as session:
        delivered_rows = int(
            await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == outbox.SENT)
            )
            or 0
        )
    texts = Counter((message.chat_id, message.text) for message in sent)
    return Result(
        messages=count,
        accepted=len(sent),
        rejected_429=rejected,
        lost=count - delivered_rows,
        doubled=sum(n - 1 for n in texts.values()),
        span_seconds=sent[-1].at - sent[0].at if len(sent) > 1 else 0.0,
        wall_seconds=wall,
        summary=summary,
    )


def report(result: Result) -> bool:
    share = result.rate / TELEGRAM_RATE
    print(f"messages           {result.messages:,}")
    print(f"accepted sends     {result.accepted:,} in {result.span_seconds:.1f} s")
    print(f"sustained rate     {result.rate:.2f}/s = {share:.1%} of {TELEGRAM_RATE:g}/s")
    print(f"wall time          {result.wall_seconds:.1f} s (claiming and recording included)")
    print(f"lost               {result.lost}")
    print(f"doubled            {result.doubled}")
    print(f"429 answers        {result.rejected_429} = {result.share_429:.2%} of sends")
    print(f"dispatcher summary {result.summary}")
    ok = (
        share >= TARGET_RATE_SHARE
        and result.lost == 0
        and result.doubled == 0
        and result.share_429 <= TARGET_429_SHARE
    )
    print("targets met" if ok else "TARGET MISSED")
    return ok


async def main(url: str, count: int) -> int:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
    db = Database.from_url(url)
    try:
        await prepare(db, load_shop_config(None))
        async with db.read() as session:
            if await session.scalar(select(func.count()).select_from(OutboxMessage)):
                print("the database already holds outbox messages; use an empty one")
                return 2
        await fill(db, count, prefix="BENCH", chat_base=CHAT_BASE)
        return 0 if report(await measure(db, count)) else 1
    finally:
        await db.dispose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.database_url, args.messages)))


if __name__ == "__main__":
    cli()
