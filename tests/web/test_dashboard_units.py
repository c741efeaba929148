"""The dashboard's pure parts, without a database: the chart geometry, schedule words, DST notes
on fire times, the CSRF token, and the refusal to serve an open address without auth."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from linger_sched.errors import ConfigError
from linger_sched.specs import CronSpec, IntervalSpec
from linger_sched.web import check_exposure
from linger_sched.web.charts import bar_chart, nice_top
from linger_sched.web.queries import describe, dst_note, fire_times
from linger_sched.web.security import BasicAuth, Csrf

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (99, 100),
                                            (101, 200), (4999, 5000), (5001, 10000)])
def test_the_chart_scale_is_a_round_number(value: int, top: int) -> None:
    assert nice_top(value) == top


def test_bars_stack_failures_on_successes_within_the_plot() -> None:
    c = bar_chart([3, 0, 5], [1, 0, 5], ["a", "b", "c"], label_every=2)
    assert (c.total_ok, c.total_failed) == (8, 6) and [x for x, _ in c.x_labels] == [c.bars[0].x + c.bars[0].width / 2,
                                                                                   c.bars[2].x + c.bars[2].width / 2]
    a, b, full = c.bars
    assert b.ok_height == b.failed_height == 0
    assert full.failed_y == c.top_line  # 10 of a scale of 10: the whole height
    assert a.ok_y + a.ok_height == c.baseline and a.failed_y + a.failed_height == a.ok_y
    assert a.title == "a: 3 succeeded, 1 failed" and [t for _, t in c.y_labels] == ["0", "5", "10"]
    assert bar_chart([], [], []).empty


def test_schedules_in_words() -> None:
    assert describe(CronSpec("0 9 * * MON-FRI")) == "At 09:00, Monday through Friday"
    assert describe(CronSpec("@daily", "Europe/Berlin")) == "At 00:00"
    assert describe(CronSpec("0 0 L * *")) == "At 00:00, on the last day of the month"
    assert describe(IntervalSpec("5m")) == "every 5 minutes" and describe(IntervalSpec("90m")) == "every 1 hour 30 minutes"


def test_words_fall_back_to_our_own_without_cron_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from linger_sched.web import queries

    monkeypatch.setitem(sys.modules, "cron_descriptor", None)  # not installed
    queries._cron_words.cache_clear()
    try:
        assert describe(CronSpec("0 9 * * MON-FRI", "Europe/Berlin")) == "at 09:00 on Monday through Friday"
    finally:
        queries._cron_words.cache_clear()


def test_dst_notes_on_fire_times() -> None:
    nightly = CronSpec("30 2 * * *", "Europe/Berlin")  # fixed time, in the gap on 2030-03-31
    start = datetime(2030, 3, 29, 12, tzinfo=UTC)
    fires = fire_times(nightly, nightly.next_after(start), 3, since=start)
    assert [(f.at.isoformat(), f.note) for f in fires] == [
        ("2030-03-30T02:30:00+01:00", None),
        ("2030-03-31T03:00:00+02:00", "DST change: CET UTC+01:00 \u2192 CEST UTC+02:00; moved to the end of the spring-forward gap"),
        ("2030-04-01T02:30:00+02:00", None),
    ]
    hourly = CronSpec("0 * * * *", "Europe/Berlin")  # a wildcard: no fire in the gap, nothing moved
    start = datetime(2030, 3, 31, 0, 30, tzinfo=UTC)
    fires = fire_times(hourly, hourly.next_after(start), 2, since=start)
    assert [(f.at.isoformat(), f.note) for f in fires] == [
        ("2030-03-31T03:00:00+02:00", "DST change: CET UTC+01:00 \u2192 CEST UTC+02:00"),
        ("2030-03-31T04:00:00+02:00", None),
    ]
    at = datetime(2030, 10, 27, 2, 15, tzinfo=BERLIN, fold=1)
    assert dst_note(hourly, at, at - timedelta(hours=1)) == "DST change: CEST UTC+02:00 \u2192 CET UTC+01:00; repeated hour: second pass"
    assert dst_note(IntervalSpec("1h"), at, None) is None
    assert fire_times(hourly, None, 3) == []


def test_csrf_tokens_are_signed_and_compared_whole() -> None:
    csrf = Csrf(b"sixteen bytes at least")
    t = csrf.new_token()
    assert csrf.valid(t) and csrf.accepts(t, t)
    assert not csrf.accepts(t, csrf.new_token()) and not csrf.accepts(None, t) and not csrf.accepts(t, "")
    assert not Csrf(b"another secret of 16+").valid(t)
    assert not csrf.valid("no-dot") and not csrf.valid("a.b.c") and not csrf.valid("\u00e9.x")


def test_an_open_address_without_auth_is_refused_with_the_options_named() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", BasicAuth("ops", "pw"))
    with pytest.raises(ConfigError) as info:
        check_exposure("0.0.0.0", None)
    message = str(info.value)
    assert message.startswith("--host: refusing to serve the dashboard on '0.0.0.0' without authentication")
    assert "LINGER_DASHBOARD_USER" in message and "LINGER_DASHBOARD_PASSWORD" in message and "auth=" in message


def test_every_asset_is_package_data() -> None:
    """The wheel ships every template and static file (pyproject's package-data globs match
    them all): the dashboard loads nothing from elsewhere."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["linger_sched"]
    package = root / "linger_sched"
    assets = [p.relative_to(package).as_posix() for d in ("web/templates", "web/static") for p in (package / d).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts]
    assert len(assets) >= 10
    assert [a for a in assets if not any(fnmatch.fnmatch(a, g) and a.count("/") == g.count("/") for g in globs)] == []
