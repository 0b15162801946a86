"""The lifecycle rules as data: the shipped `scheduler/data/rules.yaml` (which documents every
field), merged with a shop's own file, validated as a whole.

A shop's file only says what differs: its `rules:` entries are merged by `key` over the shipped
ones (mappings field by field, lists and values replaced), and a new key adds a rule. Every
mistake is reported at once as (file, key, reason), like the shop configuration
(`domain.shop`), so the owner fixes the file in one go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from domain import cards
from domain.errors import ConfigError
from domain.locales import DEFAULT_LOCALE
from domain.messages import TEMPLATES_DIR
from domain.shop import CATEGORIES as SERVICE_CATEGORIES
from domain.shop import Names, to_cents
from scheduler.outbox import CATEGORIES, MARKETING

DEFAULT_RULES = Path(__file__).resolve().parent / "data" / "rules.yaml"
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Template = Annotated[str, Field(pattern=r"^[a-z0-9_]+(/[a-z0-9_]+)*$", max_length=64)]
Yuan = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
# Kinds whose message is an offer: they may only go to members who agreed to marketing.
OFFER_KINDS = frozenset({"birthday", "win_back", "wake_up"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CouponSpec(_Strict):
    """The coupon a rule gives with its message; amounts in yuan like shop.yaml."""

    kind: Literal["value", "percent"] = "value"
    value: Yuan = Decimal(0)
    percent: int = Field(default=0, ge=0, le=99)
    min_spend: Yuan = Decimal(0)
    valid_days: int = Field(default=30, gt=0, le=3650)
    title: Names

    @model_validator(mode="after")
    def _amount(self) -> CouponSpec:
        if self.kind == "value" and (self.value <= 0 or self.percent):
            raise ValueError("a value coupon needs a value above 0 and no percent")
        if self.kind == "percent" and (not 0 < self.percent < 100 or self.value):
            raise ValueError("a percent coupon needs a percent from 1 to 99 and no value")
        return self

    @property
    def value_cents(self) -> int:
        return to_cents(self.value)

    @property
    def min_spend_cents(self) -> int:
        return to_cents(self.min_spend)

    def valid_until(self, day: date) -> date:
        """Usable for `valid_days` days counting the day it is issued, like reward coupons."""
        return day + timedelta(days=self.valid_days - 1)


class WeChatTemplate(_Strict):
    """The WeChat template message a rule's message goes as when the member's
    customer-service allowance is spent: the template's id from the Official Account's
    console, and what fills each of its keywords (a message template each, rendered for the
    member like the message). Checked here against WeChat's limits (`domain.cards`)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    fields: Annotated[dict[str, Annotated[str, Field(max_length=200)]], Field(min_length=1)]
    url: Annotated[str, Field(pattern=r"^(https://\S{1,500})?$")] = ""

    @model_validator(mode="after")
    def _fits(self) -> WeChatTemplate:
        found = cards.problems(self.fields)
        if found:
            raise ValueError("; ".join(found))
        return self


class _RuleBase(_Strict):
    key: Key
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    template: Template
    enabled: bool = True
    quiet_hours: bool = True
    coupon: CouponSpec | None = None
    wechat_template: WeChatTemplate | None = None

    @model_validator(mode="after")
    def _offers_are_marketing(self) -> _RuleBase:
        kind = getattr(self, "kind", "")
        if (kind in OFFER_KINDS or self.coupon is not None) and self.category != MARKETING:
            raise ValueError(f"a {kind} rule or a rule with a coupon must be category marketing")
        if self.wechat_template is not None and self.category == MARKETING:
            raise ValueError("WeChat template messages may not carry marketing")
        return self


Days = Annotated[int, Field(ge=0, le=3650)]
Offsets = Annotated[list[Annotated[int, Field(ge=1, le=3650)]], Field(min_length=1)]


class VisitSurvey(_RuleBase):
    kind: Literal["visit_survey"]
    days_after: Days = 1


class VisitCare(_RuleBase):
    kind: Literal["visit_care"]
    days_after: Days = 3
    categories: list[Literal[SERVICE_CATEGORIES]] = Field(default_factory=list)  # type: ignore[valid-type]


class Birthday(_RuleBase):
    kind: Literal["birthday"]


