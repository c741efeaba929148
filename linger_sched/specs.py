"""Cron and interval specs: parse, validate, describe, and compute the next fire time.

Pure functions: no I/O and no clock. Every instant returned is an aware UTC ``datetime``.

Fields are expanded here (lists, ranges, steps, names), not by croniter: croniter 7's
``expand()`` turns a range with equal ends (``5-5``, ``JAN-JAN``) into ``*`` and ``5-5/2`` into
``*/2``. Matching and the next fire time are computed here too (local wall times in the
schedule's zone, then mapped to UTC) because croniter's own iteration does not follow the rules
of DESIGN.md: it fires fixed-time schedules twice in the fall-back overlap, applies the OR rule
to ``*/2``-style day fields, rejects ``LW`` and ``5L``, and moves ``31W`` to the last weekday of
short months.

Field items (Debian cron): ``*`` (or ``?``) is the whole field (day of week: 0-6), ``N`` one
value, ``A-B`` the values A through B (A <= B; ``5-5`` is just 5), ``X/S`` every S-th value of
the range X starting at its first value, where ``N/S`` means ``N-<end of field>/S``. A step may
be at most the number of values of its field (60 minutes, 24 hours, 31 days, 12 months, 7
weekdays): a larger one could only ever match the start of its range and is refused (``*/90``
is not "every 90 minutes"; use ``every: 90m``). Day of week 7 is Sunday, like 0.

The spec works for any instant a ``datetime`` can hold; where a fire time or a conversion would
leave years 1-9999, ``next_after`` raises :class:`SpecError`, never ``OverflowError``.

DST rules (Debian cron), for a matching local wall time ``w``:

* ``w`` exists once: it fires at that instant.
* ``w`` falls in a spring-forward gap: a *fixed-time* schedule fires at the first instant after
  the gap (all slots of one gap coalesce into that one fire); a *wildcard* schedule does not
  fire. This also holds for gaps longer than an hour: Pacific/Apia skipped 2011-12-30, so a
  daily ``0 12 * * *`` there fires at 2011-12-31 00:00 local (2011-12-30T10:00Z, the gap's end)
  and again at 12:00 local. (Debian cron itself treats jumps over 3 h as a clock reset; we keep
  the one rule so that e.g. a yearly ``0 0 30 12 *`` is not lost.)
* ``w`` falls in a fall-back overlap: a fixed-time schedule fires at the first pass only; a
  wildcard schedule fires at both passes.
"""

from __future__ import annotations

import calendar
import math
import re
from bisect import bisect_left
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import NaiveDatetimeError, SpecError

__all__ = ["CronSpec", "IntervalSpec", "parse_duration", "parse_spec", "spec_from_text",
           "validate_tz"]

_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)

# ---------------------------------------------------------------------------------------------
# durations and zones

_UNITS = {unit: secs for secs, names in (
    (604800, "w week weeks"), (86400, "d day days"), (3600, "h hr hrs hour hours"),
    (60, "m min mins minute minutes"), (1, "s sec secs second seconds"), (0.001, "ms"),
) for unit in names.split()}
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)\s*")
_MAX_DURATION_TEXT = 100  # '1w 2d 3h 4m 5s' is 14: anything near this is not a duration
_MAX_EXPR = 255  # the longest cron expression accepted (and the size of the stored column)


def _clip(text: str, keep: int = 60) -> str:
    """``text`` for an error message: a very long input is not echoed in full."""
    return text if len(text) <= _MAX_EXPR else f"{text[:keep]}... ({len(text)} characters)"


