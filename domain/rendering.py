"""The sandbox member messages are rendered in, and the locale-aware filters they may use.

Templates are written by staff, so they are untrusted code. The environment here starts from
Jinja's `ImmutableSandboxedEnvironment` (no attribute starting with `_`, no mutation of lists
or dicts, no unsafe callables) and closes the doors the sandbox leaves open:

* names: only the context, a bounded `range` and `dict` are global; `cycler`, `joiner`,
  `namespace` (mutable accumulator) and `lipsum` are gone;
* filters: only the builtins in `_ALLOWED_BUILTIN_FILTERS` run (each costs a step and may not
  return an oversized value); `attr`, `format`, `center`, `indent`, `batch`, `slice` and the
  other builtins refuse to run and are reported as unsafe; the string methods `format`,
  `format_map`, `center`, `ljust`, `rjust`, `zfill`, `expandtabs`, `join`, `translate` and
  `maketrans` are unsafe attributes; the `join` and `replace` filters and the `replace` method
  check the size of what they would build before building it;
* work: each render gets a budget (`MAX_STEPS` calls, attribute lookups, operators and loop
  iterations) and an output budget (`MAX_PRODUCED_CHARS` characters printed anywhere, macro
  and `{% set %}` blocks included, each loop iteration charged for the literal text of its
  body); `*`, `**`, `+` and `%` refuse results larger than `MAX_VALUE_CHARS` characters or
  `MAX_INT_BITS` bits before computing them, `~` concatenations are checked after; loops are
  not recursive; `include`/`extends`/`import` are refused (a message is one self-contained
  template).

Breaking a rule raises one of the internal exceptions below; `domain.messages` turns them (and
every jinja2 exception) into the typed `domain.errors.TemplateError` family.

Filters (the locale is the one of the template being rendered):

* `date(fmt="medium")`: a date, or an aware datetime shown in the store's time zone.
  `medium` gives zh_CN "2026年3月5日", en "Mar 5, 2026"; `long` gives en "March 5, 2026";
  `short` gives "2026/3/5" / "3/5/26".
* `time(fmt="short")`: the clock time of an aware datetime in the store's time zone, zh_CN
  "14:30", en "2:30 PM".
* `money`: integer cents as yuan, "¥1,234.50" in every locale ("-¥5.00" when negative). Babel
  writes the symbol "CN¥" in English, which reads oddly to members in China, so the pattern
  fixes "¥" and Babel only supplies the locale's separators.
* `points`: an integer with the locale's thousands separator, "12,345".
* `plate`: a licence plate as printed on the car, "沪A·12345" (normalized first).
* `mask_plate`: the plate with the middle hidden, "沪A***45" (`domain.identity.mask_plate`),
  for channels where someone else may read the screen.
* `days_until`: whole days from the context's `today` to a date (negative once past).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, partial, wraps
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_decimal
from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from domain.errors import InvalidInput
from domain.identity import mask_plate, normalize_plate

DEFAULT_TIMEZONE = "Asia/Shanghai"
MAX_SOURCE_CHARS = 20_000
MAX_STEPS = 20_000
MAX_PRODUCED_CHARS = 200_000
MAX_VALUE_CHARS = 16_384
MAX_INT_BITS = 4_096
MAX_RANGE = 1_000

_LOOP_GUARD = "loop guard"  # a space: no template can name this filter itself
_CONCAT_GUARD = "concat guard"

# Jinja's filters that cannot build anything much larger than their input. Every other
# builtin (`attr`, `format`, `center`, `indent`, `batch`, `slice`, `wordwrap`, `tojson`, …)
# refuses to run: some reach attributes, some allocate whatever size an argument names.
_ALLOWED_BUILTIN_FILTERS = frozenset(
    {
        "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "groupby",
        "int", "items", "last", "length", "list", "lower", "map", "max", "min", "reject",
        "rejectattr", "reverse", "round", "select", "selectattr", "sort", "string",
        "striptags", "sum", "title", "trim", "truncate", "unique", "upper", "wordcount",
    }
)  # fmt: skip
# Formatting, padding and joining methods build strings as large as an argument asks; the
# filters (`join`, `replace`, and the ones in `domain.rendering`'s docstring) cover their uses.
_DENIED_STR_ATTRIBUTES = frozenset(
    {
        "format",
        "format_map",
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "join",
        "translate",
        "maketrans",
    }
)


class TooCostly(Exception):
    """A template asked for more work or memory than a message can need."""


class Forbidden(SecurityError):
    """A template used a construct messages may not use (include, recursive loop, `attr`…)."""


class MissingName(UndefinedError):
    """A name or attribute the context does not have; `name` says which."""

    def __init__(self, message: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class _MessageUndefined(StrictUndefined):
    """StrictUndefined whose error says which name was missing; sandbox denials stay such."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if exc is UndefinedError:
            self._undefined_exception = partial(MissingName, name=name)  # type: ignore[assignment]


