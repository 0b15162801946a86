"""The demo chain's data: members, cars and three years of visits, written as the CSV files a
real shop would export from its POS or dealer system.

Pure: no database, no clock. Everything random comes from one seed and an explicit "today", so
the same seed always yields byte-identical files, and member 7 looks the same however many
members are generated.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from domain.csvcells import parse_amount
from domain.csvparse import KINDS, Kind
from domain.csvwrite import safe_row
from domain.points import add_months
from domain.shop import WEEKDAYS, ShopConfig, StoreConfig, to_cents
from memberbot.demo.identities import (
    CAR_MODELS,
    CarModel,
    person_name,
    phone_number,
    plate_number,
    vin_for,
)

MEMBER_PREFIX = "DEMO-"
HISTORY_MONTHS = 36

T = TypeVar("T")
# The order a POS export writes its columns in; the importer finds them by name.
COLUMNS: dict[Kind, tuple[str, ...]] = {
    "members": (
        "member_ref",
        "name",
        "phone",
        "birthday",
        "store",
        "tags",
        "locale",
        "opening_points",
        "marketing_consent",
    ),
    "vehicles": (
        "member_ref",
        "plate",
        "vin",
        "make",
        "model",
        "purchase_date",
        "mileage_km",
        "insurance_expiry",
        "inspection_due",
    ),
    "visits": (
        "visit_ref",
        "member_ref",
        "visited_on",
        "store",
        "plate",
        "services",
        "amount",
        "mileage_km",
        "satisfaction",
    ),
}

# --------------------------------------------------------------------------------------------
# What the generator draws from
# --------------------------------------------------------------------------------------------

Persona = Literal["regular", "washer", "detailer", "repair", "lapser", "fleet", "newcomer"]
PERSONAS: tuple[tuple[Persona, int], ...] = (
    ("regular", 34),
    ("washer", 20),
    ("detailer", 8),
    ("repair", 14),
    ("lapser", 17),
    ("fleet", 2),
    ("newcomer", 5),
)
SATISFACTION = ((10, 44), (9, 28), (8, 15), (7, 5), (6, 3), (5, 2), (4, 1), (3, 1), (2, 1))
PREMIUM_SERVICES = ("oil_service", "major_service", "tyres", "repair", "insurance")


@dataclass(frozen=True)
class Habits:
    """How often one member comes back for what. Intervals are (shortest, longest) in days."""

    maintenance: Literal["strict", "loose"] | None
    wash_every: tuple[int, int] | None
    detail_every: tuple[int, int] | None
    repairs_per_year: float
    insurance_share: float
    inspection_share: float


def habits_for(persona: Persona, rng: random.Random) -> Habits:
    """The habits of a persona, with the spread real customers show within one."""
    if persona == "lapser":
        persona = rng.choice(("regular", "regular", "washer", "detailer", "repair"))
    if persona == "regular":
        return Habits(
            maintenance="strict",
            wash_every=(45, 150) if rng.random() < 0.6 else None,
            detail_every=(300, 500) if rng.random() < 0.2 else None,
            repairs_per_year=0.15,
            insurance_share=0.45,
            inspection_share=0.6,
        )
    if persona == "washer":
        return Habits(
            maintenance="loose" if rng.random() < 0.3 else None,
            wash_every=(24, 38),
            detail_every=(300, 600) if rng.random() < 0.25 else None,
            repairs_per_year=0.1,
            insurance_share=0.2,
            inspection_share=0.3,
        )
    if persona == "detailer":
        return Habits(
            maintenance="loose" if rng.random() < 0.3 else None,
            wash_every=(20, 35),
            detail_every=(75, 130),
            repairs_per_year=0.1,
            insurance_share=0.25,
            inspection_share=0.3,
        )
    if persona == "repair":
        return Habits(
            maintenance="loose" if rng.random() < 0.4 else None,
            wash_every=(90, 200) if rng.random() < 0.5 else None,
            detail_every=None,
            repairs_per_year=0.6,
            insurance_share=0.2,
            inspection_share=0.4,
        )
    if persona == "fleet":
        return Habits(
            maintenance="strict",
            wash_every=(21, 45),
            detail_every=None,
            repairs_per_year=0.4,
            insurance_share=0.9,
            inspection_share=0.9,
        )
    raise ValueError(f"no habits for persona {persona!r}")


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


@dataclass
class Car:
    """A generated car; mileage grows by the owner's daily habit from the day it was bought."""

    plate: str
    written_plate: str
    vin: str | None
    model: CarModel
    purchased: date
    daily_km: float

    def km_on(self, day: date) -> int:
        return max(0, round((day - self.purchased).days * self.daily_km))

    def anniversary(self, years: int) -> date:
        return add_months(self.purchased, 12 * years)

    def next_anniversary(self, after: date) -> date:
        years = 1
        while self.anniversary(years) <= after:
            years += 1
        return self.anniversary(years)

    def inspection_dues(self, until: date) -> list[date]:
        """On-site inspection days of a private car: the 6th and 10th year, then every year.

        The simplified 2022 rule: in between, the owner only applies for the inspection label
        online, which a shop does not need to remind about.
        """
        dues: list[date] = []
        years = 6
        while (day := self.anniversary(years)) <= until:
            dues.append(day)
            years = 10 if years < 10 else years + 1
        return dues


