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
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from rich.console import Console

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
