"""What a staff chat lists: the day's bookings at the account's store and the complaints
waiting for it, from the front desk's use cases (`domain.counter.desk`, which authorise them
by role and store), shaped into rows with personal data masked, since a chat's list is read
over a shoulder.

A chain-wide account (no store) sees every open store's bookings; a store's staff see their
store only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Staff
from domain import bookings
from domain.counter import desk
from domain.identity import mask_phone, mask_plate

LIST_LIMIT = 20


@dataclass(frozen=True)
class BookingRow:
    time: str
    ref: str
    store: str
    member: str
    phone: str
    plate: str
    service_zh: str
    service_en: str
    status: str


@dataclass(frozen=True)
class ComplaintRow:
    id: int
    member_ref: str
    phone: str
    store: str
    body: str
    filed: date


async def todays_bookings(session: AsyncSession, person: Staff, day: date) -> list[BookingRow]:
    """The bookings starting on `day` at the account's store (every open store for a
    chain-wide account), in time order."""
    assert person.id is not None
    if person.store_id is not None:
        store_ids: list[int | None] = [None]
    else:
        store_ids = [s.id for s in await bookings.open_stores(session) if s.id is not None]
    lines = [
        line
        for store_id in store_ids
        for line in await desk.todays_bookings(session, person.id, day=day, store_id=store_id)
    ]
    lines.sort(key=lambda line: line.starts_local)
    return [
        BookingRow(
            time=line.starts_local.strftime("%H:%M"),
            ref=line.ref,
            store=line.store_name,
            member=line.member_name,
            phone=mask_phone(line.member_phone),
            plate=mask_plate(line.vehicle_plate),
            service_zh=line.service_name_zh,
            service_en=line.service_name_en,
            status=line.booking.status,
        )
        for line in lines
    ]


async def waiting_complaints(session: AsyncSession, person: Staff) -> list[ComplaintRow]:
    """Open complaints of members whose home store is the account's (all, chain-wide),
    oldest first."""
    assert person.id is not None
    found = await desk.open_complaints(session, person.id, limit=LIST_LIMIT)
    return [
        ComplaintRow(
            id=item.complaint.id or 0,
            member_ref=item.member_ref,
            phone=mask_phone(item.phone),
            store=item.home_store_code or "-",
            body=item.complaint.body,
            filed=item.complaint.created_at.date(),
        )
        for item in found
    ]


__all__ = ["BookingRow", "ComplaintRow", "todays_bookings", "waiting_complaints"]
