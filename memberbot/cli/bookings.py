"""`memberbot bookings day`: the counter's sheet of one store's bookings for a day
(`domain.bookings.day_sheet`), drawn with rich.

The sheet is printed and left on the counter, so phones and plates are masked here: the
member ref and the masked phone are enough to find the member, the masked plate to match the car
that drives in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Booking, Store
from db.types import utcnow
from domain import bookings
from domain import staff as staff_account
from domain.bookings import BookingLine
from domain.counter import desk
from domain.errors import NotFound
from domain.identity import mask_phone, mask_plate
from memberbot import runtime
from memberbot.cli.common import DATE, StaffOption, console, counter_run, run
from memberbot.staffview import plain

app = typer.Typer(help="Bookings at the stores.", no_args_is_help=True)

STATUS_STYLES = {
    bookings.BOOKED: "green",
    bookings.COMPLETED: "dim",
    bookings.NO_SHOW: "yellow",
    bookings.CANCELLED: "red strike",
}


def store_today(store: Store, now: datetime) -> date:
    """The store's own business day at `now`: a sheet for a store in another time zone must
    not flip at the head office's midnight."""
    return now.astimezone(ZoneInfo(store.timezone)).date()


def member_cell(line: BookingLine) -> str:
    """Who booked, as the counter finds them: name, member ref and masked phone."""
    name = f"{line.member_name} · " if line.member_name else ""
    return f"{name}{line.member_ref} · {mask_phone(line.member_phone)}"


def render_day(console: Console, lines: Sequence[BookingLine], store: Store, day: date) -> None:
    """One table, in time order, with local times and the counts staff plan the day by."""
    # Names come from people: `plain` keeps a "[" or an escape sequence in them inert.
    title = plain(f"{store.name} ({store.code}) · {day.isoformat()} {day.strftime('%A')}")
    if not lines:
        console.print(title + Text(": no bookings."))
        return
    table = Table("Time", "Service", "Member", "Car", "Status", "Ref", title=title)
    for line in lines:
        booking = line.booking
        ends = booking.ends_at.astimezone(line.starts_local.tzinfo)
        table.add_row(
            f"{line.starts_local:%H:%M}-{ends:%H:%M}",
            plain(f"{line.service_name_en} / {line.service_name_zh}"),
            plain(member_cell(line)),
            plain(mask_plate(line.vehicle_plate)),
            plain(booking.status, style=STATUS_STYLES.get(booking.status, "")),
            plain(line.ref),
        )
    console.print(table)
    active = sum(1 for line in lines if line.booking.status != bookings.CANCELLED)
    console.print(plain(f"{active} booking(s) · {store.bays} bay(s) · times in {store.timezone}"))


@app.command("day")
def day(
    store: Annotated[str, typer.Option("--store", help="Store code, as in shop.yaml.")],
    on: Annotated[str | None, DATE.option("Day, YYYY-MM-DD; default the store's today.")] = None,
    cancelled: Annotated[
        bool, typer.Option("--cancelled", help="Also list cancelled bookings.")
    ] = False,
) -> None:
    """One store's bookings for a day, in time order: the counter's sheet."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            shop = await bookings.store_by_code(session, store)
            sheet_day = DATE.parse(on) if on else store_today(shop, utcnow())
            lines = await bookings.day_sheet(
                session, shop.id, sheet_day, include_cancelled=cancelled
            )
        render_day(console, lines, shop, sheet_day)

    run(work)


@app.command("today")
def today(
    store: Annotated[str | None, typer.Option("--store", help="Store code; default yours.")] = None,
    staff: StaffOption = None,
) -> None:
    """Today's bookings at your store, as the staff account at the terminal."""

    async def work(rt: runtime.Runtime, session: AsyncSession, who: str) -> tuple:  # type: ignore[type-arg]
        shop = (
            await bookings.store_by_code(session, store)
            if store
            else await session.get(Store, (await staff_account.identify(session, who)).store_id)
        )
        if shop is None:
            raise NotFound("a chain-wide account names the store: --store CODE")
        sheet_day = store_today(shop, utcnow())
        lines = await desk.todays_bookings(session, who, day=sheet_day, store_id=shop.id)
        return lines, shop, sheet_day

    lines, shop, sheet_day = counter_run(staff, desk.TODAY, work)
    render_day(console, lines, shop, sheet_day)


def _attendance(booking_id: int, staff: str | None, *, arrived: bool) -> None:
    action = desk.ARRIVE if arrived else desk.NO_SHOW
    mark = desk.mark_arrived if arrived else desk.mark_no_show

    async def work(rt: runtime.Runtime, session: AsyncSession, who: str) -> Booking:
        return await mark(session, who, booking_id=booking_id, now=utcnow())

    booking = counter_run(staff, action, work)
    said = "arrived" if arrived else "no-show: recorded, and the bay is free"
    console.print(f"{bookings.reference(booking)}: {said}.", markup=False)


@app.command("arrive")
def arrive(
    booking_id: Annotated[int, typer.Argument(help="The booking's number (B000123 → 123).")],
    staff: StaffOption = None,
) -> None:
    """The member came for their booking."""
    _attendance(booking_id, staff, arrived=True)


@app.command("no-show")
def no_show(
    booking_id: Annotated[int, typer.Argument(help="The booking's number (B000123 → 123).")],
    staff: StaffOption = None,
) -> None:
    """The member did not come: counted on their page; the bay is free again."""
    _attendance(booking_id, staff, arrived=False)
