"""The cells memberbot writes into CSV files, made safe to open in a spreadsheet.

Excel, LibreOffice and WPS run a cell that starts with `=`, `+`, `-` or `@` as a formula (a
tab or a carriage return in front is skipped before they look), so a member ref or a name like
`=HYPERLINK("http://…"&A1)` would run on the manager's machine. Such a text cell is written
with a leading `'`, which spreadsheets read as "this is text" and do not show. A number is not
text: `-50` or `+3.5` stays a number, so a negative column still sums. Pure: every CSV writer
(`memberbot segments export`, the demo's `--export` files) passes its rows through `safe_row`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def safe_cell(value: object) -> str:
    """The cell as written: numbers as they are, text that a spreadsheet would run as a
    formula behind a `'`, everything else unchanged; `None` is an empty cell."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def safe_row(values: Iterable[object]) -> list[str]:
    """A whole row through `safe_cell`, for `csv.writer.writerow`."""
    return [safe_cell(value) for value in values]
