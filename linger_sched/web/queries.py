"""What each dashboard page shows, read through the Store's list and count methods (each on
an index: see tests/integration/test_indexes.py) and shaped into plain dataclasses for the
templates. No web framework here, and no HTML: the templates escape every value."""

from __future__ import annotations

import functools
import json
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..errors import LingerError
from ..scheduler import LEADER, SchedulerSettings, spec_from_row
from ..specs import CronSpec, IntervalSpec
from ..store.rows import Job, ScheduleRow
from ..store.tables import FINISHED_STATES, JOB_STATES
from .charts import Chart, bar_chart

if TYPE_CHECKING:
    from ..app import Linger

UTC = timezone.utc
STATES = JOB_STATES


def read_now(app: Linger) -> datetime:
    """The instant the page's data is read at: the app's clock when it is authoritative (a
    test's fake clock), else the database's, which every node's leases and heartbeats use."""
    return app.clock.store_now() or app.store.db_now()


# -- schedules: words, fire times, DST --------------------------------------------------
def describe(spec: CronSpec | IntervalSpec) -> str:
    """A schedule's expression in words: cron-descriptor's English for a cron expression
    (24-hour clock) when it is installed and reads the expression, else our own
    :meth:`CronSpec.describe`; ``"every 5 minutes"`` for an interval."""
    if isinstance(spec, IntervalSpec):
        return spec.describe()
    words = _cron_words(spec.text().removeprefix("cron:"))
    return words if words is not None else spec.describe().removesuffix(f" ({spec.tz})")


@functools.lru_cache(maxsize=4096)
def _cron_words(expression: str) -> str | None:
    """cron-descriptor's words for ``expression`` (canonical fields), or None. Cached: each
    description loads its translations anew (about a millisecond), and a page of schedules
    is read again every few seconds."""
    try:
        from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]

        options = Options()
        options.use_24hour_time_format = True
        options.verbose = False
        return str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # noqa: BLE001 - not installed, or an expression it cannot read: ours
        return None


@dataclass(frozen=True)
class Fire:
    """One fire time of a schedule, in its zone, with what DST does to it (``note``)."""

    at: datetime  # aware, in the schedule's zone
    note: str | None = None


