"""Chat benchmark: members asking "我的积分" on Telegram, through the whole real stack.

Target (issue 4): with 100,000 members of whom 2,000 have bound a Telegram chat, those 2,000
each send "我的积分" and the bot handles >= 300 updates/s, with p99 <= 50 ms from the moment
an update is handed to the bot in getUpdates to the moment its sendMessage reply arrives.

Everything but the internet is real: python-telegram-bot's Application built by
`bot.channels.telegram.build_application` (its rate limiter, per-chat update processor and
long polling), the conversation core, the domain and the database, against the local Bot API
server of the tests (`tests/support/botapi_server.py`) with flood limits off. That server runs in a
process of its own (`bench.botapi_process`), as Telegram is another machine: its HTTP and JSON
work is not the bot's, and `--profile` and the CPU per update cover the bot's process only. The
members and their points ledgers are bench_balance's generator (same density: 25 ledger lines
per member on average); the 2,000 chat bindings are inserted in bulk.

How members send: `--in-flight N` (default 16) keeps N members waiting for an answer at any
time; each answer lets the next member send, as fast as the bot takes them. That is the
bot's sustained rate with the latency it gives while sustaining it. `--in-flight 0` queues all
2,000 at once instead: the same throughput, but each update then also waits behind up to
1,999 others inside the bot, which is queueing, not service time.

    python -m bench.bench_chat                        # SQLite file under bench/out/
    python -m bench.bench_chat --reuse                # keep the data of the last run
    python -m bench.bench_chat --database-url postgresql+asyncpg://.../memberbot_bench
    python -m bench.bench_chat --profile bench/out/chat.pstats

Exits 1 when a target is missed or a reply is wrong, 2 when the database already holds
other data.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import logging
import math
import os
import pstats
import random
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from bench.bench_balance import TODAY, build
from bench.botapi_process import Records, RemoteBotApi, ReplyRecord, UpdateRecord, replies_by_chat
from bot.channels import telegram
from bot.conversation import Chat
from db.migrate import upgrade
from db.models import ChatBinding, Member, PointsEntry
from db.session import Database
from domain.shop import load_shop_config
from memberbot.app import telegram_options, tune_gc
from memberbot.settings import Settings

SEED = 20_261_125
TARGET_RATE = 300.0
TARGET_P99_MS = 50.0
QUESTION = "我的积分"
CHAT_ID_BASE = 700_000_000  # chat id = base + member id; private chat id == user id
OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_URL = f"sqlite+aiosqlite:///{OUT_DIR / 'bench_chat.db'}"
ROWS_PER_EXECUTE = 5_000
_NUMBER = re.compile(r"\d[\d,\u202f\u00a0]*")
_NO_POINTS = ("没有可用积分", "no points yet")


@dataclass
class Run:
    """One round of members asking: who asked, who was answered (as the pushes tell it), and
    the server's records of the round once drained."""

    chats: list[int]
    asked: set[int] = field(default_factory=set)
    answered: set[int] = field(default_factory=set)
    first_queued: float = 0.0
    bot_cpu_seconds: float = 0.0
    records: Records | None = None


