"""`memberbot points …`: the points ledger by hand.

`adjust` corrects one member's points: it needs a reason, is audited, and never takes a balance
below zero (the domain refuses, exit 1). `expire` is the nightly expiry run for a given day;
running it twice for a day changes nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from domain import members, points
from memberbot import runtime
from memberbot.cli.common import DATE, BusinessDay, MemberQuery, console, run
from memberbot.staffview import line

app = typer.Typer(help="Points ledger operations.", no_args_is_help=True)


# Lets "-200" through as the delta instead of reading it as an unknown option.
@app.command("adjust", context_settings={"ignore_unknown_options": True})
def adjust(
    query: MemberQuery,
    delta: Annotated[int, typer.Argument(help="Points to add (positive) or take (negative).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option(help="Who is making the change.")] = "cli",
) -> None:
    """Correct a member's points by hand. Needs a reason; never takes the balance below 0."""

    async def work(rt: runtime.Runtime) -> None:
        today = rt.today()
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await points.adjust(
                session, member.id, delta, today, rt.config.loyalty, reason=reason, actor=actor
            )
            new_balance = await points.balance(session, member.id)
        console.print(line(f"{member.member_ref}: {delta:+d} points, balance now {new_balance}."))

    run(work)


@app.command("expire")
def expire(as_of: BusinessDay = None) -> None:
    """Expire points whose lots lapsed before the day (the nightly job, run by hand)."""

    async def work(rt: runtime.Runtime) -> None:
        day = DATE.or_today(rt, as_of)
        async with rt.db.transaction() as session:
            expired = await points.expire(session, day)
        console.print(f"{expired:,} points expired as of {day}.")

    run(work)
