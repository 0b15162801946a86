"""`memberbot complaints`: staff read open complaints and answer them.

A thin shell over `domain.feedback`. The list names members by their reference and a masked
phone only: the complaint text is what staff need to answer, the rest stays out of the
terminal. An answer is given once, and goes to the member's chat through the outbox.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from db.types import utcnow
from domain import feedback
from domain.identity import mask_phone
from memberbot import runtime
from memberbot.cli.common import console, run
from memberbot.staffview import plain
from scheduler import notices

app = typer.Typer(help="Member complaints: read and answer.", no_args_is_help=True)


def complaints_table(rows: list[feedback.OpenComplaint]) -> Table:
    """The open complaints, oldest first, each with who filed it (ref, masked phone). What
    members wrote is printed `plain`: never markup, never a terminal's escape sequence."""
    table = Table("Id", "Filed (UTC)", "Member", "Phone", "Store", "Via", "Complaint")
    for row in rows:
        complaint = row.complaint
        table.add_row(
            str(complaint.id),
            complaint.created_at.strftime("%Y-%m-%d %H:%M"),
            plain(row.member_ref),
            mask_phone(row.phone),
            plain(row.home_store_code or "-"),
            complaint.channel,
            plain(complaint.body),
        )
    return table


@app.command("list")
def list_open(
    store: Annotated[
        str | None, typer.Option(help="Only members of this home store (code).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=feedback.OPEN_LIST_MAX)] = 50,
) -> None:
    """Open complaints, the longest waiting first."""

    async def work(rt: runtime.Runtime) -> list[feedback.OpenComplaint]:
        async with rt.db.read() as session:
            store_id = await feedback.store_id_for_code(session, store) if store else None
            return await feedback.open_complaints(session, store_id=store_id, limit=limit)

    rows = run(work)
    if not rows:
        console.print("No open complaints.")
        return
    console.print(complaints_table(rows))


@app.command("answer")
def answer(
    complaint_id: Annotated[int, typer.Argument(help="The complaint's id (see complaints list).")],
    text: Annotated[str, typer.Argument(help="The answer the member will read.")],
    staff_id: Annotated[int, typer.Option("--staff", help="Your staff account id.")],
) -> None:
    """Answer an open complaint once, as staff of the member's home store or a chain manager."""

    async def work(rt: runtime.Runtime) -> feedback.ComplaintAnswer:
        async with rt.db.transaction() as session:
            answered = await feedback.answer_complaint(
                session, complaint_id, staff_id=staff_id, answer=text, now=utcnow()
            )
            await notices.complaint_answered(session, answered)
            return answered

    answered = run(work)
    console.print(
        f"Complaint {answered.complaint_id} answered by staff account {staff_id}; "
        "the answer is queued for the member's chat."
    )