@dataclass(frozen=True)
class DemoData:
    """The three CSV files as rows of text, plus what the tests and the summary need to know."""

    today: date
    members: list[dict[str, str]]
    vehicles: list[dict[str, str]]
    visits: list[dict[str, str]]
    personas: dict[str, Persona]
    showcase_ref: str

    def rows(self, kind: Kind) -> list[dict[str, str]]:
        return {"members": self.members, "vehicles": self.vehicles, "visits": self.visits}[kind]


@dataclass
class _Chain:
    """What every member's generation shares: the calendar, the stores, prices, and the
    identifiers already handed out (phones and plates are unique across the chain)."""

    today: date
    history_start: date
    stores: list[StoreConfig]
    prices: dict[str, int]
    service_order: dict[str, int]
    phones: set[str] = field(default_factory=set)
    plates: set[str] = field(default_factory=set)

    @property
    def store_weights(self) -> list[float]:
        """The first store is the flagship; the others draw fewer members each."""
        return [max(1.0, 4.0 - 0.75 * i) for i in range(len(self.stores))]

    def closed_weekdays(self, store: StoreConfig) -> set[int]:
        """Weekdays (Monday = 0) the configuration lists with no opening hours at all."""
        return {i for i, name in enumerate(WEEKDAYS) if store.opening_hours.get(name) == []}


@dataclass
class _Member:
    ref: str
    persona: Persona
    home: StoreConfig
    start: date
    end: date
    cars: list[Car]
    visits: list[dict[str, str]] = field(default_factory=list)


def _weighted(rng: random.Random, options: tuple[tuple[T, int], ...]) -> T:
    values, weights = zip(*options, strict=True)
    return rng.choices(values, weights=weights)[0]


def _days(rng: random.Random, bounds: tuple[int, int]) -> timedelta:
    return timedelta(days=rng.randint(*bounds))


def _daily_km(rng: random.Random, persona: Persona) -> float:
    """Most private cars run 20–35 km a day (about 10,000 km a year); fleets run far more."""
    if persona == "fleet":
        return rng.uniform(60, 80)
    band = rng.random()
    if band < 0.75:
        return rng.uniform(20, 35)
    if band < 0.93:
        return rng.uniform(35, 55)
    return rng.uniform(55, 80)


