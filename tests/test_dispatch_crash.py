"""A dispatcher process SIGKILLed in the middle of 5,000 messages, then restarted: every message
arrives, and none twice beyond the batch that was in flight; on SQLite and PostgreSQL.

The Bot API server runs here, with its flood limits on; the dispatcher runs in a child process
(`python -m tests.support.dispatch_worker`) pointed at it. To keep the test short, both sides'
overall limit is raised from Telegram's 30/s (the crash property does not depend on the rate:
at 30/s the run would take three minutes); the per-chat limit stays Telegram's (1/s, bursts of
3), and each member gets two messages so lanes with more than one message are in play.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from db.models import ChatBinding, OutboxMessage
from db.session import Database
from scheduler import outbox
from tests.support.botapi_server import BotApiServer
from tests.support.dispatch_worker import fill

REPO = Path(__file__).resolve().parent.parent
WORKER = "tests.support.dispatch_worker"
MEMBERS = 2_500
PER_MEMBER = 2
MESSAGES = MEMBERS * PER_MEMBER
BATCH = 200
CHAT_BASE = 10_000_000
KILL_AFTER = 2_000
SERVER_RATE = 600.0
DISPATCH_RATE = 400.0


def worker_env(db: Database, server: BotApiServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERBOT_")}
    env.update(
        {
            "MEMBERBOT_DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
            "MEMBERBOT_TELEGRAM_TOKEN": server.token,
            "MEMBERBOT_TELEGRAM_BASE_URL": server.base_url,
            "MEMBERBOT_TELEGRAM_RATE_PER_SECOND": str(DISPATCH_RATE),
            "MEMBERBOT_DISPATCH_BATCH": str(BATCH),
            "MEMBERBOT_QUIET_HOURS": "off",
            "MEMBERBOT_LOG_LEVEL": "WARNING",
            "DISPATCH_WORKER_LEASE_SECONDS": "6",
        }
    )
    return env


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        WORKER,
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigkill_mid_dispatch_then_restart_delivers_everything(db: Database) -> None:
    await fill(db, MEMBERS, prefix="CRASH", chat_base=CHAT_BASE, per_member=PER_MEMBER)
    async with BotApiServer(global_per_second=SERVER_RATE) as server:
        env = worker_env(db, server)
        first = await start_worker(env)
        deadline = time.monotonic() + 120
        while len(server.sent) < KILL_AFTER:
            assert first.returncode is None, (await first.stderr.read()).decode()
            assert time.monotonic() < deadline, "the first worker made no progress"
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert first.returncode == -signal.SIGKILL
        before_restart = len(server.sent)

        second = await start_worker(env)
        out, err = await asyncio.wait_for(second.communicate(), timeout=180)
        assert second.returncode == 0, err.decode()
        totals = json.loads(out.decode().strip().splitlines()[-1])
        sent = list(server.sent)

    assert before_restart < MESSAGES  # the kill really came mid-way
    async with db.read() as session:
        statuses = dict(
            (
                await session.execute(
                    select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
                )
            ).all()
        )
        expected = {
            (int(address), f"message {key}")
            for address, key in await session.execute(
                select(ChatBinding.address, OutboxMessage.idempotency_key).join(
                    ChatBinding, ChatBinding.member_id == OutboxMessage.member_id
                )
            )
        }
    assert statuses == {outbox.SENT: MESSAGES}
    delivered = Counter((message.chat_id, message.text) for message in sent)
    assert set(delivered) == expected  # nothing lost, nothing unexpected
    doubled = sum(count - 1 for count in delivered.values())
    assert doubled <= BATCH
    assert totals["lost"] == 0 and totals["sent"] >= MESSAGES - before_restart
    print(f"killed after {before_restart} sends; {doubled} sent twice (batch {BATCH})")
