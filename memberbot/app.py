"""The composition root of `memberbot serve`: one process with the database, the chat channels
that are configured, the scheduler that sends through them, and one HTTP server.

The HTTP server (uvicorn, Starlette) on `MEMBERBOT_HTTP_HOST:MEMBERBOT_HTTP_PORT` serves
`/healthz` always, Telegram's webhook (`/telegram/webhook`) when `MEMBERBOT_TELEGRAM_WEBHOOK_URL`
is set (long polling otherwise), and WeChat's (`MEMBERBOT_WECHAT_PATH`) when the Official
Account is configured. Telegram and WeChat share one conversation core and can run together.
SIGINT, SIGTERM or the `stop` event shut everything down in reverse order: HTTP, scheduler,
the WeChat turns still running, bot, senders, database.

This is the one place that reads the operator's settings for the channels and the scheduler:
`telegram_options`, `wechat_options`, `dispatch_policy` and `job_setup` turn them into the plain
values those packages take, so neither imports `memberbot`; `wechat_api_access` does the same
for the staff commands that set up the Official Account (`memberbot wechat`, `member invite
--qr`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date
from functools import partial
from typing import Any

import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.channels import telegram, wechat, wechat_admin, wechat_api, wechat_send
from bot.conversation import Chat
from db.session import Database
from domain import scores
from domain.errors import ConfigError
from domain.outgoing import SENT, Reply, Sender
from domain.shop import ShopConfig
from memberbot import runtime
from memberbot.settings import Settings, get_settings
from scheduler import jobs
from scheduler.dispatch import ChannelLimits, Dispatcher, DispatchPolicy, QuietHours

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
        tg_options = telegram_options(settings)
        wx_options = wechat_options(settings)
        chat = rt.chat()
        if tg_options.token:
            sender = telegram.TelegramSender(tg_options.token, tg_options.base_url)
            senders[sender.channel] = await stack.enter_async_context(sender)
        elif wx_options is None:
            log.info("no chat channel configured (neither Telegram's token nor WeChat's is set)")
        if wx_options is not None:
            wx_sender = await stack.enter_async_context(wechat_sending(rt, wx_options, chat))
            senders[wx_sender.channel] = wx_sender
        # One dispatcher for the process: the chat's replies count against its pace, so
        # replies and reminders together keep to the bot's limit.
        dispatcher = build_dispatcher(rt, senders)
        if tg_options.token:
            chat.staff_channel = partial(alert_staff, sender)
            application = telegram.build_application(
                chat,
                tg_options,
                on_sent=partial(dispatcher.note_send, telegram.CHANNEL),
            )
            await stack.enter_async_context(telegram.running(application, tg_options))
            if telegram.webhook_mode(tg_options):
                secret = tg_options.webhook_secret or ""
                routes.append(telegram.webhook_route(application, secret))
        if wx_options is not None:
            wx_channel = wechat.WeChatChannel(chat, wx_options)
            stack.push_async_callback(wx_channel.aclose)
            routes.append(wx_channel.route())
            log.info("wechat: webhook at %s", wx_options.path)
        await stack.enter_async_context(scheduler(rt, senders, dispatcher))
        app = Starlette(routes=routes)
        await stack.enter_async_context(http_server(app, settings.http_host, settings.http_port))
        log.info("memberbot is serving")
        await stop.wait()
        log.info("memberbot is stopping")


@asynccontextmanager
async def wechat_sending(
    rt: runtime.Runtime, options: wechat.WeChatOptions, chat: Chat
) -> AsyncIterator[wechat_send.WeChatSender]:
    """The dispatcher's sender for WeChat, and the delivery of the webhook's owed replies,
    on one API client, until the server stops."""
    api = wechat_api.WeChatApi(rt.db, options.app_id, options.app_secret, options.api_base_url)
    task = asyncio.create_task(wechat_send.OwedReplies(api).run(), name="wechat-owed")
    try:
        yield wechat_send.WeChatSender(api, chat)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api.close()


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
    async with jobs.running(job_setup(rt), dispatcher):
        yield


def telegram_options(settings: Settings) -> telegram.TelegramOptions:
    """The Telegram channel's settings, as the plain values `bot.channels.telegram` takes."""
    return telegram.TelegramOptions(
        token=settings.telegram_token,
        base_url=settings.telegram_base_url,
        rate_per_second=settings.telegram_rate_per_second,
        bot_username=settings.telegram_bot_username,
        webhook_url=settings.telegram_webhook_url,
        webhook_secret=settings.telegram_webhook_secret,
    )


