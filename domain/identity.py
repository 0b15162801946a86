"""Normalizing the identifiers people type: phone numbers and licence plates."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from domain.errors import InvalidInput

# A plain mainland mobile as almost every export writes it. 11x/12x/179x are left out: CN's
# national_prefix_for_parsing (`1(?:[12]\d|79)\d\d`) may strip them as dialling prefixes.
_PLAIN_CN_MOBILE = re.compile(r"1(?:[3-68-9]\d|7[0-8])\d{8}")
_PLATE = re.compile(r"^[\u4e00-\u9fffA-Z0-9]{5,10}$")
_PLATE_NOISE = re.compile(r"[\s·•.\-_]")
_PHONE_IN_TEXT = re.compile(r"\+?\d{11,15}")


def normalize_phone(text: str, region: str = "CN") -> str:
    """E.164 form (+8613812345678) of a phone written any common way; rejects what cannot dial."""
    cleaned = unicodedata.normalize("NFKC", text or "").strip()
    if not cleaned:
        raise InvalidInput("phone is empty")
    if region == "CN" and _PLAIN_CN_MOBILE.fullmatch(cleaned):
        # Bulk imports spend most of their per-member time in phonenumbers.parse; for this
        # shape it can only give +86 and these digits, so build that and let phonenumbers still
        # judge validity. An invalid one falls through for the slow path's exact reason.
        number = phonenumbers.PhoneNumber(country_code=86, national_number=int(cleaned))
        if phonenumbers.is_valid_number(number):
            return "+86" + cleaned
    try:
        number = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput("phone is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("phone is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_plate(text: str) -> str:
    """Upper case, full-width folded, separators dropped: '沪a·12345' → '沪A12345'."""
    cleaned = _PLATE_NOISE.sub("", unicodedata.normalize("NFKC", text or "")).upper()
    if not _PLATE.match(cleaned):
        raise InvalidInput("plate is not a licence plate")
    return cleaned


def mask_phone(phone: str | None) -> str:
    """What logs and staff lists show: +86138****5678."""
    if not phone:
        return "-"
    return phone[:-8] + "****" + phone[-4:] if len(phone) > 8 else "****"


def mask_plate(plate: str | None) -> str:
    if not plate:
        return "-"
    return plate[:2] + "*" * max(0, len(plate) - 4) + plate[-2:]


def mask_phones_in(text: str) -> str:
    """Free text (an audit line, a note) with every phone-like run of digits masked."""
    return _PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group()), text)
