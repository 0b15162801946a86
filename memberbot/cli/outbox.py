"""`memberbot outbox …`: what the message queue holds, for the operator on duty.

`status` answers "is anything stuck, and who could we not reach?": counts by state, rule and
channel, then the reasons behind skipped and unreachable messages (no_chat: call the member;
blocked: they blocked the bot). Only counts and reason codes are shown, never a member's data.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from memberbot import runtime
from memberbot.cli.common import console, run
from memberbot.staffview import plain
from scheduler import outbox
from scheduler.outbox import OutboxCount, OutboxReason

app = typer.Typer(help="The message outbox.", no_args_is_help=True)


def counts_table(counts: list[OutboxCount]) -> Table:
    """How many messages sit in each state, per rule and channel."""
    table = Table(title="Outbox by state, rule and channel")
    table.add_column("State")
    table.add_column("Rule")
    table.add_column("Channel")
    table.add_column("Messages", justify="right")
    for count in counts:
        table.add_row(
            count.status, plain(count.rule), plain(count.channel or "-"), f"{count.count:,}"
        )
    return table


def reasons_table(reasons: list[OutboxReason]) -> Table:
    """Why messages were skipped or could not be sent, per rule and channel."""
    table = Table(title="Skipped and unreachable, by reason")
    table.add_column("State")
    table.add_column("Reason")
    table.add_column("Rule")
    table.add_column("Channel")
    table.add_column("Messages", justify="right")
    for reason in reasons:
        table.add_row(
            reason.status,
            plain(reason.reason or "-"),
            plain(reason.rule),
            plain(reason.channel or "-"),
            f"{reason.count:,}",
        )
    return table


def render(console: Console, counts: list[OutboxCount], reasons: list[OutboxReason]) -> None:
    """Both tables and the totals by state; one line when the outbox is empty."""
    if not counts:
        console.print("The outbox is empty.")
        return
    console.print(counts_table(counts))
    totals: dict[str, int] = {}
    for count in counts:
        totals[count.status] = totals.get(count.status, 0) + count.count
    console.print(
        "Total: " + " · ".join(f"{status} {totals[status]:,}" for status in sorted(totals))
    )
    if reasons:
        console.print(reasons_table(reasons))


@app.command("status")
def status() -> None:
    """Messages by state × rule × channel, and why some were skipped or could not be sent."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            counts = await outbox.status_counts(session)
            reasons = await outbox.reason_counts(session)
        render(console, counts, reasons)

    run(work)
