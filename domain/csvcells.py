"""The cells people actually write in a shop's CSV export, read into typed values.

Pure functions (no database, no files): full-width digits and punctuation from Chinese input
methods are folded first, then dates in three common forms, amounts with or without a currency
sign and thousands separators, distances, yes/no in both languages, languages, lists with any
of the usual separators, tags, VINs, phones and plates. A bad cell raises `ValueError` whose
message is the reason shown to the operator; it never repeats the value, which may be personal
data. The frequent parsers are cached, since an export repeats the same dates and amounts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date
from functools import lru_cache

from domain.errors import InvalidInput
from domain.identity import normalize_phone, normalize_plate
from domain.limits import MAX_AMOUNT_CENTS, MAX_AMOUNT_YUAN, MAX_KM, MAX_POINTS

MAX_LENGTH = {
    "member_ref": 64,
    "name": 120,
    "visit_ref": 64,
    "make": 60,
    "model": 60,
    "tag": 40,
    "store": 32,
}

DATE_FORMATS = "2024-03-05, 2024/3/5 or 2024年3月5日"
_DATE = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:[ T]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)
_CURRENCY = re.compile(r"^(?:¥|rmb|cny)\s*|\s*(?:元|rmb|cny)$", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_GROUPED_NUMBER = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_KM_SUFFIX = re.compile(r"\s*(?:km|公里)$", re.IGNORECASE)
_LIST_SEPARATORS = re.compile(r"[;|,、]")
_VIN = re.compile(r"^[A-Z0-9]{1,17}$")
_TRUE = frozenset(("1", "y", "yes", "true", "是", "同意"))
_FALSE = frozenset(("0", "n", "no", "false", "否", "不同意"))


def nfkc(text: str) -> str:
    """Full-width digits, letters and punctuation (what Chinese input methods type) folded."""
    return unicodedata.normalize("NFKC", text).strip()


@lru_cache(maxsize=8192)
def parse_date(text: str) -> date:
    """A calendar day in any of the forms Excel and Chinese POS systems write."""
    match = _DATE.match(nfkc(text))
    if not match:
        raise ValueError(f"is not a date (use {DATE_FORMATS})")
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError("is not a calendar day") from None


def _plain_number(text: str, what: str) -> str:
    """Digits with an optional decimal part; thousands separators only where they group by 3."""
    cleaned = text.replace(" ", "")
    if cleaned.startswith("-") or (cleaned.startswith("(") and cleaned.endswith(")")):
        raise ValueError("is negative")
    if _GROUPED_NUMBER.match(cleaned):
        return cleaned.replace(",", "")
    if _PLAIN_NUMBER.match(cleaned):
        return cleaned
    raise ValueError(f"is not {what}")


_NO_LIMIT = 10**18 - 1  # what a 64-bit column holds, give or take


def _at_most(digits: str, limit: int, too_big: str) -> int:
    """The whole number `digits` if it is at most `limit`, else ValueError(too_big). The
    length is checked before int() reads it: int() refuses strings of more than 4,300 digits
    with words of its own."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise ValueError(too_big)
    return int(digits)


@lru_cache(maxsize=8192)
def parse_amount(text: str) -> int:
    """Cents of a payment written as 1234.5, ¥1,234.50, ￥88, RMB 100, CNY100 or 100元;
    at most domain.limits.MAX_AMOUNT_YUAN."""
    cleaned = _CURRENCY.sub("", nfkc(text))
    number = _plain_number(cleaned, "an amount of money")
    whole, _, fraction = number.partition(".")
    if len(fraction) > 2:
        raise ValueError("has more than 2 decimals")
    too_big = f"is more than {MAX_AMOUNT_YUAN:,} yuan"
    cents = _at_most(whole, MAX_AMOUNT_YUAN, too_big) * 100 + int(fraction.ljust(2, "0"))
    if cents > MAX_AMOUNT_CENTS:
        raise ValueError(too_big)
    return cents


def parse_count(
    text: str, what: str = "a whole number", limit: int = _NO_LIMIT, unit: str = ""
) -> int:
    """A non-negative integer such as 12,345; a trailing .0 from a spreadsheet is accepted.
    Past `limit` it is refused as "more than `limit` `unit`" (as not `what` without a unit)."""
    number = _plain_number(nfkc(text), what)
    whole, _, fraction = number.partition(".")
    if fraction.strip("0"):
        raise ValueError(f"is not {what}")
    return _at_most(whole, limit, f"is more than {limit:,} {unit}" if unit else f"is not {what}")


def parse_points(text: str) -> int:
    """Points written at once (an opening balance), at most domain.limits.MAX_POINTS."""
    return parse_count(text, "a number of points", MAX_POINTS, "points")


def parse_km(text: str) -> int:
    """An odometer reading such as 12,000 or 12000 km / 公里, at most domain.limits.MAX_KM."""
    return parse_count(_KM_SUFFIX.sub("", nfkc(text)), "a distance in km", MAX_KM, "km")


def parse_bool(text: str) -> bool:
    value = nfkc(text).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("is not yes or no (use yes/no, 1/0, true/false or 是/否)")


def parse_locale(text: str) -> str:
    """zh_CN or en, from the many ways a language gets written (zh-CN, zh, zh_Hans, en-US…)."""
    value = nfkc(text).lower().replace("-", "_")
    if value in ("zh", "cn", "中文", "简体中文") or value.startswith("zh_"):
        return "zh_CN"
    if value in ("en", "english", "英文", "英语") or value.startswith("en_"):
        return "en"
    raise ValueError("is not a supported language (use zh_CN or en)")


def split_list(text: str) -> list[str]:
    """Items of a cell separated by ; | , 、 (full-width forms too), trimmed, first seen kept."""
    seen: dict[str, None] = {}
    for item in _LIST_SEPARATORS.split(nfkc(text)):
        item = item.strip()
        if item:
            seen.setdefault(item, None)
    return list(seen)


@lru_cache(maxsize=8192)
def parse_tags(text: str) -> tuple[str, ...]:
    """Remembered, like the other cells that repeat across a file (tags, services, scores)."""
    tags = split_list(text)
    for tag in tags:
        if len(tag) > MAX_LENGTH["tag"]:
            raise ValueError(f"a tag is longer than {MAX_LENGTH['tag']} characters")
    return tuple(tags)


def parse_vin(text: str) -> str:
    value = nfkc(text).upper().replace(" ", "").replace("-", "")
    if not _VIN.match(value):
        raise ValueError("is not a VIN (up to 17 letters and digits)")
    return value


def parse_text(limit: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if len(value) > limit:
            raise ValueError(f"is longer than {limit} characters")
        return value

    return parse


def parse_phone(text: str, region: str = "CN") -> str:
    try:
        return normalize_phone(text, region)
    except InvalidInput as exc:
        raise ValueError(str(exc).removeprefix("phone ")) from None


def parse_plate(text: str) -> str:
    try:
        return normalize_plate(text)
    except InvalidInput:
        raise ValueError("is not a licence plate") from None
