"""`memberbot tiers review`: the periodic tier review, run by hand.

Every member moves to the tier their last 12 months of spend earns, down as well as up: a
member moves up the moment a visit crosses a threshold, and down only here.
"""

from __future__ import annotations

import typer

from domain import tiers
from memberbot import runtime
from memberbot.cli.common import DATE, BusinessDay, console, run

app = typer.Typer(help="Membership tiers.", no_args_is_help=True)


@app.command("review")
def review(as_of: BusinessDay = None) -> None:
    """Move every member to the tier their last 12 months of spend earns, up or down."""

    async def work(rt: runtime.Runtime) -> None:
        day = DATE.or_today(rt, as_of)
        async with rt.db.transaction() as session:
            moved = await tiers.review(session, day)
        console.print(f"{moved:,} member(s) changed tier at the review of {day}.")

    run(work)
