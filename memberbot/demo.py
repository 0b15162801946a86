"""`memberbot demo`: a deterministic demo chain a newcomer can look around in one command.

The data is generated as the CSV files a real shop would export from its POS or dealer system
and goes in through the real importer, so the demo shows (and exercises) the same path a shop
takes on its first day. Everything random comes from one seed and an explicit "today", so the
same seed always yields byte-identical files.

The demo never touches a shop's database: it writes its own SQLite file by default and refuses
any database that holds members or stores it did not create.
"""

from __future__ import annotations

import asyncio
import csv
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import ColumnElement, and_, case, delete, func, inspect, literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from db.models import Member, PointsEntry, Store, Tier, Vehicle, Visit
from db.session import Database, create_engine
from domain import csvimport, points
from domain.identity import mask_phone, mask_plate, normalize_plate
from domain.points import add_months
from domain.shop import WEEKDAYS, ShopConfig, StoreConfig, load_shop_config, to_cents
from memberbot import runtime, staffview
from memberbot.settings import Settings

DEMO_SHOP = Path(__file__).resolve().parent / "data" / "demo_shop.yaml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///memberbot-demo.db"
DEFAULT_MEMBERS = 2000
DEFAULT_SEED = 20240601
MEMBER_PREFIX = "DEMO-"
HISTORY_MONTHS = 36

T = TypeVar("T")
Kind = Literal["members", "vehicles", "visits"]
KINDS: tuple[Kind, ...] = ("members", "vehicles", "visits")
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

# The most common surnames, roughly by frequency (the first ones repeat to weigh them).
SURNAMES = (
    "王王王王李李李李张张张张刘刘刘陈陈陈杨杨黄黄赵赵吴吴周周徐孙马朱胡郭何高林罗郑梁谢宋唐"
    "许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白"
    "邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚浩宇轩子涵欣怡晨博文婷雪佳俊鹏辉华建国志海林波"
    "斌宁琳颖倩晓思雨梓睿一嘉诗梦天昊然悦凯峰飞鑫慧玲瑶琪晶鸿宏振琦蕾璐阳毅"
)
ENGLISH_NAMES = (
    "James Miller",
    "Anna Schmidt",
    "David Wilson",
    "Laura Rossi",
    "Thomas Müller",
    "Sophie Martin",
    "Daniel Kim",
    "Emma Johnson",
)
FLEET_WORDS = ("顺达", "安捷", "恒通", "宏运", "联诚", "泰和", "锦程", "迅捷")
FLEET_TRADES = ("物流", "租赁", "商务服务", "建设", "贸易")
# Mainland mobile prefixes of the three carriers.
MOBILE_PREFIXES = (
    *range(130, 140),
    150,
    151,
    152,
    153,
    155,
    156,
    157,
    158,
    159,
    166,
    177,
    *range(180, 190),
    191,
    198,
    199,
)
# Plate prefixes a store's customers mostly carry; a few cars come from other cities.
CITY_PLATES = {"沪": "ABCDEFGHJKLMN", "苏": "E"}
STORE_PROVINCE = {"sh-xuhui": "沪", "sh-pudong": "沪", "sz-sip": "苏"}
VISITOR_PLATES = ("浙A", "浙B", "浙F", "苏A", "苏B", "苏E", "皖A")
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
VIN_CHARS = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
VIN_VALUES = dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        (1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9),
        strict=True,
    )
)
VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
VIN_YEARS = "ABCDEFGHJKLMNPRSTVWXY123456789"  # model-year codes from 2010


@dataclass(frozen=True)
class CarModel:
    """A car sold in China: `energy` decides the plate (D = electric, F = hybrid) and whether
    it ever needs an oil service; `since` is the first year it was sold."""

    make: str
    model: str
    wmi: str
    energy: Literal["ice", "hybrid", "ev"]
    since: int
    weight: int
    premium: bool = False


