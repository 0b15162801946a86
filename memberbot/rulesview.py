"""`memberbot rules preview|run`: the lifecycle rules from the command line.

`preview` renders what a day's run would queue and writes nothing; `run` queues it and prints the
counts per rule. Both show members by their member number and never print a phone, a plate or a
birthday: the text of a message is printed with the plate masked.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from domain.identity import mask_plate
from scheduler import rules
from scheduler.ruleconfig import Rule, load_rules

if TYPE_CHECKING:
    from memberbot.runtime import Runtime

rules_app = typer.Typer(
    help="Lifecycle rules: who gets which message on a day.", no_args_is_help=True
)

Day = Annotated[str, typer.Option("--date", help="Business day, YYYY-MM-DD.")]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a date like 2026-03-05", param_hint="--date"
        ) from exc


def _rules(rt: Runtime) -> list[Rule]:
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


@rules_app.command("preview")
def preview(
    day: Day,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's key.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most N messages per rule.")
    ] = None,
) -> None:
    """Show the messages a run for the day would queue, rendered; changes nothing."""
    from memberbot.cli import console, run

    as_of = _day(day)

    async def work(rt: Runtime) -> list[rules.Planned]:
        found = []
        async for planned in rules.plan(
            rt.db, _rules(rt), as_of, rt.config, rule=rule, limit=limit
        ):
            found.append(planned)
        return found

    messages = run(work)
    for planned in messages:
        state = (
            "already queued" if planned.queued else f"due {planned.not_before:%Y-%m-%d %H:%M} UTC"
        )
        console.rule(
            f"{planned.rule} · {planned.member_ref} · {planned.locale} · {state}", style="dim"
        )
        if planned.error:
            console.print(f"not renderable: {planned.error}", style="red", markup=False)
        else:
            console.print(_masked(planned.body, planned), markup=False)
    new = sum(1 for p in messages if not p.queued and not p.error)
    console.print(
        f"{len(messages)} message(s) for {as_of}: {new} would be queued; nothing written."
    )


@rules_app.command("run")
def run_rules(day: Day) -> None:
    """Queue the day's messages of every enabled rule; a second run adds nothing."""
    from memberbot.cli import console, run

    as_of = _day(day)

    async def work(rt: Runtime) -> rules.RunSummary:
        return await rules.run(rt.db, _rules(rt), as_of, rt.config)

    summary = run(work)
    table = Table(
        "Rule", "Selected", "Queued", "Already", "Failed", "Coupons", title=f"Rules for {as_of}"
    )
    for part in [*summary.rules, summary.total()]:
        table.add_row(
            part.rule,
            f"{part.selected:,}",
            f"{part.enqueued:,}",
            f"{part.already:,}",
            f"{part.failed:,}",
            f"{part.coupons:,}",
        )
    console.print(table)
    if summary.total().failed:
        raise typer.Exit(1)
