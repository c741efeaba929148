"""How the command line shows things: one time format, durations, error previews, and tables
that fit the terminal (default 100 columns).

Times are ISO 8601 to the second with an offset (``2026-12-01T09:00:00+01:00``): a schedule's
times in its own zone, every other time in UTC. JSON output keeps the stored precision
(:func:`iso`). Text that comes from the database (task and schedule names, errors) is shown
with its control characters escaped, so that a stored value cannot drive the terminal.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_WIDTH = 100
MIN_WIDTH = 60
ELLIPSIS = "..."

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates ("Trojan Source")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@lru_cache(maxsize=64)
def _zone(tz: str) -> Any:
    return timezone.utc if tz == "UTC" else ZoneInfo(tz)


def fmt_time(value: datetime | None, tz: str | None = None) -> str:
    """``value`` as ISO 8601 to the second with the offset of zone ``tz`` (default UTC), e.g.
    ``2026-12-01T09:00:00+01:00``; ``-`` for None."""
    if value is None:
        return "-"
    return value.astimezone(_zone(tz or "UTC")).isoformat(timespec="seconds")


def iso(value: datetime | None, tz: str | None = None) -> str | None:
    """``value`` for JSON: ISO 8601 with the offset of zone ``tz`` (default UTC), at the
    precision stored; None stays None."""
    if value is None:
        return None
    return value.astimezone(_zone(tz or "UTC")).isoformat()


def fmt_duration(seconds: float | None) -> str:
    """A short duration with no plural to get wrong: ``350ms``, ``4.2s``, ``30s``, ``1m05s``,
    ``2h03m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 59.95:
        return f"{s:.1f}".rstrip("0").rstrip(".") + "s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def plural(n: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def safe(text: Any) -> str:
    """``text`` on one line with its control characters escaped (``\\x1b``, ``\\n``)."""
    return _UNSAFE.sub(lambda m: " " if m.group() == "\t" else repr(m.group())[1:-1], str(text))


def error_preview(text: str | None) -> str:
    """The line of a stored error that says what went wrong: the exception line of a Python
    traceback (the last one, after its chained ones), else the first line; escaped."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback (most recent call last)"):
        frames = [i for i, ln in enumerate(lines) if ln.startswith(" ")]
        after = frames[-1] + 1 if frames else 1
        if after < len(lines):
            return safe(lines[after].strip())
    return safe(lines[0].strip())


def cell_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide East Asian characters take two, combining
    marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending with ``...`` when it was cut."""
    if cell_width(text) <= width:
        return text
    room = max(0, width - len(ELLIPSIS))
    out, used = [], 0
    for c in text:
        w = cell_width(c)
        if used + w > room:
            break
        out.append(c)
        used += w
    return "".join(out) + ELLIPSIS[: max(0, width - used)]


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns, broken at spaces where it can be and
    inside a word (a long name) where it cannot."""
    width = max(1, width)
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if cell_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while cell_width(word) > width:  # a word longer than a line (a name): cut it
            cut, used = 0, 0
            while cut < len(word) and used + cell_width(word[cut]) <= width:
                used += cell_width(word[cut])
                cut += 1
            # after a separator of a dotted or snake_case name, unless that leaves little
            soft = max(word.rfind(sep, 0, cut) for sep in "._-/:") + 1
            cut = soft if soft > cut // 2 else max(cut, 1)
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line or not lines:
        lines.append(line)
    return lines


def terminal_width() -> int:
    """The width output is fitted to: ``$COLUMNS``, else the terminal's, else 100 (output to
    a pipe or a file); at least 60."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


@dataclass(frozen=True)
class Column:
    """A column of :func:`render_table`. ``shrink_to``: None keeps the column as wide as its
    widest cell; a number lets it narrow down to that many columns when the table is too
    wide, its cells then cut (``...``) or, with ``wrap``, continued on the next lines."""

    header: str
    shrink_to: int | None = None
    wrap: bool = False


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str | Sequence[str]]], *, width: int,
    details: Sequence[str | None] | None = None, gap: int = 2,
) -> str:
    """Rows under their headers, fitted to ``width`` columns where the shrinkable columns
    allow it (the widest shrinks first). A cell is a string or a list of lines; every string
    is escaped (:func:`safe`). ``details``: per row, a line of text below it, indented by two
    and wrapped to ``width``."""
    table = [[[safe(c)] if isinstance(c, str) else [safe(x) for x in c] or [""] for c in row] for row in rows]
    widths = [max([cell_width(col.header)] + [cell_width(ln) for row in table for ln in row[i]])
              for i, col in enumerate(columns)]
    excess = sum(widths) + gap * (len(columns) - 1) - width
    while excess > 0:
        slack = [(w, i) for i, (w, col) in enumerate(zip(widths, columns))
                 if col.shrink_to is not None and w > max(col.shrink_to, cell_width(col.header))]
        if not slack:
            break
        _, i = max(slack)
        widths[i] -= 1
        excess -= 1
    out = [_line([c.header for c in columns], widths, gap)]
    for n, row in enumerate(table):
        cells = []
        for i, (col, lines) in enumerate(zip(columns, row)):
            if col.wrap:
                cells.append([part for ln in lines for part in wrap(ln, widths[i])])
            else:
                cells.append([truncate(ln, widths[i]) for ln in lines])
        for k in range(max(len(c) for c in cells)):
            out.append(_line([c[k] if k < len(c) else "" for c in cells], widths, gap))
        detail = details[n] if details is not None else None
        if detail:
            out.extend("  " + part for part in wrap(safe(detail), width - 2))
    return "\n".join(out)


def _line(cells: Sequence[str], widths: Sequence[int], gap: int) -> str:
    return (" " * gap).join(c + " " * (w - cell_width(c)) for c, w in zip(cells, widths)).rstrip()
