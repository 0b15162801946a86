"""Reading a shop's CSV exports: encodings, headers and the cells people actually write.

Everything here is pure (no database): it turns a file into typed rows or `BadRow` reasons,
one record at a time, so a file of any size is read in constant memory; the cells themselves
are read by `domain.csvcells`. `domain.csvimport` decides what the rows mean against the
database.

Personal data (phones, plates, birthdays) is never echoed back in a reason: reasons are printed
and may end up in logs.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import stat
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Literal, TypeVar

from domain.csvcells import (
    MAX_LENGTH,
    nfkc,
    parse_amount,
    parse_bool,
    parse_count,
    parse_date,
    parse_km,
    parse_locale,
    parse_phone,
    parse_plate,
    parse_points,
    parse_tags,
    parse_text,
    parse_vin,
    split_list,
)
from domain.plaintext import has_unsafe

Kind = Literal["members", "vehicles", "visits"]
KINDS: tuple[Kind, ...] = ("members", "vehicles", "visits")

SNIFF_BYTES = 64 * 1024
# The longest record read, in characters with its line ends (several lines when a quoted cell
# holds line breaks): no export has rows near it, and a file that does is refused having held
# about this much in memory. Read at each open, so a test may lower it.
MAX_LINE_CHARS = 64 * 1024
_BLOCK = 1024 * 1024

REQUIRED: dict[str, tuple[str, ...]] = {
    "members": ("member_ref", "name", "phone"),
    "vehicles": ("member_ref", "plate"),
    "visits": ("member_ref", "visited_on", "amount"),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "members": ("birthday", "store", "tags", "locale", "opening_points", "marketing_consent"),
    "vehicles": (
        "vin",
        "make",
        "model",
        "purchase_date",
        "mileage_km",
        "insurance_expiry",
        "inspection_due",
    ),
    "visits": ("visit_ref", "store", "plate", "services", "mileage_km", "satisfaction"),
}

COLUMNS: dict[str, tuple[str, ...]] = {kind: REQUIRED[kind] + OPTIONAL[kind] for kind in KINDS}

# Headers Chinese dealer and POS systems write, mapped to ours. Checked after lower-casing.
ALIASES: dict[str, str] = {
    **dict.fromkeys(("会员编号", "会员号", "会员卡号", "卡号", "客户编号"), "member_ref"),
    **dict.fromkeys(("姓名", "会员姓名", "客户姓名", "名字"), "name"),
    **dict.fromkeys(("手机", "手机号", "手机号码", "电话", "联系电话", "mobile"), "phone"),
    **dict.fromkeys(("生日", "出生日期"), "birthday"),
    **dict.fromkeys(("门店", "门店编号", "门店代码", "store_code"), "store"),
    **dict.fromkeys(("标签",), "tags"),
    **dict.fromkeys(("语言",), "locale"),
    **dict.fromkeys(("期初积分", "初始积分"), "opening_points"),
    **dict.fromkeys(("营销同意", "同意营销"), "marketing_consent"),
    **dict.fromkeys(("车牌", "车牌号", "车牌号码", "plate_number"), "plate"),
    **dict.fromkeys(("车架号", "vin码"), "vin"),
    **dict.fromkeys(("品牌",), "make"),
    **dict.fromkeys(("车型",), "model"),
    **dict.fromkeys(("购车日期",), "purchase_date"),
    **dict.fromkeys(("里程", "公里数", "行驶里程", "mileage"), "mileage_km"),
    **dict.fromkeys(("保险到期", "保险到期日"), "insurance_expiry"),
    **dict.fromkeys(("年检到期", "年审日期"), "inspection_due"),
    **dict.fromkeys(("单号", "工单号", "订单号"), "visit_ref"),
    **dict.fromkeys(("消费日期", "到店日期", "日期", "date"), "visited_on"),
    **dict.fromkeys(("金额", "消费金额", "实收金额"), "amount"),
    **dict.fromkeys(("服务项目", "项目"), "services"),
    **dict.fromkeys(("满意度",), "satisfaction"),
}

_HEADER_UNIT = re.compile(r"\s*\([^)]*\)$")  # 金额(元), mileage (km): NFKC made the brackets ASCII

T = TypeVar("T")


class BadRow(Exception):
    """A row that cannot be imported; the message is the reason shown with its line number."""


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


class HeaderError(Exception):
    """The header line is unusable; nothing of the file can be read."""


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class MemberRow:
    line: int
    member_ref: str
    name: str
    phone: str
    birthday: date | None
    store: str | None
    tags: tuple[str, ...]
    locale: str | None
    opening_points: int | None
    marketing_consent: bool | None


@dataclass(frozen=True, slots=True)
class VehicleRow:
    line: int
    member_ref: str
    plate: str
    vin: str | None
    make: str | None
    model: str | None
    purchase_date: date | None
    mileage_km: int | None
    insurance_expiry: date | None
    inspection_due: date | None


@dataclass(frozen=True, slots=True)
class VisitRow:
    line: int
    member_ref: str
    visited_on: date
    amount_cents: int
    visit_ref: str | None
    store: str | None
    plate: str | None
    services: tuple[str, ...]
    mileage_km: int | None
    satisfaction: int | None


Row = MemberRow | VehicleRow | VisitRow

# Columns whose values are personal data: a reason names the column, never the value.
_PRIVATE = frozenset(("phone", "plate", "birthday", "name", "vin"))


class _Fields:
    """Parses one record's cells, gathering every problem before giving up on the record."""

    __slots__ = ("problems",)

    def __init__(self) -> None:
        self.problems: list[str] = []

    # required and optional each do the work of a shared helper themselves: they run for
    # every cell of every row, and a call less per cell is measurable on a million rows.
    def required(self, column: str, text: str, parse: Callable[[str], T]) -> T | None:
        text = text.strip()
        if not text:
            self.problems.append(f"{column} is empty")
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self._reject(column, text, exc)
            return None

    def optional(self, column: str, text: str, parse: Callable[[str], T]) -> T | None:
        text = text.strip()
        if not text:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self._reject(column, text, exc)
            return None

    def _reject(self, column: str, text: str, exc: ValueError) -> None:
        shown = column if column in _PRIVATE else f"{column} {_clipped(text)!r}"
        self.problems.append(f"{shown} {exc}")

    def check(self) -> None:
        if self.problems:
            raise BadRow("; ".join(self.problems))