CAR_MODELS = (
    CarModel("大众", "朗逸", "LSV", "ice", 2008, 10),
    CarModel("大众", "速腾", "LFV", "ice", 2006, 6),
    CarModel("大众", "帕萨特", "LSV", "ice", 2011, 5),
    CarModel("大众", "途观L", "LSV", "ice", 2017, 5),
    CarModel("丰田", "凯美瑞", "LVG", "ice", 2006, 6),
    CarModel("丰田", "卡罗拉", "LFM", "ice", 2004, 6),
    CarModel("丰田", "RAV4荣放", "LFM", "ice", 2009, 4),
    CarModel("本田", "雅阁", "LHG", "ice", 2003, 6),
    CarModel("本田", "思域", "LVH", "ice", 2006, 4),
    CarModel("本田", "CR-V", "LVH", "ice", 2004, 4),
    CarModel("日产", "轩逸", "LGB", "ice", 2006, 7),
    CarModel("别克", "英朗", "LSG", "ice", 2010, 5),
    CarModel("别克", "GL8", "LSG", "ice", 2000, 3),
    CarModel("吉利", "星越L", "L6T", "ice", 2021, 3),
    CarModel("哈弗", "H6", "LGW", "ice", 2011, 4),
    CarModel("长安", "CS75 PLUS", "LS5", "ice", 2019, 3),
    CarModel("宝马", "3系", "LBV", "ice", 2005, 4, premium=True),
    CarModel("宝马", "5系", "LBV", "ice", 2006, 3, premium=True),
    CarModel("宝马", "X3", "LBV", "ice", 2018, 2, premium=True),
    CarModel("奔驰", "C级", "LE4", "ice", 2008, 4, premium=True),
    CarModel("奔驰", "E级", "LE4", "ice", 2010, 3, premium=True),
    CarModel("奔驰", "GLC", "LE4", "ice", 2016, 3, premium=True),
    CarModel("奥迪", "A4L", "LFV", "ice", 2009, 3, premium=True),
    CarModel("奥迪", "A6L", "LFV", "ice", 2005, 3, premium=True),
    CarModel("比亚迪", "秦PLUS DM-i", "LC0", "hybrid", 2021, 5),
    CarModel("比亚迪", "宋PLUS DM-i", "LC0", "hybrid", 2021, 4),
    CarModel("理想", "L7", "LW4", "hybrid", 2023, 2, premium=True),
    CarModel("比亚迪", "汉EV", "LC0", "ev", 2020, 4),
    CarModel("特斯拉", "Model 3", "LRW", "ev", 2020, 4, premium=True),
    CarModel("特斯拉", "Model Y", "LRW", "ev", 2021, 5, premium=True),
    CarModel("蔚来", "ES6", "LJ1", "ev", 2019, 2, premium=True),
    CarModel("小鹏", "P7", "L1N", "ev", 2020, 2),
)

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


def _name(rng: random.Random, persona: Persona, locale: str) -> str:
    if persona == "fleet":
        city = rng.choice(("上海", "苏州"))
        return f"{city}{rng.choice(FLEET_WORDS)}{rng.choice(FLEET_TRADES)}有限公司"
    if locale == "en":
        return rng.choice(ENGLISH_NAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(1 if rng.random() < 0.35 else 2))
    return rng.choice(SURNAMES) + given


def _phone(rng: random.Random, chain: _Chain) -> tuple[str, str]:
    """A unique mainland mobile number, and how the shop's system happened to write it."""
    while True:
        digits = f"{rng.choice(MOBILE_PREFIXES)}{rng.randint(0, 99_999_999):08d}"
        if digits not in chain.phones:
            chain.phones.add(digits)
            break
    style = rng.random()
    if style < 0.85:
        return digits, digits
    if style < 0.95:
        return digits, f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    return digits, f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}"


def _plate(
    rng: random.Random, chain: _Chain, home: StoreConfig, model: CarModel
) -> tuple[str, str]:
    """A unique plate for the car's city, and how it is written in the shop's files."""
    province = STORE_PROVINCE.get(home.code, "沪")
    while True:
        if rng.random() < 0.1:
            prefix = rng.choice(VISITOR_PLATES)
        else:
            prefix = province + rng.choice(CITY_PLATES[province])
        if model.energy == "ev":
            number = "D" + f"{rng.randint(0, 99_999):05d}"
        elif model.energy == "hybrid":
            number = "F" + f"{rng.randint(0, 99_999):05d}"
        else:
            chars = [rng.choice("0123456789") for _ in range(5)]
            for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
                chars[rng.randrange(5)] = rng.choice(PLATE_LETTERS)
            number = "".join(chars)
        plate = normalize_plate(prefix + number)
        if plate not in chain.plates:
            chain.plates.add(plate)
            break
    written = f"{prefix}·{number}" if rng.random() < 0.3 else plate
    return plate, written


