"""Fire times across daylight saving time, as docs/explanation/time-zones.md shows them.

Each function returns the local wall-clock times (with their UTC offset) at which a cron
schedule fires after ``start``; tests/unit/test_tutorial.py compares them with the page."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from linger_sched.specs import CronSpec


def fire_times(expr: str, tz: str, start: datetime, count: int) -> list[str]:
    """The next ``count`` fire times of ``expr`` in ``tz`` after ``start``, as local ISO text."""
    spec, zone = CronSpec(expr, tz), ZoneInfo(tz)
    out, t = [], start
    for _ in range(count):
        t = spec.next_after(t)  # an aware UTC datetime, strictly after t
        out.append(t.astimezone(zone).isoformat())
    return out


def daily_0230_spring_forward() -> list[str]:
    # Berlin skips 02:00-03:00 on Sunday 2027-03-28: 02:30 does not exist that day
    return fire_times("30 2 * * *", "Europe/Berlin", datetime(2027, 3, 26, 12, tzinfo=ZoneInfo("Europe/Berlin")), 4)


def daily_0230_fall_back() -> list[str]:
    # Berlin lives 02:00-03:00 twice on Sunday 2027-10-31 (CEST, then CET)
    return fire_times("30 2 * * *", "Europe/Berlin", datetime(2027, 10, 29, 12, tzinfo=ZoneInfo("Europe/Berlin")), 4)


def every_15_minutes_spring_forward() -> list[str]:
    return fire_times("*/15 * * * *", "Europe/Berlin", datetime(2027, 3, 28, 1, 20, tzinfo=ZoneInfo("Europe/Berlin")), 4)


def every_15_minutes_fall_back() -> list[str]:
    return fire_times("*/15 * * * *", "Europe/Berlin", datetime(2027, 10, 31, 2, 20, tzinfo=ZoneInfo("Europe/Berlin")), 8)
