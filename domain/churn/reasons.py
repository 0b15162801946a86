"""Why a member is at risk, in words staff can act on: reason keys, the figures behind each
(stored as a compact code, `overdue:days=45`) and their wording in zh_CN and en.

These are staff-facing labels, not member messages, so they are kept here rather than as
approved templates under templates/messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import InvalidInput
from domain.locales import LOCALES, localized

# zh_CN and en wording per reason key; the fields come from the stored code.
REASON_WORDS: dict[str, tuple[str, str]] = {
    "overdue": (
        "超过平时到店周期 {days} 天",
        "{days} days past their usual visit interval",
    ),
    "absent": ("已 {days} 天未到店", "{days} days since their last visit"),
    "few_visits": ("仅到店 {visits} 次", "only {visits} visit day(s) so far"),
    "longer_gaps": (
        "到店间隔拉长：最近一次 {last} 天，以往平均 {usual} 天",
        "visits further apart: last gap {last} days, usually {usual}",
    ),
    "fewer_visits": (
        "到店变少：近12个月 {recent} 次，之前12个月 {earlier} 次",
        "coming less: {recent} visit day(s) in the last 12 months, {earlier} in the 12 before",
    ),
    "lower_spend": (
        "消费下降：近12个月 ¥{recent}，之前12个月 ¥{earlier}",
        "spending less: ¥{recent} in the last 12 months, ¥{earlier} in the 12 before",
    ),
    "low_ticket": ("客单价低：平均每次 ¥{ticket}", "low spend per visit: ¥{ticket} on average"),
    "low_satisfaction": (
        "最近一次满意度评分 {score} 分",
        "last satisfaction score {score}/10",
    ),
    "unanswered": (
        "上次到店后 {count} 条消息未见回应",
        "{count} message(s) since their last visit went unanswered",
    ),
    "few_expected": (
        "按到店规律，未来 {days} 天预计仅到店 {expected} 次",
        "their visit pattern predicts only {expected} visit(s) in the next {days} days",
    ),
    "no_visit": ("入会后从未到店", "never visited since joining"),
}
REASON_KEYS: tuple[str, ...] = tuple(REASON_WORDS)
# Each reason key's column in the per-member contribution matrix.
REASON_INDEX = {key: k for k, key in enumerate(REASON_KEYS)}


@dataclass(frozen=True)
class Reason:
    key: str
    values: dict[str, int | float]
    weight: float

    @property
    def code(self) -> str:
        fields = ",".join(f"{k}={_plain(v)}" for k, v in self.values.items())
        return f"{self.key}:{fields}" if fields else self.key


def _plain(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_reason(code: str) -> tuple[str, dict[str, str]]:
    """`overdue:days=45` → ("overdue", {"days": "45"})."""
    key, _, rest = code.partition(":")
    values = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    return key, values


def reason_text(code: str, locale: str) -> str:
    """A stored reason code in words, in zh_CN or en."""
    if locale not in LOCALES:
        raise InvalidInput("unknown locale", locale=locale)
    key, values = parse_reason(code)
    if key not in REASON_WORDS:
        raise InvalidInput("unknown churn reason", reason=key)
    zh, en = REASON_WORDS[key]
    template = localized(locale, zh, en)
    money = {"recent", "earlier", "ticket"} if key in ("lower_spend", "low_ticket") else set()
    shown = {k: f"{int(v):,}" if k in money else v for k, v in values.items()}
    try:
        return template.format(**shown)
    except KeyError as exc:
        raise InvalidInput("churn reason lacks a value", reason=code) from exc