def _vin(rng: random.Random, model: CarModel, model_year: int) -> str:
    """A 17-character VIN with the right manufacturer prefix, model year and check digit."""
    vds = "".join(rng.choice(VIN_CHARS) for _ in range(5))
    year = VIN_YEARS[min(max(model_year - 2010, 0), len(VIN_YEARS) - 1)]
    serial = rng.choice("0123456789ABCDEFGH") + f"{rng.randint(0, 999_999):06d}"
    draft = model.wmi + vds + "0" + year + serial
    total = sum(
        (int(ch) if ch.isdigit() else VIN_VALUES[ch]) * weight
        for ch, weight in zip(draft, VIN_WEIGHTS, strict=True)
    )
    check = "X" if total % 11 == 10 else str(total % 11)
    return draft[:8] + check + draft[9:]


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
    plate, written = _plate(rng, chain, home, model)
    vin = _vin(rng, model, purchased.year) if rng.random() < 0.7 else None
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
    _, written_phone = _phone(rng, chain)
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
        "name": _name(rng, member.persona, locale),
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
        spend = sum(to_cents_text(v["amount"]) for v in member.visits if v["visited_on"] > year_ago)
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


def to_cents_text(amount: str) -> int:
    """'480.00' → 48000, without a trip through floats."""
    whole, _, fraction = amount.partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


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
    """members.csv, vehicles.csv and visits.csv in UTF-8, the shape `memberbot import` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[Kind, Path] = {}
    for kind in KINDS:
        path = folder / f"{kind}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS[kind], lineterminator="\n")
            writer.writeheader()
            writer.writerows(data.rows(kind))
        paths[kind] = path
    return paths


# --------------------------------------------------------------------------------------------
# Building the demo database
# --------------------------------------------------------------------------------------------


class NotADemoDatabase(Exception):
    """The target database holds a shop's own data; the demo refuses to write into it."""


@dataclass(frozen=True)
class DemoOptions:
    database_url: str = DEFAULT_DATABASE_URL
    members: int = DEFAULT_MEMBERS
    seed: int = DEFAULT_SEED
    fresh: bool = True
    export: Path | None = None
    today: date | None = None


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (relative to the working directory), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def foreign_data(url: str, demo_stores: set[str]) -> str | None:
    """Why the database at `url` is not the demo's to write, or None when it is.

    A demo database holds only members numbered DEMO-… and only the demo's stores; an empty
    database is fine too. Anything else is a shop's, and the demo must not touch it.
    """
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            if not tables:
                return None
            if not {"member", "store"} <= tables:
                return "it is not a memberbot database"
            others = await conn.scalar(
                select(func.count())
                .select_from(Member)
                .where(Member.member_ref.not_like(f"{MEMBER_PREFIX}%"))
            )
            if others:
                return f"it holds {others} member(s) the demo did not create"
            stores = await conn.scalar(
                select(func.count()).select_from(Store).where(Store.code.not_in(demo_stores))
            )
            if stores:
                return f"it has {stores} store(s) that are not the demo chain's"
    except Exception as exc:  # a file that is not a database at all, a server that says no
        return f"it cannot be opened and read as a memberbot database ({type(exc).__name__})"
    finally:
        await engine.dispose()
    return None


async def prepare_database(url: str, fresh: bool, demo_stores: set[str]) -> None:
    """Refuse a shop's database; with `fresh`, delete an old demo SQLite file.

    Only a SQLite file is ever deleted. A server database that already holds the demo gets the
    same files imported again, which changes nothing because every row has a stable key.
    """
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return
    reason = await foreign_data(url, demo_stores)
    if reason:
        raise NotADemoDatabase(
            f"The demo will not write to {shown_url(url)}: "
            f"{reason}. Pick another --database-url (the default is {DEFAULT_DATABASE_URL})."
        )
    if not fresh or path is None:
        return
    for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)


@contextmanager
def csv_folder(export: Path | None) -> Iterator[Path]:
    """The folder the CSV files are written to: kept when the user asked for them."""
    if export is not None:
        export.mkdir(parents=True, exist_ok=True)
        yield export
        return
    with tempfile.TemporaryDirectory(prefix="memberbot-demo-") as folder:
        yield Path(folder)


