"""When a persona's posts fall due: its cadence as slots in its own time zone.

A day's posts are spread evenly over the persona's active hours, each in the middle of its share
of the window (3 posts between 9 and 18 fall at 10:30, 13:30 and 16:30 local time). A fractional
rate spreads over days: 0.5 posts a day is one post every other day, 2.5 alternates 2 and 3.
Slots are wall-clock times, so a 10:30 post stays at 10:30 across a daylight-saving change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from chorus.persona import Cadence

# Rates like 0.1 or 2.3 are not exact in binary: without this, floor(10 * 0.1) could be 0.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Slot:
    day: date  # the persona's local date
    index: int  # 0-based within that day
    at: float  # Unix time

    @property
    def key(self) -> str:
        return f"{self.day.isoformat()}:{self.index}"


def posts_on(cadence: Cadence, day: date) -> int:
    """How many posts fall on this local date (whole days accumulate fractional rates)."""
    ordinal = day.toordinal()
    rate = cadence.posts_per_day
    return math.floor((ordinal + 1) * rate + _EPSILON) - math.floor(ordinal * rate + _EPSILON)


def slots_on(cadence: Cadence, day: date) -> list[Slot]:
    count = posts_on(cadence, day)
    if count == 0:
        return []
    start, end = cadence.active_hours
    window_s = (end - start) * 3600
    # Aware-datetime arithmetic is wall-clock arithmetic: exactly what "10:30 local" means.
    midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(cadence.timezone))
    return [
        Slot(day, i, (midnight + timedelta(seconds=start * 3600 + (i + 0.5) * window_s / count)).timestamp())
        for i in range(count)
    ]


def local_day(cadence: Cadence, now: float) -> date:
    """The persona's date at Unix time `now`, in its time zone."""
    return datetime.fromtimestamp(now, ZoneInfo(cadence.timezone)).date()


def due_slots(cadence: Cadence, now: float, catch_up_s: float) -> list[Slot]:
    """Slots whose time came within the last `catch_up_s` seconds, oldest first.

    Older ones were missed (the fleet was down): posting a day's backlog at once is worse than
    skipping it. Yesterday's slots count too, for a catch-up window that crosses midnight.
    """
    today = local_day(cadence, now)
    candidates = slots_on(cadence, today - timedelta(days=1)) + slots_on(cadence, today)
    return [slot for slot in candidates if now - catch_up_s < slot.at <= now]


def next_slot(cadence: Cadence, now: float) -> Slot | None:
    """The persona's first slot after `now` (within a week; None for a cadence that posts less
    often than that, whose next slot is too far to wait for)."""
    today = local_day(cadence, now)
    for offset in range(8):
        for slot in slots_on(cadence, today + timedelta(days=offset)):
            if slot.at > now:
                return slot
    return None
