"""plan(): the pure occurrence math of one schedule at one instant, table-driven with explicit
instants. Huge gaps (days of an every-second schedule, months of an every-minute cron) must
give the exact latest fire time and the exact count without enumerating every fire time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from linger_sched import scheduler as sched_module
from linger_sched.scheduler import plan, spec_from_row
from linger_sched.store import Occurrence, ScheduleRow

T0 = datetime(2030, 1, 1, tzinfo=UTC)
THRESHOLD = 32.0
INT32_MAX = 2**31 - 1


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(spec: str, next_run_at: datetime, *, tz: str = "UTC", anchor: datetime | None = T0, **options: Any) -> ScheduleRow:
    return ScheduleRow(
        name="x", task="t", spec=spec, tz=tz, anchor=anchor if spec.startswith("every:") else None, args="{}",
        options=json.dumps(options), next_run_at=next_run_at, last_run_at=None, paused=False, enabled=True,
        spec_hash="h", updated_at=T0,
    )


def run(r: ScheduleRow, now: datetime, *, active: bool = False) -> tuple[list[tuple[datetime, str, int]], datetime | None, list[str | None]]:
    p = plan(r, spec_from_row(r), now, active=active, threshold=THRESHOLD)
    return [(o.scheduled_for, o.state, o.occurrences) for o in p.occurrences], p.next_run_at, [o.reason for o in p.occurrences]


DAY = 86400
THREE_DAYS = 3 * DAY  # every 1 s, down for 3 days: 259,200 missed fire times after t0


@dataclass
class Case:
    id: str
    spec: str
    next_run_at: datetime
    now: datetime
    options: dict[str, Any]
    want: list[tuple[datetime, str, int]]
    next_run_at_after: datetime
    active: bool = False
    reasons: list[str] = field(default_factory=list)  # substrings, one per occurrence (or none)


CASES = [
    # -- intervals: exact, whatever the gap ------------------------------------------------
    Case("every1s-3days-coalesce", "every:1s", s(1), s(THREE_DAYS + 0.5), {},
         [(s(THREE_DAYS), "queued", THREE_DAYS)], s(THREE_DAYS + 1),
         reasons=[f"coalesced {THREE_DAYS} occurrences from {s(1).isoformat()}"]),
    Case("every1s-3days-all", "every:1s", s(1), s(THREE_DAYS + 0.5), {"misfire": "all", "max_catch_up": 5, "overlap": "allow"},
         [(s(1), "skipped", THREE_DAYS - 5)] + [(s(THREE_DAYS - 4 + k), "queued", 1) for k in range(5)], s(THREE_DAYS + 1),
         reasons=["max_catch_up (5)"] + [""] * 5),
    Case("every1s-3days-skip", "every:1s", s(1), s(THREE_DAYS + 0.5), {"misfire": "skip", "overlap": "allow"},
         # late: more than 32 s before now (fire times up to now - 32.5 s); the last 32 ran on time
         [(s(1), "skipped", THREE_DAYS - 32)] + [(s(THREE_DAYS - 31 + k), "queued", 1) for k in range(32)], s(THREE_DAYS + 1),
         reasons=["missed while no scheduler ran"] + [""] * 32),
    Case("every1s-3days-grace-coalesce", "every:1s", s(1), s(THREE_DAYS + 0.5), {"misfire_grace": 3600},
         [(s(1), "skipped", THREE_DAYS - 3600), (s(THREE_DAYS), "queued", 3600)], s(THREE_DAYS + 1),
         reasons=["misfire_grace", f"coalesced 3600 occurrences from {s(THREE_DAYS - 3599).isoformat()}"]),
    Case("every1s-3days-grace-all", "every:1s", s(1), s(THREE_DAYS + 0.5),
         {"misfire": "all", "misfire_grace": 3600, "max_catch_up": 2, "overlap": "allow"},
         [(s(1), "skipped", THREE_DAYS - 3600), (s(THREE_DAYS - 3599), "skipped", 3598),
          (s(THREE_DAYS - 1), "queued", 1), (s(THREE_DAYS), "queued", 1)], s(THREE_DAYS + 1),
         reasons=["misfire_grace", "max_catch_up (2)", "", ""]),
    Case("every1s-3days-grace-skip", "every:1s", s(1), s(THREE_DAYS + 0.5),
         {"misfire": "skip", "misfire_grace": 3600, "overlap": "allow"},
         [(s(1), "skipped", THREE_DAYS - 3600), (s(THREE_DAYS - 3599), "skipped", 3600 - 32)]
         + [(s(THREE_DAYS - 31 + k), "queued", 1) for k in range(32)], s(THREE_DAYS + 1)),
    Case("every1s-3days-overlap", "every:1s", s(1), s(THREE_DAYS + 0.5), {},
         [(s(THREE_DAYS), "skipped", THREE_DAYS)], s(THREE_DAYS + 1), active=True, reasons=["overlap"]),
    Case("every1s-3days-all-overlap", "every:1s", s(1), s(THREE_DAYS + 0.5), {"misfire": "all", "max_catch_up": 3},
         [(s(1), "skipped", THREE_DAYS - 3), (s(THREE_DAYS - 2), "skipped", 3)], s(THREE_DAYS + 1), active=True,
         reasons=["max_catch_up", "overlap"]),
    # the latest fire time is exactly now
    Case("every1s-exact-now", "every:1s", s(1), s(250_000), {}, [(s(250_000), "queued", 250_000)], s(250_001)),
    # an unaligned stored next_run_at (written by hand) counts as one fire time, then the cadence
    Case("every10s-unaligned", "every:10s", s(3), s(1_000_000), {},
         [(s(1_000_000), "queued", 1 + 100_000)], s(1_000_010)),
    # small gaps: unchanged behaviour
    Case("every1m-10m-coalesce", "every:60s", s(60), s(630), {"overlap": "allow"}, [(s(600), "queued", 10)], s(660)),
    Case("every1m-failover", "every:60s", s(60), s(80), {}, [(s(60), "queued", 1)], s(120)),
    # an every-millisecond schedule down for 30 days: the count does not fit the 32-bit column;
    # it saturates there and the reason states the exact figure
    Case("every1ms-30days-coalesce", "every:0.001s", s(0.001), s(30 * DAY), {},
         [(s(30 * DAY), "queued", INT32_MAX)], s(30 * DAY + 0.001), reasons=[f"coalesced {30 * DAY * 1000} occurrences"]),
    # -- cron: exact counts past any enumeration bound ---------------------------------------
    # every minute for 200 days (288,000 fire times)
    Case("cron-every-minute-200d", "* * * * *", s(60), s(200 * DAY + 30), {},
         [(s(200 * DAY), "queued", 200 * 1440)], s(200 * DAY + 60)),
    Case("cron-every-minute-200d-all", "* * * * *", s(60), s(200 * DAY + 30), {"misfire": "all", "max_catch_up": 3, "overlap": "allow"},
         [(s(60), "skipped", 200 * 1440 - 3)] + [(s(200 * DAY - 120 + 60 * k), "queued", 1) for k in range(3)], s(200 * DAY + 60)),
    Case("cron-every-minute-200d-skip", "* * * * *", s(60), s(200 * DAY + 30), {"misfire": "skip"},
         [(s(60), "skipped", 200 * 1440 - 1), (s(200 * DAY), "queued", 1)], s(200 * DAY + 60)),
    Case("cron-every-minute-200d-grace", "* * * * *", s(60), s(200 * DAY + 30), {"misfire_grace": DAY},
         [(s(60), "skipped", 199 * 1440), (s(200 * DAY), "queued", 1440)], s(200 * DAY + 60)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    got, nxt, reasons = run(row(case.spec, case.next_run_at, **case.options), case.now, active=case.active)
    assert got == case.want
    assert nxt == case.next_run_at_after
    for want, reason in zip(case.reasons, reasons):
        assert want in (reason or ""), (want, reason)
    # every due fire time is accounted for exactly once (saturation aside)
    if case.id != "every1ms-30days-coalesce":
        assert sum(n for _, _, n in got) == _due_count(case)


def _due_count(case: Case) -> int:
    """The number of due fire times, counted the slow way for the intervals."""
    r = row(case.spec, case.next_run_at, **case.options)
    spec = spec_from_row(r)
    if case.spec.startswith("every:"):
        every = spec.every  # type: ignore[union-attr]
        first = spec.next_after(case.next_run_at)
        return 1 + (0 if first > case.now else (case.now - first) // every + 1)
    return sum(n for _, _, n in run(r, case.now)[0])


# -- cron counting across DST, against brute-force enumeration -------------------------------
DST_CASES = [
    ("*/15 * * * *", "Europe/Berlin", datetime(2030, 3, 20, 0, 15, tzinfo=UTC), datetime(2030, 11, 2, 12, 7, tzinfo=UTC)),
    ("30 2 * * *", "America/New_York", datetime(2029, 11, 2, 6, 30, tzinfo=UTC), datetime(2031, 11, 9, 0, 0, tzinfo=UTC)),
    ("*/30 1,2 * * *", "America/New_York", datetime(2029, 11, 2, 6, 0, tzinfo=UTC), datetime(2031, 11, 9, 0, 0, tzinfo=UTC)),
    ("0,30 * * * *", "Australia/Lord_Howe", datetime(2030, 3, 25, 0, 0, tzinfo=UTC), datetime(2030, 10, 20, 0, 0, tzinfo=UTC)),
    # transitions at local midnight: a fixed-time fire at midnight moves to the gap's end, and
    # the fall-back repeats the previous day's last hour
    ("0 0 * * *", "America/Havana", datetime(2029, 1, 1, 5, 0, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)),
    ("*/20 23,0 * * *", "America/Santiago", datetime(2029, 1, 1, 3, 0, tzinfo=UTC), datetime(2030, 12, 1, tzinfo=UTC)),
    ("30 0 * * *", "America/Santiago", datetime(2029, 1, 1, 3, 30, tzinfo=UTC), datetime(2030, 12, 1, tzinfo=UTC)),
    ("0 12 * * *", "Pacific/Apia", datetime(2011, 11, 1, 0, 0, tzinfo=UTC), datetime(2012, 2, 1, 0, 0, tzinfo=UTC)),
    ("*/20 * * * *", "Pacific/Apia", datetime(2011, 12, 1, 0, 0, tzinfo=UTC), datetime(2012, 1, 15, 0, 0, tzinfo=UTC)),
    ("0 9 * * MON-FRI", "Europe/London", datetime(2029, 1, 1, 9, 0, tzinfo=UTC), datetime(2031, 6, 1, 0, 0, tzinfo=UTC)),
    ("0 0 29 2 *", "UTC", datetime(2028, 2, 29, 0, 0, tzinfo=UTC), datetime(2041, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize("expr,tz,start,now", DST_CASES, ids=[f"{c[0]}@{c[1]}" for c in DST_CASES])
@pytest.mark.parametrize("enumerate_up_to", [5, 100_000])
def test_cron_counts_equal_enumeration(
    expr: str, tz: str, start: datetime, now: datetime, enumerate_up_to: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count of a huge cron gap (counting mode, forced with a tiny enumeration bound) equals
    brute-force enumeration, across DST changes, a skipped day (Apia 2011) and leap days."""
    monkeypatch.setattr(sched_module, "ENUMERATE_UP_TO", enumerate_up_to, raising=False)
    r = row(expr, start, tz=tz, misfire="all", max_catch_up=3, misfire_grace=40 * DAY, overlap="allow")
    spec = spec_from_row(r)
    fires = [start]
    while True:
        f = spec.next_after(fires[-1])
        if f > now:
            break
        fires.append(f)
    cutoff = now - timedelta(days=40)
    old = [f for f in fires if f < cutoff]
    recent = fires[len(old):]
    want: list[tuple[datetime, str, int]] = []
    if old:
        want.append((old[0], "skipped", len(old)))
    if len(recent) > 3:
        want.append((recent[0], "skipped", len(recent) - 3))
    want += [(f, "queued", 1) for f in recent[-3:]]
    got, nxt, _ = run(r, now)
    assert got == want
    assert nxt == spec.next_after(now)
    coalesced, _, _ = run(row(expr, start, tz=tz), now)
    assert coalesced == [(fires[-1], "queued", len(fires))]


