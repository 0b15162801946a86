"""`memberbot staff …`: the staff and manager accounts the bot's staff flows act as.

Accounts are never deleted: a deactivated one stays so the audit log can still name who did
what. Adding and deactivating are audited under `--actor`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from db.models import Staff
from domain import staff
from memberbot import runtime
from memberbot.cli.common import console, run
from memberbot.staffview import line, plain

app = typer.Typer(help="Staff accounts.", no_args_is_help=True)


def roster_table(roster: Iterable[tuple[Staff, str | None]]) -> Table:
    """One row per account with its store code (none: chain-wide); names `plain`, so one odd
    name cannot break the list for everyone after it."""
    table = Table("Id", "Name", "Role", "Store", "Telegram", "Active")
    for person, code in roster:
        table.add_row(
            str(person.id),
            plain(person.name),
            person.role,
            plain(code or "chain-wide"),
            str(person.telegram_user_id or "-"),
            "yes" if person.active else "no",
        )
    return table


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The person's name.")],
    role: Annotated[str, typer.Option(help="staff or manager.")] = staff.STAFF,
    store: Annotated[str | None, typer.Option(help="Store code; none = chain-wide.")] = None,
    telegram_id: Annotated[int | None, typer.Option(help="Their Telegram user id.")] = None,
    actor: Annotated[str, typer.Option(help="Who adds them (audited).")] = "cli",
) -> None:
    """Create a staff or manager account."""

    async def work(rt: runtime.Runtime) -> int:
        async with rt.db.transaction() as session:
            person = await staff.add(
                session,
                name=name,
                role=role,
                store_code=store,
                telegram_user_id=telegram_id,
                actor=actor,
            )
        return int(person.id or 0)

    created = run(work)
    console.print(
        line(f"Staff account {created} created: {name}, {role}, {store or 'chain-wide'}.")
    )


@app.command("list")
def list_accounts() -> None:
    """Every staff account, active ones first."""

    async def work(rt: runtime.Runtime) -> list[tuple[Staff, str | None]]:
        async with rt.db.read() as session:
            return list(await staff.roster(session))

    console.print(roster_table(run(work)))


@app.command("deactivate")
def deactivate(
    staff_id: Annotated[int, typer.Argument(help="The account's id (see staff list).")],
    actor: Annotated[str, typer.Option(help="Who deactivates it (audited).")] = "cli",
) -> None:
    """Close an account; it stays in the records so the audit log can name it."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.transaction() as session:
            await staff.deactivate(session, staff_id, actor=actor)

    run(work)
    console.print(f"Staff account {staff_id} deactivated.")
