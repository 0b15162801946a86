"""What every channel offers the scheduler: send one rendered message to one chat and say how
it went. The dispatcher decides what to do with the outcome (retry, wait, mark unreachable);
the channel only reports it faithfully."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.conversation import Reply

SENT, RETRY, BLOCKED, FAILED = "sent", "retry", "blocked", "failed"


@dataclass(frozen=True)
class Delivery:
    """The outcome of one send.

    SENT: the channel accepted it. RETRY: a transient failure (flood control, network, 5xx);
    `retry_after` is the channel's own wait in seconds when it named one. BLOCKED: the member
    blocked the bot or the chat is gone; sending again is pointless. FAILED: the message itself
    was refused (too long, malformed) and would fail again.
    """

    status: str
    retry_after: float | None = None
    error: str | None = None
    message_id: str | None = None


class Sender(Protocol):
    """A channel that can deliver a message the scheduler prepared."""

    channel: str

    async def send(self, address: str, reply: Reply) -> Delivery: ...
