"""WeChat webhook benchmark: members asking "我的积分" through `memberbot serve`'s webhook.

Target (issue 13): 1,000 members each send a text to the webhook, the server in its own
process; p99 from request to passive reply <= 100 ms on SQLite, and >= 300 requests/s.

The server is `memberbot serve` itself, started with `python -m memberbot serve` and settings
in its environment, exactly as a shop runs it: the WeChat webhook on (plain mode, or safe mode
with `--aes`), Telegram off, the scheduler and the owed-reply loop running as they always do
(the dispatcher looks at an empty outbox every 5 s; the owed-reply loop reads every 2 s and
finds nothing, since no passive reply needs WeChat's API: its base URL points at a closed
local port). A daily job falling inside the run would be measured too, so the chain's local
time is checked against the schedule first and a warning printed.

Members and their points ledgers are bench_balance's generator (25 ledger lines per member on
average, as bench_chat), every member bound to a WeChat openid in bulk. The client plays
WeChat's servers (`tests/support/wechat_platform.py`: signed plain-mode XML, or encrypted in
safe mode) with httpx, `--concurrency` requests in flight (32 by default) over keep-alive
connections, each with a fresh MsgId; latency is the HTTP exchange alone, from sending the
request to having read the passive reply. Every reply is checked afterwards: HTTP 200, XML
(decrypted and its msg_signature checked in safe mode), a text to that member from our account,
stating that member's balance from the ledger. A wrong answer counts as a failure, not as a
fast one. The server's stored deliveries (`inbound_message`) are counted too: each request
one row, `answered` (an `owed` one overran the 4 s budget).

The reference, in the same run and with the same client: a bare Starlette app in its own
process (`bench/wechat_reference.py`) that checks the signature and answers a fixed passive
reply without a database. Our requests/s as a share of its requests/s compares machines.

    python -m bench.bench_wechat                          # SQLite file under bench/out/
    python -m bench.bench_wechat --aes                    # safe mode
    python -m bench.bench_wechat --database-url postgresql+asyncpg://.../memberbot_bench_wechat
    python -m bench.bench_wechat --profile bench/out/wechat.pstats   # the server under cProfile

Exits 0 when every reply is right and both targets are met, 1 when a target is missed, 2 when
the database already holds members, 3 when a request failed or a reply was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import math
import os
import pstats
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.bench_balance import build
from bench.bench_chat import bound_balances, insert_bindings, rank, tells_balance
from bench.wechat_reference import FIXED_TEXT
from bot.channels import wechat
from db.migrate import upgrade
from db.models import InboundMessage, Member
from db.session import Database
from domain import inbound
from domain.shop import DEFAULT_CONFIG, load_shop_config
from memberbot.app import HEALTH_PATH
from memberbot.settings import Settings
from scheduler import jobs
from tests.support.wechat_platform import (
    ACCOUNT,
    AES_KEY,
    APP_ID,
    APP_SECRET,
    TOKEN,
    WeChatServer,
    text_xml,
)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
DEFAULT_URL = f"sqlite+aiosqlite:///{OUT_DIR / 'bench_wechat.db'}"
QUESTION = "我的积分"
TARGET_RATE = 300.0
TARGET_P99_MS = 100.0
LEDGER_ROWS_PER_MEMBER = 25
SEED = 20_261_203
MSG_ID_BASE = 7_100_000_000_000_000_000  # WeChat's MsgIds are 64-bit
MSG_IDS_PER_RUN = 100_000_000
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0  # WeChat gives up after 5 s; a slower answer is an error here too
ROWS_PER_EXECUTE = 5_000
_NONCE = string.ascii_letters + string.digits


def openid_of(member_id: int) -> str:
    """A 28-character openid per member, in WeChat's alphabet."""
    return f"oBench{member_id:022d}"


# -- data -------------------------------------------------------------------------------------


async def _counts(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Member)) or 0)