def _car(
    rng: random.Random, chain: _Chain, home: StoreConfig, persona: Persona, latest: date
) -> Car:
    """A car bought 0–12 years ago (never before its model was on sale, never after `latest`)."""
    candidates = CAR_MODELS
    if persona in ("regular", "fleet"):
        candidates = tuple(m for m in CAR_MODELS if m.energy != "ev")
    model = rng.choices(candidates, weights=[m.weight for m in candidates])[0]
    earliest = max(add_months(chain.today, -144), date(model.since, 1, 1))
    if earliest >= latest:
        earliest = latest - timedelta(days=365)
    purchased = earliest + timedelta(days=rng.randint(0, (latest - earliest).days))
    plate, written = plate_number(rng, chain.plates, home.code, model)
    vin = vin_for(rng, model, purchased.year) if rng.random() < 0.7 else None
    return Car(plate, written, vin, model, purchased, _daily_km(rng, persona))


def _recurring(
    rng: random.Random, start: date, end: date, every: tuple[int, int]
) -> Iterator[date]:
    day = start + timedelta(days=rng.randint(0, every[1]))
    while day <= end:
        yield day
        day += _days(rng, every)


def _maintenance(
    rng: random.Random, car: Car, start: date, end: date, style: Literal["strict", "loose"]
) -> Iterator[tuple[date, list[str]]]:
    """Oil services every 5–6 months or ~5,000 km, whichever comes first (a little late, as
    people are); a major service every 2 years or 40,000 km; tyres every 40–60,000 km.
    'Loose' customers come only every 8–14 months."""
    day = start + timedelta(days=rng.randint(0, 150 if style == "strict" else 300))
    last_major, last_major_km = car.purchased, 0
    tyres_km, tyre_life = 0, rng.randint(40_000, 60_000)
    while day <= end:
        km = car.km_on(day)
        if (day - last_major).days >= 700 or km - last_major_km >= 38_000:
            services = ["major_service"]
            last_major, last_major_km = day, km
        else:
            services = ["oil_service"]
        if km - tyres_km >= tyre_life:
            services.append("tyres")
            tyres_km, tyre_life = km, rng.randint(40_000, 60_000)
        yield day, services
        if style == "strict":
            by_time = rng.randint(150, 180)
            by_km = round(rng.uniform(4_600, 5_400) / car.daily_km)
            gap = min(by_time, by_km) + rng.randint(0, 12)
        else:
            gap = rng.randint(240, 420)
        day += timedelta(days=gap)


def _car_events(
    rng: random.Random, car: Car, habits: Habits, start: date, end: date
) -> Iterator[tuple[date, list[str]]]:
    if habits.maintenance and car.model.energy != "ev":
        yield from _maintenance(rng, car, start, end, habits.maintenance)
    if habits.wash_every:
        for day in _recurring(rng, start, end, habits.wash_every):
            yield day, ["wash"]
    if habits.detail_every:
        for day in _recurring(rng, start, end, habits.detail_every):
            yield day, ["detailing"]
    month = start
    while month <= end:
        if rng.random() < habits.repairs_per_year / 12:
            yield min(end, month + timedelta(days=rng.randint(0, 29))), ["repair"]
        month += timedelta(days=30)
    years = 1
    while (expiry := car.anniversary(years)) <= end + timedelta(days=20):
        renew = expiry - timedelta(days=rng.randint(0, 20))
        if start <= renew <= end and rng.random() < habits.insurance_share:
            yield renew, ["insurance"]
        years += 1
    for due in car.inspection_dues(end + timedelta(days=30)):
        day = due - timedelta(days=rng.randint(0, 30))
        if start <= day <= end and rng.random() < habits.inspection_share:
            yield day, ["inspection"]


def _newcomer_events(
    rng: random.Random, car: Car, start: date, end: date
) -> Iterator[tuple[date, list[str]]]:
    first = start + timedelta(days=rng.randint(0, max(0, (end - start).days)))
    service = _weighted(rng, (("wash", 50), ("oil_service", 35), ("detailing", 15)))
    if service == "oil_service" and car.model.energy == "ev":
        service = "wash"
    yield first, [service]
    if rng.random() < 0.4 and (end - first).days > 7:
        yield first + timedelta(days=rng.randint(7, (end - first).days)), ["wash"]


