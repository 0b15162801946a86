"""Quiet hours (`scheduler.dispatch.QuietHours`), no database: how an operator writes them, when
they hold in a store's own time zone, and when a held message may go, across midnight and a
daylight-saving change."""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest

from scheduler.dispatch import QuietHours

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = QuietHours(clock_time(21), clock_time(9))


async def test_quiet_hours_parse_and_end() -> None:
    quiet = QuietHours.parse("21:00-09:00")
    assert quiet == QuietHours(clock_time(21), clock_time(9))
    assert QuietHours.parse("off") is None and QuietHours.parse("") is None
    with pytest.raises(ValueError):
        QuietHours.parse("9pm to 9am")
    assert quiet.contains(clock_time(23, 30)) and quiet.contains(clock_time(8, 59))
    assert not quiet.contains(clock_time(9)) and not quiet.contains(clock_time(20, 59))
    lunch = QuietHours.parse("12:00-13:30")
    assert (
        lunch is not None and lunch.contains(clock_time(13)) and not lunch.contains(clock_time(14))
    )


def test_spellings_an_operator_may_write() -> None:
    assert QuietHours.parse(" 21:00 - 9:00 ") == NIGHT
    for off in ("OFF", " None ", "22:00-22:00"):  # a zero-length span is no quiet hours
        assert QuietHours.parse(off) is None
    with pytest.raises(ValueError):
        QuietHours.parse("25:00-09:00")


def test_they_hold_in_the_stores_own_time_zone() -> None:
    instant = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai, 15:00 in Berlin
    assert NIGHT.applies(instant, SHANGHAI)
    assert not NIGHT.applies(instant, BERLIN)
    nine_in_shanghai = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert not NIGHT.applies(nine_in_shanghai, SHANGHAI)  # the end is not quiet any more


def test_a_held_message_goes_at_the_next_end_of_quiet_hours() -> None:
    nine_next_morning = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    before_midnight = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 23:00
    after_midnight = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)  # 02:00
    assert NIGHT.end_after(before_midnight, SHANGHAI) == nine_next_morning
    assert NIGHT.end_after(after_midnight, SHANGHAI) == nine_next_morning
    lunch = QuietHours(clock_time(12), clock_time(13, 30))
    at_noon = datetime(2026, 11, 24, 4, 10, tzinfo=UTC)  # 12:10
    assert lunch.end_after(at_noon, SHANGHAI) == datetime(2026, 11, 24, 5, 30, tzinfo=UTC)


def test_nine_oclock_stays_nine_oclock_across_a_daylight_saving_change() -> None:
    # Berlin moves its clocks on 29 March 2026 (CET to CEST) and on 25 October 2026 (back).
    spring_eve = datetime(2026, 3, 28, 21, 0, tzinfo=UTC)  # 22:00 CET
    assert NIGHT.end_after(spring_eve, BERLIN) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    autumn_eve = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert NIGHT.end_after(autumn_eve, BERLIN) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