def test_plan_is_pure_and_does_not_enumerate_a_huge_interval_gap() -> None:
    """An every-second schedule 30 years behind plans in well under a second."""
    import time

    r = row("every:1s", s(1))
    started = time.perf_counter()
    got, nxt, _ = run(r, s(30 * 365 * DAY))
    assert time.perf_counter() - started < 0.5
    assert got == [(s(30 * 365 * DAY), "queued", 30 * 365 * DAY)]
    assert nxt == s(30 * 365 * DAY + 1)


@pytest.mark.parametrize("options,message", [
    ("{not json", "options"),
    ('["a list"]', "options"),
    ('{"priority": 2147483648}', "priority"),
    ('{"priority": "high"}', "priority"),
    ('{"queue": "' + "q" * 65 + '"}', "queue"),
    ('{"max_attempts": 0}', "max_attempts"),
    ('{"misfire": "sometimes"}', "misfire"),
    ('{"overlap": "never"}', "overlap"),
    ('{"misfire_grace": "soon"}', "misfire_grace"),
    ('{"max_catch_up": -1}', "max_catch_up"),
])
def test_plan_rejects_stored_options_the_job_table_cannot_hold(options: str, message: str) -> None:
    """A row written by hand or by an older version: plan() refuses it with an error naming the
    option (the tick marks the schedule), the same on every database (SQLite would store a
    65-character queue or a 64-bit priority that PostgreSQL and MariaDB reject)."""
    r = row("every:1s", s(1))
    r = ScheduleRow(**{**r.__dict__, "options": options})
    with pytest.raises(Exception) as info:
        plan(r, spec_from_row(r), s(1), active=False, threshold=THRESHOLD)
    assert message in str(info.value)


def test_occurrence_dataclass_defaults() -> None:
    assert Occurrence(T0) == Occurrence(T0, "queued", 1, None)
