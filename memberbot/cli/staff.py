"""`memberbot staff …`: the staff and manager accounts the bot's staff flows act as.

Accounts are never deleted: a deactivated one stays so the audit log can still name who did
what, and its chats are unbound at once. Adding an account prints a one-time staff code (and
the Telegram link) that binds the person's chat to it, as a member's invite does; `invite`
makes a new one. Adding, inviting and deactivating are audited under `--actor`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from db.models import Staff
from db.types import utcnow
from domain import staff, staffchats
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
    hours: Annotated[
        int, typer.Option(min=1, max=24 * 14, help="How long the staff code works.")
    ] = 24,
    actor: Annotated[str, typer.Option(help="Who adds them (audited).")] = "cli",
) -> None:
    """Create a staff or manager account, with a one-time code that binds their chat."""

    async def work(rt: runtime.Runtime) -> tuple[int, str, str | None]:
        async with rt.db.transaction() as session:
            person = await staff.add(
                session,
                name=name,
                role=role,
                store_code=store,
                telegram_user_id=telegram_id,
                actor=actor,
            )
            staff_id = int(person.id or 0)
            code = await staffchats.create_invite(
                session, staff_id, utcnow(), ttl_minutes=hours * 60, actor=actor
            )
        return staff_id, code, rt.settings.telegram_bot_username

    created, code, username = run(work)
    console.print(
        line(f"Staff account {created} created: {name}, {role}, {store or 'chain-wide'}.")
    )
    _print_invite(code, hours, username)


@app.command("invite")
def invite(
    staff_id: Annotated[int, typer.Argument(help="The account's id (see staff list).")],
    hours: Annotated[int, typer.Option(min=1, max=24 * 14, help="How long the code works.")] = 24,
    actor: Annotated[str, typer.Option(help="Who creates it (audited).")] = "cli",
) -> None:
    """A new one-time code that binds a chat to the account; its older codes stop working."""

    async def work(rt: runtime.Runtime) -> tuple[str, str | None]:
        async with rt.db.transaction() as session:
            code = await staffchats.create_invite(
                session, staff_id, utcnow(), ttl_minutes=hours * 60, actor=actor
            )
        return code, rt.settings.telegram_bot_username

    code, username = run(work)
    _print_invite(code, hours, username)


def _print_invite(code: str, hours: int, username: str | None) -> None:
    console.print(line("Staff code ", (code, "bold"), f", valid for {hours} h, single use."))
    console.print("Send it to the bot from the staff member's own chat as /start CODE.")
    if username:
        console.print(line(f"Telegram link: https://t.me/{username.lstrip('@')}?start={code}"))


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
    console.print(f"Staff account {staff_id} deactivated; its chats are unbound.")
