"""Cadence slots: when an autoposting persona's posts fall due, in its own time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chorus.cadence import due_slots, posts_on, slots_on
from chorus.persona import Cadence


def _local(slots: list, tz: str) -> list[str]:
    return [datetime.fromtimestamp(s.at, ZoneInfo(tz)).strftime("%H:%M") for s in slots]


def test_a_days_posts_sit_in_the_middle_of_their_share_of_the_active_hours() -> None:
    cadence = Cadence(posts_per_day=3, active_hours=(9, 18), timezone="UTC")
    slots = slots_on(cadence, date(2026, 6, 15))
    assert _local(slots, "UTC") == ["10:30", "13:30", "16:30"]
    assert [s.key for s in slots] == ["2026-06-15:0", "2026-06-15:1", "2026-06-15:2"]


def test_slots_are_local_wall_clock_times_across_daylight_saving() -> None:
    cadence = Cadence(posts_per_day=1, active_hours=(8, 12), timezone="Europe/Paris")
    winter, summer = slots_on(cadence, date(2026, 1, 15)), slots_on(cadence, date(2026, 7, 15))
    assert _local(winter, "Europe/Paris") == _local(summer, "Europe/Paris") == ["10:00"]
    assert _local(winter, "UTC") == ["09:00"] and _local(summer, "UTC") == ["08:00"]


@pytest.mark.parametrize(("rate", "days", "total"), [(0.5, 14, 7), (2.5, 10, 25), (0.1, 30, 3), (96, 2, 192)])
def test_fractional_rates_spread_over_days(rate: float, days: int, total: int) -> None:
    cadence = Cadence(posts_per_day=rate)
    counts = [posts_on(cadence, date(2026, 3, 1) + timedelta(days=d)) for d in range(days)]
    assert sum(counts) == total
    assert max(counts) - min(counts) <= 1  # evenly: never two days' worth on one day


def test_due_slots_are_those_within_the_catch_up_window() -> None:
    cadence = Cadence(posts_per_day=4, active_hours=(8, 16), timezone="UTC")  # 09:00 11:00 13:00 15:00
    at = datetime(2026, 6, 15, 13, 30, tzinfo=UTC).timestamp()
    assert _local(due_slots(cadence, at, catch_up_s=3600), "UTC") == ["13:00"]
    assert _local(due_slots(cadence, at, catch_up_s=3 * 3600), "UTC") == ["11:00", "13:00"]
    assert due_slots(cadence, datetime(2026, 6, 15, 12, 59, tzinfo=UTC).timestamp(), 1800) == []


def test_a_catch_up_window_crossing_midnight_includes_yesterdays_late_slots() -> None:
    cadence = Cadence(posts_per_day=1, active_hours=(22, 24), timezone="UTC")  # 23:00 each day
    just_after_midnight = datetime(2026, 6, 16, 0, 30, tzinfo=UTC).timestamp()
    [slot] = due_slots(cadence, just_after_midnight, catch_up_s=2 * 3600)
    assert slot.key == "2026-06-15:0"
