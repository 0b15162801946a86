"""Who the demo chain's members are and what they drive: names (Chinese people, English
speakers, fleet companies), mainland mobile numbers, plates of the stores' cities, real car
models and valid VINs, each written the way shop systems write them.

Every draw comes from the caller's `random.Random`, in a fixed order, so the generator's
output stays byte-identical for a seed. `taken` sets keep phones and plates unique.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from domain.identity import normalize_plate

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


def person_name(rng: random.Random, locale: str, *, fleet: bool) -> str:
    """A member's name as a shop writes it: a company for a fleet, else a Chinese or English
    person's name."""
    if fleet:
        city = rng.choice(("上海", "苏州"))
        return f"{city}{rng.choice(FLEET_WORDS)}{rng.choice(FLEET_TRADES)}有限公司"
    if locale == "en":
        return rng.choice(ENGLISH_NAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(1 if rng.random() < 0.35 else 2))
    return rng.choice(SURNAMES) + given


def phone_number(rng: random.Random, taken: set[str]) -> tuple[str, str]:
    """A unique mainland mobile number, and how the shop's system happened to write it."""
    while True:
        digits = f"{rng.choice(MOBILE_PREFIXES)}{rng.randint(0, 99_999_999):08d}"
        if digits not in taken:
            taken.add(digits)
            break
    style = rng.random()
    if style < 0.85:
        return digits, digits
    if style < 0.95:
        return digits, f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
    return digits, f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}"


def plate_number(
    rng: random.Random, taken: set[str], store_code: str, model: CarModel
) -> tuple[str, str]:
    """A unique plate for the car's city, and how it is written in the shop's files."""
    province = STORE_PROVINCE.get(store_code, "沪")
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
        if plate not in taken:
            taken.add(plate)
            break
    written = f"{prefix}·{number}" if rng.random() < 0.3 else plate
    return plate, written


def vin_for(rng: random.Random, model: CarModel, model_year: int) -> str:
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
