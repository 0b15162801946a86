"""Member messages: locale-aware filters, zh_CN fallback, typed errors, the sandbox holding
against escapes and resource bombs, channel length limits, lint and caching. Pure: no DB."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from domain.errors import (
    MessageTooLong,
    NotFound,
    TemplateError,
    TemplateInvalid,
    TemplateTooCostly,
    TemplateUndefinedName,
    TemplateUnsafe,
)
from domain.messages import (
    CHANNEL_LIMITS,
    TEMPLATES_DIR,
    Renderer,
    lint,
    resolve_locale,
    sample_context,
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def render(renderer: Renderer, source: str, locale: str = "zh_CN", **extra: object) -> str:
    return renderer.render_source(source, locale, {**sample_context(locale), **extra})


@pytest.mark.parametrize(
    ("source", "zh", "en"),
    [
        ("{{ points.expiring_on|date }}", "2026年3月31日", "Mar 31, 2026"),
        ("{{ points.expiring_on|date('long') }}", "2026年3月31日", "March 31, 2026"),
        ("{{ coupon.value_cents|money }}", "¥50.00", "¥50.00"),
        ("{{ 123450|money }}", "¥1,234.50", "¥1,234.50"),
        ("{{ -500|money }}", "-¥5.00", "-¥5.00"),
        ("{{ points.balance|points }}", "12,680", "12,680"),
        ("{{ vehicle.plate|plate }}", "沪A·12345", "沪A·12345"),
        ("{{ 'sh a-12345'|plate }}", "SH·A12345", "SH·A12345"),
        ("{{ vehicle.plate|mask_plate }}", "沪A***45", "沪A***45"),
        ("{{ points.expiring_on|days_until }}", "30", "30"),
        # 06:30 UTC is 14:30 in Shanghai; CLDR puts a narrow no-break space before "PM".
        ("{{ booking.starts_at|time }}", "14:30", "2:30\u202fPM"),
        ("{{ booking.starts_at|date }}", "2026年3月5日", "Mar 5, 2026"),
    ],
)
def test_filters_format_in_the_render_locale(
    renderer: Renderer, source: str, zh: str, en: str
) -> None:
    assert render(renderer, source, "zh_CN") == zh
    assert render(renderer, source, "en") == en


def test_datetimes_are_shown_in_the_store_time_zone(renderer: Renderer) -> None:
    late = datetime(2026, 3, 4, 20, 0, tzinfo=UTC)
    assert (
        render(renderer, "{{ at|date }} {{ at|time }}", "en", at=late) == "Mar 5, 2026 4:00\u202fAM"
    )
    tokyo = {**sample_context("en")["store"], "timezone": "Asia/Tokyo"}
    assert render(renderer, "{{ at|time }}", "en", at=late, store=tokyo) == "5:00\u202fAM"


def test_shipped_template_renders_in_each_locale(renderer: Renderer) -> None:
    zh = renderer.render("points_expiring", "zh_CN", sample_context("zh_CN"))
    en = renderer.render("points_expiring", "en", sample_context("en"))
    assert "王先生" in zh and "1,200" in zh and "2026年3月31日" in zh and "12,680" in zh
    assert en.startswith("Hi Mr Wang,")
    assert "1,200 of your points expire on Mar 31, 2026, 30 days from now" in en
    assert "{{" not in zh + en and not zh.endswith("\n")


def test_missing_locale_file_falls_back_to_zh_cn_and_formats_as_zh_cn(tmp_path: Path) -> None:
    (tmp_path / "zh_CN" / "chat").mkdir(parents=True)
    (tmp_path / "en").mkdir()
    (tmp_path / "zh_CN" / "chat" / "hello.j2").write_text("你好 {{ today|date }}\n", "utf-8")
    renderer = Renderer(templates_dir=tmp_path)
    assert renderer.render("chat/hello", "en", sample_context("en")) == "你好 2026年3月1日"
    assert renderer.template("chat/hello", "en")[1] == "zh_CN"
    with pytest.raises(NotFound):
        renderer.render("chat/missing", "en", sample_context("en"))
    with pytest.raises(NotFound):
        renderer.render("../zh_CN/chat/hello", "zh_CN", sample_context())


def test_unknown_locales_resolve_by_language_then_default() -> None:
    assert resolve_locale("en_US") == "en"
    assert resolve_locale("en-GB") == "en"
    assert resolve_locale("fr") == "zh_CN"
    assert resolve_locale(None) == "zh_CN"


def test_undefined_name_is_named(renderer: Renderer) -> None:
    with pytest.raises(TemplateUndefinedName) as caught:
        render(renderer, "您好\n{{ member.name }}{{ voucher }}")
    assert caught.value.params["name"] == "voucher"
    assert caught.value.params["line"] == 2
    with pytest.raises(TemplateUndefinedName) as attribute:
        render(renderer, "{{ member.nickname }}")
    assert attribute.value.params["name"] == "nickname"
    with pytest.raises(TemplateUndefinedName):
        render(renderer, "{% if coupon.expired %}x{% endif %}")


def test_syntax_error_reports_its_line(renderer: Renderer) -> None:
    with pytest.raises(TemplateInvalid) as caught:
        render(renderer, "第一行\n第二行\n{% if member.name %}没有结束")
    assert caught.value.params["line"] == 3
    assert caught.value.key == "error.template_invalid"


ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ member.__class__.__init__.__globals__ }}",
    "{{ member|attr('__class__') }}",
    "{{ member|attr('items') }}",
    "{{ '{0.__class__}'.format(member) }}",
    "{{ '{0:>999999999}'.format(1) }}",
    "{{ 'a'.format_map(member) }}",
    "{{ '%s'|format(member) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ [1, 2].append(3) }}",
    "{{ member.update(name='x') }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ '\t'.expandtabs(999999999) }}",
    "{{ ('x' * 9000).translate({120: 'y' * 9000}) }}",
    "{{ [1]|batch(999999999, 'x')|list }}",
    "{% include 'zh_CN/points_expiring.j2' %}",
    "{% extends 'zh_CN/points_expiring.j2' %}",
    "{% import 'zh_CN/points_expiring.j2' as m %}",
    "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_are_refused_as_unsafe(renderer: Renderer, source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(renderer, source)
    assert isinstance(caught.value, TemplateUnsafe | TemplateUndefinedName), caught.value


BOMBS = [
    "{{ range(10**9)|list|length }}",
    "{{ 'x' * 10**9 }}",
    "{{ ['x'] * 10**9 }}",
    "{{ 9 ** 999999999 }}",
    "{{ 10 ** 10 ** 10 ** 10 ** 10 }}",  # Jinja reads ** left to right: 10 ** 10000
    "{% set a = 2 ** 4000 %}{{ a * a }}",
    "{% set a = 'x' * 9000 %}{% set b = a ~ a %}{{ b }}",
    "{% set a = 'x' * 9000 %}{{ a + a }}",
    "{% macro d(s) %}{{ d(s ~ s) }}{% endmacro %}{{ d('x') }}",
    "{% macro t(n) %}{% if n %}{{ t(n - 1) }}{{ t(n - 1) }}{% endif %}{% endmacro %}{{ t(60) }}",
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% set s = 'x' * 9000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% set s = 'x' * 9000 %}{{ s|join(s) }}",
    "{% set s = 'x' * 9000 %}{{ s|replace('x', s) }}",
    "{% set s = 'x' * 9000 %}{{ s.replace('x', s) }}",
    "{% for i in range(1000) %}{{ 'x' * 9000 }}{% endfor %}",
    "{% set s %}{% for i in range(1000) %}" + "y" * 5000 + "{% endfor %}{% endset %}",
]


@pytest.mark.parametrize("source", BOMBS)
def test_resource_bombs_are_stopped_before_they_run(renderer: Renderer, source: str) -> None:
    with pytest.raises(TemplateTooCostly):
        render(renderer, source)


def test_other_runtime_failures_are_typed_too(renderer: Renderer) -> None:
    with pytest.raises(TemplateError) as caught:
        render(renderer, "ok\n{{ points.balance / 0 }}")
    assert caught.value.params["line"] == 2
    assert "ZeroDivisionError" in caught.value.params["reason"]


def test_channel_limits_count_characters_on_telegram_and_bytes_on_wechat(
    renderer: Renderer,
) -> None:
    assert CHANNEL_LIMITS["telegram"].limit == 4096
    assert CHANNEL_LIMITS["wechat"].limit == 2048
    fits_both = "{{ '好' * 682 }}"  # 682 characters, 2046 bytes
    assert len(renderer.render_source(fits_both, "zh_CN", {}, channel="wechat")) == 682
    chinese = "{{ '好' * 1000 }}"  # 1000 characters, 3000 bytes
    assert len(renderer.render_source(chinese, "zh_CN", {}, channel="telegram")) == 1000
    with pytest.raises(MessageTooLong) as caught:
        renderer.render_source(chinese, "zh_CN", {}, channel="wechat")
    assert caught.value.params == {
        "channel": "wechat",
        "limit": 2048,
        "length": 3000,
        "unit": "bytes",
    }
    with pytest.raises(MessageTooLong):
        renderer.render_source("{{ 'a' * 4097 }}", "en", {}, channel="telegram")
    assert len(renderer.render_source("{{ 'a' * 4096 }}", "en", {}, channel="telegram")) == 4096


def test_lint_accepts_the_shipped_templates() -> None:
    for locale in ("zh_CN", "en"):
        source = (TEMPLATES_DIR / locale / "points_expiring.j2").read_text("utf-8")
        assert lint(source) == []


def test_lint_reports_syntax_error_with_line() -> None:
    problems = lint("{{ member.name }}\n{{ points.balance|points }")
    assert len(problems) == 1 and problems[0].startswith("line 2:")


def test_lint_reports_undefined_names_in_every_locale() -> None:
    problems = lint("{{ member.name }} {{ member.vip_level }}")
    assert len(problems) == 2
    assert problems[0].startswith("zh_CN:") and problems[1].startswith("en:")
    assert all("vip_level" in problem for problem in problems)


def test_lint_reports_too_long_output_per_channel() -> None:
    problems = lint("{% for i in range(800) %}积分{% endfor %}")  # 1600 chars, 4800 bytes
    assert problems == [
        "zh_CN: message is 4800 bytes long; wechat allows 2048",
        "en: message is 4800 bytes long; wechat allows 2048",
    ]
    assert lint("{{ 'x' * 5000 }}", channels=("telegram",), locales=("en",)) == [
        "en: message is 5000 characters long; telegram allows 4096"
    ]


def test_lint_reports_unsafe_and_empty_templates() -> None:
    assert "unsafe" in lint("{{ ''.__class__ }}", locales=("en",))[0]
    assert lint("{% if false %}x{% endif %}", locales=("en",)) == ["en: renders an empty message"]


def test_compiled_templates_are_cached(renderer: Renderer) -> None:
    assert renderer.template("points_expiring", "en") is renderer.template("points_expiring", "en")
    source = "{{ member.name }}"
    assert renderer.compile_source(source) is renderer.compile_source(source)
    assert renderer.compile_source(source) is not renderer.compile_source(source + " ")


def test_sample_context_has_the_documented_shape() -> None:
    context = sample_context("en")
    for name in ("member", "vehicle", "store", "points", "tier", "coupon", "booking", "today"):
        assert name in context
    assert isinstance(context["today"], date)
    assert context["booking"]["starts_at"].tzinfo is UTC
