"""Importing the members file, chunk by chunk (the loop and the transaction: domain.csvimport).

* A new `member_ref` is created, at the lowest tier, with marketing consent recorded as
  members.create records it (when and where it was given; none without consent).
* An existing member is updated when a non-empty cell differs: empty cells never erase what is
  stored. Tags are added, never removed.
* `opening_points` are credited once per member ever (ledger key `opening:<member id>`, dated
  the import day, expiring like any lot of that day).
* Members erased for privacy are never changed or re-created: their rows count as unchanged.
* A store code the shop configuration does not have makes a bad row.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update

from db.models import Member, MemberTag, PointsEntry, Tier
from domain import points
from domain.csvimport.common import ACTOR, DriverInsert, Importer, among
from domain.csvparse import MemberRow

_member = cast(Table, Member.__table__)
_tag = cast(Table, MemberTag.__table__)
_entry = cast(Table, PointsEntry.__table__)

_MEMBER_FIELDS = ("name", "phone", "birthday", "locale", "home_store_id", "marketing_consent")


_MEMBER_INSERT_COLUMNS = (
    "member_ref",
    "name",
    "phone",
    "birthday",
    "locale",
    "home_store_id",
    "tier_code",
    "tier_since",
    "created_at",
    "updated_at",
    "marketing_consent",
    "consent_at",
    "consent_source",
)


class MembersImporter(Importer):
    async def prepare(self) -> None:
        self.default_tier = await self.session.scalar(
            select(Tier.code).order_by(Tier.rank).limit(1)
        )
        self.opening_expiry = points.lot_expiry(self.run.today, self.run.rules)
        self.insert_members = DriverInsert(
            _member, _MEMBER_INSERT_COLUMNS, self.session.bind.dialect
        )

    def keys(self, row: MemberRow) -> tuple[Iterable[Hashable], Iterable[Hashable]]:
        return (row.member_ref,), (row.member_ref,)

    async def write(self, rows: list[MemberRow]) -> None:
        rows = self.known_stores(rows)
        c = _member.c
        columns = [getattr(c, name) for name in _MEMBER_FIELDS]
        existing = await self.members_by_ref(
            (r.member_ref for r in rows), *columns, c.consent_at, c.consent_source
        )
        new = [r for r in rows if r.member_ref not in existing]
        old = [(r, existing[r.member_ref]) for r in rows if r.member_ref in existing]
        live = [(r, m) for r, m in old if m.erased_at is None]
        created = await self._create(new)
        touched = await self._update(live)
        touched |= await self._add_tags(
            [(m.id, r.tags) for r, m in live], [(created[r.member_ref], r.tags) for r in new]
        )
        touched |= await self._credit_opening(
            [(m.id, r.opening_points) for r, m in live],
            [(created[r.member_ref], r.opening_points) for r in new],
        )
        self.run.result.created += len(new)
        self.run.result.updated += len(touched)
        self.run.result.unchanged += len(old) - len(touched)

    def _given(self, row: MemberRow) -> dict[str, Any]:
        """The member columns this row sets: only its non-empty cells."""
        values: dict[str, Any] = {"phone": row.phone}
        if row.name:
            values["name"] = row.name
        if row.birthday is not None:
            values["birthday"] = row.birthday
        if row.locale is not None:
            values["locale"] = row.locale
        if row.store is not None:
            values["home_store_id"] = self.run.store_id(row.store)
        if row.marketing_consent is not None:
            values["marketing_consent"] = row.marketing_consent
        return values

    def _consent(self, given: bool) -> dict[str, Any]:
        """Like members.create: consent carries when and where it was given; no consent, none."""
        return {
            "marketing_consent": given,
            "consent_at": self.run.now if given else None,
            "consent_source": ACTOR if given else None,
        }

    async def _create(self, rows: list[MemberRow]) -> dict[str, int]:
        if not rows:
            return {}
        now = self.run.now
        params = [
            {
                "member_ref": row.member_ref,
                "name": row.name,
                "phone": row.phone,
                "birthday": row.birthday,
                "locale": row.locale or "zh_CN",
                "home_store_id": self.run.store_id(row.store),
                "tier_code": self.default_tier,
                "tier_since": now,
                "created_at": now,
                "updated_at": now,
                **self._consent(bool(row.marketing_consent)),
            }
            for row in rows
        ]
        c = _member.c
        if self.dialect != "sqlite":
            statement = insert(_member).returning(c.member_ref, c.id)
            return dict((await self.session.execute(statement, params)).all())
        # Under SQLite's write lock every member above the highest id before the insert is one
        # of these; reading them back costs less than RETURNING through Core.
        before = int(await self.session.scalar(select(func.max(c.id))) or 0)
        await self.insert_members(self.session, params)
        created = await self.session.execute(select(c.member_ref, c.id).where(c.id > before))
        return dict(created.all())

    async def _update(self, pairs: list[tuple[MemberRow, Any]]) -> set[int]:
        """Write the members whose non-empty cells differ from what is stored; their ids."""
        params = []
        for row, member in pairs:
            stored = {name: getattr(member, name) for name in _MEMBER_FIELDS}
            wanted = stored | self._given(row)
            if wanted == stored:
                continue
            consent = (
                self._consent(wanted["marketing_consent"])
                if wanted["marketing_consent"] != member.marketing_consent
                else {"consent_at": member.consent_at, "consent_source": member.consent_source}
            )
            params.append({"_id": member.id, **wanted, **consent, "updated_at": self.run.now})
        await self.executemany(update(_member).where(_member.c.id == bindparam("_id")), params)
        return {p["_id"] for p in params}

    async def _add_tags(
        self, old: list[tuple[int, tuple[str, ...]]], new: list[tuple[int, tuple[str, ...]]]
    ) -> set[int]:
        """Insert the tags members do not have yet; the ids of existing members that got one."""
        wanted = dict.fromkeys((mid, tag) for mid, tags in old + new for tag in tags)
        if not wanted:
            return set()
        old_ids = {mid for mid, tags in old if tags}
        have: set[tuple[int, str]] = set()
        if old_ids:
            rows = await self.session.execute(
                select(_tag.c.member_id, _tag.c.tag).where(
                    among(_tag.c.member_id, old_ids, self.dialect)
                )
            )
            have = set(rows.all())
        missing = [pair for pair in wanted if pair not in have]
        await self.executemany(
            insert(_tag), [{"member_id": mid, "tag": tag} for mid, tag in missing]
        )
        return {mid for mid, _ in missing} & old_ids

    async def _credit_opening(
        self, old: list[tuple[int, int | None]], new: list[tuple[int, int | None]]
    ) -> set[int]:
        """Opening balances, once per member ever; the ids of existing members credited now."""
        if not self.run.earn_points:
            return set()
        wanted = {f"opening:{mid}": (mid, pts) for mid, pts in old + new if pts}
        if not wanted:
            return set()
        old_keys = [f"opening:{mid}" for mid, pts in old if pts]
        done: set[str] = set()
        if old_keys:
            found = await self.session.scalars(
                select(_entry.c.key).where(among(_entry.c.key, old_keys, self.dialect))
            )
            done = set(found.all())
        params = [
            {
                "member_id": mid,
                "kind": points.OPENING,
                "points": pts,
                "occurred_on": self.run.today,
                "expires_on": self.opening_expiry,
                "key": key,
                "reason": "opening balance from import",
                "actor": ACTOR,
                "created_at": self.run.now,
            }
            for key, (mid, pts) in wanted.items()
            if key not in done
        ]
        await self.executemany(insert(_entry), params)
        self.run.result.points_credited += sum(p["points"] for p in params)
        return {p["member_id"] for p in params} & {mid for mid, pts in old if pts}
