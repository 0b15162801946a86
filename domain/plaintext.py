"""Text people send that a terminal, a database or a reader must never act on.

Control characters (C0, DEL and C1) and the bidi embeddings, overrides, isolates and marks
(U+202A to U+202E, U+2066 to U+2069, LRM, RLM, ALM) have no place in a name, a ref, a plate or
a complaint: a NUL is a traceback on PostgreSQL and a ref nobody can type on SQLite;
`ESC [2J` clears the staff terminal that lists complaints; U+202E shows a text backwards
("Trojan Source"). One definition serves every door:

* text coming in: the CSV import refuses a cell holding any of them (`has_unsafe`), so a
  shop's file is fixed at the source; the chat strips them from what a member types
  (`strip_unsafe`), as a member cannot be asked to retype, keeping line breaks and tabs,
  which a complaint may hold;
* text going out to a terminal (`inert`): what is already stored, or comes from the shop's
  YAML, is shown with every such character as a visible escape (`\\x1b`, `\\u202e`), never
  sent raw, and nothing is dropped, so staff still see that something odd was typed. Line
  breaks stay. Pure: no rich, no terminal; the CLI (`memberbot.staffview.plain`) and the
  console channel build on it.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)

_BIDI = "".join(chr(code) for code in BIDI_CONTROLS)
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

_C0_C1 = (*range(0x00, 0x20), *range(0x7F, 0xA0))
_SHOWN: dict[int, str] = {code: f"\\x{code:02x}" for code in _C0_C1 if code != ord("\n")}
_SHOWN.update({code: f"\\u{code:04x}" for code in BIDI_CONTROLS})


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


def inert(text: str) -> str:
    """`text` with C0/C1 control characters (but the line break) and bidi controls written as
    visible escapes; everything else, markup brackets included, as it is."""
    return text.translate(_SHOWN)