async def import_all(
    db: Database,
    paths: dict[Kind, Path],
    config: ShopConfig,
    today: date,
    region: str,
    console: Console | None,
) -> list[csvimport.ImportResult]:
    """Members, then vehicles, then visits, through the same importer a shop uses."""
    results = []
    with Progress(
        TextColumn("Importing {task.description:<13}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console is None,
    ) as bar:
        for kind in KINDS:
            task = bar.add_task(paths[kind].name, total=paths[kind].stat().st_size)
            result = await csvimport.import_file(
                db,
                kind,
                paths[kind],
                config.loyalty,
                region=region,
                today=today,
                progress=lambda done, task=task: bar.update(task, completed=done),
            )
            results.append(result)
    return results


@dataclass(frozen=True)
class StoreLine:
    code: str
    name: str
    bays: int
    members: int
    visits_12m: int
    revenue_12m_cents: int


@dataclass(frozen=True)
class Due:
    """One line of a 'coming up' list: when, whose, and the details (masked where personal)."""

    day: date | None
    member_ref: str
    name: str
    details: tuple[str, str]


@dataclass
class DemoSummary:
    """Everything the closing summary shows, gathered with a few read-only queries."""

    chain: str
    today: date
    database_url: str
    export: Path | None
    stores: list[StoreLine]
    members: int
    vehicles: int
    visits: int
    points_issued: int
    points_expired: int
    points_outstanding: int
    tiers: list[tuple[str, int]]
    activity: dict[str, int]
    expiring_days: int
    expiring_members: int
    expiring_points: int
    expiring: list[Due]
    insurance_count: int
    insurance: list[Due]
    inspection_count: int
    inspections: list[Due]
    sample: staffview.MemberView | None
    imports: list[csvimport.ImportResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


ACTIVITY = (
    ("active", "Active", "a visit in the last 90 days"),
    ("lapsing", "Lapsing", "last visit 90–180 days ago"),
    ("lost", "Lost", "no visit for over 180 days"),
    ("never", "Never visited", "no visit on record"),
)
LISTED = 5


async def _stores(session: AsyncSession, today: date) -> list[StoreLine]:
    since = today - timedelta(days=364)
    homes = (
        select(Member.home_store_id, func.count().label("n"))
        .where(Member.erased_at.is_(None))
        .group_by(Member.home_store_id)
        .subquery()
    )
    recent = (
        select(
            Visit.store_id,
            func.count().label("n"),
            func.coalesce(func.sum(Visit.amount_cents), 0).label("cents"),
        )
        .where(Visit.visited_on >= since, Visit.visited_on <= today)
        .group_by(Visit.store_id)
        .subquery()
    )
    rows = await session.execute(
        select(Store, homes.c.n, recent.c.n, recent.c.cents)
        .outerjoin(homes, homes.c.home_store_id == Store.id)
        .outerjoin(recent, recent.c.store_id == Store.id)
        .where(Store.active.is_(True))
        .order_by(Store.id)
    )
    return [
        StoreLine(s.code, s.name, s.bays, members or 0, visits or 0, int(cents or 0))
        for s, members, visits, cents in rows.all()
    ]


async def _activity(session: AsyncSession, today: date) -> dict[str, int]:
    """Members by the day of their last visit, in one grouped query."""
    last = (
        select(Visit.member_id, func.max(Visit.visited_on).label("day"))
        .group_by(Visit.member_id)
        .subquery()
    )

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = (
        await session.execute(
            select(
                count(last.c.day >= today - timedelta(days=90)),
                count(
                    and_(
                        last.c.day < today - timedelta(days=90),
                        last.c.day >= today - timedelta(days=180),
                    )
                ),
                count(last.c.day < today - timedelta(days=180)),
                count(last.c.day.is_(None)),
            )
            .select_from(Member)
            .outerjoin(last, last.c.member_id == Member.id)
            .where(Member.erased_at.is_(None))
        )
    ).one()
    return {key: int(value) for (key, _, _), value in zip(ACTIVITY, row, strict=True)}


async def _tiers(session: AsyncSession) -> list[tuple[str, int]]:
    rows = await session.execute(
        select(Tier.name_en, Tier.name_zh, func.count(Member.id))
        .outerjoin(Member, and_(Member.tier_code == Tier.code, Member.erased_at.is_(None)))
        .group_by(Tier.rank, Tier.name_en, Tier.name_zh)
        .order_by(Tier.rank)
    )
    return [(f"{en} / {zh}", int(n)) for en, zh, n in rows.all()]


def _unspent_by(day: date) -> ColumnElement[int]:
    """Per member: what of the lots expiring on or before `day` is still unspent. Debits consume
    the soonest-expiring lots first, so this is the lots minus every debit, when positive
    (the ledger rule domain.points documents)."""
    lots = func.coalesce(
        func.sum(
            case(
                (and_(PointsEntry.points > 0, PointsEntry.expires_on <= day), PointsEntry.points),
                else_=0,
            )
        ),
        0,
    )
    debits = func.coalesce(
        func.sum(case((PointsEntry.points < 0, -PointsEntry.points), else_=0)), 0
    )
    return case((lots - debits > 0, lots - debits), else_=literal(0))


async def _expiring(session: AsyncSession, today: date, days: int) -> tuple[int, int, list[Due]]:
    """Members with points lapsing within `days`: how many, how many points, the largest."""
    horizon = today + timedelta(days=days)
    soon = _unspent_by(horizon) - _unspent_by(today - timedelta(days=1))
    first = func.min(
        case(
            (
                and_(
                    PointsEntry.points > 0,
                    PointsEntry.expires_on >= today,
                    PointsEntry.expires_on <= horizon,
                ),
                PointsEntry.expires_on,
            )
        )
    )
    per_member = (
        select(PointsEntry.member_id, soon.label("soon"), first.label("first"))
        .group_by(PointsEntry.member_id)
        .having(soon > 0)
        .subquery()
    )
    count, total = (
        await session.execute(select(func.count(), func.coalesce(func.sum(per_member.c.soon), 0)))
    ).one()
    top = await session.execute(
        select(Member, per_member.c.soon, per_member.c.first)
        .join(per_member, per_member.c.member_id == Member.id)
        .where(Member.erased_at.is_(None))
        .order_by(per_member.c.soon.desc(), Member.member_ref)
        .limit(LISTED)
    )
    lines = [
        Due(day, m.member_ref, m.name, (f"{int(n):,}", mask_phone(m.phone)))
        for m, n, day in top.all()
    ]
    return int(count), int(total), lines


async def _cars_due(
    session: AsyncSession, column: InstrumentedAttribute[date | None], today: date, days: int
) -> tuple[int, list[Due]]:
    """Cars whose `column` date falls within the next `days`: how many, and the first few."""
    window = and_(column >= today, column <= today + timedelta(days=days))
    live = and_(window, Member.erased_at.is_(None))
    count = await session.scalar(select(func.count()).select_from(Vehicle).join(Member).where(live))
    rows = await session.execute(
        select(Vehicle, Member.member_ref, Member.name)
        .join(Member)
        .where(live)
        .order_by(column, Vehicle.id)
        .limit(LISTED)
    )
    lines = [
        Due(
            getattr(car, column.key),
            ref,
            name,
            (mask_plate(car.plate), f"{car.make or ''} {car.model or ''}".strip()),
        )
        for car, ref, name in rows.all()
    ]
    return int(count or 0), lines


async def _ledger_totals(session: AsyncSession) -> tuple[int, int, int]:
    issued, expired, outstanding = (
        await session.execute(
            select(
                func.coalesce(
                    func.sum(case((PointsEntry.points > 0, PointsEntry.points), else_=0)), 0
                ),
                func.coalesce(
                    func.sum(
                        case((PointsEntry.kind == points.EXPIRE, -PointsEntry.points), else_=0)
                    ),
                    0,
                ),
                func.coalesce(func.sum(PointsEntry.points), 0),
            )
        )
    ).one()
    return int(issued), int(expired), int(outstanding)


async def _count(session: AsyncSession, model: type, *where: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def summarize(
    rt: runtime.Runtime, today: date, sample_ref: str, export: Path | None = None
) -> DemoSummary:
    """Read back what the import built: the questions a new owner asks on day one."""
    rules = rt.config.loyalty
    async with rt.db.read() as session:
        issued, expired, outstanding = await _ledger_totals(session)
        exp_count, exp_points, exp_lines = await _expiring(
            session, today, rules.expiring_notice_days
        )
        ins_count, ins_lines = await _cars_due(session, Vehicle.insurance_expiry, today, 60)
        insp_count, insp_lines = await _cars_due(session, Vehicle.inspection_due, today, 30)
        member = await _sample(session, sample_ref)
        return DemoSummary(
            chain=rt.config.chain.name,
            today=today,
            database_url=rt.settings.database_url,
            export=export,
            stores=await _stores(session, today),
            members=await _count(session, Member, Member.erased_at.is_(None)),
            vehicles=await _count(session, Vehicle),
            visits=await _count(session, Visit),
            points_issued=issued,
            points_expired=expired,
            points_outstanding=outstanding,
            tiers=await _tiers(session),
            activity=await _activity(session, today),
            expiring_days=rules.expiring_notice_days,
            expiring_members=exp_count,
            expiring_points=exp_points,
            expiring=exp_lines,
            insurance_count=ins_count,
            insurance=ins_lines,
            inspection_count=insp_count,
            inspections=insp_lines,
            sample=await staffview.build(session, member, today, rules) if member else None,
        )


async def _sample(session: AsyncSession, preferred: str) -> Member | None:
    """The generator's showcase member; in a kept database built with other options, the
    first demo member instead."""
    member = await session.scalar(select(Member).where(Member.member_ref == preferred))
    if member is None:
        member = await session.scalar(
            select(Member)
            .where(Member.member_ref.like(f"{MEMBER_PREFIX}%"), Member.erased_at.is_(None))
            .order_by(Member.member_ref)
            .limit(1)
        )
    return member


async def demo_members(db: Database) -> int:
    async with db.read() as session:
        return await _count(session, Member, Member.member_ref.like(f"{MEMBER_PREFIX}%"))


async def clear_demo(db: Database) -> None:
    """Delete the demo's members and, by cascade, their cars, visits and ledgers: how a server
    database is rebuilt, since only a SQLite file can simply be deleted."""
    async with db.transaction() as session:
        await session.execute(delete(Member).where(Member.member_ref.like(f"{MEMBER_PREFIX}%")))


async def build(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Generate the chain, import it into the demo database and read back the summary.

    With `fresh=False` an existing demo (and whatever was changed in it since) is kept and
    shown again; nothing is imported into it.
    """
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    config = load_shop_config(DEMO_SHOP)
    await prepare_database(options.database_url, options.fresh, {s.code for s in config.stores})
    rt = await runtime.start(Settings(database_url=options.database_url, shop_config=DEMO_SHOP))
    try:
        today = options.today or rt.today()
        kept = not options.fresh and await demo_members(rt.db) > 0
        if options.fresh:
            await clear_demo(rt.db)
        step = time.perf_counter()
        data = generate(rt.config, members=options.members, seed=options.seed, today=today)
        results: list[csvimport.ImportResult] = []
        with csv_folder(options.export) as folder:
            paths = write_csv(data, folder)
            timings["generate"] = time.perf_counter() - step
            if not kept:
                step = time.perf_counter()
                results = await import_all(
                    rt.db, paths, rt.config, today, rt.settings.default_region, console
                )
                timings["import"] = time.perf_counter() - step
        summary = await summarize(rt, today, data.showcase_ref, options.export)
    finally:
        await rt.db.dispose()
    summary.imports = results
    timings["total"] = time.perf_counter() - clock
    summary.timings = timings
    return summary


def run(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """`build` from synchronous code (the CLI)."""
    return asyncio.run(build(options, console))


# --------------------------------------------------------------------------------------------
# Showing it
# --------------------------------------------------------------------------------------------


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _due_table(title: str, lines: list[Due], count: int, columns: tuple[str, str]) -> Table:
    table = Table("Date", "Member", "Name", *columns, title=title, title_justify="left")
    for line in lines:
        table.add_row(str(line.day or "-"), line.member_ref, line.name, *line.details)
    if count > len(lines):
        table.add_row("…", f"{count - len(lines)} more", "", "", "")
    return table


def shown_url(url: str) -> str:
    """A database URL fit to print: a password, if any, is replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def try_next(summary: DemoSummary) -> list[str]:
    """Real commands to run next, pointed at the demo database and its shop configuration."""
    lines = [
        f"export MEMBERBOT_DATABASE_URL={shown_url(summary.database_url)}",
        f"export MEMBERBOT_SHOP_CONFIG={DEMO_SHOP}",
    ]
    if summary.sample is not None:
        ref = summary.sample.member.member_ref
        lines += [
            f"memberbot member show {ref}",
            f'memberbot points adjust {ref} 200 --reason "goodwill after a late pick-up"',
        ]
    if summary.export is not None:
        lines.append(f"memberbot import visits {summary.export / 'visits.csv'} --dry-run")
    else:
        lines.append(
            "memberbot demo --keep --export demo-csv && "
            "memberbot import visits demo-csv/visits.csv --dry-run"
        )
    return lines


def _render_chain(console: Console, summary: DemoSummary) -> None:
    console.rule(f"[bold]Demo chain[/bold] · {summary.chain} · today {summary.today}")
    stores = Table(
        "Code",
        "Store",
        "Bays",
        "Members",
        "Visits 12m",
        "Revenue 12m",
        title="Stores (members by home store; the last 12 months)",
        title_justify="left",
    )
    for s in summary.stores:
        stores.add_row(
            s.code,
            s.name,
            str(s.bays),
            f"{s.members:,}",
            f"{s.visits_12m:,}",
            f"¥{s.revenue_12m_cents // 100:,}",
        )
    console.print(stores)
    if not summary.imports:
        console.print("Kept the existing demo database as it is: nothing was imported.")
        return
    imports = Table(
        "File",
        "Rows",
        "Created",
        "Updated",
        "Unchanged",
        "Errors",
        title="Imported through the CSV importer",
        title_justify="left",
    )
    for result in summary.imports:
        imports.add_row(
            f"{result.kind}.csv",
            f"{result.rows_read:,}",
            f"{result.created:,}",
            f"{result.updated:,}",
            f"{result.unchanged:,}",
            str(result.error_count),
        )
    console.print(imports)
    for result in summary.imports:
        for error in result.errors[:3]:
            text = f"  {result.kind}.csv line {error.line}: {error.reason}"
            console.print(text, style="red", markup=False)


def _render_members(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Members[/bold]")
    console.print(
        f"{summary.members:,} members · {summary.vehicles:,} cars · {summary.visits:,} visits"
    )
    console.print(
        f"Points issued {summary.points_issued:,} · expired {summary.points_expired:,} · "
        f"outstanding {summary.points_outstanding:,}"
    )
    tiers_table = Table("Tier", "Members", "Share", title="Tiers", title_justify="left")
    for label, count in summary.tiers:
        tiers_table.add_row(label, f"{count:,}", _share(count, summary.members))
    activity = Table(
        "Activity", "Members", "Share", "Meaning", title="Activity", title_justify="left"
    )
    for key, label, meaning in ACTIVITY:
        count = summary.activity[key]
        activity.add_row(label, f"{count:,}", _share(count, summary.members), meaning)
    console.print(tiers_table)
    console.print(activity)


def _render_coming_up(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Coming up[/bold]")
    expiring = (
        f"Points expiring in the next {summary.expiring_days} days: "
        f"{summary.expiring_points:,} points of {summary.expiring_members:,} members"
    )
    insurance = f"Insurance renewals in the next 60 days: {summary.insurance_count:,} cars"
    inspections = f"Annual inspections in the next 30 days: {summary.inspection_count:,} cars"
    for title, lines, count, columns in (
        (expiring, summary.expiring, summary.expiring_members, ("Points", "Phone")),
        (insurance, summary.insurance, summary.insurance_count, ("Plate", "Car")),
        (inspections, summary.inspections, summary.inspection_count, ("Plate", "Car")),
    ):
        console.print(_due_table(title, lines, count, columns))


def _render_next(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Try next[/bold]")
    console.print(
        "The chat feature is on its way; until then, look around with the CLI. The first two "
        "lines point it at the demo instead of your shop:"
    )
    for line in try_next(summary):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    t = summary.timings
    if t:
        parts = [f"{step} {t[step]:.1f} s" for step in ("generate", "import") if step in t]
        console.print(f"[dim]Done in {t.get('total', 0):.1f} s ({', '.join(parts)}).[/dim]")


def render(console: Console, summary: DemoSummary) -> None:
    """The closing summary: the chain, its members, what is coming up, one member, next steps."""
    _render_chain(console, summary)
    _render_members(console, summary)
    _render_coming_up(console, summary)
    if summary.sample is not None:
        console.rule("[bold]Sample member[/bold] (what staff see at the counter)")
        staffview.render(console, summary.sample)
    _render_next(console, summary)