def _amount_cents(rng: random.Random, chain: _Chain, services: list[str], premium: bool) -> int:
    """Around the list price: premium washes, oil grades, 2 or 4 tyres, repairs of every size."""
    total = 0
    for code in services:
        price = chain.prices.get(code, 0)
        factor = {
            "wash": rng.choice((1.0, 1.0, 1.0, 1.0, 1.0, 4 / 3)),
            "detailing": rng.uniform(0.85, 1.3),
            "oil_service": rng.uniform(0.85, 1.35),
            "major_service": rng.uniform(0.85, 1.4),
            "tyres": rng.choice((1.0, 2.0)) * rng.uniform(0.8, 1.5),
            "repair": min(6.0, max(0.1, rng.lognormvariate(0, 0.7))),
            "insurance": rng.uniform(0.75, 1.6),
            "inspection": rng.choice((1.0, 1.0, 1.15)),
        }.get(code, 1.0)
        if premium and code in PREMIUM_SERVICES:
            factor *= 1.4
        total += round(price * factor / 100) * 100
    return total


def _visit_store(rng: random.Random, chain: _Chain, home: StoreConfig, day: date) -> StoreConfig:
    if rng.random() < 0.9:
        return home
    open_stores = [s for s in chain.stores if day.weekday() not in chain.closed_weekdays(s)]
    return rng.choice(open_stores) if open_stores else home


def _visits(
    rng: random.Random,
    chain: _Chain,
    member: _Member,
    events: list[tuple[Car, date, list[str]]],
) -> list[dict[str, str]]:
    """Merge what happened to one car on one day into one visit, on a day the home store is
    open, and write it the way a POS export would."""
    closed = chain.closed_weekdays(member.home)
    if len(closed) == 7:
        closed = set()
    merged: dict[tuple[date, str], tuple[Car, list[str]]] = {}
    for car, day, services in events:
        while day.weekday() in closed:
            day += timedelta(days=1) if day < member.end else timedelta(days=-1)
        _, known = merged.setdefault((day, car.plate), (car, []))
        known.extend(s for s in services if s not in known)
    rows: list[dict[str, str]] = []
    for number, ((day, _), (car, services)) in enumerate(sorted(merged.items()), start=1):
        services.sort(key=lambda code: chain.service_order.get(code, 99))
        store = _visit_store(rng, chain, member.home, day)
        wants_km = any(s not in ("wash", "detailing") for s in services) or rng.random() < 0.3
        score = "" if rng.random() < 0.3 else str(_weighted(rng, SATISFACTION))
        amount = _amount_cents(rng, chain, services, car.model.premium)
        rows.append(
            {
                "visit_ref": f"{member.ref}-V{number:04d}",
                "member_ref": member.ref,
                "visited_on": day.isoformat(),
                "store": store.code,
                "plate": car.plate,
                "services": ";".join(services),
                "amount": f"{amount // 100}.{amount % 100:02d}",
                "mileage_km": str(car.km_on(day)) if wants_km else "",
                "satisfaction": score,
            }
        )
    return rows


def _window(rng: random.Random, chain: _Chain, persona: Persona) -> tuple[date, date, bool]:
    """When the member was active: (first day, last day, joined before the history starts)."""
    today, begin = chain.today, chain.history_start
    if persona == "newcomer":
        return today - timedelta(days=rng.randint(0, 60)), today, False
    veteran = rng.random() < 0.45
    span = (today - begin).days
    start = begin if veteran else begin + timedelta(days=rng.randint(0, span - 150))
    end = today
    if persona == "lapser":
        end = today - timedelta(days=rng.randint(181, 540))
        if (end - start).days < 60:
            start = max(begin, end - timedelta(days=rng.randint(90, 400)))
    return start, end, veteran


