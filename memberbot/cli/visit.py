"""`memberbot visit record|void`: a visit at the counter, and taking back one recorded by
mistake, as the staff account at the terminal (`domain.counter.visits`)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from db.models import Vehicle
from domain import members
from domain.counter import visits
from domain.errors import InvalidInput
from domain.identity import normalize_plate
from memberbot.cli.common import (
    KeyOption,
    MemberQuery,
    StaffOption,
    StoreOption,
    counter_run,
    print_receipt,
    store_id_of,
    yuan_to_cents,
)

app = typer.Typer(help="Visits at the counter.", no_args_is_help=True)


@app.command("record")
def record(
    query: MemberQuery,
    amount: Annotated[str, typer.Option("--amount", help="The bill in yuan, e.g. 300.50.")],
    service: Annotated[list[str], typer.Option("--service", help="A service code; repeat.")],
    car: Annotated[str | None, typer.Option("--car", help="The car's plate.")] = None,
    km: Annotated[int | None, typer.Option("--km", min=0, help="Odometer reading.")] = None,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Record today's visit: points by the rules, the tier, the odometer reading."""
    cents = yuan_to_cents(amount, "--amount")

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        member = await members.find(session, query, rt.settings.default_region)
        vehicle_id = None
        if car is not None:
            vehicle_id = await session.scalar(
                select(Vehicle.id).where(Vehicle.plate == normalize_plate(car))
            )
            if vehicle_id is None:
                raise InvalidInput("no car with that plate")
        return await visits.record_visit(
            session,
            who,
            member_id=int(member.id or 0),
            amount_cents=cents,
            services=service,
            today=rt.today(),
            rules=rt.config.loyalty,
            store_id=await store_id_of(session, store),
            vehicle_id=vehicle_id,
            mileage_km=km,
            key=key,
        )

    receipt = counter_run(staff, visits.RECORD, work)
    detail = receipt.detail
    print_receipt(
        receipt, f"visit {detail['visit_id']} recorded, {detail['points_earned']:,} points earned."
    )


@app.command("void")
def void(
    visit_id: Annotated[int, typer.Argument(help="The visit's id.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")],
    staff: StaffOption = None,
) -> None:
    """Take back a visit recorded by mistake: its points go back; twice changes nothing."""

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await visits.void_visit(
            session, who, visit_id=visit_id, today=rt.today(), reason=reason
        )

    receipt = counter_run(staff, visits.VOID, work)
    returned = receipt.detail["points_returned"]
    print_receipt(receipt, f"visit {visit_id} voided, {returned:,} points taken back.")
