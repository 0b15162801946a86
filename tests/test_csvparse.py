"""Reading CSV exports without a database: cells (dates, amounts, phones), encodings, headers
and the rows of a file, as domain.csvparse (and domain.identity for phones) does it."""

from __future__ import annotations

import os
import random
import threading
import tracemalloc
from datetime import date
from pathlib import Path

import phonenumbers
import pytest

from domain import csvparse
from domain.errors import InvalidInput
from domain.identity import normalize_phone
from tests.support.csvfiles import write

TODAY = date(2026, 3, 1)


@pytest.mark.parametrize(
    "text",
    ["2024-03-05", "2024/3/5", "2024年3月5日", "２０２４／３／５", "2024/3/5 0:00", "2024.03.05"],
)
def test_dates_in_every_written_form(text: str) -> None:
    assert csvparse.parse_date(text) == date(2024, 3, 5)


@pytest.mark.parametrize("text", ["2024-13-01", "05/03/2024", "2024-02-30", "yesterday", "2024"])
def test_what_is_not_a_date(text: str) -> None:
    with pytest.raises(ValueError):
        csvparse.parse_date(text)


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("1234.5", 123_450),
        ("¥1,234.50", 123_450),
        ("￥88", 8_800),
        ("RMB 100", 10_000),
        ("rmb100.00", 10_000),
        ("CNY100", 10_000),
        ("100元", 10_000),
        ("1,000,000", 100_000_000),
        ("0", 0),
    ],
)
def test_amounts_with_currency_signs_and_separators(text: str, cents: int) -> None:
    assert csvparse.parse_amount(text) == cents


@pytest.mark.parametrize("text", ["-5", "(5.00)", "1,5", "12.345", "abc", "¥", "1,00.00"])
def test_what_is_not_an_amount(text: str) -> None:
    with pytest.raises(ValueError):
        csvparse.parse_amount(text)


@pytest.mark.parametrize(
    ("parse", "top", "past"),
    [
        (csvparse.parse_amount, "10,000,000.00", "10000000.01"),
        (csvparse.parse_km, "2,000,000 km", "2000001"),
        (csvparse.parse_points, "100,000,000", "100000001"),
    ],
)
def test_numbers_are_capped_where_the_domain_caps_them(parse, top: str, past: str) -> None:  # type: ignore[no-untyped-def]
    """The caps of domain.limits, also for digit strings too long for int() to read."""
    parse(top)
    for text in (past, "1" + "0" * 20, "9" * 5000):
        with pytest.raises(ValueError, match="is more than"):
            parse(text)


def _phonenumbers_verdict(text: str) -> str:
    """What phonenumbers alone makes of a CN phone: its E.164 form, or why it is refused."""
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return "phone is not a phone number"
    if not phonenumbers.is_valid_number(number):
        return "phone is not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_plain_mobile_fast_path_agrees_with_phonenumbers() -> None:
    """Every 11-digit number starting with 1 (every 4-digit prefix, random tails): the fast
    path accepts exactly what phonenumbers accepts, gives the same E.164, refuses the rest."""
    rng = random.Random(7)
    accepted = refused = 0
    for prefix in range(1000, 2000):
        for _ in range(8):
            text = f"{prefix}{rng.randrange(10**7):07d}"
            try:
                verdict = normalize_phone(text)
            except InvalidInput as exc:
                verdict = str(exc)
            assert verdict == _phonenumbers_verdict(text), text
            accepted += verdict.startswith("+")
            refused += not verdict.startswith("+")
    assert accepted > 1000 and refused > 1000


def test_gbk_found_even_after_64kb_of_ascii(tmp_path: Path) -> None:
    lines = ["member_ref,name,phone"] + [f"A{i:05d},x,13812345678" for i in range(5000)]
    lines.append("Z1,王小明,13812345678")
    path = write(tmp_path, "late.csv", lines, "gbk")
    assert path.stat().st_size > 70_000
    assert csvparse.sniff_encoding(path) == "gb18030"
    assert csvparse.sniff_encoding(write(tmp_path, "u.csv", lines, "utf-8")) == "utf-8"
    assert csvparse.sniff_encoding(write(tmp_path, "b.csv", lines, "utf-8-sig")) == "utf-8-sig"


def test_headers_in_chinese_with_units_and_spaces() -> None:
    cells = ["会员编号", "消费日期", "金额（元）", "Visit Ref", "备注"]
    header = csvparse.read_header("visits", cells)
    assert header.positions == {"member_ref": 0, "visited_on": 1, "amount": 2, "visit_ref": 3}
    assert header.ignored == ["备注"]
    with pytest.raises(csvparse.HeaderError, match="given twice: member_ref"):
        csvparse.read_header("vehicles", ["member_ref", "会员编号", "plate"])