def _clipped(text: str, keep: int = 40) -> str:
    """A cell as a reason repeats it: a cell of thousands of digits is shown by its start."""
    return text if len(text) <= keep else f"{text[:keep]}…"


@lru_cache(maxsize=256)
def _satisfaction(text: str) -> int:
    """A score 0-10; remembered, as a file only ever holds a handful of distinct scores."""
    value = parse_count(text, "a score from 0 to 10")
    if value > 10:
        raise ValueError("is not a score from 0 to 10")
    return value


@lru_cache(maxsize=8192)
def _services(text: str) -> tuple[str, ...]:
    """Remembered: a chain's visits repeat the same few service cells over and over."""
    return tuple(split_list(text))


_REF = parse_text(MAX_LENGTH["member_ref"])
_NAME = parse_text(MAX_LENGTH["name"])
_VISIT_REF = parse_text(MAX_LENGTH["visit_ref"])
_STORE = parse_text(MAX_LENGTH["store"])
_MAKE = parse_text(MAX_LENGTH["make"])
_MODEL = parse_text(MAX_LENGTH["model"])


@dataclass(frozen=True)
class RowContext:
    """What validating a row needs besides the row: the phone region and the business day."""

    today: date
    region: str = "CN"

    def past_date(self, text: str) -> date:
        """A date that is not after today (visits, birthdays, purchases)."""
        day = parse_date(text)
        if day > self.today:
            raise ValueError(f"is in the future (today is {self.today.isoformat()})")
        return day

    def phone(self, text: str) -> str:
        return parse_phone(text, self.region)


# Each parser takes the cells of COLUMNS[kind], in that order ("" for an absent column).


def member_row(cells: Sequence[str], line: int, ctx: RowContext) -> MemberRow:
    ref, name, phone, birthday, store, tags, locale, opening, consent = cells
    f = _Fields()
    row = MemberRow(
        line,
        f.required("member_ref", ref, _REF),  # type: ignore[arg-type]
        f.optional("name", name, _NAME) or "",
        f.required("phone", phone, ctx.phone),  # type: ignore[arg-type]
        f.optional("birthday", birthday, ctx.past_date),
        f.optional("store", store, _STORE),
        f.optional("tags", tags, parse_tags) or (),
        f.optional("locale", locale, parse_locale),
        f.optional("opening_points", opening, parse_points),
        f.optional("marketing_consent", consent, parse_bool),
    )
    f.check()
    return row


