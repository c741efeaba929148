"""Cron next fire times around DST transitions, and property-based checks against a
brute-force oracle that walks real UTC minutes (independent of the code under test).

Transitions used (all checked against tzdata by hand):
  America/New_York  2026-03-08 07:00Z  02:00 EST -> 03:00 EDT  (gap 02:00-03:00)
                    2026-11-01 06:00Z  02:00 EDT -> 01:00 EST  (01:00-02:00 twice)
  Europe/Berlin     2026-03-29 01:00Z  02:00 CET -> 03:00 CEST
                    2026-10-25 01:00Z  03:00 CEST -> 02:00 CET (02:00-03:00 twice)
  Australia/Lord_Howe 2026-04-04 15:00Z 02:00 +11 -> 01:30 +10:30 (01:30-02:00 twice)
                    2026-10-03 15:30Z  02:00 +10:30 -> 02:30 +11 (gap 02:00-02:30)
  Pacific/Apia      2011-12-30 10:00Z  Dec 29 24:00 -10 -> Dec 31 00:00 +14 (Dec 30 skipped)
  Asia/Kolkata      +05:30, no DST
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linger_sched.specs import CronSpec

UTC = timezone.utc
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)
NY, BER, LHI, APIA, KOL = ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
                           "Pacific/Apia", "Asia/Kolkata")


def Z(y, mo, d, h=0, mi=0, s=0):
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


CASES = [
    # --- New York, spring forward 2026-03-08 (02:00-02:59 do not exist)
    ("30 2 * * *", NY, Z(2026, 3, 7, 8), Z(2026, 3, 8, 7)),        # gap slot -> 03:00 EDT
    ("30 2 * * *", NY, Z(2026, 3, 8, 7), Z(2026, 3, 9, 6, 30)),    # then 02:30 EDT next day
    ("30 2 * * *", NY, Z(2026, 3, 8, 6, 59, 59), Z(2026, 3, 8, 7)),
    ("0,30 2 * * *", NY, Z(2026, 3, 8, 6, 59), Z(2026, 3, 8, 7)),  # two slots, one fire
    ("0,30 2 * * *", NY, Z(2026, 3, 8, 7), Z(2026, 3, 9, 6)),
    ("0 2,3 * * *", NY, Z(2026, 3, 8, 6), Z(2026, 3, 8, 7)),       # 02:00 and 03:00 coalesce
    ("0 2,3 * * *", NY, Z(2026, 3, 8, 7), Z(2026, 3, 9, 6)),
    ("0 3 * * *", NY, Z(2026, 3, 8, 6), Z(2026, 3, 8, 7)),
    ("30 2 8 3 *", NY, Z(2026, 1, 1), Z(2026, 3, 8, 7)),           # yearly slot in the gap
    ("*/30 * * * *", NY, Z(2026, 3, 8, 6, 30), Z(2026, 3, 8, 7)),  # wildcard: 01:30 -> 03:00
    ("30 * * * *", NY, Z(2026, 3, 8, 6, 30), Z(2026, 3, 8, 7, 30)),  # no 02:30 at all
    ("* 2 * * *", NY, Z(2026, 3, 8, 0), Z(2026, 3, 9, 6)),         # whole hour missing
    ("* * * * *", NY, Z(2026, 3, 8, 6, 59), Z(2026, 3, 8, 7)),     # 01:59 EST -> 03:00 EDT
    # --- New York, fall back 2026-11-01 (01:00-01:59 twice: 05:xxZ EDT, 06:xxZ EST)
    ("30 1 * * *", NY, Z(2026, 10, 31, 12), Z(2026, 11, 1, 5, 30)),  # first pass
    ("30 1 * * *", NY, Z(2026, 11, 1, 5, 30), Z(2026, 11, 2, 6, 30)),  # not the second
    ("30 1 * * *", NY, Z(2026, 11, 1, 5, 45), Z(2026, 11, 2, 6, 30)),
    ("0 1 * * *", NY, Z(2026, 11, 1, 6), Z(2026, 11, 2, 6)),          # from 01:00 EST
    ("30 1 * * *", NY, Z(2026, 11, 1, 6), Z(2026, 11, 2, 6, 30)),     # 01:00 EST: 01:30 EST is no fire
    ("0 2 * * *", NY, Z(2026, 11, 1, 5), Z(2026, 11, 1, 7)),
    ("*/15 * * * *", NY, Z(2026, 11, 1, 5, 30), Z(2026, 11, 1, 5, 45)),  # 01:30 EDT -> 01:45 EDT
    ("*/15 * * * *", NY, Z(2026, 11, 1, 5, 45), Z(2026, 11, 1, 6)),      # 01:45 EDT -> 01:00 EST
    ("*/15 * * * *", NY, Z(2026, 11, 1, 6, 30), Z(2026, 11, 1, 6, 45)),
    ("*/15 * * * *", NY, Z(2026, 11, 1, 6, 45), Z(2026, 11, 1, 7)),      # -> 02:00 EST
    ("30 * * * *", NY, Z(2026, 11, 1, 5, 30), Z(2026, 11, 1, 6, 30)),
    ("* 1 * * *", NY, Z(2026, 11, 1, 5, 59), Z(2026, 11, 1, 6)),
    ("* 1 * * *", NY, Z(2026, 11, 1, 6, 59), Z(2026, 11, 2, 6)),
    ("0 1 1 11 *", NY, Z(2026, 11, 1, 5, 30), Z(2027, 11, 1, 5)),   # yearly: once only
    # --- Berlin
    ("30 2 * * *", BER, Z(2026, 3, 28, 12), Z(2026, 3, 29, 1)),
    ("30 2 * * *", BER, Z(2026, 3, 29, 1), Z(2026, 3, 30, 0, 30)),
    ("*/20 * * * *", BER, Z(2026, 3, 29, 0, 40), Z(2026, 3, 29, 1)),
    ("@daily", BER, Z(2026, 3, 28, 23), Z(2026, 3, 29, 22)),
    ("30 2 * * *", BER, Z(2026, 10, 24, 12), Z(2026, 10, 25, 0, 30)),
    ("30 2 * * *", BER, Z(2026, 10, 25, 0, 30), Z(2026, 10, 26, 1, 30)),
    ("30 2 * * *", BER, Z(2026, 10, 25, 1), Z(2026, 10, 26, 1, 30)),  # from 02:00 CET
    ("0 * * * *", BER, Z(2026, 10, 25, 0), Z(2026, 10, 25, 1)),     # 02:00 CEST -> 02:00 CET
    ("0 * * * *", BER, Z(2026, 10, 25, 1), Z(2026, 10, 25, 2)),
    ("@hourly", BER, Z(2026, 10, 25, 0, 30), Z(2026, 10, 25, 1)),
    # --- Lord Howe (30-minute shifts)
    ("45 1 * * *", LHI, Z(2026, 4, 4), Z(2026, 4, 4, 14, 45)),       # 01:45 +11
    ("45 1 * * *", LHI, Z(2026, 4, 4, 14, 45), Z(2026, 4, 5, 15, 15)),  # not 01:45 +10:30
    ("45 1 * * *", LHI, Z(2026, 4, 4, 15), Z(2026, 4, 5, 15, 15)),      # from 01:30 +10:30
    ("*/15 * * * *", LHI, Z(2026, 4, 4, 14, 30), Z(2026, 4, 4, 14, 45)),
    ("*/15 * * * *", LHI, Z(2026, 4, 4, 14, 45), Z(2026, 4, 4, 15)),   # 01:45 +11 -> 01:30 +10:30
    ("*/15 * * * *", LHI, Z(2026, 4, 4, 15, 15), Z(2026, 4, 4, 15, 30)),  # -> 02:00 +10:30
    ("15 2 * * *", LHI, Z(2026, 10, 3), Z(2026, 10, 3, 15, 30)),      # gap -> 02:30 +11
    ("15 2 * * *", LHI, Z(2026, 10, 3, 15, 30), Z(2026, 10, 4, 15, 15)),
    ("0,15 2 * * *", LHI, Z(2026, 10, 3), Z(2026, 10, 3, 15, 30)),
    ("0,15 2 * * *", LHI, Z(2026, 10, 3, 15, 30), Z(2026, 10, 4, 15)),
    ("*/15 * * * *", LHI, Z(2026, 10, 3, 15, 15), Z(2026, 10, 3, 15, 30)),  # 01:45 -> 02:30
    # --- Kolkata (+05:30)
    ("0 9 * * *", KOL, Z(2026, 3, 8), Z(2026, 3, 8, 3, 30)),
    ("30 23 * * *", KOL, Z(2026, 1, 1), Z(2026, 1, 1, 18)),
    ("0 0 1 * *", KOL, Z(2026, 12, 31), Z(2026, 12, 31, 18, 30)),
    ("*/45 * * * *", KOL, Z(2026, 1, 1, 0, 10), Z(2026, 1, 1, 0, 15)),  # 05:45 local
    # --- Apia: 2011-12-30 does not exist
    ("0 12 * * *", APIA, Z(2011, 12, 29, 22), Z(2011, 12, 30, 10)),   # Dec 30 12:00 -> gap end
    ("0 12 * * *", APIA, Z(2011, 12, 30, 10), Z(2011, 12, 30, 22)),   # Dec 31 12:00 +14
    ("0 12 30 12 *", APIA, Z(2011, 6, 1), Z(2011, 12, 30, 10)),
    ("0 12 30 12 *", APIA, Z(2011, 12, 30, 10), Z(2012, 12, 29, 22)),
    ("0 12 * * FRI", APIA, Z(2011, 12, 24), Z(2011, 12, 30, 10)),     # Fri Dec 30 -> gap end
    ("0 12 * * FRI", APIA, Z(2011, 12, 30, 10), Z(2012, 1, 5, 22)),
    ("0 * * * *", APIA, Z(2011, 12, 30, 9), Z(2011, 12, 30, 10)),     # wildcard: 23:00 -> 00:00
    ("* 12 * * *", APIA, Z(2011, 12, 29, 22, 59), Z(2011, 12, 30, 22)),  # wildcard: no Dec 30
    ("* * * * *", APIA, Z(2011, 12, 30, 9, 59), Z(2011, 12, 30, 10)),
]


@pytest.mark.parametrize("expr, tz, after, expected", CASES)
def test_next_after_around_transitions(expr, tz, after, expected):
    got = CronSpec(expr, tz).next_after(after)
    assert got == expected, f"{got:%Y-%m-%d %H:%M:%SZ} ({got.astimezone(ZoneInfo(tz))})"
    assert got.tzinfo is UTC


def test_wildcard_fall_back_sequence_and_local_input():
    ny = ZoneInfo(NY)
    s = CronSpec("*/15 * * * *", NY)
    t, seen = Z(2026, 11, 1, 4, 50), []
    for _ in range(10):
        t = s.next_after(t)
        seen.append(f"{t.astimezone(ny):%H:%M%z}")
    assert seen == ["01:00-0400", "01:15-0400", "01:30-0400", "01:45-0400", "01:00-0500",
                    "01:15-0500", "01:30-0500", "01:45-0500", "02:00-0500", "02:15-0500"]
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ny)  # fold=0: 01:30 EDT
    second = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny)  # 01:30 EST
    assert s.next_after(first) == Z(2026, 11, 1, 5, 45)
    assert s.next_after(second) == Z(2026, 11, 1, 6, 45)
    assert s.next_after(datetime(2026, 11, 1, 1, 45, tzinfo=ny)) == Z(2026, 11, 1, 6)


def test_input_given_as_a_nonexistent_local_time():
    # 02:30 on 2026-03-08 does not exist in New York; PEP 495 reads it (fold=0) with the EST
    # offset, i.e. 07:30Z = 03:30 EDT, and "strictly after" is relative to that instant.
    ny = ZoneInfo(NY)
    assert CronSpec("*/15 * * * *", NY).next_after(datetime(2026, 3, 8, 2, 30, tzinfo=ny)) == Z(
        2026, 3, 8, 7, 45)
    assert CronSpec("30 2 * * *", NY).next_after(datetime(2026, 3, 8, 2, 15, tzinfo=ny)) == Z(
        2026, 3, 9, 6, 30)
    assert CronSpec("30 2 * * *", NY).next_after(datetime(2026, 3, 8, 1, 59, tzinfo=ny)) == Z(
        2026, 3, 8, 7)


def test_fixed_time_hourly_list_across_both_transitions():
    # fixed-time (minute 0, hours listed): fall back fires 01:00 once, spring 02:00 -> 03:00 once
    s = CronSpec("0 0-23 * * *", NY)
    t, got = Z(2026, 11, 1, 4), []
    for _ in range(4):
        t = s.next_after(t)
        got.append(t)
    assert got == [Z(2026, 11, 1, 5), Z(2026, 11, 1, 7), Z(2026, 11, 1, 8), Z(2026, 11, 1, 9)]
    t, got = Z(2026, 3, 8, 5), []
    for _ in range(3):
        t = s.next_after(t)
        got.append(t)
    assert got == [Z(2026, 3, 8, 6), Z(2026, 3, 8, 7), Z(2026, 3, 8, 8)]


# --------------------------------------------------------------------------------- properties

ZONES = ["UTC", NY, BER, LHI, KOL, APIA]

# (expr, predicate on the local wall time); all fire at least weekly, so the oracle's walk is short
SPECS = [
    ("*/15 * * * *", lambda w: w.minute % 15 == 0),
    ("30 * * * *", lambda w: w.minute == 30),
    ("* 2 * * *", lambda w: w.hour == 2),
    ("*/10 1-3 * * *", lambda w: w.minute % 10 == 0 and 1 <= w.hour <= 3),
    ("0,30 2 * * *", lambda w: w.hour == 2 and w.minute in (0, 30)),
    ("30 1 * * *", lambda w: (w.hour, w.minute) == (1, 30)),
    ("0 0 * * *", lambda w: (w.hour, w.minute) == (0, 0)),
    ("15 2 * * 0", lambda w: (w.hour, w.minute) == (2, 15) and w.weekday() == 6),
    ("0 9 * * MON-FRI", lambda w: (w.hour, w.minute) == (9, 0) and w.weekday() < 5),
    ("45 1 13 * FRI", lambda w: (w.hour, w.minute) == (1, 45) and (w.day == 13 or w.weekday() == 4)),
]
# monthly specs: checked for matching and "nothing skipped", not walked minute by minute
MONTHLY = [
    ("0 0 L * *", lambda w: (w.hour, w.minute) == (0, 0)
     and w.day == calendar.monthrange(w.year, w.month)[1]),
    ("30 2 1W * *", lambda w: (w.hour, w.minute) == (2, 30) and w.weekday() < 5 and w.day <= 3),
    ("0 3 * * SUN#1", lambda w: (w.hour, w.minute) == (3, 0) and w.weekday() == 6 and w.day <= 7),
    ("0 2 * * 0L", lambda w: (w.hour, w.minute) == (2, 0) and w.weekday() == 6
     and w.day + 7 > calendar.monthrange(w.year, w.month)[1]),
]


@cache
def transitions(tz: str) -> tuple[datetime, ...]:
    """Offset changes of ``tz`` in 2000-2040, to the minute (found by scanning, not by specs)."""
    z, out = ZoneInfo(tz), []
    t = Z(2000, 1, 1)
    while t.year < 2041:
        n = t + timedelta(days=1)
        if t.astimezone(z).utcoffset() != n.astimezone(z).utcoffset():
            lo, hi = t, n
            while hi - lo > MIN:
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid.astimezone(z).utcoffset() == t.astimezone(z).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t = n
    return tuple(out)


def oracle(pred, wildcard: bool, tz: str, after: datetime) -> datetime:
    """The DESIGN.md rules, literally: walk real UTC minutes after ``after``."""
    z = ZoneInfo(tz)
    u = after.replace(second=0, microsecond=0) + MIN
    for _ in range(60 * 24 * 9):
        loc = u.astimezone(z)
        wall = loc.replace(tzinfo=None)
        if pred(wall) and (wildcard or loc.fold == 0):
            return u
        if not wildcard:  # u right after a spring-forward jump: did the jump skip a slot?
            expected_wall = (u - MIN).astimezone(z).replace(tzinfo=None) + MIN
            w = expected_wall
            while w < wall:
                if pred(w):
                    return u
                w += MIN
        u += MIN
    raise AssertionError("oracle walked too far")


@st.composite
def instants(draw, tz_strategy=st.sampled_from(ZONES)):
    tz = draw(tz_strategy)
    trans = transitions(tz)
    if trans and draw(st.booleans()):
        base = draw(st.sampled_from(trans)) + timedelta(minutes=draw(st.integers(-200, 200)))
    else:
        base = draw(st.datetimes(datetime(2000, 1, 1), datetime(2040, 12, 31))).replace(tzinfo=UTC)
    if draw(st.booleans()):  # often exactly on a minute
        base = base.replace(second=0, microsecond=0)
    return tz, base


PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(spec=st.sampled_from(SPECS), where=instants())
def test_matches_the_oracle(spec, where):
    expr, pred = spec
    tz, after = where
    s = CronSpec(expr, tz)
    got = s.next_after(after)
    assert got.tzinfo is UTC and got > after
    assert got == oracle(pred, s.is_wildcard, tz, after)
    assert s.next_after(got - US) == got  # nothing skipped just before it


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(MONTHLY), where=instants())
def test_monthly_fires_match_fields(spec, where):
    expr, pred = spec
    tz, after = where
    s, z = CronSpec(expr, tz), ZoneInfo(tz)
    got = s.next_after(after)
    assert got.tzinfo is UTC and got > after
    loc = got.astimezone(z)
    is_gap_end = (got - US).astimezone(z).utcoffset() < loc.utcoffset()
    assert pred(loc.replace(tzinfo=None)) or is_gap_end
    assert loc.fold == 0 or is_gap_end  # fixed-time: never the second pass
    assert s.next_after(got - US) == got
    # and within a short walk back nothing matched (at least the previous 2 days)
    assert oracle(pred, False, tz, max(after, got - timedelta(days=2))) == got


@settings(max_examples=40, deadline=None)
@given(where=instants(st.sampled_from([NY, BER, LHI])),
       expr=st.sampled_from(["*/15 * * * *", "* 1 * * *", "*/5 1-2 * * *"]))
def test_wildcard_sequences_strictly_increase(where, expr):
    tz, after = where
    s, t, prev = CronSpec(expr, tz), after, after
    for _ in range(30):
        t = s.next_after(t)
        assert t > prev and t.tzinfo is UTC
        prev = t
