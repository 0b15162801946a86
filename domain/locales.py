"""The languages members are spoken to in, and the one rule for choosing between them.

zh_CN is the default and the fallback: a member whose language is unknown, or a name that has
no English version, gets Chinese. Every name the chain keeps in both languages (stores,
services, tiers, rewards, segments) is chosen with `localized`, so no two screens disagree.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", str, list[str], tuple[str, ...])

DEFAULT_LOCALE = "zh_CN"
LOCALES = ("zh_CN", "en")


def resolve_locale(locale: str | None) -> str:
    """The shipped locale closest to a member's: exact, then same language, then zh_CN."""
    if locale in LOCALES:
        return locale
    language = (locale or "").replace("-", "_").split("_")[0].lower()
    return next((known for known in LOCALES if known.split("_")[0] == language), DEFAULT_LOCALE)


def localized(locale: str | None, zh: T, en: T) -> T:
    """A name (or list of lines) kept in both languages, in the member's: the English one for
    an English-speaking member when there is one, the Chinese one otherwise."""
    return en if en and resolve_locale(locale) == "en" else zh