def vehicle_row(cells: Sequence[str], line: int, ctx: RowContext) -> VehicleRow:
    ref, plate, vin, make, model, purchased, km, insurance, inspection = cells
    f = _Fields()
    row = VehicleRow(
        line,
        f.required("member_ref", ref, _REF),  # type: ignore[arg-type]
        f.required("plate", plate, parse_plate),  # type: ignore[arg-type]
        f.optional("vin", vin, parse_vin),
        f.optional("make", make, _MAKE),
        f.optional("model", model, _MODEL),
        f.optional("purchase_date", purchased, ctx.past_date),
        f.optional("mileage_km", km, parse_km),
        f.optional("insurance_expiry", insurance, parse_date),
        f.optional("inspection_due", inspection, parse_date),
    )
    f.check()
    return row


def visit_row(cells: Sequence[str], line: int, ctx: RowContext) -> VisitRow:
    ref, day, amount, visit_ref, store, plate, services, km, satisfaction = cells
    f = _Fields()
    row = VisitRow(
        line,
        f.required("member_ref", ref, _REF),  # type: ignore[arg-type]
        f.required("visited_on", day, ctx.past_date),  # type: ignore[arg-type]
        f.required("amount", amount, parse_amount),  # type: ignore[arg-type]
        f.optional("visit_ref", visit_ref, _VISIT_REF),
        f.optional("store", store, _STORE),
        f.optional("plate", plate, parse_plate),
        f.optional("services", services, _services) or (),
        f.optional("mileage_km", km, parse_km),
        f.optional("satisfaction", satisfaction, _satisfaction),
    )
    f.check()
    return row


ROW_PARSERS: dict[str, Callable[[Sequence[str], int, RowContext], Row]] = {
    "members": member_row,
    "vehicles": vehicle_row,
    "visits": visit_row,
}


# ---------------------------------------------------------------- files


def sniff_encoding(path: Path) -> str:
    """utf-8-sig, utf-16 (by BOM), utf-8, or gb18030 for what Excel in China writes.

    Only a window of the file is decoded: the first 64 KB from the first non-ASCII byte. A file
    is scanned in 1 MB blocks up to that byte, so a long all-ASCII beginning cannot hide a GBK
    name further down, and memory stays constant.
    """
    with path.open("rb") as stream:
        head = stream.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        stream.seek(0)
        while block := stream.read(_BLOCK):
            if block.isascii():
                continue
            first = next(i for i, byte in enumerate(block) if byte >= 0x80)
            window = block[first : first + SNIFF_BYTES]
            if len(window) < SNIFF_BYTES:
                window += stream.read(SNIFF_BYTES - len(window))
            try:
                codecs.getincrementaldecoder("utf-8")().decode(window, final=False)
            except UnicodeDecodeError:
                return "gb18030"
            return "utf-8"
    return "utf-8"


def _normalize_header(name: str) -> str:
    """Our column name for a header cell: 'Member Ref', '会员编号', '金额(元)' → member_ref…"""
    cleaned = nfkc(name.replace("\ufeff", "")).lower()
    cleaned = _HEADER_UNIT.sub("", cleaned).strip()
    cleaned = re.sub(r"[\s\-]+", "_", cleaned)
    return ALIASES.get(cleaned, cleaned)


@dataclass(frozen=True)
class Header:
    positions: dict[str, int]
    ignored: list[str]
    width: int


def read_header(kind: str, cells: list[str]) -> Header:
    """Column positions by our names; raises HeaderError naming what is missing or doubled."""
    known = set(REQUIRED[kind]) | set(OPTIONAL[kind])
    positions: dict[str, int] = {}
    ignored: list[str] = []
    doubled: list[str] = []
    for index, raw in enumerate(cells):
        name = _normalize_header(raw)
        if not name:
            continue
        if name not in known:
            ignored.append(raw.strip())
        elif name in positions:
            doubled.append(name)
        else:
            positions[name] = index
    missing = [c for c in REQUIRED[kind] if c not in positions]
    problems = []
    if missing:
        problems.append(
            f"missing column(s) {', '.join(missing)}: a {kind} file needs "
            f"{', '.join(REQUIRED[kind])} (optional: {', '.join(OPTIONAL[kind])})"
        )
    if doubled:
        problems.append(f"column(s) given twice: {', '.join(sorted(set(doubled)))}")
    if problems:
        raise HeaderError("; ".join(problems))
    return Header(positions=positions, ignored=ignored, width=len(cells))


