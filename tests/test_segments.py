"""Member segmentation as of a day: metrics from hand-made histories, quintile RFM scores,
segments, stickiness, lifecycle stages and car stages, in both languages."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta

import pytest

from db.models import Member, Vehicle, Visit
from db.session import Database
from domain import segments
from domain.errors import InvalidInput
from domain.segments import ChainNorms, MemberMetrics

AS_OF = date(2026, 6, 1)


def _at(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


async def _member(db: Database, ref: str, created: date, *, erased: bool = False) -> int:
    async with db.transaction() as session:
        member = Member(
            member_ref=ref,
            name=ref,
            created_at=_at(created),
            erased_at=_at(created) if erased else None,
        )
        session.add(member)
        await session.flush()
        assert member.id is not None
        return member.id


async def _visits(db: Database, member_id: int, *history: tuple[date, int, int | None]) -> None:
    async with db.transaction() as session:
        session.add_all(
            Visit(member_id=member_id, visited_on=day, amount_cents=cents, satisfaction=score)
            for day, cents, score in history
        )


async def test_metrics_are_exact_and_ignore_what_came_after(db: Database) -> None:
    regular = await _member(db, "regular", date(2025, 1, 1))
    await _visits(
        db,
        regular,
        (date(2025, 3, 1), 10_000, 9),
        (date(2025, 9, 1), 20_000, None),
        (date(2026, 5, 22), 30_000, 5),
        (date(2026, 6, 10), 99_999, 10),  # after the as-of day
    )
    fresh = await _member(db, "fresh", date(2026, 5, 1))
    await _member(db, "future", date(2026, 7, 1))
    erased = await _member(db, "erased", date(2025, 1, 1), erased=True)
    await _visits(db, erased, (date(2026, 1, 1), 5_000, None))
    imported = await _member(db, "imported", date(2026, 7, 1))
    await _visits(db, imported, (date(2024, 1, 10), 8_000, None))

    async with db.read() as session:
        rows = await segments.member_metrics(session, AS_OF)
    by_ref = {m.member_ref: m for m in rows}
    assert sorted(by_ref) == ["fresh", "imported", "regular"]
    assert by_ref["regular"] == MemberMetrics(
        member_id=regular,
        member_ref="regular",
        as_of=AS_OF,
        recency_days=10,
        frequency=2,  # 2025-03-01 is before the window starting 2025-06-02
        monetary_cents=50_000,
        lifetime_visits=3,
        lifetime_spend_cents=60_000,
        first_visit=date(2025, 3, 1),
        last_visit=date(2026, 5, 22),
        last_satisfaction=5,
        avg_interval_days=223.5,  # 447 days over two gaps
        days_since_joined=516,
    )
    assert by_ref["fresh"] == MemberMetrics(
        member_id=fresh,
        member_ref="fresh",
        as_of=AS_OF,
        recency_days=None,
        frequency=0,
        monetary_cents=0,
        lifetime_visits=0,
        lifetime_spend_cents=0,
        first_visit=None,
        last_visit=None,
        last_satisfaction=None,
        avg_interval_days=None,
        days_since_joined=31,
    )
    # Imported today with history: counted, and a member since their first visit.
    assert by_ref["imported"].days_since_joined == (AS_OF - date(2024, 1, 10)).days
    assert by_ref["imported"].recency_days == (AS_OF - date(2024, 1, 10)).days

    later = date(2026, 6, 10)
    async with db.read() as session:
        after = await segments.member_metrics(session, later, member_ids=[regular])
    assert len(after) == 1
    assert (after[0].lifetime_visits, after[0].last_satisfaction, after[0].recency_days) == (
        4,
        10,
        0,
    )


async def _population(db: Database) -> dict[str, int]:
    """Ten members; member i came i times, spent i x 100 yuan, last came 10 x (11 - i) days ago."""
    ids: dict[str, int] = {}
    for i in range(1, 11):
        member_id = await _member(db, f"m{i:02}", date(2024, 1, 1))
        ids[f"m{i:02}"] = member_id
        last = AS_OF - timedelta(days=10 * (11 - i))
        share = 10_000
        await _visits(db, member_id, *((last - timedelta(days=k), share, None) for k in range(i)))
    ids["never"] = await _member(db, "never", date(2024, 1, 1))
    return ids


async def test_quintiles_rank_the_visited_population(db: Database) -> None:
    ids = await _population(db)
    async with db.read() as session:
        result = {s.member_ref: s for s in await segments.segment_members(session, AS_OF)}
    expected = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for i, score in enumerate(expected, start=1):
        seg = result[f"m{i:02}"]
        assert (seg.r, seg.f, seg.m) == (score, score, score), seg.member_ref
        assert seg.rfm_score == f"{score}{score}{score}"
    never = result["never"]
    assert (never.r, never.f, never.m, never.rfm_segment) == (1, 1, 1, "prospect")
    assert result["m10"].rfm_segment == "champions"

    async with db.read() as session:
        only = await segments.segment_members(session, AS_OF, member_ids=[ids["m10"]])
    # Filtering does not shrink the population the scores are relative to.
    assert [(s.member_ref, s.rfm_score) for s in only] == [("m10", "555")]


async def test_gone_for_400_days_is_lost_and_regular_big_spender_champion(db: Database) -> None:
    await _population(db)
    gone = await _member(db, "gone", date(2024, 1, 1))
    await _visits(db, gone, (AS_OF - timedelta(days=400), 500_000, None))
    async with db.read() as session:
        result = {s.member_ref: s for s in await segments.segment_members(session, AS_OF)}
    assert (result["gone"].rfm_score, result["gone"].rfm_segment) == ("111", "lost")
    assert result["gone"].lifecycle_stage == "lost"
    assert (result["m10"].rfm_score, result["m10"].rfm_segment) == ("555", "champions")
    assert result["m10"].lifecycle_stage == "active"
    assert result["never"].lifecycle_stage == "lost"
    assert result["never"].stickiness == "weak"


def test_quintile_ties_share_a_score() -> None:
    assert segments.quintile_scores([7, 7, 7, 1]) == [2, 2, 2, 1]
    assert segments.quintile_scores([3, 3]) == [1, 1]
    assert segments.quintile_scores([10, 200, 30], lower_is_better=True) == [4, 1, 2]


@pytest.mark.parametrize(
    ("rfm", "key"),
    [
        ((5, 5, 5), "champions"),
        ((3, 5, 3), "loyal"),
        ((1, 5, 5), "at_risk"),
        ((2, 3, 4), "at_risk"),
        ((5, 1, 1), "new"),
        ((5, 2, 4), "potential_loyalist"),
        ((4, 4, 1), "general_value"),
        ((5, 2, 1), "promising"),
        ((3, 1, 1), "need_attention"),
        ((2, 1, 5), "about_to_sleep"),
        ((1, 1, 1), "lost"),
        ((1, 2, 5), "lost"),
    ],
)
def test_segment_mapping(rfm: tuple[int, int, int], key: str) -> None:
    assert segments.rfm_segment(*rfm) == key


def test_every_score_has_one_segment_and_bad_scores_are_refused() -> None:
    keys = {segments.rfm_segment(*rfm) for rfm in itertools.product(range(1, 6), repeat=3)}
    assert keys == {s.key for s in segments.RFM_SEGMENTS}
    with pytest.raises(InvalidInput):
        segments.rfm_segment(0, 3, 3)


def _m(
    *,
    recency: int | None = 10,
    frequency: int = 4,
    monetary: int = 50_000,
    visits: int = 4,
    satisfaction: int | None = None,
    interval: float | None = 30.0,
    joined: int = 400,
) -> MemberMetrics:
    last = None if recency is None else AS_OF - timedelta(days=recency)
    first = None
    if last is not None:
        first = last - timedelta(days=int((interval or 0) * max(visits - 1, 0)))
    return MemberMetrics(
        member_id=1,
        member_ref="x",
        as_of=AS_OF,
        recency_days=recency,
        frequency=frequency,
        monetary_cents=monetary,
        lifetime_visits=visits,
        lifetime_spend_cents=monetary,
        first_visit=first,
        last_visit=last,
        last_satisfaction=satisfaction,
        avg_interval_days=interval,
        days_since_joined=joined,
    )


NORMS = ChainNorms(median_monetary_cents=50_000, median_interval_days=30.0)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (_m(), "strong"),
        (_m(satisfaction=9), "strong"),
        (_m(satisfaction=7), "weak"),
        (_m(satisfaction=6), "pre_churn"),
        (_m(frequency=3), "weak"),
        (_m(monetary=49_999), "weak"),
        (_m(interval=20.0, recency=30), "strong"),
        (_m(interval=20.0, recency=31), "pre_churn"),
        (_m(interval=0.0, recency=21), "strong"),  # same-day visits: 14-day floor
        (_m(interval=0.0, recency=22), "pre_churn"),
        (_m(visits=1, frequency=1, interval=None, recency=60), "weak"),
        (_m(visits=1, frequency=1, interval=None, recency=61), "pre_churn"),
        (_m(recency=None, visits=0, frequency=0, monetary=0, interval=None), "weak"),
    ],
)
def test_stickiness(metrics: MemberMetrics, expected: str) -> None:
    assert segments.stickiness(metrics, NORMS) == expected


def test_chain_norms_use_spenders_and_fall_back_without_rhythm() -> None:
    norms = segments.chain_norms(
        [
            _m(monetary=10_000, interval=10.0),
            _m(monetary=30_000, interval=50.0),
            _m(frequency=0, monetary=0, interval=None),
        ]
    )
    assert norms == ChainNorms(median_monetary_cents=20_000, median_interval_days=30.0)
    assert segments.chain_norms([_m(interval=None)]).median_interval_days == 45.0


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (_m(recency=None, visits=0, interval=None, joined=30), "new"),
        (_m(recency=None, visits=0, interval=None, joined=90), "new"),
        (_m(recency=None, visits=0, interval=None, joined=91), "lost"),
        (_m(recency=60, visits=1, interval=None), "new"),
        (_m(recency=100, visits=1, interval=None), "lapsing"),
        (_m(recency=90), "active"),
        (_m(recency=91), "lapsing"),
        (_m(recency=180), "lapsing"),
        (_m(recency=181), "lost"),
        (_m(recency=5, joined=20), "new"),
    ],
)
def test_lifecycle_stage(metrics: MemberMetrics, expected: str) -> None:
    assert segments.lifecycle_stage(metrics) == expected


@pytest.mark.parametrize(
    ("purchase", "expected"),
    [
        (None, "unknown"),
        (date(2026, 7, 1), "unknown"),
        (date(2023, 6, 2), "new_car"),
        (date(2023, 6, 1), "middle"),
        (date(2020, 6, 1), "middle"),
        (date(2020, 5, 31), "old"),
    ],
)
def test_car_stage(purchase: date | None, expected: str) -> None:
    assert segments.car_stage(purchase, AS_OF) == expected


def test_car_stage_on_a_leap_day_purchase() -> None:
    bought = date(2020, 2, 29)
    assert segments.car_stage(bought, date(2023, 2, 27)) == "new_car"
    assert segments.car_stage(bought, date(2023, 2, 28)) == "middle"
    assert segments.car_stage(bought, date(2026, 3, 1)) == "old"


async def test_vehicle_stages_as_of(db: Database) -> None:
    owner = await _member(db, "owner", date(2024, 1, 1))
    erased = await _member(db, "erased", date(2024, 1, 1), erased=True)
    async with db.transaction() as session:
        known = _at(date(2025, 2, 1))
        cars = [
            Vehicle(
                member_id=owner, plate="沪A10001", purchase_date=date(2025, 1, 1), created_at=known
            ),
            Vehicle(
                member_id=owner, plate="沪A10002", purchase_date=date(2018, 1, 1), created_at=known
            ),
            Vehicle(member_id=owner, plate="沪A10003", created_at=known),
            Vehicle(
                member_id=erased, plate="沪A10004", purchase_date=date(2025, 1, 1), created_at=known
            ),
            Vehicle(
                member_id=owner,
                plate="沪A10005",
                purchase_date=date(2021, 1, 1),
                created_at=_at(date(2026, 8, 1)),
            ),
            Vehicle(
                member_id=owner,
                plate="沪A10006",
                purchase_date=date(2021, 1, 1),
                created_at=_at(date(2026, 8, 1)),
            ),
        ]
        session.add_all(cars)
        await session.flush()
        # Registered after the day, but seen at a visit before it: known on the day.
        session.add(
            Visit(
                member_id=owner,
                vehicle_id=cars[5].id,
                visited_on=date(2026, 3, 1),
                amount_cents=1_000,
            )
        )
    async with db.read() as session:
        stages = await segments.vehicle_stages(session, AS_OF)
    assert [(s.vehicle_id, s.stage) for s in stages] == [
        (cars[0].id, "new_car"),
        (cars[1].id, "old"),
        (cars[2].id, "unknown"),
        (cars[5].id, "middle"),
    ]
    assert all(s.member_id == owner for s in stages)
    async with db.read() as session:
        none = await segments.vehicle_stages(session, AS_OF, member_ids=[erased])
    assert none == []


def test_car_stage_offers() -> None:
    assert segments.CAR_STAGES["new_car"].categories == ("wash", "detailing", "maintenance")
    assert "tyres" in segments.CAR_STAGES["middle"].categories
    assert "repair" in segments.CAR_STAGES["old"].categories
    assert set(segments.CAR_STAGES) == {"new_car", "middle", "old", "unknown"}


def test_names_in_both_languages() -> None:
    assert segments.segment_name("champions", "zh_CN") == "重要价值客户"
    assert segments.segment_name("champions", "en") == "Champions"
    assert segments.segment_name("lost", "zh_CN") == "流失客户"
    assert segments.segment_name("prospect", "en") == "Prospect"
    assert segments.stickiness_name("strong", "zh_CN") == "强粘性"
    assert segments.stickiness_name("weak", "zh_CN") == "弱粘性"
    assert segments.stickiness_name("pre_churn", "zh_CN") == "预流失"
    assert segments.stickiness_name("pre_churn", "en") == "Pre-churn"
    assert segments.lifecycle_name("lapsing", "en") == "Lapsing"
    assert segments.car_stage_name("old", "zh_CN") == "老旧车"
    for key in {s.key for s in segments.RFM_SEGMENTS}:
        assert segments.segment_name(key, "zh_CN") != segments.segment_name(key, "en")
    with pytest.raises(InvalidInput):
        segments.segment_name("champions", "fr")
    with pytest.raises(InvalidInput):
        segments.stickiness_name("sticky", "en")
