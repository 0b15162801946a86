"""Buttons as numbered choices, for chats that show only text (WeChat).

Every button of a turn's replies, in order, gets a key the member types to press it: 1, 2, 3…
A button whose label is itself a number (a survey's 0–10) keeps that number as its key, so
typing "7" answers 7, never the seventh button; the other buttons take the numbers left free.
The channel keeps the keys with their button data (`domain.choices`) and shows them under the
replies' text (`chat/wechat_choices`); `pressed` reads the next message against them.

`fit` joins several replies into one message within a byte limit, the choices always last and
whole: when the text is too long its end is cut, never the choices the member must answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from domain.outgoing import Reply

_NUMBER = re.compile(r"[0-9]{1,3}")
ELLIPSIS = "…"
PARAGRAPH = "\n\n"


@dataclass(frozen=True)
class Choice:
    """One button as a typed answer: `key` presses the button whose data is `data`."""

    key: str
    label: str
    data: str

    @property
    def numeric(self) -> bool:
        """The label is the key (a score): shown as a number to type, not as a line."""
        return self.key == self.label

    def view(self) -> dict[str, object]:
        """What the `chat/wechat_choices` template reads."""
        return {"key": self.key, "label": self.label, "numeric": self.numeric}


def numbered(replies: Sequence[Reply]) -> list[Choice]:
    """The replies' buttons in order, each with the key that presses it."""
    buttons = [button for reply in replies for button in reply.all_buttons()]
    own: dict[int, str] = {}
    for index, button in enumerate(buttons):
        label = button.label.strip()
        if _NUMBER.fullmatch(label) and str(int(label)) == label and label not in own.values():
            own[index] = label
    taken = set(own.values())
    free = (str(n) for n in range(1, 10_000) if str(n) not in taken)
    return [
        Choice(own[index] if index in own else next(free), button.label, button.data)
        for index, button in enumerate(buttons)
    ]


def could_press(text: str) -> bool:
    """Whether typed text has the shape of a choice's key: only then are the chat's choices
    worth reading."""
    return bool(_NUMBER.fullmatch(unicodedata.normalize("NFKC", text).strip()))


def pressed(text: str, choices: Mapping[str, str]) -> str | None:
    """The button data a typed message presses, if it is one of the keys ("１" and " 1 " too)."""
    if not could_press(text):
        return None
    return choices.get(str(int(unicodedata.normalize("NFKC", text).strip())))


def fit(texts: Sequence[str], tail: str, limit: int) -> str:
    """The texts as paragraphs with `tail` (the choices) after them, at most `limit` UTF-8
    bytes: an overlong text loses its end (marked "…"), the tail stays whole while it fits."""
    body = PARAGRAPH.join(text for text in texts if text)
    separator = PARAGRAPH if body and tail else ""
    whole = body + separator + tail
    if _size(whole) <= limit:
        return whole
    room = limit - _size(separator + tail) - _size(ELLIPSIS)
    if room <= 0:
        return _cut(whole, limit - _size(ELLIPSIS)) + ELLIPSIS
    return _cut(body, room) + ELLIPSIS + separator + tail


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut(text: str, size: int) -> str:
    """The longest start of `text` within `size` bytes, never half a character."""
    return text.encode("utf-8")[: max(size, 0)].decode("utf-8", errors="ignore").rstrip()