async def bind_all(db: Database) -> int:
    """Bind every member to a WeChat openid, in bulk, as if each had redeemed an invite."""
    async with db.read() as session:
        member_ids = list((await session.scalars(select(Member.id).order_by(Member.id))).all())
    addresses = {member_id: openid_of(member_id) for member_id in member_ids if member_id}
    await insert_bindings(db, wechat.CHANNEL, addresses)
    return len(addresses)


async def prepare_data(db: Database, url: str, args: argparse.Namespace) -> int:
    """A fresh chain: the default SQLite file is rebuilt; any other database must be empty
    (2 when it is not)."""
    if url == DEFAULT_URL:
        path = Path(make_url(url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    await upgrade(db.engine)
    if await _counts(db):
        print("the database already holds members: give an empty database")
        return 2
    ledger_rows = args.ledger_rows or args.members * LEDGER_ROWS_PER_MEMBER
    print(f"building {args.members:,} members and {ledger_rows:,} ledger rows ...")
    built = await build(url, load_shop_config(None), args.members, ledger_rows)
    started = time.perf_counter()
    bound = await bind_all(db)
    print(
        f"build: {built.members:,} members, {built.ledger_rows:,} ledger rows in "
        f"{built.seconds:.1f} s; {bound:,} WeChat bindings in "
        f"{time.perf_counter() - started:.2f} s"
    )
    return 0


async def stored_deliveries(db: Database) -> Counter[str]:
    """The server's record of the deliveries it claimed, by status."""
    async with db.read() as session:
        rows = (
            await session.execute(
                select(InboundMessage.status, func.count()).group_by(InboundMessage.status)
            )
        ).all()
    return Counter({str(status): int(count) for status, count in rows})


# -- server processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: io.BufferedRandom

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, size: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-size:]


def _clean_env(**settings: str) -> dict[str, str]:
    """This environment without any MEMBERBOT_ setting of the caller's, plus `settings`, and
    this checkout first on the path (not whichever memberbot is installed)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMBERBOT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def serve_env(url: str, port: int, *, aes: bool) -> dict[str, str]:
    """`memberbot serve` with the WeChat webhook only, as a shop configures it."""
    return _clean_env(
        MEMBERBOT_DATABASE_URL=url,
        MEMBERBOT_SHOP_CONFIG=str(DEFAULT_CONFIG),
        MEMBERBOT_HTTP_HOST="127.0.0.1",
        MEMBERBOT_HTTP_PORT=str(port),
        MEMBERBOT_TELEGRAM_TOKEN="",  # wins over a .env
        MEMBERBOT_WECHAT_TOKEN=TOKEN,
        MEMBERBOT_WECHAT_APP_ID=APP_ID,
        MEMBERBOT_WECHAT_APP_SECRET=APP_SECRET,
        MEMBERBOT_WECHAT_AES_KEY=AES_KEY if aes else "",
        # Passive replies need no API call; an owed reply would fail fast here, never leave.
        MEMBERBOT_WECHAT_API_BASE_URL=f"http://127.0.0.1:{free_port()}",
    )


@contextlib.asynccontextmanager
async def server_process(
    name: str, argv: Sequence[str], env: dict[str, str], port: int
) -> AsyncIterator[ServerProcess]:
    """A server in a process of its own, ready once its /healthz answers 200; stopped with
    SIGTERM (both servers stop cleanly on it, and cProfile then writes its file)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the process ends
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(name, process, f"http://127.0.0.1:{port}", log)
    try:
        await _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        log.close()


async def _wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited {server.process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(HEALTH_PATH)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(
        f"{server.name} not healthy within {START_TIMEOUT:g} s:\n{server.log_tail()}"
    )


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request: to whom, when it was sent and answered (perf_counter), what came back."""

    openid: str
    sent: float
    answered: float
    status: int
    body: str


@dataclass
class Round:
    exchanges: list[Exchange] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0


async def hammer(
    senders: Sequence[WeChatServer], openids: Sequence[str], first_msg_id: int
) -> list[Exchange]:
    """Each openid in `openids` sends QUESTION once, one request in flight per sender: a
    sender sends its next request as soon as its previous one is answered."""
    rng = random.Random(first_msg_id)
    work = iter(enumerate(openids))
    done: list[Exchange] = []

    async def sender(wx: WeChatServer) -> None:
        for index, openid in work:
            nonce = "".join(rng.choices(_NONCE, k=10))
            xml = text_xml(openid, QUESTION, first_msg_id + index, int(time.time()))
            params, body = wx.sealed(xml, query=wx.query(nonce=nonce))
            sent = time.perf_counter()
            try:
                response = await wx.client.post(
                    wx.path, params=params, content=body, headers={"Content-Type": "text/xml"}
                )
                status, text = response.status_code, response.text
            except httpx.HTTPError as exc:
                status, text = 0, type(exc).__name__
            done.append(Exchange(openid, sent, time.perf_counter(), status, text))

    await asyncio.gather(*(sender(wx) for wx in senders))
    return done


def problem(wx: WeChatServer, exchange: Exchange, right: Callable[[str, str], bool]) -> str | None:
    """What is wrong with an answer, None when it is the passive reply that member should get.
    A problem starting "HTTP" is an error (no answer in time); any other is a wrong answer."""
    if exchange.status != 200:
        return f"HTTP {exchange.status or exchange.body}"
    if exchange.body == wechat.SUCCESS:
        return "HTTP 200 `success` without the reply (past the budget: owed)"
    try:
        reply = wx.opened(exchange.body)
    except Exception as exc:  # not XML, a wrong msg_signature, another AppID
        return f"not a passive reply ({type(exc).__name__})"
    if reply.tag != "xml" or reply.findtext("MsgType") != "text":
        return "not a text reply"
    if reply.findtext("ToUserName") != exchange.openid or reply.findtext("FromUserName") != ACCOUNT:
        return "addressed wrongly"
    if not (reply.findtext("CreateTime") or "").isdigit():
        return "no CreateTime"
    if not right(exchange.openid, reply.findtext("Content") or ""):
        return "wrong text"
    return None


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    rate: float
    latencies_ms: list[float]
    failed: Counter[str]

    @property
    def p99(self) -> float:
        return rank(self.latencies_ms, 99) if self.latencies_ms else math.inf


def figures(
    wx: WeChatServer, exchanges: list[Exchange], right: Callable[[str, str], bool]
) -> Figures:
    seconds = max(e.answered for e in exchanges) - min(e.sent for e in exchanges)
    failed: Counter[str] = Counter()
    for exchange in exchanges:
        found = problem(wx, exchange, right)
        if found is not None:
            failed[found] += 1
    latencies = sorted((e.answered - e.sent) * 1000 for e in exchanges)
    rate = len(exchanges) / seconds if seconds > 0 else 0.0
    return Figures(len(exchanges), seconds, rate, latencies, failed)


def show(name: str, result: Figures, round_: Round) -> None:
    values = result.latencies_ms
    errors = sum(n for what, n in result.failed.items() if what.startswith("HTTP"))
    wrong = sum(result.failed.values()) - errors
    print(f"{name}:")
    print(
        f"  {result.requests:,} requests in {result.seconds:.2f} s "
        f"(first sent -> last answered): {result.rate:,.0f} requests/s"
    )
    print(
        f"  request -> passive reply: mean {sum(values) / len(values):.1f} ms   "
        f"p50 {rank(values, 50):.1f}   p95 {rank(values, 95):.1f}   "
        f"p99 {rank(values, 99):.1f}   max {values[-1]:.1f} ms"
    )
    right = result.requests - sum(result.failed.values())
    details = ", ".join(f"{n} {what}" for what, n in result.failed.most_common())
    print(
        f"  replies: {right:,} right, {wrong} wrong, {errors} errors"
        + (f" ({details})" if details else "")
    )
    per_request = 1000 / result.requests
    print(
        f"  CPU per request: server process {round_.server_cpu_seconds * per_request:.2f} ms, "
        f"client process {round_.client_cpu_seconds * per_request:.2f} ms"
    )


async def measure(
    server: ServerProcess, safe: bool, plan: list[str], args: argparse.Namespace, run_number: int
) -> tuple[Round, Round]:
    """A warm-up round (unmeasured) then the measured one. Each request in flight has a client
    and a keep-alive connection of its own, made before the warm-up: one httpx client with
    many connections scans its whole pool on every request (httpcore's pool is O(connections)
    per request), which cost the client process 5 ms of CPU per request at 32 in flight, more
    than the reference server's whole work."""
    async with contextlib.AsyncExitStack() as stack:
        senders = [
            WeChatServer(
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=server.base_url,
                        limits=httpx.Limits(max_connections=1),
                        timeout=REQUEST_TIMEOUT,
                    )
                ),
                safe=safe,
            )
            for _ in range(args.concurrency)
        ]
        warm_base = MSG_ID_BASE + (2 * run_number) * MSG_IDS_PER_RUN
        warm = await _round(server, senders, plan[: args.warmup], warm_base)
        measured = await _round(server, senders, plan, warm_base + MSG_IDS_PER_RUN)
    return warm, measured


