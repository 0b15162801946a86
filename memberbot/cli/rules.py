"""`memberbot rules preview|run`: the lifecycle rules from the command line.

`preview` renders what a day's run would queue and writes nothing; `run` queues it and prints the
counts per rule. Both show members by their member number and never print a phone, a plate or a
birthday: the text of a message is printed with the plate masked.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from domain.identity import mask_plate
from memberbot import runtime
from memberbot.cli.common import DATE, console, run
from memberbot.staffview import plain
from scheduler import rules
from scheduler.ruleconfig import Rule, load_rules

app = typer.Typer(help="Lifecycle rules: who gets which message on a day.", no_args_is_help=True)

Day = Annotated[str, DATE.option("Business day, YYYY-MM-DD.")]


def _rules(rt: runtime.Runtime) -> list[Rule]:
    """The shipped rules with the shop's file (MEMBERBOT_RULES_FILE) over them, when set."""
    path: Path | None = rt.settings.rules_file
    return load_rules(path)


def _masked(body: str, planned: rules.Planned) -> str:
    """The message with the car's plate masked: the terminal is not the member's own chat."""
    vehicle = planned.context.get("vehicle")
    plate = vehicle.get("plate") if isinstance(vehicle, dict) else None
    if not plate:
        return body
    shown = plate[:2] + "·" + plate[2:]
    return body.replace(shown, mask_plate(plate)).replace(plate, mask_plate(plate))


def render_preview(console: Console, messages: list[rules.Planned], as_of: date) -> None:
    """Each planned message under a rule line (rule, member, locale, when), then the count."""
    for planned in messages:
        state = (
            "already queued" if planned.queued else f"due {planned.not_before:%Y-%m-%d %H:%M} UTC"
        )
        console.rule(
            plain(f"{planned.rule} · {planned.member_ref} · {planned.locale} · {state}"),
            style="dim",
        )
        if planned.error:
            console.print(plain(f"not renderable: {planned.error}", style="red"))
        else:
            console.print(plain(_masked(planned.body, planned)))
    new = sum(1 for p in messages if not p.queued and not p.error)
    console.print(
        f"{len(messages)} message(s) for {as_of}: {new} would be queued; nothing written."
    )


def summary_table(summary: rules.RunSummary, as_of: date) -> Table:
    """One row per rule and a total: selected, queued, already queued, failed, coupons."""
    table = Table(
        "Rule", "Selected", "Queued", "Already", "Failed", "Coupons", title=f"Rules for {as_of}"
    )
    for part in [*summary.rules, summary.total()]:
        table.add_row(
            plain(part.rule),
            f"{part.selected:,}",
            f"{part.enqueued:,}",
            f"{part.already:,}",
            f"{part.failed:,}",
            f"{part.coupons:,}",
        )
    return table


@app.command("preview")
def preview(
    day: Day,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's key.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most N messages per rule.")
    ] = None,
) -> None:
    """Show the messages a run for the day would queue, rendered; changes nothing."""
    as_of = DATE.parse(day)

    async def work(rt: runtime.Runtime) -> list[rules.Planned]:
        found = []
        async for planned in rules.plan(
            rt.db, _rules(rt), as_of, rt.config, rule=rule, limit=limit
        ):
            found.append(planned)
        return found

    render_preview(console, run(work), as_of)


@app.command("run")
def run_rules(day: Day) -> None:
    """Queue the day's messages of every enabled rule; a second run adds nothing."""
    as_of = DATE.parse(day)

    async def work(rt: runtime.Runtime) -> rules.RunSummary:
        return await rules.run(rt.db, _rules(rt), as_of, rt.config)

    summary = run(work)
    console.print(summary_table(summary, as_of))
    if summary.total().failed:
        raise typer.Exit(1)
