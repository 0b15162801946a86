"""Importing the vehicles file, chunk by chunk (the loop and the transaction: domain.csvimport).

* A new plate is created for the member; a plate of another member, or a `member_ref` that is
  not a member, makes a bad row. A car of a member erased for privacy is left as it is and
  counts as unchanged.
* A known car is updated when a non-empty cell differs: empty cells never erase what is stored.
* `mileage_km` adds an odometer reading dated the import day, only when the car has no reading
  that high.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MileageReading, Vehicle
from db.session import upsert_insert
from domain.csvimport.common import ACTOR, Importer, among
from domain.csvparse import VehicleRow

_vehicle = cast(Table, Vehicle.__table__)
_reading = cast(Table, MileageReading.__table__)

_VEHICLE_FIELDS = (
    "vin",
    "make",
    "model",
    "purchase_date",
    "insurance_expiry",
    "inspection_due",
)


class VehiclesImporter(Importer):
    def keys(self, row: VehicleRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        return (row.plate,), (row.plate,)

    async def write(self, rows: list[VehicleRow]) -> None:
        run, c = self.run, _vehicle.c
        owners = await self.member_ids(r.member_ref for r in rows)
        found = await self.session.execute(
            select(c.id, c.plate, c.member_id, *(getattr(c, f) for f in _VEHICLE_FIELDS)).where(
                among(c.plate, {r.plate for r in rows}, self.dialect)
            )
        )
        cars = {car.plate: car for car in found}
        top_km = await self._top_readings([car.id for car in cars.values()])
        new: list[tuple[VehicleRow, int]] = []
        changes: list[dict[str, Any]] = []
        readings: list[tuple[int, int]] = []
        for row in rows:
            owner_id = self.live_member(row, owners)
            if owner_id is None:
                continue
            car = cars.get(row.plate)
            if car is None:
                new.append((row, owner_id))
                continue
            if car.member_id != owner_id:
                run.bad(row, "plate belongs to another member")
                continue
            stored = {f: getattr(car, f) for f in _VEHICLE_FIELDS}
            wanted = stored | {f: getattr(row, f) for f in _VEHICLE_FIELDS if getattr(row, f)}
            read = row.mileage_km is not None and row.mileage_km > top_km.get(car.id, -1)
            if wanted != stored:
                changes.append({"_id": car.id, **wanted})
            if read:
                readings.append((car.id, cast(int, row.mileage_km)))
            if wanted != stored or read:
                run.result.updated += 1
            else:
                run.result.unchanged += 1
        created = await self._create(new)
        readings += [(created[r.plate], r.mileage_km) for r, _ in new if r.mileage_km is not None]
        await self.executemany(update(_vehicle).where(_vehicle.c.id == bindparam("_id")), changes)
        await _add_readings(self.session, [(vid, run.today, km) for vid, km in readings])
        run.result.created += len(new)

    async def _top_readings(self, vehicle_ids: list[int]) -> dict[int, int]:
        if not vehicle_ids:
            return {}
        rows = await self.session.execute(
            select(_reading.c.vehicle_id, func.max(_reading.c.km))
            .where(among(_reading.c.vehicle_id, vehicle_ids, self.dialect))
            .group_by(_reading.c.vehicle_id)
        )
        return dict(rows.all())

    async def _create(self, rows: list[tuple[VehicleRow, int]]) -> dict[str, int]:
        if not rows:
            return {}
        params = [
            {
                "member_id": member_id,
                "plate": row.plate,
                **{f: getattr(row, f) for f in _VEHICLE_FIELDS},
                "created_at": self.run.now,
            }
            for row, member_id in rows
        ]
        statement = insert(_vehicle).returning(_vehicle.c.plate, _vehicle.c.id)
        return dict((await self.session.execute(statement, params)).all())


async def _add_readings(session: AsyncSession, readings: list[tuple[int, date, int]]) -> None:
    """Odometer readings, skipping any the car already has for that day and distance."""
    if not readings:
        return
    params = [
        {"vehicle_id": vid, "read_on": day, "km": km, "source": ACTOR}
        for vid, day, km in dict.fromkeys(readings)
    ]
    statement = upsert_insert(session, _reading).on_conflict_do_nothing(
        index_elements=["vehicle_id", "read_on", "km"]
    )
    await session.execute(statement, params)