async def _round(
    server: ServerProcess, senders: Sequence[WeChatServer], openids: Sequence[str], first: int
) -> Round:
    round_ = Round()
    if not openids:
        return round_
    cpu, server_cpu = time.process_time(), server.cpu_seconds()
    round_.exchanges = await hammer(senders, openids, first)
    round_.client_cpu_seconds = time.process_time() - cpu
    round_.server_cpu_seconds = server.cpu_seconds() - server_cpu
    return round_


# -- the run ----------------------------------------------------------------------------------


def jobs_near(minutes: float) -> list[str]:
    """`serve`'s scheduled jobs due within `minutes` from now, in the chain's time zone (the
    dispatcher's 5-second tick aside): they would run during the measurement."""
    zone = ZoneInfo(load_shop_config(None).zone.key)
    now = datetime.now(zone)
    daily = {
        "lifecycle rules": jobs.parse_clock(Settings.model_fields["daily_rules_at"].default),
        "points expiry": jobs.POINTS_EXPIRY_AT,
        "member segments": jobs.SEGMENTS_AT,
        "tier review (1st of the month)": jobs.TIER_REVIEW_AT,
    }
    near = []
    for step in range(int(minutes) + 1):
        at = now + timedelta(minutes=step)
        if at.minute == jobs.BOOKING_REMINDERS_MINUTE:
            near.append(f"booking reminders at {at:%H:%M}")
        near += [
            f"{name} at {at:%H:%M}"
            for name, t in daily.items()
            if (at.hour, at.minute) == (t.hour, t.minute)
        ]
    return near


