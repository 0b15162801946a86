"""`memberbot demo`: build the demo chain and show around it, ending in a member's chat.

The chain itself (generated exports, the real importer, the closing summary) is
`memberbot.demo`'s; this command passes it the options and, last, opens the sample member's
chat: live when a person is at a terminal, else a scripted tour. A shop's own database is
refused (exit 1, with the reason): the demo writes only to databases it created.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.channels.console import interact, script
from memberbot import consolechat, runtime
from memberbot import demo as demo_chain
from memberbot.cli.common import clear_errors, console, run
from memberbot.settings import load
from memberbot.staffview import line


def demo(
    members: Annotated[
        int, typer.Option(min=1, help="How many members to generate.")
    ] = demo_chain.DEFAULT_MEMBERS,
    seed: Annotated[
        int, typer.Option(help="The same seed builds the same chain.")
    ] = demo_chain.DEFAULT_SEED,
    database_url: Annotated[
        str, typer.Option(help="Where the demo goes; a shop's own database is refused.")
    ] = demo_chain.DEFAULT_DATABASE_URL,
    fresh: Annotated[
        bool,
        typer.Option("--fresh/--keep", help="Rebuild the demo SQLite file, or import on top."),
    ] = True,
    export: Annotated[
        str | None, typer.Option(help="Keep the generated CSV files in this folder.")
    ] = None,
    chat: Annotated[
        bool, typer.Option("--chat/--no-chat", help="End in the sample member's chat.")
    ] = True,
) -> None:
    """Build a demo chain (3 stores, members, cars, 3 years of visits) and show around it."""
    options = demo_chain.DemoOptions(
        database_url=database_url,
        members=members,
        seed=seed,
        fresh=fresh,
        export=Path(export) if export else None,
    )
    with clear_errors(demo_chain.NotADemoDatabase):
        summary = demo_chain.run(options, console)
    demo_chain.render(console, summary)
    if chat:
        _demo_chat(database_url, summary.sample.member.member_ref if summary.sample else None)


def _demo_chat(database_url: str, member_ref: str | None) -> None:
    """End the demo in the member's chat: a live console in a terminal, else a scripted tour."""
    with clear_errors():
        settings = load(database_url=database_url, shop_config=demo_chain.DEMO_SHOP)
    live = sys.stdin.isatty() and sys.stdout.isatty()

    async def work(rt: runtime.Runtime) -> None:
        member = await consolechat.first_member(rt, member_ref)
        if member is None:
            return
        session = await consolechat.open_session(rt, member, actor="demo")
        console.rule(line(("The member's chat", "bold"), f" ({member.member_ref}, as on Telegram)"))
        if live:
            console.print("Type a number to press a button, words like 积分 or 预约, q to quit.")
            await interact(session, console, console.input)
        else:
            await script(session, console, consolechat.TOUR)
            console.print("Talk to the bot yourself: memberbot chat --demo")

    run(work, settings)
