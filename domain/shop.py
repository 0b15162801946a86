"""The chain's configuration: stores, services, tiers, points rules, rewards and the WeChat
Official Account's menu.

One YAML file, validated as a whole so a shop owner sees every mistake at once with the file, the
key and the reason, then synced into the database where bookings and rules read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Reward, Service, Store, Tier
from domain.errors import ConfigError
from domain.outgoing import valid_button_data

DEFAULT_CONFIG = Path(__file__).resolve().parent / "data" / "shop.yaml"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CATEGORIES = (
    "wash",
    "detailing",
    "maintenance",
    "repair",
    "tyres",
    "insurance",
    "inspection",
    "other",
)
# WeChat's own limits on a menu (menu/create refuses more).
MENU_BUTTONS, MENU_SUB_BUTTONS = 3, 5
MENU_NAME_BYTES, MENU_SUB_NAME_BYTES, MENU_KEY_BYTES, MENU_URL_BYTES = 16, 60, 128, 1024
_MENU_INTENT = re.compile(r"[a-z][a-z0-9_]{0,23}")
_MENU_URL = re.compile(r"https?://[^\s]+")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")]
Yuan = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(_Strict):
    zh_CN: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Lists(_Strict):
    zh_CN: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)


class ChainConfig(_Strict):
    name: str = "memberbot"
    default_locale: Literal["zh_CN", "en"] = "zh_CN"


class StoreConfig(_Strict):
    code: Code
    name: str = Field(min_length=1)
    address: str = ""
    timezone: str = "Asia/Shanghai"
    bays: int = Field(default=1, ge=0, le=100)
    opening_hours: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"
            ) from exc
        return value

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, ranges in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
            for text in ranges:
                match = _RANGE.match(text)
                if not match:
                    raise ValueError(f"{day}: {text!r} is not HH:MM-HH:MM")
                start = time(int(match[1]), int(match[2]))
                end_h, end_m = int(match[3]), int(match[4])
                if end_h == 24 and end_m:
                    raise ValueError(f"{day}: {text!r} ends after midnight")
                if (end_h, end_m) <= (start.hour, start.minute):
                    raise ValueError(f"{day}: {text!r} closes before it opens")
        return value


class Interval(_Strict):
    months: int | None = Field(default=None, gt=0, le=120)
    km: int | None = Field(default=None, gt=0, le=200_000)


class ServiceConfig(_Strict):
    code: Code
    name: Names
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    duration_min: int = Field(default=60, gt=0, le=24 * 60)
    price: Yuan = Decimal(0)
    interval: Interval | None = None


class TierConfig(_Strict):
    code: Code
    name: Names
    threshold: Yuan
    multiplier: Decimal = Field(default=Decimal(1), gt=0, le=10)
    privileges: Lists = Field(default_factory=Lists)


class PointsConfig(_Strict):
    earn_per_yuan: Decimal = Field(default=Decimal(1), ge=0, le=1000)
    expiry_months: int = Field(default=24, gt=0, le=240)
    expiring_notice_days: int = Field(default=30, gt=0, le=365)
    offset_points_per_yuan: int = Field(default=100, ge=0, le=100_000)


class CouponConfig(_Strict):
    kind: Literal["value", "percent"]
    value: Yuan = Decimal(0)
    percent: int = Field(default=0, ge=0, le=100)
    min_spend: Yuan = Decimal(0)
    valid_days: int = Field(default=90, gt=0, le=3650)
    service: Code | None = None

    @model_validator(mode="after")
    def _amount(self) -> CouponConfig:
        if self.kind == "value" and self.value <= 0:
            raise ValueError("a value coupon needs a value above 0")
        if self.kind == "percent" and not 0 < self.percent < 100:
            raise ValueError("a percent coupon needs a percent between 1 and 99")
        return self


class RewardConfig(_Strict):
    code: Code
    name: Names
    points: int = Field(gt=0)
    coupon: CouponConfig


class BookingConfig(_Strict):
    slot_minutes: int = Field(default=30, gt=0, le=24 * 60)
    horizon_days: int = Field(default=14, gt=0, le=365)
    change_cutoff_hours: int = Field(default=2, ge=0, le=24 * 30)
    min_lead_minutes: int = Field(default=30, ge=0, le=7 * 24 * 60)

    @field_validator("slot_minutes")
    @classmethod
    def _grid(cls, value: int) -> int:
        # The grid is anchored at midnight, so a slot length that neither divides an hour nor
        # is a multiple of a quarter would give start times nobody can read at a glance.
        if 60 % value and value % 15:
            raise ValueError(f"{value} must divide 60 (5, 10, 15, 20, 30) or be a multiple of 15")
        return value


def _fits(value: str, limit: int, what: str) -> str:
    size = len(value.encode("utf-8"))
    if size > limit:
        raise ValueError(
            f"{what} is {size} bytes in UTF-8; WeChat allows {limit} (a Chinese character is 3)"
        )
    return value


class WeChatMenuItem(_Strict):
    """A menu button that does one thing: sends a click `key` the chat answers (an intent name
    such as `points`, or button data such as `go:book`) or opens a web page (`url`)."""

    NAME_BYTES: ClassVar[int] = MENU_SUB_NAME_BYTES
    ACTIONS: ClassVar[tuple[str, ...]] = ("key", "url")

    name: str = Field(min_length=1)
    key: str | None = None
    url: str | None = None

    @field_validator("name")
    @classmethod
    def _name_fits(cls, value: str) -> str:
        return _fits(value, cls.NAME_BYTES, "the name")

    @field_validator("key")
    @classmethod
    def _key_answerable(cls, value: str) -> str:
        _fits(value, MENU_KEY_BYTES, "the key")
        if not (_MENU_INTENT.fullmatch(value) or valid_button_data(value)):
            raise ValueError(
                f"{value!r} is neither an intent name (points, book…) nor button data (go:book)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _web_page(cls, value: str) -> str:
        _fits(value, MENU_URL_BYTES, "the url")
        if not _MENU_URL.fullmatch(value):
            raise ValueError(f"{value!r} is not an http:// or https:// address")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> WeChatMenuItem:
        given = [name for name in self.ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(self.ACTIONS)}")
        return self


class WeChatMenuButton(WeChatMenuItem):
    """A top-level menu button: a click key, a web page, or a list of up to five sub-buttons."""

    NAME_BYTES: ClassVar[int] = MENU_NAME_BYTES
    ACTIONS: ClassVar[tuple[str, ...]] = ("key", "url", "sub_buttons")

    sub_buttons: list[WeChatMenuItem] | None = Field(
        default=None, min_length=1, max_length=MENU_SUB_BUTTONS
    )


class ShopConfig(_Strict):
    chain: ChainConfig = Field(default_factory=ChainConfig)
    stores: list[StoreConfig] = Field(min_length=1)
    services: list[ServiceConfig] = Field(default_factory=list)
    tiers: list[TierConfig] = Field(min_length=1)
    points: PointsConfig = Field(default_factory=PointsConfig)
    rewards: list[RewardConfig] = Field(default_factory=list)
    booking: BookingConfig = Field(default_factory=BookingConfig)
    wechat_menu: list[WeChatMenuButton] = Field(default_factory=list, max_length=MENU_BUTTONS)

    @model_validator(mode="after")
    def _consistent(self) -> ShopConfig:
        for field in ("stores", "services", "tiers", "rewards"):
            codes = [item.code for item in getattr(self, field)]
            dupes = sorted({c for c in codes if codes.count(c) > 1})
            if dupes:
                raise ValueError(f"{field}: duplicate code(s) {', '.join(dupes)}")
        thresholds = [t.threshold for t in self.tiers]
        if thresholds[0] != 0:
            raise ValueError("tiers: the first tier must have threshold 0")
        if thresholds != sorted(set(thresholds)) or len(set(thresholds)) != len(thresholds):
            raise ValueError("tiers: thresholds must rise strictly from the first tier to the last")
        service_codes = {s.code for s in self.services}
        for reward in self.rewards:
            if reward.coupon.service and reward.coupon.service not in service_codes:
                raise ValueError(
                    f"rewards: {reward.code} names unknown service {reward.coupon.service!r}"
                )
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The chain's time zone, its first store's. Whatever is not one store's own (the
        scheduler's clock, "today" for the CLI and the chat, members without a home store)
        runs on this business day rather than UTC's."""
        return ZoneInfo(self.stores[0].timezone)

    def today(self, now: datetime | None = None) -> date:
        """The chain's business day at `now` (default: this moment)."""
        return (now or datetime.now(UTC)).astimezone(self.zone).date()

    @property
    def loyalty(self) -> LoyaltyRules:
        return LoyaltyRules(
            earn_per_yuan=self.points.earn_per_yuan,
            expiry_months=self.points.expiry_months,
            expiring_notice_days=self.points.expiring_notice_days,
            offset_points_per_yuan=self.points.offset_points_per_yuan,
        )

    @property
    def booking_rules(self) -> BookingRules:
        return BookingRules(
            slot_minutes=self.booking.slot_minutes,
            horizon_days=self.booking.horizon_days,
            change_cutoff_hours=self.booking.change_cutoff_hours,
            min_lead_minutes=self.booking.min_lead_minutes,
        )


