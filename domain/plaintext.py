"""Text people send that a terminal, a database or a reader must never act on.

Control characters (C0, DEL and C1) and the bidi embeddings, overrides and isolates (U+202A to
U+202E, U+2066 to U+2069) have no place in a name, a ref, a plate or a complaint: a NUL is a
traceback on PostgreSQL and a ref nobody can type on SQLite; `ESC [2J` clears the staff
terminal that lists complaints; U+202E shows a text backwards. One definition serves both
doors text comes in by: the CSV import refuses a cell holding any of them (`has_unsafe`), so a
shop's file is fixed at the source; the chat strips them from what a member types
(`strip_unsafe`), as a member cannot be asked to retype, keeping line breaks and tabs, which a
complaint may hold.
"""

from __future__ import annotations

import re

_BIDI = "\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
# What a typed text keeps: every character above, except line breaks and tabs.
_STRIPPED = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]")
# A terminal's escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL or ESC \`, and the
# two-character ones), removed whole so no `[2J` is left behind, and C1's CSI (U+009B).
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)


def has_unsafe(text: str) -> bool:
    """Whether `text` holds a control character (line breaks and tabs too) or a bidi control."""
    return _UNSAFE.search(text) is not None


def strip_unsafe(text: str) -> str:
    """`text` without escape sequences, control characters and bidi controls; line breaks
    (normalised to "\\n") and tabs stay."""
    if not has_unsafe(text):
        return text
    text = _ESCAPE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _STRIPPED.sub("", text)
