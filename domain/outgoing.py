"""What any channel shows a member and how a send went: the vocabulary the chat, the
scheduler and every channel adapter share.

It lives in `domain/` because both sides of the house need it and neither may import the
other: the conversation core (`bot/`) builds `Reply`s, the dispatcher (`scheduler/`) sends
stored messages as `Reply`s through a `Sender`, and each channel (Telegram, WeChat, the
console) implements `Sender` and reports a `Delivery`. A channel only reports the outcome
faithfully; what to do about it (retry, wait, mark unreachable) is the dispatcher's call.

Button data is at most 64 bytes (Telegram's callback-data limit, which every channel keeps to)
and has the shape `<flow>:<action>[:<arg>…]`; a `Button` that breaks this cannot be built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

BUTTON_DATA_MAX = 64
_BUTTON_DATA = re.compile(r"[a-z][a-z0-9_]{0,15}:[a-z][a-z0-9_]{0,23}(:[A-Za-z0-9_.+-]{1,32})*")

SENT, RETRY, BLOCKED, FAILED, WAIT = "sent", "retry", "blocked", "failed", "wait"
# Written on a message a channel could not carry until the member's next interaction (WAIT):
# the member's next message wakes it (`domain.allowances.grant`).
WAITING_FOR_MEMBER = "waiting_for_member"


def valid_button_data(data: str | None) -> bool:
    """Whether `data` could have come from a `Button` of ours (pressed data is untrusted)."""
    return (
        bool(data) and len(data.encode()) <= BUTTON_DATA_MAX and bool(_BUTTON_DATA.fullmatch(data))
    )


@dataclass(frozen=True)
class Button:
    """A choice offered under a reply; `data` comes back verbatim when it is pressed."""

    label: str
    data: str

    def __post_init__(self) -> None:
        if not valid_button_data(self.data):
            raise ValueError(f"button data {self.data!r} is not valid")


@dataclass(frozen=True)
class Card:
    """A message's short form, for a channel that may reach a member outside a conversation
    only through a template the platform approved (WeChat's template messages): the
    template's id and the value of each of its keywords, already fitted to the platform's
    limits (`domain.cards`)."""

    template_id: str
    fields: tuple[tuple[str, str], ...]
    url: str = ""


@dataclass(frozen=True)
class Reply:
    """One message to show: text, rows of buttons, and perhaps an offer to share a contact.

    A message the scheduler sends also says whom it is for and what it is: the member's
    `locale` (for the words a channel adds, such as WeChat's numbered choices), its
    `category` (`transactional`, `service`, `marketing`: a channel may carry some kinds only
    at some times) and, where the rule has one, its `card`."""

    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    contact_button: str = ""  # label of a "share my phone" button, where the channel has one
    locale: str | None = None
    category: str = ""
    card: Card | None = None

    def all_buttons(self) -> list[Button]:
        return [button for row in self.buttons for button in row]


@dataclass(frozen=True)
class Delivery:
    """The outcome of one send.

    SENT: the channel accepted it. RETRY: a transient failure (flood control, network, 5xx);
    `retry_after` is the channel's own wait in seconds when it named one. BLOCKED: the member
    blocked the bot or the chat is gone; sending again is pointless. FAILED: the message itself
    was refused (too long, malformed) and would fail again. WAIT: the channel may not carry
    this message now, only after the member's next interaction (WeChat's customer-service
    allowance is spent and the message has no template, or is marketing).
    """

    status: str
    retry_after: float | None = None
    error: str | None = None
    message_id: str | None = None


class Sender(Protocol):
    """A channel that can deliver a message the scheduler prepared."""

    channel: str

    async def send(self, address: str, reply: Reply) -> Delivery: ...