class MaintenanceDue(_RuleBase):
    kind: Literal["maintenance_due"]
    min_span_days: int = Field(default=30, ge=1, le=3650)
    catch_up_days: int = Field(default=0, ge=0, le=60)


class InsuranceRenewal(_RuleBase):
    kind: Literal["insurance_renewal"]
    days_before: Offsets = Field(default_factory=lambda: [60, 30, 7])


class InspectionDue(_RuleBase):
    kind: Literal["inspection_due"]
    days_before: Offsets = Field(default_factory=lambda: [30, 7])


class BookingReminder(_RuleBase):
    kind: Literal["booking_reminder"]
    hours_before: Annotated[list[Annotated[int, Field(ge=1, le=48)]], Field(min_length=1)] = Field(
        default_factory=lambda: [24, 2]
    )


class PointsExpiring(_RuleBase):
    kind: Literal["points_expiring"]
    days_before: int = Field(default=30, ge=1, le=365)


class TierUpgrade(_RuleBase):
    kind: Literal["tier_upgrade"]
    within_days: int = Field(default=1, ge=0, le=60)


class WinBack(_RuleBase):
    kind: Literal["win_back"]
    within_days: int = Field(default=3, ge=1, le=60)
    every_days: int = Field(default=90, ge=1, le=3650)
    second_after_days: int = Field(default=14, ge=1, le=365)
    second_coupon: CouponSpec | None = None

    @model_validator(mode="after")
    def _stages_fit(self) -> WinBack:
        if self.second_after_days + self.within_days > self.every_days:
            raise ValueError("second_after_days + within_days must not exceed every_days")
        return self


class WakeUp(_RuleBase):
    kind: Literal["wake_up"]
    after_days: int = Field(default=180, ge=1, le=3650)


Rule = Annotated[
    VisitSurvey
    | VisitCare
    | Birthday
    | MaintenanceDue
    | InsuranceRenewal
    | InspectionDue
    | BookingReminder
    | PointsExpiring
    | TierUpgrade
    | WinBack
    | WakeUp,
    Field(discriminator="kind"),
]
_RULE = TypeAdapter(Rule)


@dataclass(frozen=True)
class _Source:
    path: Path
    entries: list[dict[str, Any]]


def load_rules(path: Path | None = None) -> list[Rule]:
    """The shipped rules with the shop's file at `path` merged over them, in file order (shipped
    rules first, then the shop's new ones). Raises ConfigError listing every problem."""
    shipped = _read(DEFAULT_RULES)
    merged = {entry["key"]: (DEFAULT_RULES, entry) for entry in shipped.entries}
    problems: list[tuple[str, str, str]] = []
    if path is not None:
        if not path.is_file():
            raise ConfigError([(str(path), "-", "file not found")])
        shop = _read(path)
        for index, entry in enumerate(shop.entries):
            key = entry.get("key")
            if not isinstance(key, str):
                problems.append((str(path), f"rules.{index}", "every rule needs a key"))
                continue
            base = merged.get(key, (path, {}))[1]
            merged[key] = (path, _merge(base, entry))
    rules: list[Rule] = []
    for key, (source, entry) in merged.items():
        try:
            rule = _RULE.validate_python(entry)
        except ValidationError as exc:
            problems += [(str(source), _where(key, err["loc"]), err["msg"]) for err in exc.errors()]
            continue
        if not (TEMPLATES_DIR / DEFAULT_LOCALE / f"{rule.template}.j2").is_file():
            problems.append((str(source), f"{key}.template", f"no template {rule.template!r}"))
        rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return rules


def _where(key: str, loc: tuple[Any, ...]) -> str:
    """`birthday.coupon.value`: the rule's key, then the field (the kind's tag left out)."""
    return ".".join([key, *(str(part) for part in loc[1:])])


def _read(path: Path) -> _Source:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise ConfigError([(str(path), where, f"not valid YAML: {exc}")]) from exc
    if not isinstance(raw, dict) or set(raw) != {"rules"} or not isinstance(raw["rules"], list):
        raise ConfigError([(str(path), "-", "the file must hold one `rules:` list")])
    entries = raw["rules"]
    bad = [i for i, entry in enumerate(entries) if not isinstance(entry, dict)]
    if bad:
        raise ConfigError([(str(path), f"rules.{i}", "each rule is a mapping") for i in bad])
    return _Source(path, entries)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = _merge(merged[name], value)
        else:
            merged[name] = value
    return merged