def test_excel_unicode_text_is_utf16_with_tabs(tmp_path: Path) -> None:
    path = write(tmp_path, "u16.txt", ["会员编号\t姓名\t手机", "C1\t王小明\t13812345678"], "utf-16")
    with csvparse.open_table(path, "members") as table:
        rows = list(table.records(csvparse.RowContext(today=TODAY)))
    assert table.encoding == "utf-16"
    assert rows == [
        csvparse.MemberRow(2, "C1", "王小明", "+8613812345678", None, None, (), None, None, None)
    ]


SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
)
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红玲芬建国志文辉鹏飞宇浩然子涵欣怡梓萱"
)


def test_utf8_chinese_is_told_from_honest_gbk() -> None:
    """Every two- and three-character name of common surnames and given-name characters: in
    GBK none looks like UTF-8 (an honest GBK file is never refused), in UTF-8 every one does.
    Two GBK characters can never be one UTF-8 ideograph's three bytes plus valid rest, and
    three or more rarely are; the test holds that for the names shops actually have."""
    names = [s + a + b for s in SURNAMES for a in GIVEN for b in ("", *GIVEN)]
    assert len(names) > 80_000
    rows = [f"C001,{name},13812345678,1990/3/5,main,VIP、车队" for name in names]
    assert [r for r in rows if csvparse.looks_like_utf8(r.encode("gbk"))] == []
    assert all(csvparse.looks_like_utf8(r.encode()) for r in rows)
    assert not csvparse.looks_like_utf8(b"C001,Li Na,13812345678")


def test_control_characters_are_found_and_stripped() -> None:
    from domain.plaintext import has_unsafe, strip_unsafe

    for text in ("M\x001", "a\x1b[2J", "\u202eabc", "x\u2069", "\x85", "\x7f", "a\nb", "\t"):
        assert has_unsafe(text), repr(text)
    for text in ("王小明", "沪A·12345", "Zoë", "￥100", "a b"):
        assert not has_unsafe(text) and strip_unsafe(text) == text
    typed = "洗车\x1b[2J不干净\u202e，\x1b]0;x\x07轮毂\x00也没擦\r\n第二行\t完"
    assert strip_unsafe(typed) == "洗车不干净，轮毂也没擦\n第二行\t完"


def _read_all(path: Path) -> list[object]:
    with csvparse.open_table(path, "members") as table:
        return list(table.records(csvparse.RowContext(today=TODAY)))


def test_a_header_line_past_the_cap_is_a_header_error(tmp_path: Path) -> None:
    """A header of megabytes (csv.Error, a traceback, before) is refused, read no further."""
    path = tmp_path / "wide.csv"
    path.write_bytes(b"member_ref,name,phone," + b"x" * 3_000_000 + b"\r\nM1,n,13812345678\r\n")
    with pytest.raises(csvparse.HeaderError, match="longer than 65,536 characters"):
        _read_all(path)


def test_a_data_line_past_the_cap_costs_no_more_memory_than_the_cap(tmp_path: Path) -> None:
    """A line of megabytes is reported on its line and reading stops there, having held about
    the cap in memory, not the line (a line of empty cells was a list of a million before)."""
    path = tmp_path / "long.csv"
    lines = [b"member_ref,name,phone", b"M1,n,13812345678", b"M2," * 1_000_000, b"M3,n,1"]
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    with csvparse.open_table(path, "members") as table:
        tracemalloc.start()  # the rows only: sniffing the encoding reads 1 MB blocks
        try:
            records = list(table.records(csvparse.RowContext(today=TODAY)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert records[1:] == [
        csvparse.RowError(
            3, "is longer than 65,536 characters (a CSV line must be shorter): not read further"
        )
    ]
    assert peak < 1_000_000, peak


def test_the_line_cap_counts_every_line_of_a_quoted_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap is read at each open, so a test may lower it; a quoted cell that never closes
    swallows the lines after it into one record, which the cap stops too."""
    monkeypatch.setattr(csvparse, "MAX_LINE_CHARS", 100)
    short = ["member_ref,name,phone", "M1,n,13812345678", '"M2,' + "x" * 50]
    path = write(tmp_path, "q.csv", short + ["y" * 50] * 3)
    records = _read_all(path)
    assert [r.line for r in records if isinstance(r, csvparse.RowError)] == [3]
    assert isinstance(records[0], csvparse.MemberRow)


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    """/dev/zero was read forever, a pipe waited for a writer forever: both are refused before
    anything is read (in a thread here, so a regression fails instead of hanging the run)."""
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "pipe", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    outcome: list[str] = []

    def read() -> None:
        try:
            _read_all(path)
            outcome.append("read")
        except (csvparse.HeaderError, OSError) as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert outcome and "is not a regular file" in outcome[0]
