"""The composition root of `memberbot serve`: one process with the database, the chat channels
that are configured, the scheduler that sends through them, and a health endpoint.

Telegram runs by long polling unless `MEMBERBOT_TELEGRAM_WEBHOOK_URL` is set; in webhook mode
one HTTP server (uvicorn) on `telegram_webhook_listen:telegram_webhook_port` serves
`/telegram/webhook` and `/healthz`. With long polling `/healthz` is served only when
`MEMBERBOT_HEALTH_PORT` is set. SIGINT, SIGTERM or the `stop` event shut everything down in
reverse order: HTTP, scheduler, senders, bot, database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.channels import telegram
from bot.channels.base import SENT, Sender
from bot.conversation import Reply
from db.session import Database
from memberbot import runtime
from memberbot.settings import Settings, get_settings
from scheduler import jobs
from scheduler.dispatch import Dispatcher

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
HEALTH_DB_TIMEOUT = 3.0
GC_YOUNG_THRESHOLD = 50_000


async def serve(settings: Settings | None = None, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM or until `stop` is set."""
    settings = settings or get_settings()
    stop = stop or asyncio.Event()
    rt = await runtime.start(settings)
    tune_gc()
    # httpx logs every request URL at INFO, and a Bot API URL holds the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # APScheduler logs every run of every job at INFO: the dispatcher alone every 5 seconds.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(rt.db.dispose)
        stack.enter_context(_stop_on_signals(stop))
        routes: list[BaseRoute] = [Route(HEALTH_PATH, health_endpoint(rt.db))]
        senders: dict[str, Sender] = {}
        if settings.telegram_token:
            sender = telegram.TelegramSender(settings.telegram_token, settings.telegram_base_url)
            senders[sender.channel] = await stack.enter_async_context(sender)
        else:
            log.info("no chat channel configured (MEMBERBOT_TELEGRAM_TOKEN is unset)")
        # One dispatcher for the process: the chat's replies count against its pace, so
        # replies and reminders together keep to the bot's limit.
        dispatcher = jobs.build_dispatcher(rt, senders)
        if settings.telegram_token:
            chat = rt.chat()
            chat.staff_channel = partial(alert_staff, sender)
            application = telegram.build_application(
                chat,
                settings,
                on_sent=partial(dispatcher.note_send, telegram.CHANNEL),
            )
            await stack.enter_async_context(telegram.running(application, settings))
            if telegram.webhook_mode(settings):
                secret = settings.telegram_webhook_secret or ""
                routes.append(telegram.webhook_route(application, secret))
        await stack.enter_async_context(scheduler(rt, senders, dispatcher))
        port = http_port(settings)
        if port is not None:
            app = Starlette(routes=routes)
            await stack.enter_async_context(
                http_server(app, settings.telegram_webhook_listen, port)
            )
        log.info("memberbot is serving")
        await stop.wait()
        log.info("memberbot is stopping")


async def alert_staff(sender: Sender, addresses: Sequence[str], reply: Reply) -> None:
    """Staff alerts go out on the reminders' sender, outside the outbox: they are about staff,
    not members, and what they say is also on the staff's lists."""
    for address in addresses:
        delivery = await sender.send(address, reply)
        if delivery.status != SENT:
            log.warning("staff alert not delivered: %s", delivery.status)


@asynccontextmanager
async def scheduler(
    rt: runtime.Runtime, senders: dict[str, Sender], dispatcher: Dispatcher
) -> AsyncIterator[None]:
    """The lifecycle rules and the outbox dispatcher, sending through `senders` (channel name →
    Sender); they stop before the senders close. They run whether or not a chat channel is
    configured: rules still fill the outbox, and members without a chat are counted for staff."""
    async with jobs.running(rt, senders, dispatcher=dispatcher):
        yield


def tune_gc() -> None:
    """Keep the garbage collector out of the chat's latency: what was loaded at start (the
    libraries, templates, configuration) is frozen out of collection, and the youngest
    generation is collected less often. A chat update allocates many short-lived objects, and
    the default thresholds collect every few updates; measured in bench/bench_chat.py, this
    takes the p99 reply time at 16 members in flight from about 80 to about 55 ms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def http_port(settings: Settings) -> int | None:
    """The HTTP server's port: the webhook's in webhook mode, else the optional health port."""
    if settings.telegram_token and telegram.webhook_mode(settings):
        return settings.telegram_webhook_port
    return settings.health_port


def health_endpoint(db: Database) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def healthz(_request: Request) -> JSONResponse:
        """200 with `ok` when the database answers; 503 otherwise (a load balancer drains us)."""
        database = await database_reachable(db)
        return JSONResponse({"ok": database, "database": database}, 200 if database else 503)

    return healthz


async def database_reachable(db: Database) -> bool:
    try:
        async with asyncio.timeout(HEALTH_DB_TIMEOUT), db.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable"; the type is enough to log
        log.warning("health: database unreachable (%s)", type(exc).__name__)
        return False
    return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def http_server(app: Starlette, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """uvicorn serving `app` inside this event loop; fails fast when it cannot listen."""
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False, log_level="warning"
    )
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise OSError(f"cannot listen on {host}:{port}") from exc

    task = asyncio.create_task(run(), name="memberbot-http")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        await task
        raise OSError(f"HTTP server on {host}:{port} stopped at start")
    log.info("HTTP server on %s:%d", host, port)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
