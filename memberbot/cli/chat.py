"""`memberbot chat`: talk to the bot as a member, in the terminal.

The same conversation as on Telegram, through the console channel (`memberbot.consolechat`
binds the session to the member the operator names). Without a message it is interactive; with
one it sends it, prints the answer and exits, for scripts. The member is named with `--phone`,
or `--demo` speaks for the demo's sample member in the demo's own database; naming neither is a
usage error (exit 2).
"""

from __future__ import annotations

from typing import Annotated

import typer

from bot.channels.console import interact, show
from domain.errors import NotFound
from memberbot import consolechat, runtime
from memberbot import demo as demo_chain
from memberbot.cli.common import clear_errors, console, err, run
from memberbot.settings import load


def chat(
    message: Annotated[
        str | None, typer.Argument(help="Send this one message, print the answer and exit.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option("--phone", help="The member: phone, plate or member number.")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Talk as the demo's sample member, in the demo database.")
    ] = False,
) -> None:
    """Talk to the bot as a member, in the terminal: the same conversation as on Telegram."""
    if phone is None and not demo:
        err.print("Name the member with --phone (phone, plate or member number), or use --demo.")
        raise typer.Exit(2)
    with clear_errors():
        settings = (
            load(database_url=demo_chain.DEFAULT_DATABASE_URL, shop_config=demo_chain.DEMO_SHOP)
            if demo
            else None
        )

    async def work(rt: runtime.Runtime) -> None:
        if phone is not None:
            member = await consolechat.find_member(rt, phone)
        else:
            member = await consolechat.first_member(rt)
            if member is None:
                raise NotFound("the demo database is empty: run `memberbot demo` first")
        session = await consolechat.open_session(rt, member)
        if message is not None:
            show(console, await session.send(message))
        else:
            await interact(session, console, console.input)

    run(work, settings)
