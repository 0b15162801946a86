"""The local Bot API server of the tests (`tests/support/botapi_server.py`) in a process of its own.

In production the Bot API server is another machine. Served inside the bot's own process, its
HTTP and JSON work (uvicorn, h11, starlette) would share the bot's core and GIL and be measured
as the bot's. Here it runs in a spawned child on 127.0.0.1 and the benchmark talks to it over a
`multiprocessing` pipe, which costs the bot's process one small pickled message per batch of
replies instead of an HTTP round trip:

* parent -> child: ("users", [(chat_id, text), ...]) queues one update per pair;
  ("drain",) asks for the records since the last drain; ("stop",) ends the child.
* child -> parent: ("ready", token, base_url) once serving; ("replied", [(chat_id, at), ...])
  for each batch of messages the bot got accepted, pushed as they come (no polling);
  ("drained", Records) in answer to a drain.

Every time is `time.monotonic()`. On Linux that is CLOCK_MONOTONIC, one clock for the whole
system, so the child's stamps (queued, served, replied) and the parent's compare directly.

    async with RemoteBotApi() as server:
        server.on_replied = lambda replies: ...
        server.users([(42, "我的积分")])
        records = await server.drain()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

from tests.support.botapi_server import BotApiServer, SentMessage

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class UpdateRecord:
    """One member message: when it was queued and when getUpdates first handed it out."""

    update_id: int
    chat_id: int
    queued_at: float
    served_at: float | None


@dataclass(frozen=True)
class ReplyRecord:
    """One message the bot got accepted (a send or an edit text)."""

    chat_id: int
    text: str
    at: float


@dataclass(frozen=True)
class Records:
    """What happened since the previous drain, plus the server's own CPU time so far."""

    updates: list[UpdateRecord]
    replies: list[ReplyRecord]
    calls: dict[str, int]
    rejected_429: int
    server_cpu_seconds: float


class _Relay:
    """The child's side: queues what the parent sends and pushes each accepted message back,
    coalesced per event-loop turn so a burst of replies is one pipe message."""

    def __init__(self, server: BotApiServer, conn: Connection, stopping: asyncio.Event) -> None:
        self.server = server
        self.conn = conn
        self.stopping = stopping
        self.loop = asyncio.get_running_loop()
        self.pending: list[tuple[int, float]] = []
        self.asked: list[tuple[int, int]] = []  # (update_id, chat_id) since the last drain
        self.sent_from = 0
        self.calls_before: collections.Counter[str] = collections.Counter()

    def on_sent(self, message: SentMessage) -> None:
        if not self.pending:
            self.loop.call_soon(self._flush)
        self.pending.append((message.chat_id, message.at))

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self.conn.send(("replied", batch))

    def on_readable(self) -> None:
        try:
            command = self.conn.recv()
        except EOFError:  # the parent is gone
            self.stopping.set()
            return
        kind = command[0]
        if kind == "users":
            for chat_id, text in command[1]:
                self.asked.append((self.server.user_text(chat_id, text), chat_id))
        elif kind == "drain":
            self.conn.send(("drained", self._drain()))
        elif kind == "stop":
            self.stopping.set()

    def _drain(self) -> Records:
        server = self.server
        updates = [
            UpdateRecord(uid, chat_id, server.queued_at[uid], server.served_at.get(uid))
            for uid, chat_id in self.asked
        ]
        replies = [
            ReplyRecord(message.chat_id, message.text, message.at)
            for message in server.sent[self.sent_from :]
        ]
        calls = dict(server.calls - self.calls_before)
        self.asked = []
        self.sent_from = len(server.sent)
        self.calls_before = collections.Counter(server.calls)
        return Records(updates, replies, calls, server.rejected_429, time.process_time())


async def _serve(conn: Connection, flood_limits: bool) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with BotApiServer(flood_limits=flood_limits) as server:
        relay = _Relay(server, conn, stopping)
        server.on_sent = relay.on_sent
        loop.add_reader(conn.fileno(), relay.on_readable)
        conn.send(("ready", server.token, server.base_url))
        try:
            await stopping.wait()
        finally:
            loop.remove_reader(conn.fileno())


def serve(conn: Connection, flood_limits: bool) -> None:
    """The child process: a BotApiServer on 127.0.0.1 until told to stop or orphaned."""
    asyncio.run(_serve(conn, flood_limits))


class RemoteBotApi:
    """The parent's handle on the child server: its token and base URL for the bot, `users`
    to play members, `on_replied` to hear of answers, `drain` for the records."""

    def __init__(self, *, flood_limits: bool = False) -> None:
        self.flood_limits = flood_limits
        self.token = ""
        self.base_url = ""
        self.on_replied: Callable[[list[tuple[int, float]]], None] | None = None
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._drained: asyncio.Future[Records] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> RemoteBotApi:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawned, not forked: the child must not inherit the bot's loop, engine or threads."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve, args=(theirs, self.flood_limits), name="botapi-server", daemon=True
        )
        process.start()
        theirs.close()
        self._conn, self._process = ours, process
        if not await asyncio.to_thread(ours.poll, START_TIMEOUT):
            await self.stop()
            raise RuntimeError(f"the Bot API server did not start within {START_TIMEOUT:g} s")
        kind, self.token, self.base_url = ours.recv()
        if kind != "ready":
            raise RuntimeError(f"unexpected first message from the Bot API server: {kind!r}")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours.fileno(), self._on_readable)

    async def stop(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            if self._loop is not None:
                self._loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):  # the child may be gone already
                conn.send(("stop",))
            conn.close()
        if process is not None:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.terminate()
                await asyncio.to_thread(process.join, 5)

    def users(self, messages: Sequence[tuple[int, str]]) -> None:
        """Members with these private chat ids type these texts, in this order."""
        self._connection().send(("users", list(messages)))

    async def drain(self) -> Records:
        """Updates queued and messages accepted since the previous drain."""
        self._drained = asyncio.get_running_loop().create_future()
        self._connection().send(("drain",))
        try:
            return await self._drained
        finally:
            self._drained = None

    def _connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the Bot API server is not running")
        return self._conn

    def _on_readable(self) -> None:
        conn = self._connection()
        try:
            kind, payload = conn.recv()
        except EOFError:
            self._lost()
            return
        if kind == "replied":
            if self.on_replied is not None:
                self.on_replied(payload)
        elif kind == "drained" and self._drained is not None and not self._drained.done():
            self._drained.set_result(payload)

    def _lost(self) -> None:
        if self._loop is not None and self._conn is not None:
            self._loop.remove_reader(self._conn.fileno())
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(RuntimeError("the Bot API server process died"))


def replies_by_chat(replies: Sequence[ReplyRecord]) -> dict[int, list[ReplyRecord]]:
    """Each chat's accepted messages, in the order the server accepted them."""
    by_chat: dict[int, list[ReplyRecord]] = collections.defaultdict(list)
    for reply in replies:
        by_chat[reply.chat_id].append(reply)
    return dict(by_chat)


__all__ = [
    "Records",
    "RemoteBotApi",
    "ReplyRecord",
    "UpdateRecord",
    "replies_by_chat",
    "serve",
]
