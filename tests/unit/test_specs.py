"""Specs: cron syntax and day rules (in UTC), intervals, durations, errors, descriptions.

DST behaviour and property-based tests are in test_specs_dst.py. Every expected instant is
written out by hand (weekdays of 2026: Jan 1 is a Thursday).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from linger_sched.errors import NaiveDatetimeError, SpecError
from linger_sched.specs import (
    CronSpec,
    IntervalSpec,
    parse_duration,
    parse_spec,
    spec_from_text,
    validate_tz,
)

UTC = timezone.utc


def Z(y, mo, d, h=0, mi=0, s=0, us=0):
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def fires(expr, start, n, tz="UTC"):
    spec = CronSpec(expr, tz)
    out, t = [], start
    for _ in range(n):
        t = spec.next_after(t)
        out.append(t)
    return out


def days(expr, start, n, tz="UTC"):
    return [f"{t:%Y-%m-%d}" for t in fires(expr, start, n, tz)]


# --------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    "expr, start, expected",
    [
        ("* * * * *", Z(2026, 1, 1, 10, 0, 30), [Z(2026, 1, 1, 10, 1), Z(2026, 1, 1, 10, 2)]),
        ("*/15 * * * *", Z(2026, 1, 1, 10, 0), [Z(2026, 1, 1, 10, 15), Z(2026, 1, 1, 10, 30)]),
        ("5/20 * * * *", Z(2026, 1, 1, 10, 0), [Z(2026, 1, 1, 10, 5), Z(2026, 1, 1, 10, 25),
                                                Z(2026, 1, 1, 10, 45), Z(2026, 1, 1, 11, 5)]),
        ("10-30/10 8 * * *", Z(2026, 1, 1), [Z(2026, 1, 1, 8, 10), Z(2026, 1, 1, 8, 20),
                                             Z(2026, 1, 1, 8, 30), Z(2026, 1, 2, 8, 10)]),
        ("0 9,17 * * *", Z(2026, 1, 1, 9), [Z(2026, 1, 1, 17), Z(2026, 1, 2, 9)]),
        ("0 0 1 jan,JUL *", Z(2026, 1, 1), [Z(2026, 7, 1), Z(2027, 1, 1)]),
        ("0 0 1 Mar-May/2 *", Z(2026, 1, 1), [Z(2026, 3, 1), Z(2026, 5, 1), Z(2027, 3, 1)]),
        ("0 0 * * 7", Z(2026, 1, 1), [Z(2026, 1, 4), Z(2026, 1, 11)]),  # Sundays
        ("0 0 * * 0", Z(2026, 1, 1), [Z(2026, 1, 4), Z(2026, 1, 11)]),
        ("0 0 * * sun", Z(2026, 1, 1), [Z(2026, 1, 4), Z(2026, 1, 11)]),
        ("0 0 * * 5-7", Z(2026, 1, 1), [Z(2026, 1, 2), Z(2026, 1, 3), Z(2026, 1, 4), Z(2026, 1, 9)]),
        ("0 0 * * 1/3", Z(2026, 1, 1), [Z(2026, 1, 5), Z(2026, 1, 8), Z(2026, 1, 12)]),  # 1-6/3
        ("0 0 ? * MON", Z(2026, 1, 1), [Z(2026, 1, 5), Z(2026, 1, 12)]),
        ("? ? ? ? ?", Z(2026, 1, 1), [Z(2026, 1, 1, 0, 1)]),
        ("30 9 * * MON-FRI", Z(2026, 1, 2, 10), [Z(2026, 1, 5, 9, 30), Z(2026, 1, 6, 9, 30)]),
        ("  0 0 1 * *  ", Z(2026, 1, 15), [Z(2026, 2, 1)]),
    ],
)
def test_syntax(expr, start, expected):
    assert fires(expr, start, len(expected)) == expected


@pytest.mark.parametrize(
    "alias, start, expected",
    [
        ("@yearly", Z(2026, 1, 1), [Z(2027, 1, 1), Z(2028, 1, 1)]),
        ("@annually", Z(2026, 6, 1), [Z(2027, 1, 1)]),
        ("@monthly", Z(2026, 1, 31), [Z(2026, 2, 1), Z(2026, 3, 1)]),
        ("@weekly", Z(2026, 1, 1), [Z(2026, 1, 4), Z(2026, 1, 11)]),
        ("@daily", Z(2026, 1, 1, 12), [Z(2026, 1, 2), Z(2026, 1, 3)]),
        ("@midnight", Z(2026, 1, 1), [Z(2026, 1, 2)]),
        ("@HOURLY", Z(2026, 1, 1, 0, 30), [Z(2026, 1, 1, 1), Z(2026, 1, 1, 2)]),
    ],
)
def test_aliases(alias, start, expected):
    assert fires(alias, start, len(expected)) == expected


def test_text_is_canonical_and_round_trips():
    assert CronSpec("@monthly").text() == "cron:0 0 1 * *"
    assert CronSpec("  30  9 * *   mon-fri ").text() == "cron:30 9 * * MON-FRI"
    s = CronSpec("0 0 L * 5l", "Europe/Berlin")
    back = spec_from_text(s.text(), tz="Europe/Berlin")
    assert back == s and back.tz == "Europe/Berlin"
    assert CronSpec("@monthly").expr == "@monthly"
    assert CronSpec("0 0 1 * *", "UTC") != CronSpec("0 0 1 * *", "Europe/Berlin")


@pytest.mark.parametrize(
    "expr, wildcard",
    [("* * * * *", True), ("*/15 * * * *", True), ("0 * * * *", True), ("@hourly", True),
     ("* 2 * * *", True), ("0 */2 * * *", True), ("30 2 * * *", False), ("0,30 2 * * *", False),
     ("0 0-23 * * *", False), ("@daily", False), ("@monthly", False), ("0 9 * * *", False)],
)
def test_is_wildcard(expr, wildcard):
    assert CronSpec(expr).is_wildcard is wildcard


def test_strictly_after_and_microseconds():
    s = CronSpec("0 0 * * *")
    assert s.next_after(Z(2026, 1, 1)) == Z(2026, 1, 2)
    assert s.next_after(Z(2026, 1, 1) - timedelta(microseconds=1)) == Z(2026, 1, 1)
    assert s.next_after(Z(2026, 1, 1, 0, 0, 0, 1)) == Z(2026, 1, 2)


def test_result_is_aware_utc_whatever_the_input_zone():
    from zoneinfo import ZoneInfo

    s = CronSpec("0 12 * * *", "Asia/Kolkata")
    r = s.next_after(datetime(2026, 1, 1, 18, 0, tzinfo=ZoneInfo("America/New_York")))
    assert r == Z(2026, 1, 2, 6, 30) and r.tzinfo is UTC
    fixed = timezone(timedelta(hours=5, minutes=30))
    assert s.next_after(datetime(2026, 1, 2, 11, 59, tzinfo=fixed)) == Z(2026, 1, 2, 6, 30)


def test_naive_instant_is_rejected():
    with pytest.raises(NaiveDatetimeError):
        CronSpec("* * * * *").next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        IntervalSpec("1m", Z(2026, 1, 1)).next_after(datetime(2026, 1, 1))


# --------------------------------------------------------------------------------- day rules


def test_dom_or_dow_when_neither_is_star():
    # every 13th AND every Friday: Fri 2, Fri 9, Tue 13, Fri 16, ..., Fri Feb 13 once
    assert days("0 0 13 * FRI", Z(2026, 1, 1), 7) == [
        "2026-01-02", "2026-01-09", "2026-01-13", "2026-01-16", "2026-01-23", "2026-01-30",
        "2026-02-06"]
    assert days("0 0 13 * FRI", Z(2026, 2, 12), 2) == ["2026-02-13", "2026-02-20"]
    # the classic gotcha: 1-7 and MON is days 1-7 plus every Monday
    assert days("0 0 1-7 * MON", Z(2026, 1, 6), 4) == ["2026-01-07", "2026-01-12", "2026-01-19",
                                                        "2026-01-26"]


def test_dom_and_dow_when_one_starts_with_star():
    assert days("0 0 * * FRI", Z(2026, 1, 1), 3) == ["2026-01-02", "2026-01-09", "2026-01-16"]
    # */2 = odd days; must also be a Friday
    assert days("0 0 */2 * FRI", Z(2026, 1, 1), 5) == [
        "2026-01-09", "2026-01-23", "2026-02-13", "2026-02-27", "2026-03-13"]
    assert days("0 0 1-10 * */7", Z(2026, 1, 1), 2) == ["2026-01-04", "2026-02-01"]  # (*/7 = Sun)
    assert days("0 0 13 * ?", Z(2026, 1, 1), 2) == ["2026-01-13", "2026-02-13"]


def test_month_ends():
    assert days("0 0 31 * *", Z(2026, 1, 1), 7) == [
        "2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31", "2026-08-31", "2026-10-31",
        "2026-12-31"]
    assert days("0 0 30 * *", Z(2026, 1, 30), 2) == ["2026-03-30", "2026-04-30"]
    assert days("0 0 L * *", Z(2026, 1, 1), 4) == ["2026-01-31", "2026-02-28", "2026-03-31",
                                                   "2026-04-30"]
    assert days("0 0 L 2 *", Z(2027, 3, 1), 2) == ["2028-02-29", "2029-02-28"]
    assert days("0 0 1,L * *", Z(2026, 1, 30), 3) == ["2026-01-31", "2026-02-01", "2026-02-28"]


def test_feb_29_only_in_leap_years():
    assert days("0 0 29 2 *", Z(2026, 1, 1), 3) == ["2028-02-29", "2032-02-29", "2036-02-29"]
    assert days("0 0 29 2 *", Z(2096, 3, 1), 1) == ["2104-02-29"]  # 2100 is not a leap year


def test_last_weekday_lw():
    # Jan 31 2026 Sat -> Fri 30; Feb 28 Sat -> Fri 27; Mar 31 Tue; May 31 Sun -> Fri 29
    assert days("0 0 LW * *", Z(2026, 1, 1), 5) == [
        "2026-01-30", "2026-02-27", "2026-03-31", "2026-04-30", "2026-05-29"]


def test_nearest_weekday_w():
    # 15th: Feb 15 Sun -> Mon 16; Aug 15 Sat -> Fri 14
    assert days("0 0 15W * *", Z(2026, 1, 1), 8) == [
        "2026-01-15", "2026-02-16", "2026-03-16", "2026-04-15", "2026-05-15", "2026-06-15",
        "2026-07-15", "2026-08-14"]
    # Aug 1 2026 is a Saturday: never crosses back into July -> Monday 3rd
    assert days("0 0 1W * *", Z(2026, 7, 2), 2) == ["2026-08-03", "2026-09-01"]
    # Feb 1 2026 Sunday -> Mon 2
    assert days("0 0 1W 2 *", Z(2026, 1, 1), 1) == ["2026-02-02"]
    # 31W: May 31 2026 Sun -> Fri 29 (never Mon Jun 1); not at all in 30-day months / Feb
    assert days("0 0 31W * *", Z(2026, 1, 1), 4) == ["2026-01-30", "2026-03-31", "2026-05-29",
                                                     "2026-07-31"]


def test_last_weekday_of_month_5L():
    want = ["2026-01-30", "2026-02-27", "2026-03-27"]
    for expr in ("0 0 * * 5L", "0 0 * * L5", "0 0 * * FRIL", "0 0 * * fril"):
        assert days(expr, Z(2026, 1, 1), 3) == want, expr
    assert days("0 0 * * 0L", Z(2026, 1, 1), 1) == ["2026-01-25"]
    assert days("0 0 * * 7L", Z(2026, 1, 1), 1) == ["2026-01-25"]


def test_nth_weekday_hash():
    want = ["2026-01-12", "2026-02-09", "2026-03-09"]
    assert days("0 0 * * MON#2", Z(2026, 1, 1), 3) == want
    assert days("0 0 * * 1#2", Z(2026, 1, 1), 3) == want
    # fifth Friday exists only in some months
    assert days("0 0 * * 5#5", Z(2026, 1, 1), 3) == ["2026-01-30", "2026-05-29", "2026-07-31"]
    assert days("0 0 * * MON#1,FRI#3", Z(2026, 1, 1), 3) == ["2026-01-05", "2026-01-16",
                                                              "2026-02-02"]


def test_rare_schedule_terminates():
    # fifth Monday of February (leap years whose Feb 1 is a Monday): 2016, then 2044
    assert days("0 0 * 2 MON#5", Z(2016, 3, 1), 1) == ["2044-02-29"]


# --------------------------------------------------------------------------------- describe


@pytest.mark.parametrize(
    "expr, tz, text",
    [
        ("* * * * *", "UTC", "every minute"),
        ("*/15 * * * *", "UTC", "every 15 minutes"),
        ("0 0 1 * *", "Europe/Berlin", "at 00:00 on day 1 of the month (Europe/Berlin)"),
        ("@monthly", "UTC", "at 00:00 on day 1 of the month"),
        ("30 9 * * 1-5", "UTC", "at 09:30 on Monday through Friday"),
        ("30 9 * * MON-FRI", "UTC", "at 09:30 on Monday through Friday"),
        ("0 0 * * *", "UTC", "at 00:00 every day"),
        ("0 * * * *", "UTC", "every hour"),
        ("0 9,17 * * *", "UTC", "at 09:00 and 17:00 every day"),
        ("0 0 L * *", "UTC", "at 00:00 on the last day of the month"),
        ("0 0 15W * *", "UTC", "at 00:00 on the weekday nearest day 15 of the month"),
        ("0 0 * * MON#2", "UTC", "at 00:00 on the second Monday of the month"),
        ("0 0 * * 5L", "UTC", "at 00:00 on the last Friday of the month"),
        ("0 0 1 1 *", "UTC", "at 00:00 on day 1 of the month in January"),
    ],
)
def test_describe(expr, tz, text):
    assert CronSpec(expr, tz).describe() == text


@pytest.mark.parametrize(
    "expr, text",
    [
        # a step of 1 is every value: never "every 1 minutes"
        ("*/1 * * * *", "every minute"),
        ("0/1 * * * *", "every minute"),
        ("* */1 * * *", "every minute"),
        ("*/1 */1 */1 */1 */1", "every minute"),
        ("*/2 * * * *", "every 2 minutes"),
        ("*/60 * * * *", "every hour"),  # minute 0 only
        ("0 */1 * * *", "every hour"),
        ("5 */1 * * *", "every hour at minute 5"),
        ("0 */2 * * *", "every 2 hours"),
        ("15 */6 * * *", "every 6 hours at minute 15"),
        ("0 0 */1 * *", "at 00:00 every day"),
        ("0 0 * */1 *", "at 00:00 every day"),
        ("0 0 * * */1", "at 00:00 every day"),
        ("0 0 1 */1 *", "at 00:00 on day 1 of the month"),
        ("*/7 * * * *", "at minute */7 past every hour"),  # not an even split of the hour
    ],
)
def test_describe_has_no_step_of_one_and_no_false_plural(expr, text):
    assert CronSpec(expr).describe() == text


@pytest.mark.parametrize(
    "every, text",
    [("1s", "every second"), ("1m", "every minute"), ("1h", "every hour"), ("1d", "every day"),
     ("61s", "every 1 minute 1 second"), ("1d1h", "every 1 day 1 hour"), ("2m", "every 2 minutes")],
)
def test_interval_describe_singular(every, text):
    assert IntervalSpec(every).describe() == text


def test_describe_never_fails():
    for expr in ("*/7 1-5 */2 * *", "0 0 13 * FRI", "5,10 */3 * 1-6 *", "0 0 */2 * 1,3,5",
                 "0 0 LW,1 * *", "0 0 ? * SUN#1", "0 0 * * 7"):
        assert CronSpec(expr).describe()


# --------------------------------------------------------------------------------- intervals


def test_interval_anchor_included_and_multiples():
    a = Z(2026, 1, 1, 0, 0)
    s = IntervalSpec("15m", a)
    assert s.next_after(a - timedelta(microseconds=1)) == a
    assert s.next_after(Z(2025, 6, 1)) == a
    assert s.next_after(a) == Z(2026, 1, 1, 0, 15)
    assert s.next_after(Z(2026, 1, 1, 10, 7)) == Z(2026, 1, 1, 10, 15)
    assert s.next_after(Z(2026, 1, 1, 10, 15)) == Z(2026, 1, 1, 10, 30)
    assert s.next_after(Z(2026, 1, 3, 0, 0, 0, 1)) == Z(2026, 1, 3, 0, 15)


def test_interval_odd_anchor_and_period():
    s = IntervalSpec(7, Z(2026, 1, 1, 0, 0, 3))
    assert s.next_after(Z(2026, 1, 1, 0, 1)) == Z(2026, 1, 1, 0, 1, 6)  # 3 + 9*7 = 66 s
    assert s.next_after(Z(2026, 1, 1, 0, 1, 6)) == Z(2026, 1, 1, 0, 1, 13)
    assert s.next_after(Z(2026, 1, 1, 0, 0, 59)) == Z(2026, 1, 1, 0, 1, 6)


def test_interval_is_immune_to_dst():
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    s = IntervalSpec("1h", datetime(2026, 11, 1, 0, 0, tzinfo=ny))  # 04:00Z
    assert s.anchor == Z(2026, 11, 1, 4) and s.anchor.tzinfo is UTC
    got, t = [], Z(2026, 11, 1, 4)
    for _ in range(4):
        t = s.next_after(t)
        got.append(t)
    assert got == [Z(2026, 11, 1, 5), Z(2026, 11, 1, 6), Z(2026, 11, 1, 7), Z(2026, 11, 1, 8)]
    assert [f"{g.astimezone(ny):%H:%M%z}" for g in got] == ["01:00-0400", "01:00-0500",
                                                            "02:00-0500", "03:00-0500"]
    spring = IntervalSpec("1h", Z(2026, 3, 8, 6))  # 01:00 EST
    assert spring.next_after(Z(2026, 3, 8, 6)) == Z(2026, 3, 8, 7)  # 03:00 EDT, 3600 s later


def test_interval_anchor_handling():
    s = IntervalSpec("30s")
    assert s.anchor is None and s.tz == "UTC" and s.is_wildcard is True
    with pytest.raises(SpecError) as e:
        s.next_after(Z(2026, 1, 1))
    assert "anchor" in str(e.value)
    t = s.with_anchor(Z(2026, 1, 1))
    assert t is not s and s.anchor is None and t.anchor == Z(2026, 1, 1)
    assert t.every == timedelta(seconds=30)
    with pytest.raises(SpecError) as e:
        IntervalSpec("30s", datetime(2026, 1, 1))
    assert e.value.field == "anchor"


@pytest.mark.parametrize(
    "every, describe, text",
    [
        ("15m", "every 15 minutes", "every:900s"),
        ("30s", "every 30 seconds", "every:30s"),
        ("1h30m", "every 1 hour 30 minutes", "every:5400s"),
        ("1h", "every hour", "every:3600s"),
        ("1d", "every day", "every:86400s"),
        ("2d3h", "every 2 days 3 hours", "every:183600s"),
        (1.5, "every 1.5 seconds", "every:1.5s"),
    ],
)
def test_interval_describe_and_text(every, describe, text):
    s = IntervalSpec(every, Z(2026, 1, 1))
    assert s.describe() == describe
    assert s.text() == text
    back = spec_from_text(text, anchor=Z(2026, 1, 1))
    assert back == s


# --------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "value, seconds",
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1h30m", 5400),
     ("1h 30m", 5400), ("90", 90), (90, 90), (1.5, 1.5), ("0.5s", 0.5), ("1.5h", 5400),
     ("2 hours", 7200), ("10 min", 600), ("500ms", 0.5), (" 45S ", 45), ("1d2h3m4s", 93784),
     (timedelta(minutes=3), 180), ("2.5", 2.5)],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "0", "0s", "-5", "-5m", 0, -1, -0.5, "5x", "1h1h", "h", "1.5.3h", "15m garbage",
     True, None, float("nan"), float("inf"), timedelta(0), timedelta(seconds=-1), [1], "1e3", "１０"],
)
def test_parse_duration_rejects(value):
    with pytest.raises(SpecError) as e:
        parse_duration(value, field="every")
    assert e.value.field == "every"
    assert e.value.expr == str(value)


# --------------------------------------------------------------------------------- parse_spec


def test_parse_spec():
    c = parse_spec(cron="0 0 * * *", tz="Europe/Berlin")
    assert isinstance(c, CronSpec) and c.tz == "Europe/Berlin"
    assert parse_spec(cron="0 0 * * *").tz == "UTC"
    i = parse_spec(every="15m", anchor=Z(2026, 1, 1))
    assert isinstance(i, IntervalSpec) and i.anchor == Z(2026, 1, 1)
    assert parse_spec(every="15m", tz="UTC").every == timedelta(minutes=15)
    assert parse_spec(cron="@daily", anchor=Z(2026, 1, 1)).text() == "cron:0 0 * * *"


@pytest.mark.parametrize(
    "kwargs, field",
    [({}, "cron/every"), ({"cron": "* * * * *", "every": "1m"}, "cron/every"),
     ({"every": "1m", "tz": "Europe/Berlin"}, "tz"), ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "tz"),
     ({"every": "soon"}, "every"), ({"cron": "* * *"}, "expression")],
)
def test_parse_spec_errors(kwargs, field):
    with pytest.raises(SpecError) as e:
        parse_spec(**kwargs)
    assert e.value.field == field


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "expr, field",
    [
        ("", "expression"), ("* * * *", "expression"), ("* * * * * *", "expression"),
        ("@reboot", "expression"), ("@every 5m", "expression"),
        ("60 * * * *", "minute"), ("*/0 * * * *", "minute"), ("5-1 * * * *", "minute"),
        ("1,,2 * * * *", "minute"), ("x * * * *", "minute"), ("-1 * * * *", "minute"),
        ("*/a * * * *", "minute"), ("L * * * *", "minute"), ("MON * * * *", "minute"),
        ("0 24 * * *", "hour"), ("0 1-25 * * *", "hour"), ("0 5W * * *", "hour"),
        ("0 0 32 * *", "day of month"), ("0 0 0 * *", "day of month"), ("0 0 32W * *", "day of month"),
        ("0 0 0W * *", "day of month"), ("0 0 LW2 * *", "day of month"), ("0 0 JAN * *", "day of month"),
        ("0 0 30 2 *", "day of month"), ("0 0 31 4,6,9,11 *", "day of month"),
        ("0 0 31W 4 *", "day of month"),
        ("0 0 * 13 *", "month"), ("0 0 * 0 *", "month"), ("0 0 * FOO *", "month"), ("0 0 * L *", "month"),
        ("0 0 * * 8", "day of week"), ("0 0 * * MON#6", "day of week"), ("0 0 * * MON#0", "day of week"),
        ("0 0 * * L", "day of week"), ("0 0 * * FUNDAY", "day of week"), ("0 0 * * 1W", "day of week"),
        ("0 0 * * 8L", "day of week"), ("0 0 * * FRI-MON", "day of week"),
    ],
)
def test_cron_errors_name_the_field(expr, field):
    with pytest.raises(SpecError) as e:
        CronSpec(expr)
    assert e.value.field == field, str(e.value)
    assert e.value.expr == expr.strip()
    assert repr(expr.strip()) in str(e.value)


def test_bad_zone():
    for tz in ("Mars/Olympus", "", "America", "../etc/passwd", "utc "):
        with pytest.raises(SpecError) as e:
            CronSpec("* * * * *", tz)
        assert e.value.field == "tz"
    with pytest.raises(SpecError) as e:
        validate_tz("Europe/Berlinn")
    assert e.value.field == "tz" and e.value.expr == "Europe/Berlinn"
    assert validate_tz("Asia/Kolkata").key == "Asia/Kolkata"


def test_non_string_expression():
    with pytest.raises(SpecError) as e:
        CronSpec(5)  # type: ignore[arg-type]
    assert e.value.field == "expression"


def test_spec_from_text_rejects_unknown_prefix():
    with pytest.raises(SpecError):
        spec_from_text("0 0 * * *")


# --------------------------------------------------------------------------------- croniter


@pytest.mark.parametrize(
    "expr",
    ["*/15 * * * *", "5/20 3-5 * * *", "0 0 13 * FRI", "0 0 */2 * FRI", "0 0 L * *",
     "0 0 15W * *", "0 0 1W * *", "0 0 * * MON#2", "0 0 * * 5#5", "0 12 1 JAN,JUL *",
     "0 0 29 2 *", "@weekly", "0 0 * * 7", "0 0 1-7 * MON", "0 0 ? * 1/3", "30 9 * * MON-FRI"],
)
def test_agrees_with_croniter_in_utc(expr):
    """Outside DST croniter is a useful second opinion (with day_or set per the '*' rule)."""
    croniter = pytest.importorskip("croniter").croniter
    parts = CronSpec(expr).text()[5:].split()
    day_or = not (parts[2][0] in "*?" or parts[4][0] in "*?")
    for start in (Z(2026, 1, 1), Z(2027, 2, 27, 13, 7), Z(2028, 12, 31, 23, 59)):
        it = croniter(expr.replace("?", "*"), start, day_or=day_or)
        theirs = [it.get_next(datetime) for _ in range(25)]
        assert fires(expr, start, 25) == theirs