def right_for(balances: dict[str, int]) -> Callable[[str, str], bool]:
    return lambda openid, text: tells_balance(text, balances[openid])


def plan_for(balances: dict[str, int], requests: int) -> list[str]:
    """Who sends, in order: every member once in a seeded random order, again if more
    requests are asked for than there are members."""
    members = sorted(balances)
    random.Random(SEED).shuffle(members)
    return list(itertools.islice(itertools.cycle(members), requests))


async def run(args: argparse.Namespace) -> int:
    url: str = args.database_url
    backend = make_url(url).get_backend_name()
    print(f"bench_wechat on {backend}: {make_url(url).render_as_string(hide_password=True)}")
    db = Database.from_url(url)
    try:
        status = await prepare_data(db, url, args)
        if status:
            return status
        balances = await bound_balances(db, wechat.CHANNEL)
    finally:
        await db.dispose()
    plan = plan_for(balances, args.requests or len(balances))
    mode = "safe mode (AES)" if args.aes else "plain mode"
    print(
        f"{len(balances):,} members, {len(plan):,} requests of {QUESTION!r} in {mode}, "
        f"{args.concurrency} in flight, after {min(args.warmup, len(plan))} unmeasured"
    )
    for warning in jobs_near(3):
        print(f"  warning: serve's scheduler runs {warning}, during this measurement")
    load_before = os.getloadavg()[0]

    port = free_port()
    reference_argv = [sys.executable, "-m", "bench.wechat_reference", "--port", str(port)]
    async with server_process(
        "reference", [*reference_argv, *(["--aes"] if args.aes else [])], _clean_env(), port
    ) as server:
        _warm, ref_round = await measure(server, args.aes, plan, args, 0)
    async with httpx.AsyncClient() as unused:
        wx = WeChatServer(unused, safe=args.aes)  # reads (and decrypts) the replies
    reference = figures(wx, ref_round.exchanges, lambda _openid, text: text == FIXED_TEXT)
    show(
        "reference: bare Starlette, signature + fixed passive reply, no database",
        reference,
        ref_round,
    )

    port = free_port()
    argv = [sys.executable, "-m", "memberbot", "serve"]
    if args.profile:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(args.profile),
            "-m",
            "memberbot",
            "serve",
        ]
    async with server_process(
        "memberbot serve", argv, serve_env(url, port, aes=args.aes), port
    ) as server:
        warm, our_round = await measure(server, args.aes, plan, args, 1)
    right = right_for(balances)
    ours = figures(wx, our_round.exchanges, right)
    show(f"memberbot serve: the WeChat webhook on {backend}", ours, our_round)
    warm_failed = figures(wx, warm.exchanges, right).failed if warm.exchanges else Counter()

    db = Database.from_url(url)
    try:
        stored = await stored_deliveries(db)
    finally:
        await db.dispose()
    sent = len(warm.exchanges) + len(our_round.exchanges)
    print(
        f"  deliveries stored by the server: {sum(stored.values()):,} of {sent:,} sent "
        f"({', '.join(f'{n:,} {status}' for status, n in sorted(stored.items()))}); "
        f"warm-up replies wrong or failed: {sum(warm_failed.values())}"
    )
    print(
        f"ratio to the reference: {ours.rate / reference.rate:.2f} of its requests/s, "
        f"p99 {ours.p99 / reference.p99:.1f} x its p99"
    )
    rate_met = ours.rate >= TARGET_RATE
    p99_met = ours.p99 <= TARGET_P99_MS
    print(f"target >= {TARGET_RATE:g} requests/s: {'PASS' if rate_met else 'FAIL'}")
    print(f"target p99 <= {TARGET_P99_MS:g} ms: {'PASS' if p99_met else 'FAIL'}")
    print(
        f"machine load average (1 min) before/after: {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    if args.profile:
        _print_profile(args.profile)
    all_right = not ours.failed and not reference.failed and not warm_failed
    all_stored = stored.get(str(inbound.ANSWERED), 0) == sent
    if not (all_right and all_stored):
        return 3
    return 0 if rate_met and p99_met else 1


def _print_profile(path: Path) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(order).print_stats(35)
        print(f"\nprofile of the server process (start to stop), by {order} (all of it: {path}):")
        print(out.getvalue())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument(
        "--ledger-rows", type=int, default=0, help=f"default {LEDGER_ROWS_PER_MEMBER} per member"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--requests", type=int, default=0, help="measured requests; default one per member"
    )
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests first")
    parser.add_argument("--aes", action="store_true", help="safe mode: encrypted messages")
    parser.add_argument(
        "--profile", type=Path, default=None, help="run the server under cProfile, stats here"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse_args())))