def rank(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _fresh_default_file(url: str) -> None:
    """The default SQLite file is ours to throw away; any other database must be empty."""
    if url != DEFAULT_URL:
        return
    path = Path(make_url(url).database or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _counts(db: Database) -> tuple[int, int]:
    async with db.read() as session:
        members = await session.scalar(select(func.count()).select_from(Member))
        bindings = await session.scalar(
            select(func.count())
            .select_from(ChatBinding)
            .where(ChatBinding.channel == telegram.CHANNEL)
        )
    return int(members or 0), int(bindings or 0)


async def bind_chats(db: Database, members: int, chats: int) -> None:
    """Bind `chats` members chosen at random (seeded) to Telegram private chats, in bulk."""
    chosen = sorted(random.Random(SEED).sample(range(1, members + 1), chats))
    await insert_bindings(
        db, telegram.CHANNEL, {member_id: str(CHAT_ID_BASE + member_id) for member_id in chosen}
    )


async def insert_bindings(db: Database, channel: str, addresses: Mapping[int, str]) -> None:
    """Bind each member (id -> chat address) on `channel`, in bulk, as a redeemed invite
    leaves a binding."""
    bound_at = datetime.combine(TODAY, clock(1, 0), UTC)
    rows = [
        {
            "channel": channel,
            "address": address,
            "member_id": member_id,
            "bound_at": bound_at,
            "via": "invite",
            "active": True,
        }
        for member_id, address in addresses.items()
    ]
    async with db.engine.begin() as conn:
        for start in range(0, len(rows), ROWS_PER_EXECUTE):
            await conn.execute(
                insert(ChatBinding.__table__),  # type: ignore[attr-defined]
                rows[start : start + ROWS_PER_EXECUTE],
            )


async def bound_balances(db: Database, channel: str) -> dict[str, int]:
    """Chat address on `channel` -> the balance its member should be told, from the ledger."""
    async with db.read() as session:
        rows = (
            await session.execute(
                select(ChatBinding.address, func.coalesce(func.sum(PointsEntry.points), 0))
                .select_from(ChatBinding)
                .outerjoin(PointsEntry, PointsEntry.member_id == ChatBinding.member_id)
                .where(ChatBinding.channel == channel, ChatBinding.active)
                .group_by(ChatBinding.address)
            )
        ).all()
    return {str(address): int(balance) for address, balance in rows}


async def prepare_data(db: Database, url: str, args: argparse.Namespace) -> int:
    """Members, ledgers and bindings, built unless --reuse finds them; 2 when the database
    holds someone else's data."""
    config = load_shop_config(None)
    if args.reuse:
        await upgrade(db.engine)
        members, bindings = await _counts(db)
        if members >= args.members and bindings == args.chats:
            print(f"reusing {members:,} members and {bindings:,} Telegram chats")
            return 0
    await db.dispose()
    _fresh_default_file(url)
    await upgrade(db.engine)
    members, bindings = await _counts(db)
    if members or bindings:
        print("the database already holds members: use --reuse or an empty database")
        return 2
    print(f"building {args.members:,} members and {args.ledger_rows:,} ledger rows ...")
    built = await build(url, config, args.members, args.ledger_rows)
    started = time.perf_counter()
    await bind_chats(db, built.members, args.chats)
    print(
        f"build: {built.members:,} members, {built.ledger_rows:,} ledger rows in "
        f"{built.seconds:.1f} s; {args.chats:,} chat bindings in "
        f"{time.perf_counter() - started:.2f} s"
    )
    return 0


def _feeder(server: RemoteBotApi, run: Run, in_flight: int, done: asyncio.Event) -> None:
    """Members who send as soon as a place frees up: each first answer lets the next one in.
    Runs in the bot's process on the pipe's pushes, so it is kept to a few set operations and
    one pipe message per batch of answers."""
    waiting = iter(run.chats)

    def send(count: int) -> None:
        batch = list(itertools.islice(waiting, count))
        if batch:
            run.asked.update(batch)
            server.users([(chat_id, QUESTION) for chat_id in batch])

    def on_replied(replies: list[tuple[int, float]]) -> None:
        fresh = 0
        for chat_id, _at in replies:
            if chat_id in run.asked and chat_id not in run.answered:
                run.answered.add(chat_id)
                fresh += 1
        if len(run.answered) == len(run.chats):
            done.set()
        send(fresh)

    server.on_replied = on_replied
    run.first_queued = time.monotonic()
    send(in_flight if in_flight > 0 else len(run.chats))


async def ask(server: RemoteBotApi, chats: list[int], in_flight: int, timeout: float) -> Run:
    """One round of members asking, until each has an answer or `timeout` seconds pass; the
    round's records are then drained from the server."""
    run = Run(chats=chats)
    done = asyncio.Event()
    cpu_before = time.process_time()
    _feeder(server, run, in_flight, done)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        print(f"  only {len(run.answered):,} of {len(chats):,} answered within {timeout:.0f} s")
    finally:
        server.on_replied = None
        run.bot_cpu_seconds = time.process_time() - cpu_before
    run.records = await server.drain()
    return run


def _match(run: Run) -> tuple[dict[int, UpdateRecord], dict[int, ReplyRecord], int]:
    """Each chat's update of the round, its first answer, and how many messages came beyond
    one answer per chat."""
    assert run.records is not None
    update_of = {update.chat_id: update for update in run.records.updates}
    reply_of: dict[int, ReplyRecord] = {}
    extra = 0
    for chat_id, replies in replies_by_chat(run.records.replies).items():
        update = update_of.get(chat_id)
        if update is None:
            continue
        answers = [reply for reply in replies if reply.at >= update.queued_at]
        if answers:
            reply_of[chat_id] = answers[0]
            extra += len(answers) - 1
    return update_of, reply_of, extra


def report(run: Run, balances: dict[int, int], server_cpu_seconds: float) -> bool:
    """Print the figures; True when both targets are met and every answer is right."""
    assert run.records is not None
    update_of, reply_of, extra_replies = _match(run)
    answered = len(reply_of)
    last_reply = max((reply.at for reply in reply_of.values()), default=run.first_queued)
    seconds = last_reply - run.first_queued
    rate = answered / seconds if seconds > 0 else 0.0
    latencies = sorted(
        (reply.at - (update_of[chat_id].served_at or math.inf)) * 1000
        for chat_id, reply in reply_of.items()
    )
    end_to_end = sorted(
        (reply.at - update_of[chat_id].queued_at) * 1000 for chat_id, reply in reply_of.items()
    )
    wrong = [
        chat_id
        for chat_id, reply in reply_of.items()
        if not tells_balance(reply.text, balances[chat_id])
    ]
    print(
        f"updates: {answered:,} of {len(run.chats):,} answered in {seconds:.2f} s "
        f"(first queued -> last reply): {rate:,.0f} updates/s"
    )
    if latencies:
        for name, values in (("served -> reply", latencies), ("queued -> reply", end_to_end)):
            print(
                f"  {name}: mean {sum(values) / len(values):.1f} ms   "
                f"p50 {rank(values, 50):.1f}   p95 {rank(values, 95):.1f}   "
                f"p99 {rank(values, 99):.1f}   max {values[-1]:.1f} ms"
            )
    print(
        f"  replies: {len(wrong)} wrong balance, {extra_replies} extra messages, "
        f"{run.records.rejected_429} x 429; calls {run.records.calls}"
    )
    per_update = 1000 / answered if answered else math.nan
    print(
        f"  CPU per update: bot process {run.bot_cpu_seconds * per_update:.2f} ms "
        f"({run.bot_cpu_seconds:.2f} s in all), Bot API server process "
        f"{server_cpu_seconds * per_update:.2f} ms"
    )
    p99 = rank(latencies, 99) if latencies else math.inf
    rate_met = rate >= TARGET_RATE and answered == len(run.chats)
    p99_met = p99 <= TARGET_P99_MS
    print(f"  target >= {TARGET_RATE:g} updates/s: {'MET' if rate_met else 'MISSED'}")
    print(
        f"  target p99 <= {TARGET_P99_MS:g} ms (served -> reply): {'MET' if p99_met else 'MISSED'}"
    )
    return rate_met and p99_met and not wrong and not extra_replies


def tells_balance(text: str, balance: int) -> bool:
    """Whether an answer states the member's balance (zh_CN or en, as the member's locale)."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    if balance <= 0:
        return any(phrase in first_line for phrase in _NO_POINTS)
    number = _NUMBER.search(first_line)
    return number is not None and int(re.sub(r"\D", "", number.group())) == balance


async def measure(db: Database, args: argparse.Namespace) -> bool:
    config = load_shop_config(None)
    balances = {
        int(address): balance
        for address, balance in (await bound_balances(db, telegram.CHANNEL)).items()
    }
    chats = sorted(balances)
    now = datetime.combine(TODAY, clock(2, 0), UTC)  # 10:00 in Shanghai on the data's day
    async with RemoteBotApi(flood_limits=False) as server:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            telegram_token=server.token,
            telegram_base_url=server.base_url,
            # The local server's flood limits are off and so is the bot-wide pace: this
            # measures our own headroom, not Telegram's 30 messages/s.
            telegram_rate_per_second=0 if args.no_overall_limit else 30,
        )
        chat = Chat(db, config, clock=lambda: now, region=settings.default_region)
        options = telegram_options(settings)
        application = telegram.build_application(chat, options, concurrency=args.concurrency)
        async with telegram.running(application, options):
            tune_gc()  # as `memberbot serve` does once it has started
            if args.warmup:
                print(f"warm-up: {args.warmup} of the members ask first")
                await ask(server, chats[: args.warmup], args.in_flight, args.timeout)
            before = await server.drain()  # the start-up calls, and the server's CPU so far
            mode = f"{args.in_flight} in flight" if args.in_flight else "all queued at once"
            print(f"{len(chats):,} members each send {QUESTION!r} ({mode}) ...")
            profiler = cProfile.Profile() if args.profile else None
            load_before = os.getloadavg()[0]
            if profiler is not None:
                profiler.enable()
            run = await ask(server, chats, args.in_flight, args.timeout)
            if profiler is not None:
                profiler.disable()
    assert run.records is not None
    met = report(run, balances, run.records.server_cpu_seconds - before.server_cpu_seconds)
    print(
        f"  machine load average (1 min) before/after: {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    if profiler is not None:
        _print_profile(profiler, args.profile)
    return met


def _print_profile(profiler: cProfile.Profile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
        print(f"\nprofile of the measured run, by {order} (all of it: {path}):")
        print(out.getvalue())


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    url: str = args.database_url
    backend = make_url(url).get_backend_name()
    print(f"bench_chat on {backend}: {make_url(url).render_as_string(hide_password=True)}")
    db = Database.from_url(url)
    try:
        status = await prepare_data(db, url, args)
        if status:
            return status
        met = await measure(db, args)
    finally:
        await db.dispose()
    return 0 if met else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--ledger-rows", type=int, default=2_500_000)
    parser.add_argument("--chats", type=int, default=2_000, help="members bound to a chat")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=telegram.DEFAULT_CONCURRENCY,
        help="members waiting for an answer at any time; 0 = all queued at once",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=telegram.DEFAULT_CONCURRENCY,
        help="updates the bot processes at once",
    )
    parser.add_argument("--warmup", type=int, default=100, help="members who ask first, unmeasured")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--telegram-pace",
        dest="no_overall_limit",
        action="store_false",
        help="keep the bot-wide 30 messages/s pace of real Telegram (off by default: the "
        "benchmark measures our own headroom, as the issue asks)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    parser.add_argument(
        "--reuse", action="store_true", help="skip the build when the database holds the data"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
