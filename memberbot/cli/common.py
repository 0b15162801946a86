"""What every `memberbot` command shares: the consoles, the runner, the error exits, the day
options and the member argument.

Command modules import from here; this module imports no command module, so no command needs
to reach back into the package that mounts it. The exit codes are part of the documented CLI:
0 done, 1 a refused request (a domain error, with its message), 2 a usage or configuration
problem (with every problem listed). Never a stack trace for what the user can fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from domain import bookings
from domain.counter import acting, receipts
from domain.errors import ConfigError, DomainError
from domain.plaintext import inert
from memberbot import runtime
from memberbot.settings import Settings

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

MemberQuery = Annotated[str, typer.Argument(help="Phone, plate or member number.")]


def run(work: Callable[[runtime.Runtime], Awaitable[T]], settings: Settings | None = None) -> T:
    """Start the runtime, run one unit of work, and turn domain errors into clear exits."""

    async def _main() -> T:
        rt = await runtime.start(settings)
        try:
            return await work(rt)
        finally:
            await rt.db.dispose()

    with clear_errors():
        return asyncio.run(_main())


@contextmanager
def clear_errors(*refusals: type[Exception]) -> Iterator[None]:
    """A configuration problem (the shop's YAML or the settings) exits 2 with every (file,
    key, reason); a refused request exits 1 with its message. Never a stack trace for what the
    user can fix."""
    try:
        yield
    except ConfigError as exc:
        err.print("The configuration has problems:", style="red")
        for file, key, reason in exc.problems:
            err.print(inert(f"  {file}: {key}: {reason}"), markup=False)
        raise typer.Exit(2) from exc
    except (DomainError, *refusals) as exc:
        err.print(inert(str(exc)), style="red", markup=False)
        raise typer.Exit(1) from exc


@dataclass(frozen=True)
class DayOption:
    """A day given on the command line as YYYY-MM-DD, under one flag (`--date` or `--as-of`).

    The option takes text and the command reads it with `parse` or `or_today` where it always
    has, so a bad day is reported at the same moment as before: a usage error (exit 2) naming
    the flag, `'next tuesday' is not a date like 2026-03-05`. A day outside FIRST_DAY..LAST_DAY
    is refused the same way: the commands count months and years back and days ahead from it,
    which near the calendar's ends (0001-01-01, 9999-12-31) leaves Python's dates.
    """

    flag: str

    FIRST_DAY: ClassVar[date] = date(1900, 1, 1)
    LAST_DAY: ClassVar[date] = date(2999, 12, 31)

    def option(self, help: str) -> Any:
        """The Typer option for an `Annotated[str, …]` or `Annotated[str | None, …]`
        parameter, with this help."""
        return typer.Option(self.flag, help=help)

    def parse(self, text: str) -> date:
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            message = f"{text!r} is not a date like 2026-03-05"
            raise typer.BadParameter(message, param_hint=self.flag) from exc
        if not self.FIRST_DAY <= day <= self.LAST_DAY:
            message = f"{day} is not between {self.FIRST_DAY} and {self.LAST_DAY}"
            raise typer.BadParameter(message, param_hint=self.flag)
        return day

    def or_today(self, rt: runtime.Runtime, text: str | None) -> date:
        """The day given, else today in the chain's time zone."""
        return rt.today() if text is None else self.parse(text)


DATE = DayOption("--date")
AS_OF = DayOption("--as-of")

BusinessDay = Annotated[str | None, DATE.option("Business day, YYYY-MM-DD; default today.")]


# ---------------------------------------------------------------- counter commands

StaffOption = Annotated[
    str | None,
    typer.Option("--staff", help="Your staff account id or name; default MEMBERBOT_STAFF."),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="Idempotency key: running again with it changes nothing."),
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Store code; default your account's store.")
]


def yuan_to_cents(text: str, flag: str) -> int:
    """`300`, `300.5` or `¥300.50` as cents; anything else is a usage error naming the flag."""
    try:
        value = Decimal(text.strip().lstrip("¥").replace(",", ""))
    except InvalidOperation as exc:
        raise typer.BadParameter(f"{text!r} is not an amount like 300.50", param_hint=flag) from exc
    if value < 0 or value != value.quantize(Decimal("0.01")):
        raise typer.BadParameter(f"{text!r} is not an amount like 300.50", param_hint=flag)
    return int(value * 100)


def counter_run(
    staff_given: str | None,
    action: str,
    work: Callable[[runtime.Runtime, AsyncSession, str], Awaitable[T]],
) -> T:
    """Run a counter action as the staff account at the terminal, authorised as the chat
    authorises it; a refusal is audited (in a transaction of its own) and exits 1."""

    async def main(rt: runtime.Runtime) -> T:
        who = staff_given or rt.settings.staff
        if not who:
            raise typer.BadParameter("say who you are: --staff ID|NAME or MEMBERBOT_STAFF")
        return await acting.guarded(
            rt.db, lambda session: work(rt, session, who), who=who, action=action
        )

    return run(main)


def print_receipt(receipt: receipts.Receipt, said: str) -> None:
    """What was done and the member's balances now; member text printed as plain text."""
    again = " (already done: nothing changed)" if receipt.replayed else ""
    console.print(f"{receipt.member_ref}: {said}{again}", markup=False, highlight=False)
    points, cents = receipt.after.points, receipt.after.stored_value_cents
    console.print(
        f"Balance now: {points:,} points · stored value ¥{cents / 100:,.2f}",
        markup=False,
        highlight=False,
    )


async def store_id_of(session: AsyncSession, code: str | None) -> int | None:
    return None if code is None else int((await bookings.store_by_code(session, code)).id or 0)