def _events(
    rng: random.Random, member: _Member, habits: Habits | None
) -> list[tuple[Car, date, list[str]]]:
    """Everything each car came in for during the member's active window."""
    events: list[tuple[Car, date, list[str]]] = []
    for car in member.cars:
        car_start = max(member.start, car.purchased + timedelta(days=3))
        if habits is None:
            events.extend((car, d, s) for d, s in _newcomer_events(rng, car, car_start, member.end))
            break
        events.extend((car, d, s) for d, s in _car_events(rng, car, habits, car_start, member.end))
    first_car = member.cars[0]
    if member.persona == "lapser":
        # Their last visit is the day they stopped coming, 6–18 months ago.
        serviced = habits is not None and habits.maintenance and first_car.model.energy != "ev"
        events.append((first_car, member.end, ["oil_service" if serviced else "wash"]))
    wanted = "repair" if member.persona == "repair" else "wash"
    if not any(wanted in services for _, _, services in events) and (
        member.persona == "repair" or not events
    ):
        # Everyone in the file came at least once; repair customers came for a repair.
        first = min(member.end, max(member.start, first_car.purchased + timedelta(days=3)))
        day = first + timedelta(days=rng.randint(0, (member.end - first).days))
        events.append((first_car, day, [wanted]))
    return events


def _member_row(
    rng: random.Random, chain: _Chain, member: _Member, veteran: bool
) -> dict[str, str]:
    """The member as the shop's system exports them: most with a birthday, most consenting."""
    fleet = member.persona == "fleet"
    locale = "en" if not fleet and rng.random() < 0.03 else "zh_CN"
    _, written_phone = phone_number(rng, chain.phones)
    birthday = ""
    if not fleet and rng.random() < 0.8:
        birthday = (chain.today - timedelta(days=rng.randint(22 * 365, 68 * 365))).isoformat()
    tags = []
    if any(c.model.energy != "ice" for c in member.cars):
        tags.append("新能源")
    if fleet:
        tags.append("车队")
    elif len(member.cars) > 1:
        tags.append("多车")
    if veteran:
        tags.append("老客户")
    opening = rng.randint(1, 30) * 50 if veteran and rng.random() < 0.35 else 0
    return {
        "member_ref": member.ref,
        "name": person_name(rng, locale, fleet=member.persona == "fleet"),
        "phone": written_phone,
        "birthday": birthday,
        "store": member.home.code,
        "tags": ";".join(tags),
        "locale": locale,
        "opening_points": str(opening) if opening else "",
        "marketing_consent": "yes" if rng.random() < 0.7 else "no",
    }


def _member(rng: random.Random, chain: _Chain, index: int) -> tuple[_Member, dict[str, str]]:
    persona = _weighted(rng, PERSONAS)
    home = rng.choices(chain.stores, weights=chain.store_weights)[0]
    start, end, veteran = _window(rng, chain, persona)
    if persona == "fleet":
        car_count = rng.randint(3, 8)
    else:
        car_count = _weighted(rng, ((1, 85), (2, 13), (3, 2)))
    latest = min(end, chain.today) - timedelta(days=30)
    cars = [_car(rng, chain, home, persona, latest) for _ in range(car_count)]
    member = _Member(f"{MEMBER_PREFIX}{index:05d}", persona, home, start, end, cars)
    habits = None if persona == "newcomer" else habits_for(persona, rng)
    member.visits = _visits(rng, chain, member, _events(rng, member, habits))
    return member, _member_row(rng, chain, member, veteran)


def _vehicle_row(chain: _Chain, ref: str, car: Car, visits: list[dict[str, str]]) -> dict[str, str]:
    """The car as the dealer system knows it. Insurance runs to the purchase anniversary and
    the inspection falls due on one; a renewal or inspection already done at the shop this
    cycle moves the date on. The mileage is today's: the importer dates it on the import day."""
    today = chain.today
    done = {
        service: [day_of(v["visited_on"]) for v in visits if service in v["services"]]
        for service in ("insurance", "inspection")
    }
    expiry = car.next_anniversary(today)
    if any(d >= expiry - timedelta(days=31) for d in done["insurance"]):
        expiry = car.next_anniversary(expiry)
    dues = [d for d in car.inspection_dues(today + timedelta(days=3660)) if d > today]
    if dues and any(d >= dues[0] - timedelta(days=31) for d in done["inspection"]):
        dues.pop(0)
    return {
        "member_ref": ref,
        "plate": car.written_plate,
        "vin": car.vin or "",
        "make": car.model.make,
        "model": car.model.model,
        "purchase_date": car.purchased.isoformat(),
        "mileage_km": str(car.km_on(today)),
        "insurance_expiry": expiry.isoformat(),
        "inspection_due": dues[0].isoformat() if dues else "",
    }


