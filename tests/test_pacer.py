"""The pacer (`scheduler.dispatch.Pacer`), no database and no waiting: a virtual clock stands
in for time, and the pacer's sleeps move it on. One chat gets at most one message per
interval, the channel at most N starts in any window of N/rate seconds and never a burst, a
chat told to wait waits, and the channel pauses when several chats are told at once."""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any

import pytest

from scheduler.dispatch import ChannelLimits, Pacer

START = 1_000.0


class VirtualTime:
    """The pacer's monotonic clock; its `sleep` returns at once, the clock that much later."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await _real_sleep(0)


_real_sleep = asyncio.sleep


class _AsyncioWithVirtualSleep:
    def __init__(self, sleep: Any) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    time = VirtualTime()
    pacer_module = sys.modules[Pacer.__module__]  # where the pacer looks up asyncio.sleep
    monkeypatch.setattr(pacer_module, "asyncio", _AsyncioWithVirtualSleep(time.sleep))
    return time


async def starts(pacer: Pacer, clock: VirtualTime, chats: list[str]) -> list[float]:
    """When each send may start, the sends asked for one after another, from START."""
    times = []
    for chat in chats:
        await pacer.wait_turn(chat)
        times.append(clock.now - START)
    return times


async def test_one_chat_gets_one_message_per_interval_others_do_not_wait(
    clock: VirtualTime,
) -> None:
    pacer = Pacer(ChannelLimits(per_second=30, chat_interval=1.0), monotonic=clock)
    assert await starts(pacer, clock, ["a", "a", "a"]) == pytest.approx([0.0, 1.0, 2.0])
    others = await starts(pacer, clock, ["b", "c"])
    assert others[-1] - 2.0 < 0.1  # b and c go right after a's third message


async def test_the_channel_counts_starts_in_a_window_and_spreads_them(clock: VirtualTime) -> None:
    pacer = Pacer(ChannelLimits(per_second=3, chat_interval=0.0), monotonic=clock, margin=0.0)
    times = await starts(pacer, clock, [f"chat{n}" for n in range(7)])
    # Never more than 3 in any one second, never closer than half the average interval...
    assert all(sum(t - 1.0 < u <= t for u in times) <= 3 for t in times)
    assert all(b - a >= 0.5 / 3 - 1e-9 for a, b in itertools.pairwise(times))
    # ...and no slower than that allows: the 4th starts a second after the 1st, the 7th two.
    assert times[3] == pytest.approx(1.0) and times[6] == pytest.approx(2.0)


async def test_a_chat_told_to_wait_waits_and_so_does_the_channel_when_many_are(
    clock: VirtualTime,
) -> None:
    pacer = Pacer(ChannelLimits(per_second=30, chat_interval=1.0), monotonic=clock)
    pacer.flooded("a", 5.0)
    assert await starts(pacer, clock, ["b"]) == [0.0]  # one chat's 429 holds only that chat
    assert await starts(pacer, clock, ["a"]) == pytest.approx([5.0])
    pacer.flooded("b", 3.0)
    pacer.flooded("c", 3.0)  # two chats within a second: the bot as a whole is too fast
    assert await starts(pacer, clock, ["d"]) == pytest.approx([8.0])


async def test_chat_replies_use_up_the_reminders_budget() -> None:
    clock = [100.0]
    pacer = Pacer(ChannelLimits(per_second=3, chat_interval=1.0), monotonic=lambda: clock[0])
    for chat in ("a", "b", "c"):  # three replies the chat just sent on the same bot
        pacer.note(chat)
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(pacer.wait_turn("d"))
    await asyncio.sleep(0.05)
    assert not task.done()  # the window is full: a reminder must wait
    clock[0] += 1.1
    await asyncio.wait_for(task, 2)
    assert asyncio.get_running_loop().time() - started < 2