def wechat_options(settings: Settings) -> wechat.WeChatOptions | None:
    """The WeChat channel's settings as the plain values `bot.channels.wechat` takes; None
    when no WeChat setting is given. A partial or malformed configuration is a ConfigError."""
    given = (
        settings.wechat_token,
        settings.wechat_app_id,
        settings.wechat_app_secret,
        settings.wechat_aes_key,
    )
    if not any(given):
        return None
    options = wechat.WeChatOptions(
        token=settings.wechat_token or "",
        app_id=settings.wechat_app_id or "",
        app_secret=settings.wechat_app_secret or "",
        aes_key=settings.wechat_aes_key or None,
        path=settings.wechat_path,
        api_base_url=settings.wechat_api_base_url,
        reply_budget_seconds=settings.wechat_reply_seconds,
    )
    wechat.check_options(options)
    if options.path in (HEALTH_PATH, telegram.WEBHOOK_PATH):
        raise ConfigError(
            [("environment", "MEMBERBOT_WECHAT_PATH", f"{options.path} is taken by another route")]
        )
    return options


def wechat_api_access(settings: Settings) -> wechat_admin.ApiAccess:
    """What a staff command needs to call WeChat's API (the menu, QR codes): the AppID and
    AppSecret, which must both be set (ConfigError names the missing ones), and the base URL.
    The webhook's token is not needed for that."""
    needed = {
        "MEMBERBOT_WECHAT_APP_ID": settings.wechat_app_id,
        "MEMBERBOT_WECHAT_APP_SECRET": settings.wechat_app_secret,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise ConfigError(
            [("environment", name, "not set: WeChat's API needs it") for name in missing]
        )
    return wechat_admin.ApiAccess(
        app_id=settings.wechat_app_id or "",
        app_secret=settings.wechat_app_secret or "",
        base_url=settings.wechat_api_base_url,
    )


def dispatch_policy(settings: Settings, config: ShopConfig, **overrides: Any) -> DispatchPolicy:
    """The operator's knobs as the dispatcher's policy, in the chain's time zone; `overrides`
    replace single fields (the tests and benchmarks raise rates or lift quiet hours)."""
    values: dict[str, Any] = {
        "quiet_hours": QuietHours.parse(settings.quiet_hours),
        "marketing_cap": settings.marketing_cap,
        "marketing_cap_days": settings.marketing_cap_days,
        "batch": settings.dispatch_batch,
        "interval_seconds": settings.dispatch_interval_seconds,
        "hold_days": settings.wechat_hold_days,
        "limits": {
            telegram.CHANNEL: ChannelLimits(
                per_second=settings.telegram_rate_per_second,
                chat_interval=settings.telegram_chat_interval_seconds,
            ),
            wechat.CHANNEL: ChannelLimits(
                per_second=settings.wechat_rate_per_second, chat_interval=0.0
            ),
        },
        "default_timezone": config.zone.key,
    }
    values.update(overrides)
    return DispatchPolicy(**values)


def build_dispatcher(rt: runtime.Runtime, senders: Mapping[str, Sender]) -> Dispatcher:
    """The dispatcher `serve` runs, sending through `senders` by the settings' policy."""
    return Dispatcher(rt.db, senders, dispatch_policy(rt.settings, rt.config))


def job_setup(rt: runtime.Runtime) -> jobs.JobSetup:
    """What the scheduler's jobs run on, from the settings; the nightly scores are refreshed
    in a child process (`refresh_scores_apart`)."""
    return jobs.JobSetup(
        db=rt.db,
        config=rt.config,
        rules_file=rt.settings.rules_file,
        daily_rules_at=jobs.parse_clock(rt.settings.daily_rules_at),
        dispatch_interval_seconds=rt.settings.dispatch_interval_seconds,
        refresh_scores=partial(refresh_scores_apart, rt),
    )


async def refresh_scores_apart(rt: runtime.Runtime, day: date) -> int:
    """Score every member in a child process (`memberbot segments refresh`): fitting the
    churn model over a big chain holds gigabytes for minutes, which the serving process should
    not keep afterwards. The child reads the same database and shop configuration."""
    env = {
        **os.environ,
        # The database this process really uses (its engine's), password included.
        "MEMBERBOT_DATABASE_URL": rt.db.engine.url.render_as_string(hide_password=False),
        "MEMBERBOT_SHOP_CONFIG": str(rt.settings.shop_config),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memberbot",
        "segments",
        "refresh",
        "--as-of",
        day.isoformat(),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"segments refresh exited {child.returncode}: {err.decode()[-500:]}")
    async with rt.db.read() as session:
        return await scores.snapshot_size(session)


def tune_gc() -> None:
    """Keep the garbage collector out of the chat's latency: what was loaded at start (the
    libraries, templates, configuration) is frozen out of collection, and the youngest
    generation is collected less often. A chat update allocates many short-lived objects, and
    the default thresholds collect every few updates; measured in bench/bench_chat.py, this
    takes the p99 reply time at 16 members in flight from about 80 to about 55 ms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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
