"""An ASGI app served by uvicorn inside the running event loop on a free port of 127.0.0.1:
what the local stand-ins for Telegram's and WeChat's APIs run on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test runner owns Ctrl-C, not our server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalServer:
    """`await start()` returns the port; `await stop()` lets uvicorn close its connections."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(), name=self.name)
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"{self.name} stopped while starting")
            await asyncio.sleep(0.005)
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None


def free_port() -> int:
    """A port of 127.0.0.1 free now, for a server the test starts itself (`memberbot serve`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