def _offset(at: datetime) -> str:
    off = at.utcoffset() or timedelta(0)
    sign = "-" if off < timedelta(0) else "+"
    minutes = abs(int(off.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def dst_note(spec: CronSpec | IntervalSpec, at: datetime, previous: datetime | None) -> str | None:
    """What a DST transition does to fire time ``at`` (aware, in the schedule's zone), given
    the fire time (or instant) before it: a change of UTC offset since ``previous``; the
    first slot after a spring-forward gap that a fixed-time schedule moved there; the first
    or second pass of a repeated (fall-back) hour. None for an ordinary fire time."""
    zone = at.tzinfo
    if zone is None or isinstance(spec, IntervalSpec):
        return None
    notes = []
    if previous is not None:
        before = previous.astimezone(zone)
        if before.utcoffset() != at.utcoffset():
            notes.append(f"DST change: {before.tzname()} {_offset(before)} \u2192 {at.tzname()} {_offset(at)}")
    other = at.replace(fold=1 - at.fold)
    if other.utcoffset() != at.utcoffset() and other.astimezone(UTC) != at.astimezone(UTC):
        notes.append(f"repeated hour: {'first' if at.fold == 0 else 'second'} pass")
    just_before = (at.astimezone(UTC) - timedelta(seconds=1)).astimezone(zone)
    if not spec.is_wildcard and (just_before.utcoffset() or timedelta(0)) < (at.utcoffset() or timedelta(0)):
        notes.append("moved to the end of the spring-forward gap")
    return "; ".join(notes) or None


def fire_times(spec: CronSpec | IntervalSpec, first: datetime | None, n: int, *, since: datetime | None = None) -> list[Fire]:
    """``first`` and the fire times after it, ``n`` in all, in the schedule's zone (UTC for
    an interval), each with its :func:`dst_note` (the first compared with ``since``)."""
    zone = ZoneInfo(spec.tz) if isinstance(spec, CronSpec) else UTC
    out: list[Fire] = []
    t = first
    previous = since.astimezone(zone) if since is not None else None
    while t is not None and len(out) < n:
        local = t.astimezone(zone)
        out.append(Fire(local, dst_note(spec, local, previous)))
        previous = local
        try:
            t = spec.next_after(t)
        except (LingerError, OverflowError):  # no fire time before the year 10000
            break
    return out


OUTCOMES = {"succeeded": "ran", "failed": "failed", "skipped": "skipped", "queued": "queued", "running": "running",
            "cancelled": "cancelled"}


def outcome(job: Job) -> str:
    """A schedule occurrence's outcome in the ledger: ran, failed, skipped, coalesced (a run
    that stands for several occurrences), queued, running or cancelled."""
    if job.occurrences > 1 and job.state != "skipped":
        return "coalesced"
    return OUTCOMES.get(job.state, job.state)


@dataclass
class ScheduleView:
    """A schedule as the Schedules pages show it."""

    row: ScheduleRow
    words: str
    expression: str
    fires: list[Fire]
    status: str  # active, paused, disabled, error, invalid
    reason: str | None
    last_run_at: datetime | None
    last_state: str | None
    spec: CronSpec | IntervalSpec | None = None
    options: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def source(self) -> str:
        return getattr(self.row, "source", "declared")

    @property
    def runtime(self) -> bool:
        return self.source == "runtime"


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def schedule_view(row: ScheduleRow, last: tuple[datetime | None, str] | None, now: datetime, n: int) -> ScheduleView:
    """``row`` shaped for the pages, with its next ``n`` fire times (from ``next_run_at``; from
    now when it is in error, where ``next_run_at`` is the retry instant)."""
    expression = row.spec.removeprefix("cron:")
    if expression.startswith("every:"):
        expression = "every " + expression.removeprefix("every:")
    last_run_at, last_state = (last[0], last[1]) if last else (row.last_run_at, None)
    try:
        spec = spec_from_row(row)
    except (LingerError, ValueError) as exc:
        return ScheduleView(row, "invalid", expression, [], "invalid", str(exc), last_run_at, last_state,
                            options=_json(row.options), arguments=_json(row.args))
    first = row.next_run_at
    if row.error is not None or first is None:
        try:
            first = spec.next_after(now)
        except (LingerError, OverflowError):
            first = None
    if not row.enabled:
        status, reason = "disabled", row.disabled_reason
    elif row.paused:
        status, reason = "paused", None
    elif row.error is not None:
        status, reason = "error", row.error
    else:
        status, reason = "active", None
    return ScheduleView(row, describe(spec), expression, fire_times(spec, first, n, since=now), status, reason,
                        last_run_at, last_state, spec, _json(row.options), _json(row.args))


def schedule_page(app: Linger, after: str | None, limit: int, now: datetime, n: int) -> tuple[list[ScheduleView], bool]:
    """One page of schedules by name after ``after`` and whether there are more."""
    rows = app.store.list_schedules(after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = app.store.last_outcomes([r.name for r in rows])
    return [schedule_view(r, last.get(r.name), now, n) for r in rows], more


# -- the overview -----------------------------------------------------------------------
@dataclass(frozen=True)
class NodeView:
    id: str
    host: str
    pid: int
    roles: str
    started_at: datetime
    heartbeat_age: float
    live: bool
    leader: bool


@dataclass(frozen=True)
class LeaderView:
    holder: str
    epoch: int
    expires_at: datetime
    valid: bool
    expires_in: float
    released: bool = False  # given back at a clean shutdown (not expired)


@dataclass
class Delays:
    """How long due jobs waited to start (``started_at - run_at``) among the newest finished."""

    sample: int
    median: float
    p95: float
    worst: float


@dataclass
class Overview:
    now: datetime
    nodes: list[NodeView]
    leader: LeaderView | None
    by_state: dict[str, int]
    by_queue: list[tuple[str, dict[str, int]]]
    hour: Chart
    day: Chart
    delays: Delays | None
    oldest_due: datetime | None  # run_at of the queued job due first (and overdue when <= now)
    schedules: dict[str, int]
    schedule_errors: list[ScheduleRow]


def _ceil(at: datetime, width: timedelta) -> datetime:
    """The first multiple of ``width`` (since the epoch) after ``at``: bucket edges that do
    not move between refreshes."""
    step = width.total_seconds()
    return datetime.fromtimestamp((at.timestamp() // step + 1) * step, UTC)


class ChartCache:
    """The day chart's 23 closed hourly intervals, kept until the charts' end moves (every 5
    minutes): a refresh then reads only the last hour. A job that finished in a closed hour
    stays there; only a retry or a prune (rows leaving it) shows up to 5 minutes late."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: datetime | None = None
        self._value: tuple[list[int], list[int], int | None] = ([], [], None)

    def get(self, end: datetime, read: Callable[[], tuple[list[int], list[int], int | None]]) -> tuple[
            list[int], list[int], int | None]:
        with self._lock:
            if self._key == end:
                return self._value
        value = read()
        with self._lock:
            self._key, self._value = end, value
        return value


def _finished(app: Linger, bounds: list[datetime], min_id: int | None) -> tuple[list[int], list[int]]:
    ok, bad = [0] * (len(bounds) - 1), [0] * (len(bounds) - 1)
    if min_id is not None:
        for (_, state), counts in app.store.finished_histogram(bounds, min_id=min_id, by_queue=False).items():
            target = ok if state == "succeeded" else bad
            for i, n in enumerate(counts):
                target[i] += n
    return ok, bad


def throughput(app: Linger, now: datetime, zone: ZoneInfo, cache: ChartCache | None = None) -> tuple[Chart, Chart]:
    """Jobs finished (succeeded, failed) over the last hour in 5-minute bars and over the last
    24 hours in hourly bars, both ending at the next 5-minute mark. The day's first 23 bars
    are closed intervals (read once per 5 minutes with a ``cache``); its last is the hour's
    sum. Each read covers the jobs created since an hour before its window, an id range
    found by :meth:`Store.first_job_id_since` (see :meth:`Store.finished_histogram`)."""
    five, hour = timedelta(minutes=5), timedelta(hours=1)
    end = _ceil(now, five)
    closed = [end - 24 * hour + k * hour for k in range(24)]  # 23 intervals, up to end - 1 h
    recent = [end - hour + k * five for k in range(13)]  # 12 intervals, up to end

    def read_closed() -> tuple[list[int], list[int], int | None]:
        ok, bad = _finished(app, closed, app.store.first_job_id_since(closed[0] - hour))
        return ok, bad, app.store.first_job_id_since(recent[0] - hour)

    day_ok, day_bad, recent_id = (cache or ChartCache()).get(end, read_closed)
    if recent_id is None:  # no job was that recent when the closed hours were read: maybe one is now
        recent_id = app.store.first_job_id_since(recent[0] - hour)
    ok, bad = _finished(app, recent, recent_id)

    def label(at: datetime) -> str:
        return at.astimezone(zone).strftime("%H:%M")

    last_hour = bar_chart(ok, bad, [label(b) for b in recent[:-1]], label_every=3)
    day = bar_chart([*day_ok, sum(ok)], [*day_bad, sum(bad)], [label(b) for b in closed], label_every=4)
    return last_hour, day


def start_delays(app: Linger) -> Delays | None:
    """The due-to-start delays of the newest finished jobs (50 succeeded, 10 failed)."""
    waits = []
    for job in [*app.store.list_jobs("succeeded", 50), *app.store.list_jobs("failed", 10)]:
        if job.started_at is not None and job.run_at is not None:
            waits.append(max(0.0, (job.started_at - job.run_at).total_seconds()))
    if not waits:
        return None
    waits.sort()
    return Delays(len(waits), statistics.median(waits), waits[min(len(waits) - 1, int(len(waits) * 0.95))], waits[-1])


def overview(app: Linger, now: datetime, zone: ZoneInfo, cache: ChartCache | None = None) -> Overview:
    store = app.store
    live_within = SchedulerSettings(lease_ttl=app.settings.lease_ttl).live_within
    lease = store.get_lease(LEADER)
    leader = None
    if lease is not None:
        left = (lease.expires_at - now).total_seconds()
        leader = LeaderView(lease.holder, lease.epoch, lease.expires_at, left > 0, left, released=lease.released)
    nodes = []
    for n in store.list_nodes():
        age = max(0.0, (now - n.heartbeat_at).total_seconds())
        nodes.append(NodeView(n.id, n.host, n.pid, n.roles, n.started_at, age, age <= live_within,
                              leader is not None and leader.valid and leader.holder == n.id))
    pairs = store.count_by_queue_and_state()
    by_state: dict[str, int] = {}
    queues: dict[str, dict[str, int]] = {}
    for (queue, state), count in pairs.items():
        by_state[state] = by_state.get(state, 0) + count
        queues.setdefault(queue, {})[state] = count
    hour, day = throughput(app, now, zone, cache)
    oldest, _ = store.next_due(None, now=now)
    schedules = store.schedule_counts()
    errors = store.schedule_errors() if schedules["error"] else []  # a scan of the schedules: only when there are some
    return Overview(now, nodes, leader, by_state, sorted(queues.items()), hour, day, start_delays(app), oldest,
                    schedules, errors)


# -- queues -----------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueView:
    name: str
    counts: dict[str, int]
    oldest_due: datetime | None
    rate_in: int  # jobs created in the last hour
    rate_out: int  # jobs finished (succeeded or failed) in the last hour
    failed_out: int

    @property
    def depth(self) -> int:
        return self.counts.get("queued", 0)


def queue_page(app: Linger, now: datetime) -> list[QueueView]:
    """Every queue that has jobs: depth, running, the queued job due first, and jobs in and
    out over the last hour."""
    store = app.store
    queues: dict[str, dict[str, int]] = {}
    for (queue, state), count in store.count_by_queue_and_state().items():
        queues.setdefault(queue, {})[state] = count
    since = now - timedelta(hours=1)
    min_id = store.first_job_id_since(since - timedelta(hours=1))
    created: dict[str, int] = {}
    finished: dict[tuple[str, str], list[int]] = {}
    if min_id is not None:
        first_new = store.first_job_id_since(since)
        created = store.created_by_queue(first_new) if first_new is not None else {}
        finished = store.finished_histogram([since, now + timedelta(microseconds=1)], min_id=min_id)
    out = []
    for name in sorted(set(queues) | set(created)):
        oldest = store.next_due([name], now=now)[0] if queues.get(name, {}).get("queued") else None
        ok = finished.get((name, "succeeded"), [0])[0]
        bad = finished.get((name, "failed"), [0])[0]
        out.append(QueueView(name, queues.get(name, {}), oldest, created.get(name, 0), ok + bad, bad))
    return out


# -- jobs -------------------------------------------------------------------------------
@dataclass
class JobPage:
    jobs: list[Job]
    newer: int | None  # after_id for the page of newer jobs (None: this is the newest)
    older: int | None  # before_id for the page of older jobs (None: no older ones)


def job_page(app: Linger, flt: Any, limit: int, *, before_id: int | None, after_id: int | None) -> JobPage:
    """One page of the jobs matching ``flt`` (a :class:`~.actions.JobFilter`), newest first:
    the ``limit`` newest below ``before_id``, or the ``limit`` oldest above ``after_id``
    (the page of newer jobs), keyset on the id."""
    bounds = flt.id_bounds(app)
    if bounds is None:
        return JobPage([], None, None)
    lo, hi = bounds  # the time range as ids: (> lo, < hi)
    top = hi if before_id is None else (before_id if hi is None else min(before_id, hi))
    bottom = lo if after_id is None else (after_id if lo is None else max(after_id, lo))
    going_up = after_id is not None and before_id is None
    rows = app.store.list_jobs(flt.state, limit + 1, task=flt.task, queue=flt.queue, schedule_name=flt.schedule,
                               newest_first=not going_up, before_id=top, after_id=bottom)
    more = len(rows) > limit
    rows = rows[:limit]
    if going_up:
        rows.reverse()
        newer = rows[0].id if more and rows else None
        older = rows[-1].id if rows else None
    else:
        newer = rows[0].id if rows and before_id is not None else None
        older = rows[-1].id if more and rows else None
    return JobPage(rows, newer, older)


def pretty(value: Any) -> str:
    """A JSON value for a ``<pre>`` (escaped by the template like any text)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def durations(job: Job) -> list[tuple[str, float]]:
    """The job's waits and run time in seconds: (label, seconds)."""
    out = []
    if job.started_at is not None:
        out.append(("waited after due", max(0.0, (job.started_at - job.run_at).total_seconds())))
        if job.finished_at is not None:
            out.append(("ran for", max(0.0, (job.finished_at - job.started_at).total_seconds())))
    if job.finished_at is not None:
        out.append(("created to finished", max(0.0, (job.finished_at - job.created_at).total_seconds())))
    return out


def finished_states() -> Sequence[str]:
    return FINISHED_STATES