@dataclass(frozen=True)
class LoyaltyRules:
    """The points rules the domain needs, detached from the YAML that carried them."""

    earn_per_yuan: Decimal = Decimal(1)
    expiry_months: int = 24
    expiring_notice_days: int = 30
    offset_points_per_yuan: int = 100


@dataclass(frozen=True)
class BookingRules:
    """The booking rules the domain needs, detached from the YAML that carried them."""

    slot_minutes: int = 30
    horizon_days: int = 14
    change_cutoff_hours: int = 2
    min_lead_minutes: int = 30


def config_source(path: Path | None) -> Path:
    """The file `load_shop_config(path)` reads: the shipped defaults when `path` is absent."""
    return path if path is not None and path.exists() else DEFAULT_CONFIG


def load_shop_config(path: Path | None) -> ShopConfig:
    """Read and validate the chain's YAML; `None` or a missing default file gives the defaults."""
    source = config_source(path)
    if path is not None and not path.exists() and path.name != "shop.yaml":
        raise ConfigError([(str(path), "-", "file not found")])
    if not source.is_file():
        raise ConfigError([(str(source), "-", "not a file (a directory?)")])
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(source), "-", f"cannot be read: {exc}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError([(str(source), where, f"not valid YAML: {exc}")]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([(str(source), "-", "the file must hold a mapping of sections")])
    try:
        return ShopConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [
            (str(source), ".".join(str(p) for p in err["loc"]) or "-", err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError(problems) from exc


async def sync_shop(session: AsyncSession, config: ShopConfig) -> dict[str, int]:
    """Upsert stores, services, tiers and rewards by code. Nothing is deleted: what the file no
    longer lists is deactivated, because visits and coupons still point at it."""
    counts = {"stores": 0, "services": 0, "tiers": 0, "rewards": 0}
    stores = {s.code: s for s in (await session.scalars(select(Store))).all()}
    for sc in config.stores:
        store = stores.pop(sc.code, None) or Store(code=sc.code, name=sc.name)
        store.name, store.address, store.timezone = sc.name, sc.address, sc.timezone
        store.bays, store.opening_hours, store.active = sc.bays, dict(sc.opening_hours), True
        session.add(store)
        counts["stores"] += 1
    for leftover in stores.values():
        leftover.active = False

    services = {s.code: s for s in (await session.scalars(select(Service))).all()}
    for sv in config.services:
        service = services.pop(sv.code, None) or Service(
            code=sv.code, name_zh=sv.name.zh_CN, name_en=sv.name.en, category=sv.category
        )
        service.name_zh, service.name_en, service.category = sv.name.zh_CN, sv.name.en, sv.category
        service.duration_min, service.list_price_cents = sv.duration_min, to_cents(sv.price)
        service.interval_months = sv.interval.months if sv.interval else None
        service.interval_km = sv.interval.km if sv.interval else None
        service.active = True
        session.add(service)
        counts["services"] += 1
    for leftover in services.values():
        leftover.active = False

    tiers = {t.code: t for t in (await session.scalars(select(Tier))).all()}
    # Ranks are unique: move existing ones out of the way before renumbering.
    for offset, tier in enumerate(tiers.values()):
        tier.rank = 10_000 + offset
    await session.flush()
    for rank, tc in enumerate(config.tiers):
        tier = tiers.pop(tc.code, None) or Tier(
            code=tc.code, rank=rank, name_zh=tc.name.zh_CN, name_en=tc.name.en
        )
        tier.rank, tier.name_zh, tier.name_en = rank, tc.name.zh_CN, tc.name.en
        tier.threshold_cents = to_cents(tc.threshold)
        tier.multiplier_permille = int((tc.multiplier * 1000).to_integral_value())
        tier.privileges_zh, tier.privileges_en = list(tc.privileges.zh_CN), list(tc.privileges.en)
        session.add(tier)
        counts["tiers"] += 1
    if tiers:
        raise ConfigError(
            [("shop config", "tiers", f"tier(s) {', '.join(tiers)} are in use and cannot vanish")]
        )

    rewards = {r.code: r for r in (await session.scalars(select(Reward))).all()}
    for rc in config.rewards:
        reward = rewards.pop(rc.code, None) or Reward(
            code=rc.code, name_zh=rc.name.zh_CN, name_en=rc.name.en, points_cost=rc.points
        )
        reward.name_zh, reward.name_en, reward.points_cost = rc.name.zh_CN, rc.name.en, rc.points
        reward.coupon_kind = rc.coupon.kind
        reward.coupon_value_cents = to_cents(rc.coupon.value)
        reward.coupon_percent = rc.coupon.percent
        reward.min_spend_cents = to_cents(rc.coupon.min_spend)
        reward.valid_days, reward.service_code = rc.coupon.valid_days, rc.coupon.service
        reward.active = True
        session.add(reward)
        counts["rewards"] += 1
    for leftover in rewards.values():
        leftover.active = False
    await session.flush()
    return counts
