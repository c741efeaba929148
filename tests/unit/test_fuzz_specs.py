"""Property-based fuzzing of cron and interval specs (hardening issue: fuzzing).

Random cron texts built from tokens (numbers, huge numbers, names, the extensions, separators),
random durations and anchors, random instants (also near the years 1 and 9999, in DST zones,
in fixed offsets, naive): only SpecError / NaiveDatetimeError may be raised, and a next fire
time is strictly after the instant, matches the fields (or is the end of a DST gap), and
nothing is skipped just before it. Derandomized: CI runs the same examples every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from linger_sched.errors import NaiveDatetimeError, SpecError
from linger_sched.specs import (
    CronSpec,
    IntervalSpec,
    parse_duration,
    parse_spec,
    spec_from_text,
)

US = timedelta(microseconds=1)
FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROJECT_ERRORS = (SpecError, NaiveDatetimeError)

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kolkata",
         "America/St_Johns", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Dublin"]
MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (lowest, highest, names, how many values a step may span)
FIELDS = [(0, 59, {}, 60), (0, 23, {}, 24), (1, 31, {}, 31), (1, 12, MONTHS, 12), (0, 7, DAYS, 7)]

# -- instants: anywhere, near the ends of time, around DST transitions, naive ---------------------
TZINFOS = st.one_of(st.sampled_from([UTC, None]), st.sampled_from(ZONES).map(ZoneInfo),
                    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))))
NEAR_EDGES = st.one_of(
    st.datetimes(datetime(1, 1, 1), datetime(1, 1, 3)),
    st.datetimes(datetime(9999, 12, 29), datetime.max),
    st.datetimes(datetime(2026, 3, 7), datetime(2026, 4, 6)),  # spring-forward in many zones
    st.datetimes(datetime(2026, 10, 3), datetime(2026, 11, 2)),  # fall-back
    st.datetimes(datetime(2011, 12, 29), datetime(2011, 12, 31)),  # Apia skips a day
    st.datetimes(),
)


@st.composite
def instants(draw):
    base = draw(NEAR_EDGES)
    if draw(st.booleans()):
        base = base.replace(second=0, microsecond=0)
    tz = draw(TZINFOS)
    return base if tz is None else base.replace(tzinfo=tz)


# -- cron texts -----------------------------------------------------------------------------------
NUMBER = st.one_of(st.integers(-3, 75).map(str), st.sampled_from(["00", "007", "60", "24", "32", "13", "8", "99999",
                                                                 "4294967296", "9" * 40, "9" * 5000]))
NAME = st.sampled_from(["JAN", "jan", "Dec", "FEB", "SUN", "mon", "Sat", "FOO", "L", "W", "LW", "JANUARY", "ſun", "０"])


@st.composite
def standard_items(draw, i: int, bad: bool):
    """An item of field ``i`` in the standard syntax (*, ?, N, A-B, each with an optional /S):
    values of the field, its names and steps it allows; with ``bad``, sometimes anything."""
    lo, hi, names, span = FIELDS[i]
    valid = not bad or draw(st.booleans())
    good_value = st.integers(lo, hi).map(str)
    if names:
        good_value = st.one_of(good_value, st.sampled_from(sorted(names)), st.sampled_from(sorted(names)).map(str.lower))
    tok = good_value if valid else st.one_of(NUMBER, NAME)
    kind = draw(st.sampled_from(["*", "?", "one", "one", "range", "range"]))
    if kind == "range" and valid:  # A <= B, each written as a number or a name
        a, b = sorted((draw(st.integers(lo, hi)), draw(st.integers(lo, hi))))
        spell = {v: k for k, v in names.items()}

        def write(v: int) -> str:
            return spell[v] if v in spell and draw(st.booleans()) else str(v)
        base = f"{write(a)}-{write(b)}"
    else:
        base = {"*": "*", "?": "?"}.get(kind) or (draw(tok) if kind == "one" else f"{draw(tok)}-{draw(tok)}")
    if draw(st.integers(0, 2)) == 0:
        step = st.integers(1, span).map(str) if valid else st.one_of(
            st.integers(-1, 70).map(str), st.sampled_from(["", "x", "0", "9" * 30]))
        base += "/" + draw(step)
    return base


@st.composite
def standard_fields(draw):
    """Five fields; in one expression of four every item is valid."""
    bad = draw(st.integers(0, 3)) == 0
    return [",".join(draw(st.lists(standard_items(i, bad), min_size=1, max_size=3))) for i in range(5)]


EXTENDED = st.tuples(
    st.sampled_from(["0", "*/15", "30", "*", "0,30", "59"]), st.sampled_from(["0", "2", "*", "1-3", "23"]),
    st.sampled_from(["L", "LW", "15W", "1W", "31W", "1,L", "*", "?", "13", "29", "31", "L,15W", "30W"]),
    st.sampled_from(["*", "2", "FEB", "*/3", "4,6,9,11", "DEC"]),
    st.sampled_from(["5L", "L5", "FRIL", "MON#2", "1#5", "*", "?", "MON-FRI", "0L", "7L", "SUN#1,SAT#5", "FRI"]),
).map(" ".join)


TOKENS = st.sampled_from(["*", "?", "-", "/", ",", "#", "L", "W", "LW", "5L", "L5", "FRIL", "MON#2", "15W", "31W",
                          "@daily", "@hourly", "@reboot", "@", " ", "  ", "\t", "\n", "0", "1", "5", "7", "12", "23",
                          "31", "59", "60", "9" * 30, "JAN", "MON", "SUN", "SAT", "DEC", "é", "\x00"])


@st.composite
def token_soup(draw):
    fields = [draw(st.lists(TOKENS, max_size=5).map("".join)) for _ in range(draw(st.integers(0, 7)))]
    return " ".join(fields)


def expand(i: int, text: str) -> set[int] | None:
    """The reference expansion of a standard field (None: not a valid standard field)."""
    lo, hi, names, span = FIELDS[i]
    top = 6 if i == 4 else hi
    if not text.isascii():  # 'ſun'.upper() == 'SUN': the spec refuses non-ASCII text
        return None
    out: set[int] = set()
    for item in text.upper().split(","):
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and len(step_text) < 4 and 1 <= int(step_text) <= span):
            return None

        def num(tok: str) -> int | None:
            if tok in names:
                return names[tok]
            if tok.isascii() and tok.isdigit() and len(tok) < 4 and lo <= int(tok) <= hi:
                return int(tok)
            return None

        if base in ("*", "?"):
            a, b = lo, top
        elif base.count("-") == 1:
            x, y = (num(t) for t in base.split("-"))
            if x is None or y is None or x > y:
                return None
            a, b = x, y
        else:
            v = num(base)
            if v is None:
                return None
            a, b = v, (max(top, v) if slash else v)
        out.update(v % 7 if i == 4 else v for v in range(a, b + 1, int(step_text) if slash else 1))
    return out


def matches(fields: list[str], sets: list[set[int]], w: datetime) -> bool:
    mins, hours, doms, months, dows = sets
    if w.minute not in mins or w.hour not in hours or w.month not in months:
        return False
    dm, dw = w.day in doms, (w.weekday() + 1) % 7 in dows
    star = fields[2][:1] in "*?" or fields[4][:1] in "*?"
    return (dm and dw) if star else (dm or dw)


def check_fire(spec: CronSpec, instant: datetime) -> datetime | None:
    """next_after raises only project errors; a result is aware UTC, strictly after, and the
    first fire after any instant just before it."""
    try:
        got = spec.next_after(instant)
    except PROJECT_ERRORS as exc:
        event(f"next_after: {type(exc).__name__}")
        return None
    event("next_after: a fire time")
    assert got.tzinfo is UTC
    assert got > instant
    if got - US >= instant:
        try:
            again = spec.next_after(got - US)
        except PROJECT_ERRORS:
            again = got  # e.g. the instant cannot be held in the zone
        assert again == got
    return got


@settings(FUZZ, max_examples=700)
@given(fields=standard_fields(), tz=st.sampled_from(ZONES), instant=instants())
def test_standard_cron_fires_where_the_fields_say(fields, tz, instant):
    text = " ".join(fields)
    sets = [expand(i, f) for i, f in enumerate(fields)]
    try:
        spec = CronSpec(text, tz)
    except SpecError:
        event("expression refused")
        # refused: a field is invalid, or the day fields can never match in the months given
        assert any(s is None for s in sets) or not any(
            matches(fields, sets, datetime(y, m, d, min(sets[1]), min(sets[0])))  # type: ignore[arg-type]
            for y in range(2024, 2053) for m in sets[3] for d in range(1, 32)  # type: ignore[union-attr]
            if d <= (29 if m == 2 and y % 4 == 0 else 28 if m == 2 else 30 if m in (4, 6, 9, 11) else 31)), text
        return
    assert all(s is not None for s in sets), text
    assert spec.describe() and spec.text().startswith("cron:")
    assert spec_from_text(spec.text(), tz=tz) == spec
    got = check_fire(spec, instant)
    if got is None:
        return
    zone = ZoneInfo(tz)
    loc = got.astimezone(zone)
    before = (got - US).astimezone(zone).utcoffset()
    gap_end = before is not None and before < loc.utcoffset()  # type: ignore[operator]  # clocks just jumped forward
    assert matches(fields, sets, loc.replace(tzinfo=None)) or (gap_end and not spec.is_wildcard), (text, tz, instant, got)  # type: ignore[arg-type]
    if not spec.is_wildcard:
        assert loc.fold == 0 or gap_end  # a fixed-time schedule fires at the first pass only


@settings(FUZZ, max_examples=700)
@given(text=st.one_of(token_soup(), st.text(max_size=40), EXTENDED, EXTENDED), tz=st.one_of(st.sampled_from(ZONES), st.text(max_size=12)),
       instant=instants())
def test_any_cron_text_raises_only_spec_errors(text, tz, instant):
    try:
        spec = CronSpec(text, tz)
    except SpecError:
        event("expression refused")
        return
    assert spec.describe()
    assert spec_from_text(spec.text(), tz=tz) == spec
    check_fire(spec, instant)
    try:
        spec.next_after(instant.replace(tzinfo=None))
    except NaiveDatetimeError:
        pass
    else:
        raise AssertionError("a naive instant was accepted")


# -- intervals ------------------------------------------------------------------------------------
DURATIONS = st.one_of(
    st.integers(1, 10**7), st.sampled_from(["15m", "1h", "1d", "30s", "1w", "1h30m", "0.5s", "1ms", "36525d"]),
    st.timedeltas(min_value=US), st.integers(-10, 10**15), st.floats(allow_nan=True, allow_infinity=True), st.timedeltas(),
    st.text(alphabet="0123456789.smhdwSMHDW \t", max_size=14), st.sampled_from(["1h30m", "5000000d", "1ms", "9" * 5000,
                                                                              "1" * 300 + ".", "1w2d", "2 hours"]),
    st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
)


@settings(FUZZ, max_examples=700)
@given(every=DURATIONS, anchor=st.one_of(instants(), st.none()), instant=instants())
def test_interval_fires_on_its_grid_and_raises_only_spec_errors(every, anchor, instant):
    try:
        spec = IntervalSpec(every, anchor)
    except SpecError:
        event("interval refused")
        return
    assert spec.describe() and spec.text().startswith("every:")
    try:
        got = spec.next_after(instant)
    except PROJECT_ERRORS as exc:
        event(f"next_after: {type(exc).__name__}")
        return
    event("next_after: a fire time")
    assert spec.anchor is not None
    assert got.tzinfo is UTC and got > instant
    assert (got - spec.anchor) % spec.every == timedelta(0)
    assert got == spec.anchor or got - spec.every <= instant  # no fire time skipped


@settings(FUZZ, max_examples=400)
@given(value=DURATIONS, field=st.sampled_from(["every", "misfire_grace"]))
def test_parse_duration_raises_only_spec_errors(value, field):
    try:
        td = parse_duration(value, field=field)
    except SpecError as exc:
        assert exc.field == field
        return
    assert td > timedelta(0)


@settings(FUZZ, max_examples=300)
@given(cron=st.one_of(st.none(), token_soup(), st.integers()), every=st.one_of(st.none(), DURATIONS),
       tz=st.one_of(st.none(), st.sampled_from(ZONES), st.text(max_size=8)), anchor=st.one_of(st.none(), instants()),
       stored=st.text(max_size=30))
def test_parse_spec_and_spec_from_text_raise_only_spec_errors(cron, every, tz, anchor, stored):
    for fn in (lambda: parse_spec(cron=cron, every=every, tz=tz, anchor=anchor),
               lambda: spec_from_text(stored, tz=tz, anchor=anchor),
               lambda: spec_from_text("every:" + stored, anchor=anchor),
               lambda: spec_from_text("cron:" + stored, tz=tz)):
        try:
            fn()
        except SpecError:
            pass
