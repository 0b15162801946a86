"""The hand-built chain of the lifecycle rules (tests/test_rules.py), one member per case: each
shipped rule should pick exactly the members named for it on `DAY` at `NOW` (08:30 in
Shanghai, when the rules run), and not those without consent, erased, or due on another day.
tests/test_maintenance.py checks a member's own maintenance view against the same cars."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from db.models import Booking, Member, Store, TierChange, Vehicle
from db.session import Database
from domain import points, visits
from domain.shop import ShopConfig

DAY = date(2026, 11, 24)
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai, when the rules run


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=SHANGHAI).astimezone(UTC)


@dataclass
class Chain:
    """Member ids by name, and the expected picks of each rule as (name, occurrence) pairs."""

    ids: dict[str, int] = field(default_factory=dict)
    cars: dict[str, int] = field(default_factory=dict)
    store_id: int = 0

    def name(self, member_id: int) -> str:
        return next(n for n, i in self.ids.items() if i == member_id)


async def build_chain(db: Database, config: ShopConfig) -> Chain:
    chain = Chain()
    rules_ = config.loyalty
    async with db.transaction() as s:
        chain.store_id = int(await s.scalar(select(Store.id).where(Store.code == "main")) or 0)

        async def member(
            name: str,
            *,
            consent: bool = False,
            birthday: date | None = None,
            locale: str = "zh_CN",
            erased: bool = False,
        ) -> int:
            m = Member(
                member_ref=f"R-{name}",
                name=name,
                birthday=birthday,
                locale=locale,
                home_store_id=chain.store_id,
                marketing_consent=consent,
                erased_at=NOW if erased else None,
                created_at=datetime(2024, 1, 1, tzinfo=UTC),
            )
            s.add(m)
            await s.flush()
            chain.ids[name] = int(m.id or 0)
            return chain.ids[name]

        async def car(name: str, owner: str, **dates: date) -> int:
            v = Vehicle(member_id=chain.ids[owner], plate=f"沪A{len(chain.cars) + 10000}", **dates)
            s.add(v)
            await s.flush()
            chain.cars[name] = int(v.id or 0)
            return chain.cars[name]

        async def visit(
            owner: str,
            day: date,
            services: list[str],
            categories: list[str],
            *,
            car_name: str | None = None,
            km: int | None = None,
            score: int | None = None,
        ) -> int:
            v = await visits.record(
                s,
                chain.ids[owner],
                day,
                20_000,
                rules_,
                store_id=chain.store_id,
                vehicle_id=chain.cars[car_name] if car_name else None,
                services=services,
                categories=categories,
                mileage_km=km,
                satisfaction=score,
                earn_points=False,
            )
            return int(v.id or 0)

        d = lambda n: DAY - timedelta(days=n)  # noqa: E731

        # Survey: yesterday's unscored visit; a scored one and an older one are not asked.
        await member("surveyed", locale="en")
        await visit("surveyed", d(1), ["wash"], ["wash"])
        await member("scored")
        await visit("scored", d(1), ["wash"], ["wash"], score=9)
        await member("older")
        await visit("older", d(2), ["wash"], ["wash"])
        await member("erased_visitor", erased=True)
        await visit("erased_visitor", d(1), ["wash"], ["wash"])

        # Care: three days after a detailing; a plain wash is left alone.
        await member("detailed")
        await car("detailed_car", "detailed")
        await visit("detailed", d(3), ["detailing"], ["detailing"], car_name="detailed_car")
        await member("washed")
        await visit("washed", d(3), ["wash"], ["wash"])

        # Birthday: with consent; without consent, erased, and tomorrow's are not greeted.
        await member("birthday", consent=True, birthday=date(1990, 11, 24))
        await member("birthday_no_consent", birthday=date(1991, 11, 24))
        await member("birthday_erased", consent=True, birthday=date(1992, 11, 24), erased=True)
        await member("birthday_tomorrow", consent=True, birthday=date(1990, 11, 25))

        # Maintenance by time: an oil service exactly 6 months ago and none since.
        await member("oil_by_time")
        await car("time_car", "oil_by_time")
        await visit("oil_by_time", date(2026, 5, 24), ["oil_service"], ["maintenance"],
                    car_name="time_car", km=30_000)  # fmt: skip
        await member("oil_renewed")
        await car("renewed_car", "oil_renewed")
        await visit("oil_renewed", date(2026, 5, 24), ["oil_service"], ["maintenance"],
                    car_name="renewed_car")  # fmt: skip
        await visit("oil_renewed", date(2026, 8, 1), ["oil_service"], ["maintenance"],
                    car_name="renewed_car")  # fmt: skip
        # Maintenance by mileage: 60 km a day since an oil service at 10,000 km on 1 September
        # crosses 15,000 km today (15,040), not yesterday (14,980).
        await member("oil_by_km")
        await car("km_car", "oil_by_km")
        await visit("oil_by_km", date(2026, 9, 1), ["oil_service"], ["maintenance"],
                    car_name="km_car", km=10_000)  # fmt: skip
        await visit("oil_by_km", date(2026, 10, 1), ["wash"], ["wash"],
                    car_name="km_car", km=11_800)  # fmt: skip
        # Crossed a week ago: reminded then, not again today.
        await member("oil_by_km_earlier")
        await car("km_car_2", "oil_by_km_earlier")
        await visit("oil_by_km_earlier", date(2026, 9, 1), ["oil_service"], ["maintenance"],
                    car_name="km_car_2", km=10_000)  # fmt: skip
        await visit("oil_by_km_earlier", date(2026, 10, 1), ["wash"], ["wash"],
                    car_name="km_car_2", km=12_000)  # fmt: skip

        # Insurance 60/30/7 and inspection 30/7 days ahead; other distances are not told.
        await member("insured")
        await car("insured_30", "insured", insurance_expiry=d(-30), inspection_due=d(-60))
        await car("insured_7", "insured", insurance_expiry=d(-7), inspection_due=d(-7))
        await car("insured_31", "insured", insurance_expiry=d(-31), inspection_due=d(-31))

        # Bookings: tomorrow 10:00 gets 24 h and 2 h reminders; cancelled and later ones none.
        await member("booker")
        await member("canceller")
        await member("later_booker")
        service = "wash"
        for owner, start, status in (
            ("booker", local(DAY + timedelta(days=1), 10), "booked"),
            ("canceller", local(DAY + timedelta(days=1), 11), "cancelled"),
            ("later_booker", local(DAY + timedelta(days=3), 10), "booked"),
        ):
            s.add(
                Booking(
                    member_id=chain.ids[owner],
                    store_id=chain.store_id,
                    service_code=service,
                    starts_at=start,
                    ends_at=start + timedelta(minutes=30),
                    status=status,
                )
            )

        # Points: a lot expiring in exactly 30 days; a spent one and a later one are not told.
        await member("expiring")
        await points.credit(s, chain.ids["expiring"], 800, date(2024, 12, 24), rules_)
        await points.credit(s, chain.ids["expiring"], 200, DAY, rules_)
        await member("spent")
        await points.credit(s, chain.ids["spent"], 500, date(2024, 12, 24), rules_)
        await points.debit(s, chain.ids["spent"], 500, DAY - timedelta(days=10))

        # Tier upgrade recorded this morning; a downgrade and an old upgrade are not celebrated.
        await member("upgraded")
        await member("downgraded")
        await member("upgraded_long_ago")
        for name, before, after, at in (
            ("upgraded", "standard", "silver", NOW - timedelta(hours=1)),
            ("downgraded", "silver", "standard", NOW - timedelta(hours=1)),
            ("upgraded_long_ago", "standard", "silver", NOW - timedelta(days=10)),
        ):
            s.add(
                TierChange(
                    member_id=chain.ids[name],
                    from_tier=before,
                    to_tier=after,
                    reason="upgrade",
                    created_at=at,
                )
            )
            m = await s.get(Member, chain.ids[name])
            assert m is not None
            m.tier_code = after

        # Win-back: a 20-day rhythm gone 31 days turned pre-churn today (allowed 30); gone 40
        # days turned long ago; a detractor's score the day before yesterday; no consent.
        await member("lapsing", consent=True)
        for n in (71, 51, 31):
            await visit("lapsing", d(n), ["wash"], ["wash"])
        await member("lapsed_long_ago", consent=True)
        for n in (80, 60, 40):
            await visit("lapsed_long_ago", d(n), ["wash"], ["wash"])
        await member("detractor", consent=True)
        await visit("detractor", d(50), ["wash"], ["wash"], score=9)
        await visit("detractor", d(2), ["wash"], ["wash"], score=4)
        await member("lapsing_no_consent")
        for n in (71, 51, 31):
            await visit("lapsing_no_consent", d(n), ["wash"], ["wash"])

        # Wake-up: last visit exactly 180 days ago; 179 days ago is not yet.
        await member("dormant", consent=True)
        await visit("dormant", d(400), ["wash"], ["wash"])
        await visit("dormant", d(180), ["wash"], ["wash"])
        await member("almost_dormant", consent=True)
        await visit("almost_dormant", d(179), ["wash"], ["wash"])
    return chain