def _delimiter(first_line: str) -> str:
    """Comma unless the header line clearly uses tabs (Excel's "Unicode text") or semicolons."""
    if "," in first_line:
        return ","
    if "\t" in first_line:
        return "\t"
    if ";" in first_line:
        return ";"
    return ","


# Characters a file read as GB18030 (GBK) may hold when one of its rows is really UTF-8 Chinese:
# ideographs, CJK and full-width punctuation, ASCII. See looks_like_utf8.
_NOT_CHINESE = re.compile(
    r"[^\x00-\x7f\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)
_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_UTF8_IDEOGRAPH = re.compile(rb"[\xe3-\xe9][\x80-\xbf]{2}")  # U+3000 to U+9FFF in UTF-8


def looks_like_utf8(raw: bytes) -> bool:
    """Whether a line of a GBK file is really UTF-8 Chinese (a row pasted from elsewhere).

    Read as GB18030 such a line decodes without error into other ideographs (李四 → 鏉庡洓),
    so it is recognised instead: its bytes are valid UTF-8 and decode to Chinese, at least one
    ideograph and nothing but ASCII and CJK characters. Honest GBK text almost never does: a
    UTF-8 ideograph is three bytes E4–E9, 80–BF, 80–BF, and two GBK characters always leave
    a byte over; three that happen to fit are about one in 30,000, and every other character
    of the line must fit as well (tests hold this over 80,000 common names).
    """
    if not _UTF8_IDEOGRAPH.search(raw):  # cheap, and false for nearly every honest line
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _NOT_CHINESE.search(text) is None and _IDEOGRAPH.search(text) is not None


class LineTooLong(Exception):
    """A record longer than MAX_LINE_CHARS: reading stops there."""


class _Lines:
    """The file's lines for csv.reader, each read no further than the record's cap allows,
    with what is wrong with the text of the record being read: a byte its encoding does not
    allow (decoded as U+FFFD, so the problem stays on its own line instead of surfacing where
    the reader's read-ahead meets it) or, in a GBK file, a UTF-8 line."""

    __slots__ = ("_gbk", "_read", "chars", "encoding", "limit", "problem")

    def __init__(self, text: io.TextIOWrapper, encoding: str, limit: int) -> None:
        self._read = text.readline
        self._gbk = encoding == "gb18030"
        self.encoding = encoding
        self.limit = limit
        self.chars = 0
        self.problem: str | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        # One character past what the record may still hold tells a record over the cap.
        line = self._read(self.limit - self.chars + 1)
        if not line:
            raise StopIteration
        self.chars += len(line)
        if self.chars > self.limit:
            raise LineTooLong(
                f"is longer than {self.limit:,} characters (a CSV line must be shorter)"
            )
        if not line.isascii() and self.problem is None:
            self.problem = self._garbled(line)
        return line

    def _garbled(self, line: str) -> str | None:
        if "\ufffd" in line:
            return f"the file is not valid {self.encoding} text on this line"
        if self._gbk and looks_like_utf8(line.encode("gb18030")):
            return (
                "this line is UTF-8 text in a file that is GBK (GB18030) elsewhere: "
                "save the whole file in one encoding"
            )
        return None

    def take_problem(self) -> str | None:
        """What was wrong with the record just read; the next record starts clean."""
        problem, self.problem = self.problem, None
        self.chars = 0
        return problem


class CsvTable:
    """An open CSV file: its header, then its records with the line each one starts on."""

    def __init__(
        self, kind: str, binary: io.BufferedReader, encoding: str, line_limit: int
    ) -> None:
        self.kind = kind
        self.encoding = encoding
        self._binary = binary
        # Held here: a TextIOWrapper that is collected closes the file under it.
        self._text = text = io.TextIOWrapper(
            binary, encoding=encoding, errors="replace", newline=""
        )
        self._lines = lines = _Lines(text, encoding, line_limit)
        try:
            first = next(lines, "")
            self._reader = csv.reader(chain([first], lines), delimiter=_delimiter(first))
            header_cells = next(self._reader, None)
        except LineTooLong as exc:
            raise HeaderError(f"the first line {exc}") from None
        except csv.Error as exc:
            raise HeaderError(f"the first line cannot be read as CSV ({exc})") from None
        if problem := lines.take_problem():
            raise HeaderError(f"the first line: {problem}")
        if not header_cells or not any(c.strip() for c in header_cells):
            raise HeaderError("the file is empty: the first line must name the columns")
        self.header = read_header(kind, header_cells)

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has come; the text layer reads ahead a little."""
        return self._binary.tell()

    def records(self, ctx: RowContext) -> Iterator[Row | RowError]:
        """Each non-blank record as a typed row, or the reason it is bad, in file order."""
        parse = ROW_PARSERS[self.kind]
        width = self.header.width
        padding = [""] * (width + 1)
        # Absent columns read the always-empty cell at index `width`.
        pick = itemgetter(*(self.header.positions.get(c, width) for c in COLUMNS[self.kind]))
        columns = COLUMNS[self.kind]
        reader, lines = self._reader, self._lines
        line = reader.line_num
        while True:
            start = line + 1
            try:
                cells = next(reader, None)
            except LineTooLong as exc:
                yield RowError(start, f"{exc}: not read further")
                return
            except csv.Error as exc:
                yield RowError(start, f"the line cannot be read as CSV ({exc})")
                return
            line = reader.line_num
            if cells is None:
                return
            if problem := lines.take_problem():
                yield RowError(start, problem)
                continue
            joined = "".join(cells)
            if not joined.strip():  # blank: no cell has more than white space
                continue
            if len(cells) > width:
                if any(c.strip() for c in cells[width:]):
                    yield RowError(
                        start,
                        f"has {len(cells)} cells but the header names {width} columns "
                        "(a value containing a comma must be quoted)",
                    )
                    continue
                del cells[width:]
            cells += padding[len(cells) :]
            picked = pick(cells)
            # One search of the whole record first: a clean record (nearly all) costs no more.
            if has_unsafe(joined) and (unsafe := _unsafe_columns(columns, picked)):
                yield RowError(start, unsafe)
                continue
            try:
                yield parse(picked, start, ctx)
            except BadRow as exc:
                yield RowError(start, str(exc))


def _unsafe_columns(columns: Sequence[str], cells: Sequence[str]) -> str | None:
    """The reason naming the columns read whose value holds a control character or a bidi
    control (domain.plaintext); None when only a column nobody reads does."""
    bad = [name for name, cell in zip(columns, cells, strict=True) if has_unsafe(cell.strip())]
    if not bad:
        return None
    verb = "holds" if len(bad) == 1 else "hold"
    return f"{', '.join(bad)} {verb} a control character or a bidi override"


@dataclass
class Chunk:
    """Rows of the file whose keys are all different, with the bad rows read among them."""

    rows: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    records: int = 0
    bytes_read: int = 0


def chunks(
    table: CsvTable,
    ctx: RowContext,
    keys: Callable[[Row], tuple[Iterable[Hashable], Iterable[Hashable]]],
    size: int,
) -> Iterator[Chunk]:
    """The table's records (rows and bad rows) in chunks of at most `size` that never repeat a key.

    `keys(row)` gives the keys the row must not share with the current chunk and the keys it
    adds to it; a row that would repeat one closes the chunk first. Parsing stays on the
    caller's thread on purpose: a reader thread would fight the database driver's thread for
    the GIL on every row it binds, which costs far more than it overlaps.
    """
    chunk, seen = Chunk(), set[Hashable]()
    for item in table.records(ctx):
        check, register = ((), ()) if isinstance(item, RowError) else keys(item)
        if chunk.records >= size or not seen.isdisjoint(check):
            chunk.bytes_read = table.bytes_read
            yield chunk
            chunk, seen = Chunk(), set()
        chunk.records += 1
        if isinstance(item, RowError):
            chunk.errors.append(item)
        else:
            chunk.rows.append(item)
            seen.update(register)
    chunk.bytes_read = table.bytes_read
    yield chunk


@contextmanager
def open_table(path: Path, kind: str) -> Iterator[CsvTable]:
    """The file opened in its own encoding with its header checked; HeaderError if unusable.

    Only a regular file is read: a device (/dev/zero) would be read for ever and a pipe waits
    for a writer for ever, so both are refused before they are opened.
    """
    if kind not in KINDS:
        raise HeaderError(f"unknown kind of file {kind!r} (use {', '.join(KINDS)})")
    if not stat.S_ISREG(path.stat().st_mode):
        raise HeaderError(f"{path.name or path} is not a regular file: export to a file first")
    encoding = sniff_encoding(path)
    with path.open("rb") as binary:
        yield CsvTable(kind, binary, encoding, MAX_LINE_CHARS)