def parse_duration(value: str | float | timedelta, *, field: str = "duration") -> timedelta:
    """``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``, ``"1h30m"``, ``"90"`` (seconds), 90,
    1.5 or a ``timedelta``; must be positive."""
    try:
        expr = _clip(str(value))
    except ValueError:  # an int of more than 4300 digits cannot even be printed
        expr = f"<{type(value).__name__} too large to print>"

    def bad(msg: str) -> SpecError:
        return SpecError(msg, expr=expr, field=field)

    try:
        if isinstance(value, timedelta):
            td = value
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("expected a duration such as '15m' or a number of seconds, "
                      f"got {type(value).__name__}")
        elif isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise bad("duration must be finite")
            td = timedelta(seconds=value)
        else:
            s = value.strip().lower()
            if len(s) > _MAX_DURATION_TEXT:
                raise bad(f"duration text is longer than {_MAX_DURATION_TEXT} characters")
            if re.fullmatch(r"[0-9]+", s):
                td = timedelta(seconds=int(s))
            elif re.fullmatch(r"[0-9]+\.[0-9]+", s):
                td = timedelta(seconds=float(s))
            else:
                td, pos, seen = timedelta(0), 0, set()
                while pos < len(s):  # anchored at pos: linear, no rescanning of the text
                    m = _DUR_PART.match(s, pos)
                    if m is None:
                        break
                    unit = m.group(2)
                    if unit not in _UNITS or _UNITS[unit] in seen:
                        break
                    seen.add(_UNITS[unit])
                    td += timedelta(seconds=float(m.group(1)) * _UNITS[unit])
                    pos = m.end()
                if not s or pos != len(s):
                    raise bad("not a duration; use e.g. '30s', '15m', '2h', '1d', '1w', "
                              "'1h30m' or a number of seconds")
    except OverflowError:
        raise bad("duration is too large") from None
    if td <= timedelta(0):
        raise bad("duration must be greater than zero")
    return td


