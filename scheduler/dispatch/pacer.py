"""The pace of one channel: overall sends per second and the least interval per chat, as the
channel itself counts them, including its "too many requests, retry after" answers."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from scheduler.dispatch.policy import ChannelLimits

# Our window is this much longer than the channel's one second: requests leave in the pace we
# set but arrive with a few milliseconds of jitter, and a send that arrives early would fall in
# the previous second of Telegram's count.
WINDOW_MARGIN_SECONDS = 0.025
# Two chats told to wait within this many seconds means the channel as a whole is flooded.
FLOOD_SPREAD_SECONDS = 1.0


class Pacer:
    """Keeps one channel's sends under its limits, as the channel itself counts them.

    Overall: at most N sends start in any window of N/rate seconds (plus a small margin),
    which is how Telegram counts "30 per second"; after a pause the backlog may catch up, but
    sends never start closer than half the average interval, so no burst lands at once. Per
    chat: a minimum interval between two sends, and a chat told to wait (429) waits that long.
    Starts are handed out first come, first served.
    """

    def __init__(
        self,
        limits: ChannelLimits,
        *,
        margin: float = WINDOW_MARGIN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._per_window = max(1, math.floor(limits.per_second))
        self._window = self._per_window / limits.per_second + margin
        self._spacing = 0.5 / limits.per_second
        self._starts: deque[float] = deque(maxlen=self._per_window)
        self._chat_next: dict[str, float] = {}
        self._paused_until = 0.0
        self._recent_floods: deque[tuple[float, str]] = deque()
        self._lock = asyncio.Lock()
        self._now = monotonic

    def _channel_wait(self, now: float) -> float:
        waits = [self._paused_until - now]
        if self._starts:
            waits.append(self._starts[-1] + self._spacing - now)
        if len(self._starts) == self._per_window:
            waits.append(self._starts[0] + self._window - now)
        return max(waits)

    async def wait_turn(self, chat: str) -> None:
        """Return when a send to `chat` may start; the start is counted at once."""
        while True:
            chat_wait = self._chat_next.get(chat, 0.0) - self._now()
            if chat_wait > 0:
                await asyncio.sleep(chat_wait)
                continue
            async with self._lock:
                while (wait := self._channel_wait(self._now())) > 0:
                    await asyncio.sleep(wait)
                now = self._now()
                if self._chat_next.get(chat, 0.0) > now:
                    continue  # the chat was told to wait while we queued
                self._starts.append(now)
                self._chat_next[chat] = now + self.limits.chat_interval
                self._forget_idle_chats(now)
                return

    def note(self, chat: str) -> None:
        """A send made on the same bot outside the dispatcher (a chat reply) uses the same
        budget: reminders slow down while members are talking, and the two together stay
        under the channel's limit. Replies never wait for reminders."""
        now = self._now()
        self._starts.append(now)
        self._chat_next[chat] = max(self._chat_next.get(chat, 0.0), now + self.limits.chat_interval)

    def flooded(self, chat: str, retry_after: float) -> None:
        """The channel answered "too many requests, retry after": that chat waits; if other
        chats were told the same just now, the whole channel waits."""
        now = self._now()
        until = now + retry_after
        self._chat_next[chat] = max(self._chat_next.get(chat, 0.0), until)
        self._recent_floods.append((now, chat))
        while self._recent_floods and self._recent_floods[0][0] < now - FLOOD_SPREAD_SECONDS:
            self._recent_floods.popleft()
        if len({flooded for _, flooded in self._recent_floods}) > 1:
            self._paused_until = max(self._paused_until, until)

    def _forget_idle_chats(self, now: float) -> None:
        if len(self._chat_next) > 4 * max(self._per_window, 256):
            self._chat_next = {c: t for c, t in self._chat_next.items() if t > now}
