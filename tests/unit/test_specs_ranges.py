"""Cron field expansion (ranges with equal ends, steps, names, Sunday as 7, '?') checked against
a small reference expansion written here, and the ends of the datetime range: next_after never
raises anything but SpecError / NaiveDatetimeError there. Hardening issue points 12 and 5."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from linger_sched.errors import SpecError
from linger_sched.specs import CronSpec, IntervalSpec, parse_duration

# deterministic in CI: the same examples every run
DETERMINISTIC = settings(derandomize=True, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow])


def Z(y, mo, d, h=0, mi=0, s=0):
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def fires_between(expr: str, start: datetime, end: datetime) -> list[datetime]:
    spec, out, t = CronSpec(expr), [], start
    while True:
        t = spec.next_after(t)
        if t >= end:
            return out
        out.append(t)


# ------------------------------------------------------------------------ reference expansion
MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# index: (lowest, highest, names, how many distinct values a step may span)
FIELDS = {0: (0, 59, {}, 60), 1: (0, 23, {}, 24), 2: (1, 31, {}, 31), 3: (1, 12, MONTHS, 12),
          4: (0, 7, DAYS, 7)}


class Invalid(Exception):
    pass


def reference(i: int, text: str) -> set[int]:
    """Debian cron's expansion of one field (lists of '*', 'N', 'A-B', each with '/S'):
    a range A-B/S is A, A+S, ... <= B; '*' is the whole field (day of week 0-6); 'N/S' is
    N-<end of field>/S; 7 in day of week is Sunday (0); a step may be at most the number of
    values of the field."""
    lo, hi, names, span = FIELDS[i]
    top = 6 if i == 4 else hi
    out: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or len(step_text) > 3 or not 1 <= int(step_text) <= span:
                raise Invalid(item)
            step = int(step_text)

        def num(tok: str, item: str = item) -> int:
            if tok in names:
                return names[tok]
            if not tok.isdigit() or len(tok) > 3 or not lo <= int(tok) <= hi:
                raise Invalid(item)
            return int(tok)

        if base in ("*", "?"):
            a, b = lo, top
        elif base.count("-") == 1:
            a, b = (num(t) for t in base.split("-"))
            if a > b:
                raise Invalid(item)
        else:
            a = num(base)
            b = max(top, a) if slash else a
        out.update(v % 7 if i == 4 else v for v in range(a, b + 1, step))
    return out


def fired_values(i: int, text: str) -> set[int]:
    """The values of field ``i`` at which ``text`` fires, read off real fire times."""
    if i == 0:
        return {t.minute for t in fires_between(f"{text} * * * *", Z(2026, 1, 1) - timedelta(seconds=1), Z(2026, 1, 1, 1))}
    if i == 1:
        return {t.hour for t in fires_between(f"0 {text} * * *", Z(2026, 1, 1) - timedelta(seconds=1), Z(2026, 1, 2))}
    if i == 2:  # January 2026 has 31 days
        return {t.day for t in fires_between(f"0 0 {text} * *", Z(2025, 12, 31, 23), Z(2026, 2, 1))}
    if i == 3:
        return {t.month for t in fires_between(f"0 0 1 {text} *", Z(2025, 12, 31, 23), Z(2027, 1, 1))}
    # 2026-01-04 is a Sunday: one week, Sunday to Saturday
    return {(t.weekday() + 1) % 7 for t in fires_between(f"0 0 * * {text}", Z(2026, 1, 3, 23), Z(2026, 1, 11))}


@pytest.mark.parametrize(
    "i, text, expected",
    [
        (0, "5-5", {5}), (1, "12-12", {12}), (2, "5-5", {5}), (3, "JAN-JAN", {1}), (3, "6-6", {6}),
        (4, "MON-MON", {1}), (4, "7-7", {0}), (4, "0-0", {0}), (0, "5-5/2", {5}), (2, "5-5/2", {5}),
        (0, "5/15", {5, 20, 35, 50}), (2, "5/15", {5, 20}), (3, "5/7", {5, 12}), (4, "5/7", {5}),
        (0, "0-59/60", {0}), (0, "*/60", {0}), (1, "*/24", {0}), (3, "*/12", {1}), (4, "*/7", {0}),
        (4, "7", {0}), (4, "0-7", {0, 1, 2, 3, 4, 5, 6}), (4, "5-7", {5, 6, 0}), (4, "1-7/2", {1, 3, 5, 0}),
        (4, "1/3", {1, 4}), (4, "7/2", {0}), (0, "?", set(range(60))), (0, "?/20", {0, 20, 40}),
        (2, "?", set(range(1, 32))), (1, "0-23/5", {0, 5, 10, 15, 20}), (3, "FEB-APR", {2, 3, 4}),
        (0, "1,1-1,1/60", {1}), (2, "31-31", {31}),
    ],
)
def test_expansion_examples(i, text, expected):
    assert reference(i, text) == expected
    assert fired_values(i, text) == expected


def test_equal_range_ends_mean_that_one_value():
    """`0 12 5-5 * *` fired every day (croniter expands 5-5 to '*')."""
    got = fires_between("0 12 5-5 * *", Z(2026, 1, 1), Z(2026, 4, 1))
    assert got == [Z(2026, 1, 5, 12), Z(2026, 2, 5, 12), Z(2026, 3, 5, 12)]
    assert fires_between("0 0 1 JAN-JAN *", Z(2026, 1, 1), Z(2029, 1, 1)) == [Z(2027, 1, 1), Z(2028, 1, 1)]
    assert fires_between("0 0 * * MON-MON", Z(2026, 1, 1), Z(2026, 1, 20)) == [Z(2026, 1, 5), Z(2026, 1, 12), Z(2026, 1, 19)]
    assert fires_between("5-5/2 0 * * *", Z(2026, 1, 1), Z(2026, 1, 3)) == [Z(2026, 1, 1, 0, 5), Z(2026, 1, 2, 0, 5)]


@pytest.mark.parametrize(
    "expr, field",
    [("*/61 * * * *", "minute"), ("0/90 * * * *", "minute"), ("0 */25 * * *", "hour"),
     ("0 0 */32 * *", "day of month"), ("0 0 1 */13 *", "month"), ("0 0 1 5/15 *", "month"), ("0 0 * * 5/15", "day of week"), ("0 0 * * */8", "day of week"),
     ("5-5/0 * * * *", "minute"), ("0 0 * * 7-1", "day of week"), ("0 0 * DEC-JAN *", "month"),
     ("1-2-3 * * * *", "minute"), ("*-5 * * * *", "minute"), ("5-? * * * *", "minute"),
     ("/5 * * * *", "minute"), ("5/ * * * *", "minute"), ("* * * * 1/2/3", "day of week"),
     ("99999999999999999999999999999 * * * *", "minute"), ("0 0 " + "9" * 5000 + " * *", "expression"),
     ("0/" + "9" * 5000 + " * * * *", "expression"), ("0 0 " + "9" * 5000 + "W * *", "expression"),
     ("0 0 * * MON#" + "1" * 5000, "expression"), ("０ * * * *", "expression"), ("ſ * * * *", "expression"),
     ("0 0 * * ſun", "expression")],
)
def test_bad_items_are_spec_errors(expr, field):
    with pytest.raises(SpecError) as e:
        CronSpec(expr)
    assert e.value.field == field, str(e.value)
    assert len(str(e.value)) < 400  # a huge expression is not echoed in full


def test_step_larger_than_the_field_explains_itself():
    with pytest.raises(SpecError) as e:
        CronSpec("*/90 * * * *")
    assert "every: 90m" in str(e.value) or "larger" in str(e.value)


ITEM_NUMBERS = st.one_of(st.integers(-2, 64).map(str), st.sampled_from(["00", "007", "100", "999", "12345678901234567890"]))
NAMES = st.sampled_from(["JAN", "DEC", "FEB", "SUN", "MON", "SAT", "FOO", "L", "W", ""])


@st.composite
def items(draw):
    tok = st.one_of(ITEM_NUMBERS, NAMES)
    kind = draw(st.sampled_from(["star", "q", "one", "range", "weird"]))
    if kind == "star":
        base = "*"
    elif kind == "q":
        base = "?"
    elif kind == "one":
        base = draw(tok)
    elif kind == "range":
        base = f"{draw(tok)}-{draw(tok)}"
    else:
        base = draw(st.text(alphabet="0123456789*?-/,", max_size=6))
    if draw(st.booleans()):
        base += "/" + draw(st.one_of(st.integers(-1, 70).map(str), st.sampled_from(["", "x", "0", "999999999999999999999"])))
    return base


@settings(DETERMINISTIC, max_examples=700)
@given(i=st.integers(0, 4), parts=st.lists(items(), min_size=1, max_size=3))
@example(i=2, parts=["5-5"])
@example(i=3, parts=["JAN-JAN"])
@example(i=4, parts=["MON-MON"])
@example(i=0, parts=["5-5/2"])
def test_expansion_matches_the_reference(i, parts):
    text = ",".join(parts)
    try:
        expected = reference(i, text)
    except (Invalid, ValueError):
        expected = None
    if expected is None:
        with pytest.raises(SpecError):
            fired_values(i, text)
    else:
        assert fired_values(i, text) == expected, text


# ------------------------------------------------------------------------ the ends of time
EAST, WEST = timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))


@pytest.mark.parametrize("expr, tz", [("* * * * *", "UTC"), ("* * * * *", "America/New_York"),
                                      ("0 0 1 1 *", "Pacific/Kiritimati"), ("30 2 * * *", "Europe/Berlin"),
                                      ("0 0 29 2 MON", "Asia/Kolkata"), ("*/15 * * * *", "Pacific/Apia")])
@pytest.mark.parametrize("instant", [
    datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=WEST),
    datetime.min.replace(tzinfo=EAST), datetime.max.replace(tzinfo=EAST), datetime.min.replace(tzinfo=WEST),
    Z(9999, 12, 31, 23, 59), Z(9999, 12, 31, 10), Z(9999, 12, 30), Z(1, 1, 1, 0, 0), Z(1, 1, 1, 23, 59),
])
def test_cron_next_after_at_the_ends_of_time(expr, tz, instant):
    try:
        got = CronSpec(expr, tz).next_after(instant)
    except SpecError:
        return
    assert got > instant and got.tzinfo is UTC


@pytest.mark.parametrize("anchor", [datetime(1, 1, 1, tzinfo=EAST), datetime(9999, 12, 31, 23, tzinfo=WEST),
                                    datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))])
def test_interval_anchor_out_of_range_is_a_spec_error(anchor):
    with pytest.raises(SpecError) as e:
        IntervalSpec("1h", anchor)
    assert e.value.field == "anchor"


@pytest.mark.parametrize("every, anchor, instant", [
    ("5000000d", Z(2026, 1, 1), Z(2026, 1, 1)),
    ("1h", Z(9999, 12, 31, 23, 30), Z(9999, 12, 31, 23, 30)),
    ("1s", Z(2026, 1, 1), datetime.max.replace(tzinfo=UTC)),
    ("999999999d", datetime.min.replace(tzinfo=UTC), Z(2026, 1, 1)),
    ("1w", Z(2026, 1, 1), datetime.max.replace(tzinfo=WEST)),
])
def test_interval_next_after_overflow_is_a_spec_error(every, anchor, instant):
    with pytest.raises(SpecError):
        IntervalSpec(every, anchor).next_after(instant)


@pytest.mark.parametrize("value", ["9" * 5000, "9" * 5000 + "s", "1" * 20000 + ".", "1" * 20000 + "x",
                                   "999999999999999999999999d", 10**400, pytest.param(10**5000, id="5001-digit int"), "1e308s"])
def test_huge_durations_are_spec_errors(value):
    with pytest.raises(SpecError):
        parse_duration(value, field="every")


def test_a_long_duration_text_is_refused_in_linear_time():
    """The unit scan re-ran its regular expression from every position: 20,000 digits and a dot
    took 11 s (a 1 MiB schedules.yaml value, hours)."""
    import time

    for text in ("1" * 20000 + ".", "1s" * 10000 + "x", "1 " * 10000):
        start = time.monotonic()
        with pytest.raises(SpecError):
            parse_duration(text, field="every")
        assert time.monotonic() - start < 0.5
