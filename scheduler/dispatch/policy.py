"""What the dispatcher decides by: quiet hours, the marketing cap, channel limits, retries.

Plain values only: `memberbot.app.dispatch_policy` maps the operator's settings onto a
`DispatchPolicy`, and the tests build one directly. The reasons below are written on outbox
rows (`last_error`) and grouped by `memberbot outbox status`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from scheduler import outbox

# Reasons written on rows (`last_error`); `memberbot outbox status` groups by them.
ERASED, NO_CONSENT, MARKETING_CAP = "erased", "no_consent", "marketing_cap"
NO_CHAT, NO_SENDER, BLOCKED_CHAT = "no_chat", "no_sender", "blocked"
QUIET_HOURS, LEASE_ENDING = "quiet_hours", "lease_ending"
# Waited `hold_days` for the member's next action, which its channel needed first.
NO_WINDOW = "no_window"
UNBIND_ACTOR = "dispatch"
OPT_OUT_FOOTER = "opt_out_footer"

_QUIET = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class QuietHours:
    """Local hours when members are not disturbed; `start` > `end` spans midnight."""

    start: clock_time
    end: clock_time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """`21:00-09:00`; empty, `off` or a zero-length span mean no quiet hours."""
        cleaned = text.strip().lower()
        if cleaned in ("", "off", "none"):
            return None
        match = _QUIET.fullmatch(cleaned)
        if match is None:
            raise ValueError(f"quiet hours {text!r} are not HH:MM-HH:MM")
        start = clock_time(int(match[1]), int(match[2]))
        end = clock_time(int(match[3]), int(match[4]))
        return None if start == end else cls(start, end)

    def contains(self, local: clock_time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def applies(self, now: datetime, zone: ZoneInfo) -> bool:
        return self.contains(now.astimezone(zone).time().replace(tzinfo=None))

    def end_after(self, now: datetime, zone: ZoneInfo) -> datetime:
        """The first end of quiet hours after `now`, as aware UTC."""
        local = now.astimezone(zone)
        day = local.date()
        end = datetime.combine(day, self.end, tzinfo=zone)
        if end.astimezone(UTC) <= now:
            end = datetime.combine(day + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(UTC)


@dataclass(frozen=True)
class ChannelLimits:
    """How fast one channel may be written to: overall, and to any single chat."""

    per_second: float
    chat_interval: float

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.chat_interval < 0:
            raise ValueError("a channel needs a positive rate and a non-negative chat interval")


def _default_limits() -> dict[str, ChannelLimits]:
    return {"telegram": ChannelLimits(per_second=30.0, chat_interval=1.0)}


@dataclass(frozen=True)
class DispatchPolicy:
    """Everything the dispatcher decides by. `memberbot.app.dispatch_policy` maps the operator's
    settings onto it; `default_timezone` is the chain's (`ShopConfig.zone`), for members without
    a home store."""

    quiet_hours: QuietHours | None = QuietHours(clock_time(21), clock_time(9))
    quiet_categories: frozenset[str] = frozenset({outbox.SERVICE, outbox.MARKETING})
    marketing_cap: int = 2
    marketing_cap_days: int = 7
    # How long a message waits for the member when its channel needs their action first.
    hold_days: float = 7.0
    batch: int = 200
    lease_seconds: int = 300
    # No send starts when less than this is left of the lease.
    lease_margin_seconds: float = 30.0
    limits: Mapping[str, ChannelLimits] = field(default_factory=_default_limits)
    # Sends in flight at once, over all chats.
    concurrency: int = 32
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    send_timeout_seconds: float = 30.0
    record_every_seconds: float = 0.2
    interval_seconds: float = 5.0
    default_timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if self.batch <= 0 or self.concurrency <= 0 or self.max_attempts <= 0:
            raise ValueError("batch, concurrency and max_attempts must be positive")
        if self.lease_margin_seconds >= self.lease_seconds:
            raise ValueError("the lease must be longer than its safety margin")

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds before a transient failure is tried again: doubling per attempt, capped,
        with "equal jitter" so a burst of failures does not come back as one burst."""
        ceiling = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(attempts - 1, 0))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)
