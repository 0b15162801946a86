"""Importing the visits file, chunk by chunk (the loop and the transaction: domain.csvimport).

* New visits are stored with their points and mileage readings; afterwards the affected members
  get the tier upgrades their spend earns (never a downgrade; recorded as tiers.IMPORTED).
* Points are those `domain.visits.record` gives (kind "earn", key `visit:<visit id>`, at the
  member's tier as it was before the file), computed set-based by points.points_for_spend_sql
  and points.lot_expiry_sql, the SQL twins of points.points_for_spend and points.lot_expiry.
* An existing visit is left as it is and counts as unchanged; a `visit_ref` seen before with
  another member, day or amount is a bad row, and so is a row naming an unknown member or store
  or a plate that is not a car of the member.
* Lots already past their expiry date are written as earned and then expired in the same
  transaction (`points.expire` as of the import day), so balances are right at once instead of
  after the next nightly run.
* On SQLite the import holds the write lock, so the rows above the highest id seen before an
  insert are exactly the ones it inserted: that is how new visits are found again, for less
  than RETURNING costs.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from datetime import date
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
    Table,
    and_,
    column,
    func,
    insert,
    literal,
    select,
    tuple_,
    values,
)
from sqlalchemy import cast as cast_

from db.models import Member, MileageReading, PointsEntry, Service, Tier, Vehicle, Visit
from db.session import upsert_insert
from db.types import UTCDateTime
from domain import points, tiers
from domain.csvimport.common import ACTOR, DriverInsert, Importer, among, memoized
from domain.csvparse import VisitRow

_member = cast(Table, Member.__table__)
_vehicle = cast(Table, Vehicle.__table__)
_reading = cast(Table, MileageReading.__table__)
_visit = cast(Table, Visit.__table__)
_entry = cast(Table, PointsEntry.__table__)

_VISIT_COLUMNS = (
    "visit_ref",
    "member_id",
    "store_id",
    "vehicle_id",
    "visited_on",
    "amount_cents",
    "services",
    "categories",
    "mileage_km",
    "satisfaction",
    "created_at",
)


class VisitsImporter(Importer):
    async def prepare(self) -> None:
        session = self.session
        self.services: dict[str, tuple[str, str]] = {}
        for code, zh, en, category in await session.execute(
            select(Service.code, Service.name_zh, Service.name_en, Service.category)
        ):
            for name in (en.casefold(), zh.casefold(), code.casefold(), code):
                self.services[name] = (code, category)
        self.service_lists: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
        self.first_new_id = int(await session.scalar(select(func.max(_visit.c.id))) or 0)
        self.last_id = self.first_new_id
        self.first_entry_id = int(await session.scalar(select(func.max(_entry.c.id))) or 0)
        dialect = session.bind.dialect
        self.insert_visits = DriverInsert(_visit, _VISIT_COLUMNS, dialect)
        self._stored_day = memoized(
            _visit.c.visited_on.type.dialect_impl(dialect).bind_processor(dialect) or str
        )

    def keys(self, row: VisitRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        same_day = ("day", row.member_ref, row.visited_on, row.amount_cents)
        if row.visit_ref is None:
            return (same_day,), (same_day,)
        return (("ref", row.visit_ref),), (("ref", row.visit_ref), same_day)

    def _services(self, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Service codes where the shop knows the service (by code or name), else the name as
        written; and the categories of the known ones. Remembered: cells repeat a lot."""
        if (known := self.service_lists.get(names)) is not None:
            return known
        codes: list[str] = []
        categories: dict[str, None] = {}
        for name in names:
            service = self.services.get(name) or self.services.get(name.casefold())
            if service is None:
                codes.append(name)
            else:
                codes.append(service[0])
                categories.setdefault(service[1], None)
        if len(self.service_lists) >= 10_000:
            self.service_lists.clear()
        self.service_lists[names] = (codes, list(categories))
        return codes, list(categories)

    async def write(self, rows: list[VisitRow]) -> None:
        run = self.run
        rows = self.known_stores(rows)
        members = await self.member_ids(r.member_ref for r in rows)
        cars = await self._cars({r.plate for r in rows if r.plate})
        by_ref = await self._visits_by_ref([r.visit_ref for r in rows if r.visit_ref])
        pending: list[tuple[VisitRow, int, int | None]] = []
        for row in rows:
            member_id = self.live_member(row, members)
            if member_id is None:
                continue
            vehicle_id = None
            if row.plate:
                car = cars.get(row.plate)
                if car is None or car[1] != member_id:
                    run.bad(row, "plate is not a car of this member (import the vehicles file)")
                    continue
                vehicle_id = car[0]
            if row.visit_ref and (seen := by_ref.get(row.visit_ref)) is not None:
                if seen != (member_id, row.visited_on, row.amount_cents):
                    run.bad(
                        row,
                        f"visit_ref {row.visit_ref!r} was imported before with another "
                        "member, day or amount",
                    )
                else:
                    run.result.unchanged += 1
                continue
            pending.append((row, member_id, vehicle_id))
        known_days = await self._visits_by_day(
            [(mid, r.visited_on, r.amount_cents) for r, mid, _ in pending if not r.visit_ref]
        )
        new = [
            (row, mid, vid)
            for row, mid, vid in pending
            if row.visit_ref or (mid, row.visited_on, row.amount_cents) not in known_days
        ]
        run.result.unchanged += len(pending) - len(new)
        await self._create(new)

    async def _cars(self, plates: set[str]) -> dict[str, tuple[int, int]]:
        if not plates:
            return {}
        c = _vehicle.c
        rows = await self.session.execute(
            select(c.plate, c.id, c.member_id).where(among(c.plate, plates, self.dialect))
        )
        return {plate: (vid, mid) for plate, vid, mid in rows}

    async def _visits_by_ref(self, refs: list[str]) -> dict[str, tuple[int, date, int]]:
        if not refs:
            return {}
        c = _visit.c
        rows = await self.session.execute(
            select(c.visit_ref, c.member_id, c.visited_on, c.amount_cents).where(
                among(c.visit_ref, set(refs), self.dialect)
            )
        )
        return {ref: (mid, day, cents) for ref, mid, day, cents in rows}

    async def _visits_by_day(self, keys: list[tuple[int, date, int]]) -> set[tuple[int, date, int]]:
        """Which (member, day, amount) already have a visit, with or without a visit_ref."""
        if not keys:
            return set()
        c = _visit.c
        columns = (c.member_id, c.visited_on, c.amount_cents)
        keys = list(dict.fromkeys(keys))
        if self.dialect == "postgresql":
            # A join with the keys as a VALUES list: PostgreSQL probes the (member, day, amount)
            # index per key, where a row-value IN would test every key against every row.
            wanted = values(
                column("member_id", Integer),
                column("visited_on", Date),
                column("amount_cents", BigInteger),
                name="wanted",
            ).data(keys)
            query = select(*columns).join(
                wanted,
                and_(*(col == getattr(wanted.c, col.name) for col in columns)),
            )
        else:
            # SQLite cannot name the columns of a VALUES list; a row-value IN over the keys as
            # one JSON array of [member, day as stored, amount] does the same, searching the
            # (member, day, amount) index once per key, with one parameter instead of four per
            # key (see common.among).
            day = self._stored_day
            listed = func.json_each(
                literal(json.dumps([[mid, day(on), cents] for mid, on, cents in keys]), String)
            )
            item = column("value")
            wanted = select(*(func.json_extract(item, f"$[{i}]") for i in range(3)))
            query = select(*columns).where(tuple_(*columns).in_(wanted.select_from(listed)))
        return {(mid, day, cents) for mid, day, cents in await self.session.execute(query)}

    async def _create(self, new: list[tuple[VisitRow, int, int | None]]) -> None:
        if not new:
            return
        run = self.run
        now, store_id, services = run.now, run.store_id, self._services
        params = []
        for row, member_id, vehicle_id in new:
            codes, categories = services(row.services)
            params.append(
                {
                    "visit_ref": row.visit_ref,
                    "member_id": member_id,
                    "store_id": store_id(row.store),
                    "vehicle_id": vehicle_id,
                    "visited_on": row.visited_on,
                    "amount_cents": row.amount_cents,
                    "services": codes,
                    "categories": categories,
                    "mileage_km": row.mileage_km,
                    "satisfaction": row.satisfaction,
                    "created_at": now,
                }
            )
        scope = await self._insert(params)
        run.result.created += len(new)
        if run.earn_points:
            await self._earn(scope)
        await self._read_mileage(scope)

    async def _insert(self, params: list[dict[str, Any]]) -> Any:
        """Insert visits; a WHERE clause that selects exactly the visits just inserted."""
        c = _visit.c
        if self.dialect != "sqlite":
            inserted = await self.session.execute(insert(_visit).returning(c.id), params)
            return c.id.in_(list(inserted.scalars()))
        await self.insert_visits(self.session, params)
        # This transaction holds SQLite's write lock, so every visit above the highest id seen
        # so far is one we just inserted; that costs far less than RETURNING.
        before, self.last_id = self.last_id, int(await self.session.scalar(select(func.max(c.id))))
        return c.id > before

    async def _earn(self, new_visits: Any) -> None:
        """One lot per new visit with points, keyed and dated like domain.visits.record writes
        it, at the member's tier as it is now (upgrades come after the whole file)."""
        v, m, t = _visit.c, _member.c, Tier.__table__.c
        earned = points.points_for_spend_sql(v.amount_cents, t.multiplier_permille, self.run.rules)
        lots = (
            select(
                v.member_id,
                literal(points.EARN),
                earned,
                v.visited_on,
                points.lot_expiry_sql(v.visited_on, self.run.rules, self.dialect),
                v.id,
                literal("visit:") + cast_(v.id, String),
                literal(ACTOR),
                literal(self.run.now, UTCDateTime),
            )
            .join_from(_visit, _member, m.id == v.member_id)
            .join(Tier.__table__, t.code == m.tier_code)
            .where(new_visits, earned > 0)
        )
        columns = [
            "member_id",
            "kind",
            "points",
            "occurred_on",
            "expires_on",
            "visit_id",
            "key",
            "actor",
            "created_at",
        ]
        await self.session.execute(insert(_entry).from_select(columns, lots))

    async def _read_mileage(self, new_visits: Any) -> None:
        """The odometer readings the new visits carry, skipping any the car already has."""
        v = _visit.c
        readings = select(v.vehicle_id, v.visited_on, v.mileage_km, literal(ACTOR)).where(
            new_visits, v.vehicle_id.is_not(None), v.mileage_km.is_not(None)
        )
        statement = (
            upsert_insert(self.session, _reading)
            .from_select(["vehicle_id", "read_on", "km", "source"], readings)
            .on_conflict_do_nothing(index_elements=["vehicle_id", "read_on", "km"])
        )
        await self.session.execute(statement)

    async def finish(self) -> None:
        """Points total, upgrades for the members who got new visits, then the expiry of lots
        that had already lapsed."""
        if not self.run.result.created:
            return
        # Rows above the ids seen at the start are this import's; on PostgreSQL another writer's
        # could be among them too, which only adds a member to the (upgrade-only) review.
        e = _entry.c
        if self.run.earn_points:
            self.run.result.points_credited = int(
                await self.session.scalar(
                    select(func.coalesce(func.sum(e.points), 0)).where(
                        e.id > self.first_entry_id, e.kind == points.EARN, e.actor == ACTOR
                    )
                )
                or 0
            )
        affected = select(_visit.c.member_id).where(_visit.c.id > self.first_new_id)
        self.run.result.tier_upgrades = await tiers.review(
            self.session,
            self.run.today,
            downgrade=False,
            member_ids=affected,
            upgrade_reason=tiers.IMPORTED,
        )
        if self.run.result.points_credited:
            await points.expire(self.session, self.run.today)
