"""`memberbot serve`: the long-running process (the bot, the scheduler, `/healthz`).

Everything it runs is composed in `memberbot.app`; this command only starts it and turns a
configuration problem into the same clear exit as every other command.
"""

from __future__ import annotations

import asyncio

from memberbot.cli.common import clear_errors


def serve() -> None:
    """Run the bot (Telegram by long polling, or by webhook when MEMBERBOT_TELEGRAM_WEBHOOK_URL
    is set), the scheduler and /healthz until Ctrl-C or SIGTERM."""
    from memberbot.app import serve as serve_forever  # keeps the other commands' startup light

    with clear_errors():
        asyncio.run(serve_forever())