def validate_tz(tz: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA zone name; ``SpecError(field="tz")`` when unknown."""
    if not isinstance(tz, str) or not tz.strip():
        raise SpecError("time zone must be a non-empty IANA name such as 'Europe/Berlin'",
                        expr=str(tz), field="tz")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Berlin')",
                        expr=tz, field="tz") from None


def _utc(instant: object, what: str = "instant") -> datetime:
    if not isinstance(instant, datetime):
        raise SpecError(f"{what} must be a datetime, got {type(instant).__name__}",
                        expr=repr(instant), field=what)
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise NaiveDatetimeError(what, instant)
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise SpecError(f"{what} is outside the years 1-9999 in UTC", expr=instant.isoformat(),
                        field=what) from None


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


# ---------------------------------------------------------------------------------------------
# cron

_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
_MONTH_NAMES = ("", "January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = {n[:3].upper(): i for i, n in enumerate(_MONTH_NAMES) if n}
_DAYS = {n[:3].upper(): i for i, n in enumerate(_DAY_NAMES)}
# name, lowest, highest, names
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_ORDINALS = ("", "first", "second", "third", "fourth", "fifth")


def _star(text: str) -> bool:
    return text[:1] in ("*", "?")


def _even_step(values: list[int], count: int) -> int | None:
    """``s`` when ``values`` are 0, s, 2s, ... splitting ``count`` evenly with ``s > 1``
    (every 15 minutes, every 6 hours), else None."""
    if len(values) < 2 or values[0] != 0 or count % len(values):
        return None
    step = count // len(values)
    return step if values == list(range(0, count, step)) else None


class CronSpec:
    """A 5-field cron expression evaluated in an IANA zone (see the module doc for DST)."""

    def __init__(self, expr: str, tz: str | None = "UTC") -> None:
        if not isinstance(expr, str):
            raise SpecError("a cron expression must be a string", expr=repr(expr),
                            field="expression")
        self.expr = expr.strip()
        if len(self.expr) > _MAX_EXPR:
            raise SpecError(f"a cron expression is at most {_MAX_EXPR} characters long",
                            expr=_clip(self.expr), field="expression")
        if not self.expr.isascii():
            # str.upper() and \w know more than ASCII: 'ſun'.upper() == 'SUN', '０' is a digit
            raise SpecError("a cron expression is ASCII text (digits, names, * ? , - / L W #)",
                            expr=self.expr, field="expression")
        self.tz = "UTC" if tz is None else tz
        self._zone = validate_tz(self.tz)
        text = self.expr
        if text.startswith("@"):
            if text.lower() not in _ALIASES:
                raise SpecError(f"unknown alias; use one of {', '.join(_ALIASES)}", expr=self.expr,
                                field="expression")
            text = _ALIASES[text.lower()]
        parts = text.upper().split()
        if len(parts) != 5:
            raise SpecError("expected 5 fields (minute hour day-of-month month day-of-week), "
                            f"got {len(parts)}", expr=self.expr, field="expression")
        self._fields = tuple(parts)
        m, h, dom, mon, dow = parts
        self._minutes = sorted({v for item in m.split(",") for v in self._item(0, item)})
        self._hours = sorted({v for item in h.split(",") for v in self._item(1, item)})
        self._months = sorted({v for item in mon.split(",") for v in self._item(3, item)})
        self._parse_dom(dom)
        self._parse_dow(dow)
        self._and_rule = _star(dom) or _star(dow)
        self.is_wildcard = _star(m) or _star(h)
        self._day_cache: dict[tuple[int, int], tuple[int, ...]] = {}
        self._check_feasible()

    # -- parsing ------------------------------------------------------------------------------
    def _err(self, i: int, msg: str) -> SpecError:
        return SpecError(msg, expr=self.expr, field=_FIELDS[i][0])

    def _value(self, i: int, tok: str, item: str) -> int:
        _, lo, hi, names = _FIELDS[i]
        if re.fullmatch(r"[0-9]+", tok):
            if len(tok.lstrip("0")) > 4:  # int() of thousands of digits is slow, and out of range anyway
                raise self._err(i, f"{tok[:8]}... in {item[:20]!r} is out of range {lo}-{hi}")
            v = int(tok)
        elif tok in names:
            v = names[tok]
        else:
            raise self._err(i, f"invalid value {tok!r} in {item!r}")
        if not lo <= v <= hi:
            raise self._err(i, f"{v} in {item!r} is out of range {lo}-{hi}")
        return v

    def _item(self, i: int, item: str) -> list[int]:
        """Expand one standard list item of field ``i``: ``*``/``?``, ``N``, ``A-B``, each with an
        optional ``/S``; names in month and day of week. The extensions (L, W, #) are handled by
        the callers. See the module doc for the rules."""
        name, lo, hi, _ = _FIELDS[i]
        top = 6 if i == 4 else hi  # '*' in day of week is 0-6 (7 is Sunday again)
        count = 7 if i == 4 else hi - lo + 1
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not re.fullmatch(r"[0-9]{1,4}", step_text) or int(step_text) == 0:
                raise self._err(i, f"invalid step {step_text[:8]!r} in {item[:20]!r}")
            step = int(step_text)
            if step > count:
                hint = f"; for every {step} minutes use every: {step}m" if i == 0 else ""
                raise self._err(i, f"step {step} in {item!r} is larger than the {count} values of "
                                   f"the {name} field: it would only match the start of the range"
                                   f"{hint}")
        if base in ("*", "?"):
            start, end = lo, top
        elif base.count("-") == 1:
            x, _, y = base.partition("-")
            start, end = self._value(i, x, item), self._value(i, y, item)
            if start > end:
                raise self._err(i, f"range {item!r} runs backwards")
        else:
            start = self._value(i, base, item)
            end = max(top, start) if slash else start  # 'N/S' is N-<end of field>/S
        return list(range(start, end + 1, step))
    def _parse_dom(self, text: str) -> None:
        self._dom, self._dom_last, self._dom_lw, self._dom_w = set(), False, False, set()
        for item in text.split(","):
            if item == "L":
                self._dom_last = True
            elif item == "LW":
                self._dom_lw = True
            elif re.fullmatch(r"[0-9]+W", item):
                self._dom_w.add(self._value(2, item[:-1], item))
            else:
                self._dom.update(self._item(2, item))

    def _parse_dow(self, text: str) -> None:
        self._dow: set[int] = set()
        self._dow_nth: set[tuple[int, int]] = set()
        self._dow_last: set[int] = set()
        for item in text.split(","):
            if "#" in item:
                wd, _, k = item.partition("#")
                if not re.fullmatch(r"[1-5]", k):
                    raise self._err(4, f"occurrence in {item!r} must be 1-5")
                self._dow_nth.add((self._value(4, wd, item) % 7, int(k)))
            elif item == "L":
                raise self._err(4, "'L' in day of week needs a weekday, e.g. '5L' (last Friday)")
            elif m := re.fullmatch(r"L(\w+)|(\w+)L", item):
                self._dow_last.add(self._value(4, m.group(1) or m.group(2), item) % 7)
            else:
                self._dow.update(v % 7 for v in self._item(4, item))

    def _check_feasible(self) -> None:
        for mo in self._months:
            lengths = (28, 29) if mo == 2 else (30,) if mo in (4, 6, 9, 11) else (31,)
            if any(self._days_for(n, fw) for n in lengths for fw in range(7)):
                return
        field = 4 if _star(self._fields[2]) else 2
        raise self._err(field, "the day fields never match a day of the given months")

    # -- matching -----------------------------------------------------------------------------
    def _days_for(self, length: int, first: int) -> tuple[int, ...]:
        """Matching days of a month of ``length`` days whose 1st is cron weekday ``first``."""
        key = (length, first)
        if key in self._day_cache:
            return self._day_cache[key]

        def wd(d: int) -> int:
            return (first + d - 1) % 7

        special = {length} if self._dom_last else set()
        if self._dom_lw:
            special.add(length - {6: 1, 0: 2}.get(wd(length), 0))
        for n in self._dom_w:
            if n <= length:  # '31W' does not fire in a 30-day month; W never leaves the month
                special.add(n + {6: -1 if n > 1 else 2, 0: 1 if n < length else -2}.get(wd(n), 0))
        out = []
        for d in range(1, length + 1):
            dm = d in self._dom or d in special
            w = wd(d)
            dw = (w in self._dow or (w, (d - 1) // 7 + 1) in self._dow_nth
                  or (w in self._dow_last and d + 7 > length))
            if (dm and dw) if self._and_rule else (dm or dw):
                out.append(d)
        self._day_cache[key] = days = tuple(out)
        return days

    def _next_wall(self, w: datetime) -> datetime | None:
        """The first matching local wall time >= ``w`` (naive, whole minute)."""
        y, mo, d, h, mi = w.year, w.month, w.day, w.hour, w.minute
        months, hours, mins = self._months, self._hours, self._minutes
        while y <= 9999:
            if mo not in months:
                i = bisect_left(months, mo)
                y, mo = (y + 1, months[0]) if i == len(months) else (y, months[i])
                d, h, mi = 1, 0, 0
                continue
            days = self._days_for(calendar.monthrange(y, mo)[1], (date(y, mo, 1).weekday() + 1) % 7)
            i = bisect_left(days, d)
            if i == len(days):
                y, mo, d, h, mi = (y + 1, 1, 1, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0)
                continue
            if days[i] != d:
                d, h, mi = days[i], 0, 0
            i = bisect_left(hours, h)
            if i == len(hours):
                d, h, mi = d + 1, 0, 0
                continue
            if hours[i] != h:
                h, mi = hours[i], 0
            i = bisect_left(mins, mi)
            if i == len(mins):
                h, mi = h + 1, 0
                continue
            return datetime(y, mo, d, h, mins[i])
        return None

    def _resolve(self, w: datetime) -> tuple[str, datetime, datetime | None]:
        """``("unique", utc, None)``, ``("overlap", first, second)``, ``("gap", end, None)``."""
        oa = w.replace(tzinfo=self._zone).utcoffset()
        ob = w.replace(tzinfo=self._zone, fold=1).utcoffset()
        assert oa is not None and ob is not None  # a ZoneInfo always gives an offset
        ua = (w - oa).replace(tzinfo=UTC)
        if oa == ob:
            return "unique", ua, None
        ub = (w - ob).replace(tzinfo=UTC)
        if oa > ob:
            return "overlap", ua, ub
        # gap: fold=0 applies the old offset (an instant after the transition), fold=1 the new
        # one (an instant before it); bisect for the transition, the first instant after the gap.
        lo, hi = ub, ua
        while hi - lo > _SECOND:
            mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
            if mid.astimezone(self._zone).utcoffset() == ob:
                hi = mid
            else:
                lo = mid
        return "gap", hi, None

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant`` (aware, any zone), as aware UTC.
        :class:`SpecError` when there is none within the years 1-9999 (in UTC and in the
        schedule's zone)."""
        u = _utc(instant)
        try:
            return self._next_after(u)
        except OverflowError:
            # the ends of the datetime range: a local wall time or its UTC instant would leave
            # years 1-9999 (e.g. 9999-12-31 23:30 in New York is in the year 10000 in UTC)
            raise SpecError("no fire time within the years 1-9999 after "
                            f"{u.isoformat()}", expr=self.expr, field="expression") from None

    def _next_after(self, u: datetime) -> datetime:
        loc = u.astimezone(self._zone)
        wi = loc.replace(tzinfo=None, second=0, microsecond=0)
        wild = self.is_wildcard
        best = None
        if wild and loc.fold == 0:
            # ``instant`` may be in the first pass of an overlap: the second pass of an earlier
            # wall time is then still ahead of it.
            off0, off1 = loc.utcoffset(), loc.replace(fold=1).utcoffset()
            assert off0 is not None and off1 is not None  # a ZoneInfo always gives an offset
            d = off0 - off1
            if d > timedelta(0):
                w = self._next_wall(wi - d)
                while w is not None and w <= wi + d:
                    kind, _, second = self._resolve(w)
                    if kind == "overlap" and second is not None and second > u:
                        best = second
                        break
                    w = self._next_wall(w + _MINUTE)
        w = self._next_wall(wi + _MINUTE)
        while w is not None:
            kind, first, second = self._resolve(w)
            if kind == "gap" and wild:
                after = first.astimezone(self._zone).replace(tzinfo=None)
                w = self._next_wall(max(after.replace(second=0, microsecond=0), w + _MINUTE))
                continue
            cand = first if first > u else second if (wild and second and second > u) else None
            if cand is not None:
                best = cand if best is None else min(best, cand)
                break
            w = self._next_wall(w + _MINUTE)
        if best is None:
            raise SpecError("no fire time before the year 10000", expr=self.expr,
                            field="expression")
        return best

    # -- presentation -------------------------------------------------------------------------
    def _dom_item(self, item: str) -> str:
        if item == "L":
            return "the last day"
        if item == "LW":
            return "the last weekday"
        if item.endswith("W"):
            return f"the weekday nearest day {int(item[:-1])}"
        if re.fullmatch(r"[0-9]+", item):
            return f"day {int(item)}"
        if re.fullmatch(r"[0-9]+-[0-9]+", item):
            a, b = item.split("-")
            if int(a) == int(b):
                return f"day {int(a)}"
            return f"days {int(a)} through {int(b)}"
        return f"days {item}"

    def _dow_item(self, item: str) -> str:
        def name(tok: str) -> str:
            return _DAY_NAMES[self._value(4, tok, item) % 7]
        if "#" in item:
            wd, _, k = item.partition("#")
            return f"the {_ORDINALS[int(k)]} {name(wd)} of the month"
        if m := re.fullmatch(r"L(\w+)|(\w+)L", item):
            return f"the last {name(m.group(1) or m.group(2))} of the month"
        if re.fullmatch(r"\w+-\w+", item):
            a, b = item.split("-")
            if name(a) == name(b):
                return name(a)
            return f"{name(a)} through {name(b)}"
        if re.fullmatch(r"\w+", item):
            return name(item)
        return f"weekdays {item}"

    def describe(self) -> str:
        """English, e.g. ``"at 09:30 on Monday through Friday"`` or ``"every 15 minutes"``."""
        m, h, dom, mon, dow = self._fields
        mins, hours = self._minutes, self._hours
        # by the values a field matches, not its text: "*/1" is "*", "*/60" is minute 0
        all_hours = len(hours) == 24
        every_m, every_h = _even_step(mins, 60), _even_step(hours, 24)
        if len(mins) == 60 and all_hours:
            out = "every minute"
        elif every_m and all_hours:
            out = f"every {every_m} minutes"
        elif len(mins) == 1 and (all_hours or every_h):
            out = "every hour" if all_hours else f"every {every_h} hours"
            out += "" if mins[0] == 0 else f" at minute {mins[0]}"
        elif not all_hours and len(mins) * len(hours) <= 4:
            out = "at " + _join([f"{hh:02d}:{mm:02d}" for hh in hours for mm in mins])
        else:
            out = f"at minute {m} past " + ("every hour" if all_hours else f"hour {h}")
        # a day field that begins with * and matches every day is no condition (the OR rule
        # is decided by the text: see _and_rule)
        any_dom = _star(dom) and self._dom == set(range(1, 32))
        any_dow = _star(dow) and self._dow == set(range(7))
        days = []
        if not any_dom:
            items = [self._dom_item(x) for x in dom.split(",")]
            days.append("on " + _join(items) + " of the month")
        if not any_dow:
            days.append("on " + _join([self._dow_item(x) for x in dow.split(",")], "or"))
        if days:
            out += " " + (" and " if self._and_rule else " or ").join(days)
        if len(self._months) < 12:
            out += " in " + _join([_MONTH_NAMES[x] for x in self._months])
        elif not days and out.startswith("at ") and not all_hours:
            out += " every day"
        return out + ("" if self.tz == "UTC" else f" ({self.tz})")

    def text(self) -> str:
        """Canonical storable text (aliases expanded, upper case): ``"cron:0 0 1 * *"``."""
        return "cron:" + " ".join(self._fields)

    def __repr__(self) -> str:
        return f"CronSpec({self.expr!r}, tz={self.tz!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSpec) and (self.text(), self.tz) == (other.text(), other.tz)

    def __hash__(self) -> int:
        return hash((self.text(), self.tz))


# ---------------------------------------------------------------------------------------------
# intervals


def _plural(n: float, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


class IntervalSpec:
    """Elapsed time: fires at ``anchor + k * every`` (k >= 0) in absolute time, DST-immune."""

    tz = "UTC"
    is_wildcard = True

    def __init__(self, every: str | float | timedelta,
                 anchor: datetime | None = None) -> None:
        self.every = parse_duration(every, field="every")
        if anchor is not None:
            if not isinstance(anchor, datetime) or anchor.utcoffset() is None:
                raise SpecError("anchor must be a timezone-aware datetime", expr=repr(anchor),
                                field="anchor")
            anchor = _utc(anchor, "anchor")
        self.anchor = anchor

    def with_anchor(self, anchor: datetime) -> IntervalSpec:
        return IntervalSpec(self.every, anchor)

    def next_after(self, instant: datetime) -> datetime:
        """The first ``anchor + k * every`` strictly after ``instant``, as aware UTC."""
        u = _utc(instant)
        if self.anchor is None:
            raise SpecError("interval has no anchor", expr=self.text(), field="anchor")
        if u < self.anchor:
            return self.anchor
        try:
            return self.anchor + ((u - self.anchor) // self.every + 1) * self.every
        except OverflowError:
            raise SpecError(f"no fire time within the years 1-9999 after {u.isoformat()}",
                            expr=self.text(), field="every") from None

    def describe(self) -> str:
        total_us = self.every // timedelta(microseconds=1)
        secs, us = divmod(total_us, 10**6)
        d, rest = divmod(secs, 86400)
        parts = [_plural(d, "day")] if d else []
        hh, rest = divmod(rest, 3600)
        mm, ss = divmod(rest, 60)
        parts += [_plural(hh, "hour")] if hh else []
        parts += [_plural(mm, "minute")] if mm else []
        if ss or us:
            parts.append(_plural(ss + us / 10**6 if us else ss, "second"))
        if len(parts) == 1 and parts[0].startswith("1 "):
            return "every " + parts[0][2:]
        return "every " + " ".join(parts)

    def text(self) -> str:
        """Canonical storable text without the anchor: ``"every:900s"``."""
        secs, us = divmod(self.every // timedelta(microseconds=1), 10**6)
        return f"every:{secs}s" if not us else f"every:{secs}.{us:06d}".rstrip("0") + "s"

    def __repr__(self) -> str:
        return f"IntervalSpec({self.text()[6:]!r}, anchor={self.anchor!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IntervalSpec)
                and (self.every, self.anchor) == (other.every, other.anchor))

    def __hash__(self) -> int:
        return hash((self.every, self.anchor))


# ---------------------------------------------------------------------------------------------
# entry points


def parse_spec(*, cron: str | None = None, every: str | float | timedelta | None = None,
               tz: str | None = None, anchor: datetime | None = None) -> CronSpec | IntervalSpec:
    """Exactly one of ``cron`` / ``every``. A zone applies to cron only (an interval is elapsed
    time), so ``every`` with a ``tz`` other than UTC is an error; ``anchor`` is ignored for cron."""
    if (cron is None) == (every is None):
        raise SpecError("give exactly one of cron or every", expr=f"cron={cron!r} every={every!r}",
                        field="cron/every")
    if cron is not None:
        return CronSpec(cron, "UTC" if tz is None else tz)
    if tz is not None and tz not in ("UTC", "Etc/UTC"):
        raise SpecError("a time zone applies to cron schedules only; an interval is elapsed time "
                        "and ignores DST", expr=str(tz), field="tz")
    assert every is not None  # exactly one of cron / every was checked above
    return IntervalSpec(every, anchor)


def spec_from_text(text: str, tz: str | None = None,
                   anchor: datetime | None = None) -> CronSpec | IntervalSpec:
    """Inverse of ``.text()``: ``"cron:..."`` (pass ``tz``), ``"every:...s"`` (pass ``anchor``)."""
    kind, sep, body = str(text).partition(":")
    if sep and kind == "cron":
        return parse_spec(cron=body, tz=tz)
    if sep and kind == "every":
        return parse_spec(every=body, tz=tz, anchor=anchor)
    raise SpecError("stored spec text must start with 'cron:' or 'every:'", expr=str(text),
                    field="spec")
