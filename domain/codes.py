"""Codes people read aloud and type: coupon codes at the counter, invite codes in a chat.

Crockford's base 32 leaves out I, L, O and U, which look or sound like other characters, and
the letters a person may still type for a digit (O for 0, I and L for 1) are read as that
digit. Case, spaces, dashes, underscores and full-width characters are forgiven.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TYPOS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_NOISE = re.compile(r"[\s\-_]")


def random_code(length: int) -> str:
    """`length` characters from `secrets`: 5 bits each."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def clean(text: str, length: int) -> str | None:
    """The bare code in what someone typed, or None when it cannot be a code of `length`."""
    raw = _NOISE.sub("", unicodedata.normalize("NFKC", text or "")).upper().translate(_TYPOS)
    if len(raw) != length or any(ch not in ALPHABET for ch in raw):
        return None
    return raw
