"""What a staff chat shows before any counter action: the day's bookings at the account's
store and the complaints waiting for it, each authorised by role and store
(`staff.require`) and with personal data masked, since a list is read over a shoulder.

A chain-wide account (no store) sees every open store; a store's staff see their store only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Staff
from domain import bookings, feedback, staff
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
    staff.require(person, store_id=person.store_id)
    if person.store_id is not None:
        store_ids = [person.store_id]
    else:
        store_ids = [s.id for s in await bookings.open_stores(session) if s.id is not None]
    lines = [line for sid in store_ids for line in await bookings.day_sheet(session, sid, day)]
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
    staff.require(person, store_id=person.store_id)
    found = await feedback.open_complaints(session, store_id=person.store_id, limit=LIST_LIMIT)
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
