"""`memberbot audit`: the audit log, newest first: who did what, when, at which store, with the
balances before and after. Phones are masked in every line, whatever a detail holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from db.models import AuditLog, Staff
from domain import audit as audit_log
from domain.identity import mask_phones_in
from memberbot import runtime
from memberbot.cli.common import DATE, console, run


def audit(
    since: Annotated[str | None, DATE.option("From this day (UTC), YYYY-MM-DD.")] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="A staff name or id, or an actor as logged.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Part of the action's name, e.g. visit.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=audit_log.LIST_MAX)] = 200,
) -> None:
    """The audit log, newest first, phones masked."""
    start = datetime.combine(DATE.parse(since), time(), UTC) if since else None

    async def work(rt: runtime.Runtime) -> list[AuditLog]:
        async with rt.db.read() as session:
            actors = None
            if actor is not None:
                named = await session.scalars(
                    select(Staff.id).where((Staff.name == actor) | (Staff.id == _int(actor)))
                )
                actors = [actor, *(f"staff:{staff_id}" for staff_id in named.all())]
            return await audit_log.entries(
                session, since=start, actors=actors, action=action, limit=limit
            )

    lines = run(work)
    table = Table("When (UTC)", "Actor", "Action", "Entity", "Detail")
    for line in lines:
        detail = json.dumps(line.detail, ensure_ascii=False, sort_keys=True)
        table.add_row(
            line.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            Text(line.actor),
            Text(line.action),
            Text(f"{line.entity} {line.entity_id or ''}".strip()),
            Text(mask_phones_in(detail)),
        )
    console.print(table if lines else "No audit lines match.")


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else -1
