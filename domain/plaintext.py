"""Text people wrote (members, staff, imported files, the shop's YAML), made inert for a
terminal: every control character and every bidi override is shown as a visible escape
(`\\x1b`, `\\u202e`) instead of being sent raw.

A terminal runs escape sequences (`\\x1b[2J` clears the screen, OSC 8 forges links) and bidi
overrides reorder what the reader sees, so a name or a complaint could rewrite the staff's
screen. Only line breaks stay as they are: a complaint may have several lines. Nothing is
dropped, so staff still see that something odd was typed. Pure: no rich, no terminal; the CLI
(`memberbot.staffview.plain`) and the console channel build on it.
"""

from __future__ import annotations

# Explicit embeddings and overrides (U+202A–U+202E), isolates (U+2066–U+2069) and the marks
# (LRM, RLM, ALM) that "Trojan Source" text uses to show one order and mean another.
BIDI_CONTROLS = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)

_C0_C1 = (*range(0x00, 0x20), *range(0x7F, 0xA0))
_SHOWN: dict[int, str] = {code: f"\\x{code:02x}" for code in _C0_C1 if code != ord("\n")}
_SHOWN.update({code: f"\\u{code:04x}" for code in BIDI_CONTROLS})


def inert(text: str) -> str:
    """`text` with C0/C1 control characters (but the line break) and bidi controls written as
    visible escapes; everything else, markup brackets included, as it is."""
    return text.translate(_SHOWN)
