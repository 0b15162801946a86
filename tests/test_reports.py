"""The chain overview a manager reads: activity buckets, tiers, the points ledger and what falls
due soon, on a small chain whose answers are known."""

from __future__ import annotations

from datetime import date, timedelta

from db.session import Database
from domain import points, reports
from domain.shop import LoyaltyRules
from tests.support.builders import add_car, add_visit, main_store, new_member

RULES = LoyaltyRules()
TODAY = date(2026, 6, 1)


async def build_chain(db: Database) -> dict[str, int]:
    """Four members: active, lapsing, lost, and one who never came."""
    ids: dict[str, int] = {}
    store = await main_store(db)
    for ref, days_ago, amount in [
        ("active", 10, 900_000),
        ("lapsing", 120, 50_000),
        ("lost", 400, 30_000),
    ]:
        ids[ref] = await new_member(db, ref, None, name=ref, home_store_id=store)
        await add_visit(
            db, ids[ref], TODAY - timedelta(days=days_ago), amount, RULES, store_id=store
        )
    ids["never"] = await new_member(db, "never", None, name="never")
    await add_car(db, ids["active"], "沪A11111", insurance_expiry=TODAY + timedelta(days=20))
    await add_car(
        db,
        ids["lapsing"],
        "沪A22222",
        insurance_expiry=TODAY + timedelta(days=90),
        inspection_due=TODAY + timedelta(days=5),
    )
    # The lost member's 300 points were earned 2025-04-27 and lapse on 2027-04-27; an old
    # lot of 40 lapses within the month.
    async with db.transaction() as session:
        await points.credit(session, ids["lapsing"], 40, date(2024, 6, 10), RULES)
    return ids


async def test_chain_overview(db: Database) -> None:
    ids = await build_chain(db)
    async with db.read() as session:
        activity = await reports.activity(session, TODAY)
        tiers = await reports.tier_distribution(session)
        totals = await reports.ledger_totals(session)
        expiring = await reports.expiring_points(session, TODAY, 30, limit=5)
        insurance = await reports.insurance_due(session, TODAY, 60, limit=5)
        inspections = await reports.inspections_due(session, TODAY, 30, limit=5)
        stores = await reports.store_overview(session, TODAY)
        size = await reports.chain_size(session)

    assert (activity.active, activity.lapsing, activity.lost, activity.never) == (1, 1, 1, 1)
    assert [(t.code, t.members) for t in tiers] == [
        ("standard", 3),
        ("silver", 0),
        ("gold", 1),
        ("diamond", 0),
    ]
    assert totals == reports.LedgerTotals(
        issued=9_000 + 500 + 300 + 40, expired=0, outstanding=9_840
    )
    assert (expiring.members, expiring.points) == (1, 40)
    assert [(e.member.id, e.points, e.first_expiry) for e in expiring.largest] == [
        (ids["lapsing"], 40, date(2026, 6, 10))
    ]
    assert insurance.count == 1 and insurance.first[0].member.id == ids["active"]
    assert [(c.vehicle.plate, c.due_on) for c in inspections.first] == [
        ("沪A22222", TODAY + timedelta(days=5))
    ]
    # The lost member's visit is older than 12 months: not in the store's year.
    assert [(s.members, s.visits_12m, s.revenue_12m_cents) for s in stores] == [(3, 2, 950_000)]
    assert (size.members, size.vehicles, size.visits) == (4, 2, 3)


async def test_expired_points_leave_the_expiring_list(db: Database) -> None:
    await build_chain(db)
    async with db.transaction() as session:
        assert await points.expire(session, date(2026, 6, 11)) == 40
    async with db.read() as session:
        expiring = await reports.expiring_points(session, date(2026, 6, 11), 30, limit=5)
        totals = await reports.ledger_totals(session)
    assert (expiring.members, expiring.points) == (0, 0)
    assert (totals.expired, totals.outstanding) == (40, 9_800)