def _showcase(members: list[_Member], today: date, config: ShopConfig) -> str:
    """The member worth showing first: a one-car maintenance regular who came recently, spends
    enough for a tier, has points about to lapse and an insurance renewal coming up."""
    notice = today + timedelta(days=config.points.expiring_notice_days)

    def score(member: _Member) -> tuple[bool, ...]:
        days = [day_of(v["visited_on"]) for v in member.visits]
        recent = max(days, default=date.min) >= today - timedelta(days=45)
        year_ago = (today - timedelta(days=365)).isoformat()
        spend = sum(parse_amount(v["amount"]) for v in member.visits if v["visited_on"] > year_ago)
        lapsing = any(today <= add_months(d, config.points.expiry_months) <= notice for d in days)
        renewal = any(c.next_anniversary(today) <= today + timedelta(days=60) for c in member.cars)
        return (
            member.persona != "regular",
            len(member.cars) != 1,
            len(member.visits) < 8,
            not recent,
            spend < 200_000,
            not lapsing,
            not renewal,
        )

    return min(members, key=lambda m: (*score(m), m.ref)).ref


def day_of(text: str) -> date:
    return date.fromisoformat(text)


def generate(config: ShopConfig, *, members: int, seed: int, today: date) -> DemoData:
    """Members, cars and about three years of visits up to `today`, the same for the same seed.

    Each member draws from a generator seeded by (seed, member number), so member 7 looks the
    same whether the demo has 200 members or 2,000.
    """
    if members < 1:
        raise ValueError("the demo needs at least one member")
    chain = _Chain(
        today=today,
        history_start=add_months(today, -HISTORY_MONTHS),
        stores=list(config.stores),
        prices={s.code: to_cents(s.price) for s in config.services},
        service_order={s.code: i for i, s in enumerate(config.services)},
    )
    generated: list[_Member] = []
    member_rows: list[dict[str, str]] = []
    vehicle_rows: list[dict[str, str]] = []
    visit_rows: list[dict[str, str]] = []
    for index in range(1, members + 1):
        rng = random.Random(f"memberbot-demo:{seed}:{index}")
        member, row = _member(rng, chain, index)
        generated.append(member)
        member_rows.append(row)
        for car in member.cars:
            own = [v for v in member.visits if v["plate"] == car.plate]
            vehicle_rows.append(_vehicle_row(chain, member.ref, car, own))
        visit_rows.extend(member.visits)
    visit_rows.sort(key=lambda v: (v["visited_on"], v["visit_ref"]))
    return DemoData(
        today=today,
        members=member_rows,
        vehicles=vehicle_rows,
        visits=visit_rows,
        personas={m.ref: m.persona for m in generated},
        showcase_ref=_showcase(generated, today, config),
    )


def write_csv(data: DemoData, folder: Path) -> dict[Kind, Path]:
    """members.csv, vehicles.csv and visits.csv in UTF-8, the shape `memberbot import` reads,
    safe to open in a spreadsheet (`domain.csvwrite`: "+86 138…" would be a formula)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[Kind, Path] = {}
    for kind in KINDS:
        path = folder / f"{kind}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS[kind], lineterminator="\n")
            writer.writeheader()
            writer.writerows(
                dict(zip(row, safe_row(row.values()), strict=True)) for row in data.rows(kind)
            )
        paths[kind] = path
    return paths
