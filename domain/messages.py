"""Member-facing messages: loading templates, rendering them safely, linting staff drafts.

Every text a member reads is a Jinja template, `templates/messages/<locale>/<key>.j2`, or (for
versions staff write later) a template source kept in the database. Both go through the same
hardened sandbox (`domain.rendering`, which also documents the filters), so a template can only
read its context and format it: anything else raises a typed `domain.errors.TemplateError`,
never a raw jinja2 exception.

Locales: `zh_CN` (default) and `en`. A locale we do not ship is matched on its language
("en_US" → "en"), otherwise it becomes `zh_CN`. When the member's locale has no file for a key,
the zh_CN file is used, and it is formatted as zh_CN: the words and the dates must agree.

Channel limits (`CHANNEL_LIMITS`): Telegram refuses texts over 4096 characters, so `telegram`
counts characters; WeChat's customer-service text message is limited to 2048 bytes, so
`wechat` counts UTF-8 bytes (a Chinese character is 3 of them). The rendered text is stripped
of leading and trailing whitespace before it is measured.

The context (see `sample_context`, which lint renders against) is plain dicts:

* `member`: name, member_ref, locale, birthday (date or None);
* `vehicle`: plate (normalized), make, model, inspection_due, insurance_expiry (dates or None);
* `store`: code, name, address, timezone (IANA name; `date`/`time` show datetimes in it);
* `points`: balance, expiring (points lapsing soon), expiring_on (date), next_expiry (date/None);
* `tier`: code, name (in the member's language), next_name (None at the top), missing_cents,
  privileges (list of strings);
* `coupon`: code, title, value_cents, percent_off, min_spend_cents, valid_until (date);
* `booking`: ref, service, starts_at (aware UTC datetime), store_name;
* `today`: the date in the store's time zone (used by `days_until`);
* lifecycle rules also pass `visit`, `service`, `maintenance`, `reminder`, `stage` and
  `buttons` (templates/messages/README.md lists their fields).

A caller passes only what the message is about; a template using a name that was not passed
fails with `TemplateUndefinedName`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import Template
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from domain.errors import (
    MessageTooLong,
    NotFound,
    TemplateError,
    TemplateInvalid,
    TemplateTooCostly,
    TemplateUndefinedName,
    TemplateUnsafe,
)
from domain.locales import DEFAULT_LOCALE, LOCALES, resolve_locale
from domain.rendering import MessageEnvironment, MissingName, RenderBudget, TooCostly

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "messages"
SOURCE_CACHE_SIZE = 256
_SOURCE_NAME = "<source>"
_KEY = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+)*")


@dataclass(frozen=True)
class ChannelLimit:
    """How long a message may be on a channel, and in what unit it is counted."""

    limit: int
    unit: str  # "characters" or "bytes" (UTF-8)

    def measure(self, text: str) -> int:
        return len(text.encode("utf-8")) if self.unit == "bytes" else len(text)


CHANNEL_LIMITS: dict[str, ChannelLimit] = {
    "telegram": ChannelLimit(4096, "characters"),
    "wechat": ChannelLimit(2048, "bytes"),
}


class Renderer:
    """Renders shipped templates by key and staff-written sources, caching compiled templates.

    Shipped files are read once per (key, locale): they change only with a deployment.
    """

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.templates_dir = templates_dir
        self.env = MessageEnvironment()
        self._files: dict[tuple[str, str], tuple[Template, str]] = {}
        self._sources: dict[str, Template] = {}

    def template(self, key: str, locale: str | None) -> tuple[Template, str]:
        """The compiled template for `key` and the locale it is written in (after fallback)."""
        if not _KEY.fullmatch(key):
            raise NotFound(f"no message template {key!r}", key=key)
        wanted = resolve_locale(locale)
        cached = self._files.get((key, wanted))
        if cached is None:
            cached = self._load(key, wanted)
            self._files[(key, wanted)] = cached
        return cached

    def compile_source(self, source: str) -> Template:
        """A staff-written template, compiled once per distinct text."""
        template = self._sources.get(source)
        if template is None:
            template = _compile(self.env, source, _SOURCE_NAME)
            if len(self._sources) >= SOURCE_CACHE_SIZE:
                self._sources.pop(next(iter(self._sources)))
            self._sources[source] = template
        return template

    def render(
        self, key: str, locale: str | None, context: Mapping[str, Any], channel: str = "telegram"
    ) -> str:
        template, used_locale = self.template(key, locale)
        return _fit(_render(template, used_locale, context), channel)

    def render_source(
        self, source: str, locale: str | None, context: Mapping[str, Any], channel: str = "telegram"
    ) -> str:
        template = self.compile_source(source)
        return _fit(_render(template, resolve_locale(locale), context), channel)

    def _load(self, key: str, locale: str) -> tuple[Template, str]:
        for candidate in dict.fromkeys((locale, DEFAULT_LOCALE)):
            path = self.templates_dir / candidate / f"{key}.j2"
            if path.is_file():
                name = f"{candidate}/{key}.j2"
                return _compile(self.env, path.read_text(encoding="utf-8"), name), candidate
        raise NotFound(f"no message template {key!r}", key=key, locale=locale)


def _compile(env: MessageEnvironment, source: str, name: str) -> Template:
    try:
        code = env.compile(source, name=name, filename=name)
    except Exception as exc:
        raise _translate(exc, name) from None
    return env.template_class.from_code(env, code, env.make_globals(None))


def _render(template: Template, locale: str, context: Mapping[str, Any]) -> str:
    try:
        with RenderBudget():
            return template.render({**context, "__locale__": locale}).strip()
    except Exception as exc:
        raise _translate(exc, template.filename or _SOURCE_NAME) from None


def _fit(text: str, channel: str) -> str:
    limit = CHANNEL_LIMITS.get(channel)
    if limit is None:
        raise NotFound(f"no channel {channel!r}", channel=channel)
    length = limit.measure(text)
    if length > limit.limit:
        raise MessageTooLong(
            f"message is {length} {limit.unit} long; {channel} allows {limit.limit}",
            channel=channel,
            limit=limit.limit,
            length=length,
            unit=limit.unit,
        )
    return text


def _translate(exc: BaseException, filename: str) -> TemplateError:
    """The typed error for anything a template made go wrong, with its line when known."""
    if isinstance(exc, TemplateSyntaxError):
        return TemplateInvalid(
            f"line {exc.lineno}: {exc.message}", line=exc.lineno, reason=exc.message
        )
    line = _template_line(exc.__traceback__, filename)
    where = f"line {line}: " if line else ""
    if isinstance(exc, MissingName):
        return TemplateUndefinedName(f"{where}{exc.message}", name=exc.name, line=line)
    if isinstance(exc, SecurityError):
        return TemplateUnsafe(f"{where}{exc}", reason=str(exc), line=line)
    if isinstance(exc, TooCostly | RecursionError | MemoryError | OverflowError):
        reason = str(exc) or type(exc).__name__
        return TemplateTooCostly(f"{where}too costly: {reason}", reason=reason, line=line)
    reason = f"{type(exc).__name__}: {exc}"
    return TemplateError(f"{where}{reason}", reason=reason, line=line)


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    """The last line of the template the traceback went through (Jinja maps frames to lines)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def sample_context(locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
    """A realistic member with everything a message may mention; lint renders against it."""
    english = resolve_locale(locale) == "en"
    return {
        "member": {
            "name": "Mr Wang" if english else "王先生",
            "member_ref": "M0001",
            "locale": resolve_locale(locale),
            "birthday": date(1988, 3, 12),
        },
        "vehicle": {
            "plate": "沪A12345",
            "make": "Volkswagen" if english else "大众",
            "model": "Passat" if english else "帕萨特",
            "inspection_due": date(2026, 4, 30),
            "insurance_expiry": date(2026, 6, 15),
        },
        "store": {
            "code": "SH01",
            "name": "Xuhui Store" if english else "徐汇店",
            "address": "88 Caoxi North Rd, Shanghai" if english else "上海市徐汇区漕溪北路88号",
            "timezone": "Asia/Shanghai",
        },
        "points": {
            "balance": 12_680,
            "expiring": 1_200,
            "expiring_on": date(2026, 3, 31),
            "next_expiry": date(2026, 3, 31),
        },
        "tier": {
            "code": "gold",
            "name": "Gold" if english else "金卡",
            "next_name": "Platinum" if english else "白金卡",
            "missing_cents": 320_000,
            "privileges": (
                ["Free interior vacuum", "Priority booking"]
                if english
                else ["免费内饰吸尘", "优先预约"]
            ),
        },
        "coupon": {
            "code": "CPN8H2K4",
            "title": "¥50 off any wash" if english else "洗车立减50元",
            "value_cents": 5_000,
            "percent_off": 0,
            "min_spend_cents": 20_000,
            "valid_until": date(2026, 4, 30),
        },
        "booking": {
            "ref": "B20260305-07",
            "service": "Full detail" if english else "精致洗车",
            "starts_at": datetime(2026, 3, 5, 6, 30, tzinfo=UTC),
            "store_name": "Xuhui Store" if english else "徐汇店",
        },
        "today": date(2026, 3, 1),
        "visit": {
            "id": 4711,
            "visited_on": date(2026, 2, 27),
            "store_name": "Xuhui Store" if english else "徐汇店",
            "services": ["Oil service"] if english else ["小保养（机油机滤）"],
        },
        "service": {
            "code": "oil_service",
            "name": "Oil service" if english else "小保养（机油机滤）",
        },
        "maintenance": {
            "due_by": "mileage",
            "last_service_on": date(2025, 10, 2),
            "interval_months": 6,
            "interval_km": 5_000,
            "estimated_km": 48_120,
            "km_since_service": 5_030,
        },
        "reminder": {"hours_before": 24},
        "stage": 1,
        "buttons": [[{"label": str(n), "data": f"feedback:score:4711:{n}"} for n in range(11)]],
    }


def lint(
    source: str,
    *,
    channels: Sequence[str] = ("telegram", "wechat"),
    locales: Iterable[str] = LOCALES,
    renderer: Renderer | None = None,
) -> list[str]:
    """Problems with a draft template, one sentence each; empty when it may be submitted.

    It must compile, render for the sample member in every locale, and fit every channel.
    """
    renderer = renderer or Renderer()
    try:
        template = renderer.compile_source(source)
    except TemplateError as exc:
        return [str(exc)]
    problems: list[str] = []
    for locale in locales:
        try:
            text = _render(template, resolve_locale(locale), sample_context(locale))
        except TemplateError as exc:
            problems.append(f"{locale}: {exc}")
            continue
        if not text:
            problems.append(f"{locale}: renders an empty message")
        for channel in channels:
            try:
                _fit(text, channel)
            except (MessageTooLong, NotFound) as exc:
                problems.append(f"{locale}: {exc}")
    return problems
