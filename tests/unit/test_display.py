"""How the CLI shows things (linger_sched.display): one time format, durations, error previews,
tables that fit 100 columns, and stored text that cannot drive the terminal."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from linger_sched.display import (
    Column,
    cell_width,
    error_preview,
    fmt_duration,
    fmt_time,
    iso,
    plural,
    render_table,
    safe,
    truncate,
    wrap,
)

T = datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=timezone.utc)


def test_one_time_format_iso_8601_with_the_zones_offset() -> None:
    assert fmt_time(T) == "2026-12-01T08:00:00+00:00"
    assert fmt_time(T, "UTC") == "2026-12-01T08:00:00+00:00"
    assert fmt_time(T, "Europe/Berlin") == "2026-12-01T09:00:00+01:00"
    assert fmt_time(datetime(2026, 7, 1, 8, tzinfo=timezone.utc), "Europe/Berlin") == "2026-07-01T10:00:00+02:00"
    assert fmt_time(T, "America/Argentina/Buenos_Aires") == "2026-12-01T05:00:00-03:00"
    assert fmt_time(None) == "-"
    assert iso(T) == "2026-12-01T08:00:00.123456+00:00" and iso(None) is None
    assert iso(T, "Asia/Kolkata") == "2026-12-01T13:30:00.123456+05:30"
    assert datetime.fromisoformat(fmt_time(T, "Asia/Kolkata")) == T.replace(microsecond=0)


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0ms"), (0.0123, "12ms"), (1, "1s"), (4.24, "4.2s"), (30.0, "30s"), (59.99, "1m00s"),
    (65, "1m05s"), (3599.6, "1h00m"), (7380, "2h03m"), (86400 * 3 + 3600 * 4, "3d04h"), (-2, "0ms"),
])
def test_durations_have_no_plural_to_get_wrong(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_plural() -> None:
    assert (plural(0, "job"), plural(1, "job"), plural(2, "job")) == ("0 jobs", "1 job", "2 jobs")


def test_error_preview_is_the_exception_line_of_a_traceback() -> None:
    tb = ('Traceback (most recent call last):\n  File "t.py", line 3, in f\n    raise ValueError("bad")\n'
          "ValueError: bad value\nsecond line of the message")
    assert error_preview(tb) == "ValueError: bad value"
    chained = (tb + "\n\nDuring handling of the above exception, another exception occurred:\n\n"
               'Traceback (most recent call last):\n  File "t.py", line 9, in g\n    boom()\nKeyError: \'k\'')
    assert error_preview(chained) == "KeyError: 'k'"
    assert error_preview("handed back at shutdown\nmore") == "handed back at shutdown"
    assert error_preview(None) == "" and error_preview("  \n ") == ""
    assert error_preview("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"


def test_stored_text_cannot_drive_the_terminal() -> None:
    assert safe("a\x1b]0;title\x07b") == "a\\x1b]0;title\\x07b"
    assert safe("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert safe("tab\there\nnl") == "tab here\\nnl"
    assert safe("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"


def test_truncate_and_wrap_count_terminal_columns() -> None:
    assert truncate("billing.invoices", 10) == "billing..." and truncate("short", 10) == "short"
    assert cell_width("\u65e5\u672c\u8a9e") == 6
    assert cell_width(truncate("\u65e5\u672c\u8a9e\u65e5\u672c\u8a9e", 7)) <= 7
    assert wrap("at 09:00 on day 1 of the month", 12) == ["at 09:00 on", "day 1 of the", "month"]
    assert wrap("a_very_long_schedule_name_without_spaces", 16) == ["a_very_long_", "schedule_name_", "without_spaces"]
    assert wrap("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrst", "uvwxyz"]
    assert wrap("ab.cdefghijklmnop", 10) == ["ab.cdefghi", "jklmnop"]  # a separator too early: cut
    assert wrap("", 10) == [""]


def test_render_table_fits_the_width_by_shrinking_the_widest_column_first() -> None:
    columns = [Column("ID"), Column("TASK", shrink_to=8), Column("STATE"), Column("ERROR", shrink_to=8)]
    rows = [["1", "reports.send_weekly_summary_email_to_all_subscribers", "failed", "ValueError: " + "x" * 80],
            ["22", "add", "succeeded", ""]]
    text = render_table(columns, rows, width=60)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 60 and len(lines) == 3
    assert lines[0].split() == ["ID", "TASK", "STATE", "ERROR"]
    assert lines[1].startswith("1   reports.") and "..." in lines[1]
    wide = render_table(columns, rows, width=300)
    assert "x" * 80 in wide and "..." not in wide


def test_render_table_wraps_cells_lists_lines_and_adds_detail_lines() -> None:
    columns = [Column("NAME", shrink_to=10, wrap=True), Column("NEXT")]
    rows = [["billing.invoices.generate_monthly_customer_invoices", ["2027-01-01T09:00:00-03:00", "2027-02-01T09:00:00-03:00"]]]
    text = render_table(columns, rows, width=50, details=["at 09:00 on day 1 of the month (America/Argentina/Buenos_Aires)"])
    lines = text.splitlines()
    assert all(len(ln) <= 50 for ln in lines), text
    assert lines[1].endswith("2027-01-01T09:00:00-03:00") and lines[2].endswith("2027-02-01T09:00:00-03:00")
    name = "".join(ln[:23].strip() for ln in lines[1:] if not ln.startswith("  "))
    assert name == "billing.invoices.generate_monthly_customer_invoices"
    assert lines[-2].startswith("  at 09:00") and lines[-1].startswith("  ")