@dataclass
class _Budget:
    steps: int = MAX_STEPS
    produced: int = MAX_PRODUCED_CHARS

    def step(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            raise TooCostly(f"more than {MAX_STEPS} operations")

    def produce(self, chars: int) -> None:
        self.produced -= chars
        if self.produced < 0:
            raise TooCostly(f"more than {MAX_PRODUCED_CHARS} characters produced")


_budget: ContextVar[_Budget | None] = ContextVar("message_render_budget", default=None)


class RenderBudget:
    """Gives the renders inside the `with` block a fresh work budget."""

    def __enter__(self) -> None:
        self._token = _budget.set(_Budget())

    def __exit__(self, *exc: object) -> None:
        _budget.reset(self._token)


def _current_budget() -> _Budget:
    budget = _budget.get()
    if budget is None:
        raise TooCostly("rendering outside a budget")
    return budget


def _size(value: Any) -> int | None:
    """Length for the things whose size can explode (strings and sequences); None otherwise."""
    if isinstance(value, str | bytes | list | tuple):
        return len(value)
    return None


def _check_size(value: Any) -> Any:
    size = _size(value)
    if size is not None and size > MAX_VALUE_CHARS:
        raise TooCostly(f"a value longer than {MAX_VALUE_CHARS}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TooCostly(f"a number larger than {MAX_INT_BITS} bits")
    return value


def _predict_binop(op: str, left: Any, right: Any) -> None:
    """Refuse, before computing it, an operation whose result would be huge."""
    if op == "%" and isinstance(left, str | bytes):
        raise Forbidden("the % string formatting operator is not allowed in messages")
    both_ints = isinstance(left, int) and isinstance(right, int)
    if both_ints and _predicted_bits(op, left, right) > MAX_INT_BITS:
        raise TooCostly(f"a number larger than {MAX_INT_BITS} bits")
    if _predicted_size(op, left, right) > MAX_VALUE_CHARS:
        raise TooCostly(f"a value longer than {MAX_VALUE_CHARS}")


def _predicted_bits(op: str, left: int, right: int) -> int:
    if op == "*":
        return left.bit_length() + right.bit_length()
    if op == "**" and abs(left) > 1 and right > 0:
        return left.bit_length() * right
    return 0


def _predicted_size(op: str, left: Any, right: Any) -> int:
    left_size, right_size = _size(left), _size(right)
    if op == "*" and left_size is not None and isinstance(right, int):
        return left_size * right
    if op == "*" and right_size is not None and isinstance(left, int):
        return right_size * left
    if op == "+" and left_size is not None and right_size is not None:
        return left_size + right_size
    return 0


def _bounded_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise TooCostly(f"range() longer than {MAX_RANGE}")
    return result


def _loop_guard(iterable: Iterable[Any], body_chars: int) -> Iterator[Any]:
    """Charges each loop iteration one step plus the literal text its body will print."""
    budget = _current_budget()
    for item in iterable:
        budget.step()
        budget.produce(body_chars)
        yield item


def _denied(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise Forbidden(f"the {name!r} filter is not allowed in messages")

    return refuse


def _metered(function: Callable[..., Any]) -> Callable[..., Any]:
    """A builtin filter that costs a step and may not return an oversized value."""

    @wraps(function)  # keeps Jinja's pass_context/pass_environment marker
    def metered(*args: Any, **kwargs: Any) -> Any:
        _current_budget().step()
        return _check_size(function(*args, **kwargs))

    return metered


def _join(value: Iterable[Any], separator: str = "", attribute: str | None = None) -> str:
    """`join` that measures the pieces before gluing them together."""
    if attribute is not None:
        raise Forbidden("join(attribute=…) is not allowed in messages; use map first")
    pieces = [str(piece) for piece in value]
    total = sum(map(len, pieces)) + len(str(separator)) * max(0, len(pieces) - 1)
    if total > MAX_VALUE_CHARS:
        raise TooCostly(f"a value longer than {MAX_VALUE_CHARS}")
    return str(separator).join(pieces)


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    hits = text.count(old) if count is None else min(count, text.count(old))
    if old == "":
        hits = len(text) + 1
    if len(text) + hits * (len(new) - len(old)) > MAX_VALUE_CHARS:
        raise TooCostly(f"a value longer than {MAX_VALUE_CHARS}")
    return text.replace(old, new, -1 if count is None else count)


def _locale(context: Context) -> Locale:
    return _babel_locale(str(context.get("__locale__", "zh_CN")))


@lru_cache(maxsize=16)
def _babel_locale(name: str) -> Locale:
    """Parsed once: babel re-reads a locale named by string on every call, which showed up as
    a tenth of a chat reply's time."""
    return Locale.parse(name)


def _store_zone(context: Context) -> ZoneInfo:
    store = context.get("store")
    name = store.get("timezone") if isinstance(store, dict) else None
    return ZoneInfo(name or DEFAULT_TIMEZONE)


@pass_context
def _date(context: Context, value: date | datetime, fmt: str = "medium") -> str:
    if isinstance(value, datetime):
        value = value.astimezone(_store_zone(context)).date()
    if not isinstance(value, date):
        raise TypeError(f"date filter needs a date, got {type(value).__name__}")
    return format_date(value, fmt, locale=_locale(context))


@pass_context
def _time(context: Context, value: datetime, fmt: str = "short") -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError("time filter needs an aware datetime")
    return format_time(value.astimezone(_store_zone(context)), fmt, locale=_locale(context))


@pass_context
def _money(context: Context, cents: int) -> str:
    if not isinstance(cents, int):
        raise TypeError("money filter needs integer cents")
    return format_decimal(Decimal(cents) / 100, format="¥#,##0.00", locale=_locale(context))


@pass_context
def _points(context: Context, value: int) -> str:
    if not isinstance(value, int):
        raise TypeError("points filter needs an integer")
    return format_decimal(value, locale=_locale(context))


def _plate(value: str) -> str:
    try:
        plate = normalize_plate(value)
    except InvalidInput:
        return str(value)
    return plate[:2] + "·" + plate[2:]


@pass_context
def _days_until(context: Context, value: date | datetime) -> int:
    today = context.get("today")
    if not isinstance(today, date):
        raise MissingName("'today' is undefined", "today")
    if isinstance(value, datetime):
        value = value.astimezone(_store_zone(context)).date()
    return (value - today).days


class MessageEnvironment(ImmutableSandboxedEnvironment):
    """The hardened sandbox. Render only inside `RenderBudget()`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=_MessageUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=self._charge_output,
            auto_reload=False,
        )
        self.globals = {"range": _bounded_range, "dict": dict}
        self.filters = {
            name: _metered(function) if name in _ALLOWED_BUILTIN_FILTERS else _denied(name)
            for name, function in self.filters.items()
        }
        self.filters.update(
            {
                "join": _join,
                "replace": _replace,
                "date": _date,
                "time": _time,
                "money": _money,
                "points": _points,
                "plate": _plate,
                "mask_plate": mask_plate,
                "days_until": _days_until,
                _LOOP_GUARD: _loop_guard,
                _CONCAT_GUARD: _check_size,
            }
        )

    @staticmethod
    def _charge_output(value: Any) -> Any:
        _current_budget().produce(len(str(value)))
        return value

    def wrap_str_format(self, value: Any) -> None:
        """No `str.format` at all: the sandbox's safe wrapper still lets a width allocate GBs."""
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _DENIED_STR_ATTRIBUTES:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _current_budget().step()
        _predict_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _current_budget().step()
        for value in (*args, *kwargs.values()):
            _check_size(value)
        if getattr(__obj, "__self__", None).__class__ is str and __obj.__name__ == "replace":
            return _replace(__obj.__self__, *args, **kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _current_budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _current_budget().step()
        return super().getitem(obj, argument)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        if len(source) > MAX_SOURCE_CHARS:
            raise TooCostly(f"template longer than {MAX_SOURCE_CHARS} characters")
        tree = super()._parse(source, name, filename)
        _harden(tree)
        return tree


def _harden(tree: nodes.Template) -> None:
    """Refuse what messages may not do and put the loop and concatenation guards in place."""
    for kind in (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport):
        for node in tree.find_all(kind):
            raise Forbidden(f"line {node.lineno}: {kind.__name__.lower()} is not allowed")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise Forbidden(f"line {loop.lineno}: recursive loops are not allowed")
        body_chars = sum(
            len(data.data) for child in (*loop.body, *loop.else_) for data in _template_data(child)
        )
        loop.iter = _guard(loop.iter, _LOOP_GUARD, nodes.Const(body_chars))
    for parent in [tree, *tree.find_all(nodes.Node)]:
        if isinstance(parent, nodes.Filter) and parent.name == _CONCAT_GUARD:
            continue
        for field, value in parent.iter_fields():
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _guard(value, _CONCAT_GUARD))
            elif isinstance(value, list):
                value[:] = [
                    _guard(item, _CONCAT_GUARD) if isinstance(item, nodes.Concat) else item
                    for item in value
                ]


def _template_data(node: nodes.Node) -> Iterator[nodes.TemplateData]:
    if isinstance(node, nodes.TemplateData):
        yield node
    yield from node.find_all(nodes.TemplateData)


def _guard(expr: nodes.Expr, filter_name: str, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(expr, filter_name, list(args), [], None, None, lineno=expr.lineno)
