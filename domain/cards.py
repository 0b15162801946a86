"""Cards: a message's short form for WeChat template messages, and WeChat's limits on it.

Outside the few customer-service messages a member's own action allows, an Official Account
may write to a member only through a template message: a template the platform approved,
whose keywords (`thing1`, `time2`, …) we fill. The rules file says, per rule, which template
and what fills each keyword (a small message template, rendered in the same sandbox as the
messages). WeChat's current limits on what it shows:

* `first` and `remark` are no longer shown, nor colours or emoji;
* a keyword value over 20 characters, or with a line break, is refused or cut.

So the limits are checked twice, never at send time: when the rules file is loaded
(`problems`: every field rendered for the sample member in both languages must fit, and the
keywords must be ones WeChat shows) and when a card is rendered for a member (`fit`: line
breaks become spaces, emoji and control characters go, and a value still too long is cut to
19 characters and "…", so a long store name shortens rather than loses the message).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from domain.errors import DomainError
from domain.locales import LOCALES
from domain.messages import Renderer, sample_context
from domain.outgoing import Card

FIELD_LIMIT = 20  # characters of one keyword's value
DROPPED_KEYWORDS = frozenset({"first", "remark"})
KEYWORD = re.compile(r"[a-z][a-z_]{0,30}[0-9]{0,2}")
_SPACES = re.compile(r"\s+")


def fit(value: str) -> str:
    """`value` as WeChat will show it in a keyword: one line, no emoji or control
    characters, at most `FIELD_LIMIT` characters."""
    kept = "".join(ch for ch in value if not _dropped(ch))
    line = _SPACES.sub(" ", kept).strip()
    if len(line) > FIELD_LIMIT:
        return line[: FIELD_LIMIT - 1] + "…"
    return line


def _fits(value: str) -> bool:
    """Whether WeChat would show `value` whole: one line, nothing it drops, not too long.
    (Other spaces, such as the narrow one in "2:30 PM", are fine.)"""
    line = _SPACES.sub(" ", value).strip()
    return "\n" not in value.strip() and fit(value) == line


def _dropped(ch: str) -> bool:
    category = unicodedata.category(ch)
    if category == "So" and ord(ch) >= 0x2190:  # emoji and pictographs, not ¥ or ©
        return True
    if ch in "\ufe0f\u200d":  # emoji presentation and joiners
        return True
    return category in ("Cc", "Cf") and ch not in "\n\r\t"


def render(
    template_id: str,
    fields: Mapping[str, str],
    locale: str | None,
    context: Mapping[str, Any],
    renderer: Renderer,
    url: str = "",
) -> Card:
    """The card for one member: every field rendered from `context`, then fitted.
    Raises DomainError (a template error) as rendering a message does."""
    values = tuple(
        (keyword, fit(renderer.render_source(source, locale, context, "wechat")))
        for keyword, source in fields.items()
    )
    return Card(template_id=template_id, fields=values, url=url)


def problems(fields: Mapping[str, str], renderer: Renderer | None = None) -> list[str]:
    """What is wrong with a rule's keyword sources, for the rules file's checks: keywords
    WeChat does not show or cannot be, sources that do not compile, and values that, rendered
    for the sample member in every language, would not fit as they are."""
    renderer = renderer or Renderer()
    found: list[str] = []
    for keyword, source in fields.items():
        if keyword in DROPPED_KEYWORDS:
            found.append(f"{keyword}: WeChat no longer shows `first` or `remark`")
            continue
        if not KEYWORD.fullmatch(keyword):
            found.append(f"{keyword}: not a template keyword (like thing1 or time2)")
            continue
        for locale in LOCALES:
            try:
                value = renderer.render_source(source, locale, sample_context(locale), "wechat")
            except DomainError as exc:
                found.append(f"{keyword}: {exc}")
                break
            if not _fits(value):
                found.append(
                    f"{keyword}: renders as {value!r} ({locale}); a keyword takes one line of "
                    f"at most {FIELD_LIMIT} characters, without emoji"
                )
                break
    return found


__all__ = ["DROPPED_KEYWORDS", "FIELD_LIMIT", "fit", "problems", "render"]
