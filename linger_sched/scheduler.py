"""The scheduler: on the node holding the leader lease, turn due schedule occurrences into jobs.

:func:`plan` is the pure occurrence math (misfire, overlap) of one schedule at one instant.
:meth:`Scheduler.tick` renews the lease and commits the plans; :meth:`Scheduler.sync`
registers the declared schedules at start.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .clock import Clock, backoff
from .errors import ConfigError, LingerError, ScheduleStateError, SpecError, StoreError
from .events import Event, Hooks
from .registry import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, ScheduleDef, TaskDef, build_schedule
from .specs import CronSpec, IntervalSpec, parse_spec
from .store import Lease, Occurrence, Plan, ScheduleRow, Store, decode_args, encode_args

log = logging.getLogger(__name__)

LEADER = "leader"
MAX_ENUMERATED = 100_000  # job rows one schedule writes per tick at most (max_catch_up is capped here)
ENUMERATE_UP_TO = 1_000  # due cron fire times listed one by one before they are counted by day
INT32_MAX = 2**31 - 1  # the occurrences column: a larger count saturates (the reason has the exact figure)
MAX_QUEUE_LEN = 64  # the jobs.queue column
_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)


@dataclass
class SchedulerSettings:
    tick_interval: float = 1.0
    lease_ttl: float = 30.0
    renew_interval: float = 10.0
    misfire_threshold: float | None = None  # default: lease_ttl + 2 ticks (a fail-over is not a misfire)
    # materialize occurrences due within this many seconds (with run_at = their fire time),
    # so that the workers' own lead_time timer, not this transaction, decides when they start
    # (real clock only; far below any misfire threshold or overlap window)
    lead_time: float = 0.05
    batch: int = 2000  # due schedules per transaction: fewer, larger round trips when many fire at once
    # a schedule the tick cannot plan or write is retried after max(min, time in error), at most max
    error_retry_min: float = 60.0
    error_retry_max: float = 3600.0
    # the leader checks this often whether the nodes that declared a schedule are gone
    reconcile_interval: float = 60.0

    @property
    def threshold(self) -> float:
        if self.misfire_threshold is not None:
            return self.misfire_threshold
        return self.lease_ttl + 2 * self.tick_interval

    @property
    def live_within(self) -> float:
        """A node whose last heartbeat (every 10 s) is at most this old is live."""
        return max(60.0, 3 * self.lease_ttl)


@dataclass
class TickReport:
    leader: bool = False
    epoch: int | None = None
    due: int = 0
    applied: int = 0
    jobs: int = 0
    skipped: int = 0
    failed: int = 0  # schedules marked in error by this tick
    wait: float = 1.0


def stored_spec(spec: CronSpec | IntervalSpec) -> str:
    """What the ``spec`` column holds: a cron expression as written, or ``every:<seconds>s``."""
    return spec.expr if isinstance(spec, CronSpec) else spec.text()


def spec_from_row(row: ScheduleRow) -> CronSpec | IntervalSpec:
    text = row.spec
    if text.startswith("every:"):
        return parse_spec(every=text[len("every:"):], anchor=row.anchor)
    # the canonical form "cron:..." is accepted too
    return parse_spec(cron=text.removeprefix("cron:"), tz=row.tz)


# -- stored options -------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """A schedule row's ``options``, checked against what the job table can hold."""

    misfire: str = "coalesce"
    misfire_grace: float | None = None
    max_catch_up: int = 1000
    overlap: str = "skip"
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


def _int(raw: dict[str, Any], key: str, default: int, low: int, high: int = INT32_MAX) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"options: {key} must be an integer between {low} and {high}, got {value!r}")
    return value


_OPTIONS_CACHE: dict[str | None, Options] = {}


def parse_options(text: str | None) -> Options:
    """The options of a stored schedule row; ``ValueError`` naming the option when a value is
    malformed or does not fit the job table (a row written by hand or by an older version)."""
    opts = _OPTIONS_CACHE.get(text)
    if opts is None:
        opts = _parse_options(text)
        if len(_OPTIONS_CACHE) >= 4096:  # a few distinct texts in practice: a bound, not an LRU
            _OPTIONS_CACHE.clear()
        _OPTIONS_CACHE[text] = opts
    return opts


def _parse_options(text: str | None) -> Options:
    try:
        raw = json.loads(text or "{}")
    except ValueError as exc:
        raise ValueError(f"options is not valid JSON ({exc}): {text!r:.200}") from None
    if not isinstance(raw, dict):
        raise TypeError(f"options must be a JSON object, got {type(raw).__name__}")
    misfire = raw.get("misfire") or "coalesce"
    if misfire not in ("coalesce", "all", "skip"):
        raise ValueError(f"options: misfire must be coalesce, all or skip, got {misfire!r}")
    overlap = raw.get("overlap") or "skip"
    if overlap not in ("skip", "allow"):
        raise ValueError(f"options: overlap must be skip or allow, got {overlap!r}")
    grace = raw.get("misfire_grace")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float))
                              or not math.isfinite(grace) or grace < 0 or grace > 1e11):
        raise ValueError(f"options: misfire_grace must be a number of seconds, got {grace!r}")
    queue = raw.get("queue") or DEFAULT_QUEUE
    if not isinstance(queue, str) or len(queue) > MAX_QUEUE_LEN or "\x00" in queue:
        raise ValueError(f"options: queue must be a string of at most {MAX_QUEUE_LEN} characters, got {queue!r:.100}")
    return Options(
        misfire=misfire, misfire_grace=None if grace is None else float(grace),
        max_catch_up=_int(raw, "max_catch_up", 1000, 1), overlap=overlap, queue=queue,
        priority=_int(raw, "priority", DEFAULT_PRIORITY, -INT32_MAX - 1),
        max_attempts=_int(raw, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1),
    )


# -- due fire times: counted and sliced without enumerating them --------------------------
class _Due:
    """The due fire times of a schedule at ``now``: ``start`` (its first fire time not yet
    accounted for) and every fire time of its spec after it, up to and including ``now``;
    ``after`` is the first fire time after ``now``."""

    n: int
    after: datetime

    def count_before(self, t: datetime) -> int:
        """How many due fire times are earlier than ``t``."""
        raise NotImplementedError

    def first_from(self, t: datetime) -> datetime | None:
        """The first due fire time at or after ``t``."""
        raise NotImplementedError

    def last(self, k: int) -> list[datetime]:
        """The last ``k`` due fire times (all of them when there are fewer)."""
        raise NotImplementedError

    def since(self, t: datetime) -> list[datetime]:
        """The due fire times at or after ``t`` (callers keep that window short)."""
        raise NotImplementedError


class _IntervalDue(_Due):
    """start, then f1 + j * every: O(1) arithmetic whatever the gap."""

    def __init__(self, spec: IntervalSpec, start: datetime, now: datetime) -> None:
        self.start, self.now, self.every = start, now, spec.every
        self.f1 = spec.next_after(start)
        self.n = 1 if self.f1 > now else 2 + (now - self.f1) // self.every
        self.after = self.f1 if self.f1 > now else self.f1 + (self.n - 1) * self.every

    def _at(self, i: int) -> datetime:
        return self.start if i == 0 else self.f1 + (i - 1) * self.every

    def count_before(self, t: datetime) -> int:
        if t <= self.start:
            return 0
        if t <= self.f1:
            return 1
        return min(self.n, 1 - ((self.f1 - t) // self.every))  # 1 + ceil((t - f1) / every)

    def first_from(self, t: datetime) -> datetime | None:
        i = self.count_before(t)
        return self._at(i) if i < self.n else None

    def last(self, k: int) -> list[datetime]:
        return [self._at(i) for i in range(max(0, self.n - k), self.n)]

    def since(self, t: datetime) -> list[datetime]:
        return [self._at(i) for i in range(self.count_before(t), self.n)]


class _ListDue(_Due):
    def __init__(self, fires: list[datetime], after: datetime) -> None:
        self.fires = fires
        self.n = len(fires)
        self.after = after

    def count_before(self, t: datetime) -> int:
        return bisect_left(self.fires, t)

    def first_from(self, t: datetime) -> datetime | None:
        i = bisect_left(self.fires, t)
        return self.fires[i] if i < self.n else None

    def last(self, k: int) -> list[datetime]:
        return self.fires[max(0, self.n - k):]

    def since(self, t: datetime) -> list[datetime]:
        return self.fires[bisect_left(self.fires, t):]


def _midnight(zone: ZoneInfo, day: date) -> datetime:
    """The instant local ``day`` begins (a midnight inside a gap: the end of the gap)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def count_cron(spec: CronSpec, a: datetime, b: datetime) -> int:
    """The number of fire times of ``spec`` in (a, b], without listing every one.

    Every matching local day of a cron spec has the same wall times (hours x minutes), and all of
    them exist, once each, on a day whose UTC offset does not change (nor changes right at its
    midnight): such a day inside (a, b] adds the count of the first such day, found by listing it. Days with an offset change (DST,
    a skipped day) and the partial first and last days are listed with ``next_after``, so the
    DST rules of :mod:`specs` apply unchanged. Cost: O(matching days), not O(fire times)."""
    if b <= a:
        return 0
    zone = ZoneInfo(spec.tz)
    n = 0
    per_day: int | None = None
    prev = a
    f = spec.next_after(a)
    while f <= b:
        day = f.astimezone(zone).date()
        d0, d1 = _midnight(zone, day), _midnight(zone, day + _DAY)
        offset = d0.astimezone(zone).utcoffset()
        # no offset change inside the day nor exactly at its start (where a fixed-time fire from a
        # gap that ends at midnight lands, as on Pacific/Apia's skipped 2011-12-30)
        if (prev < d0 and d1 <= b and d1 - d0 == _DAY and d1.astimezone(zone).utcoffset() == offset
                and (d0 - _US).astimezone(zone).utcoffset() == offset):
            if per_day is None:
                per_day, g = 0, f
                while g < d1:
                    per_day += 1
                    g = spec.next_after(g)
            n += per_day
            prev = d1 - _US
            f = spec.next_after(prev)
            continue
        n += 1
        prev = f
        f = spec.next_after(f)
    return n


class _CronDue(_Due):
    """A cron gap too long to list: counted by day (:func:`count_cron`), sliced near its ends."""

    def __init__(self, spec: CronSpec, start: datetime, now: datetime) -> None:
        self.spec, self.start, self.now = spec, start, now
        self.n = 1 + count_cron(spec, start, now)
        self.after = spec.next_after(now)

    def count_before(self, t: datetime) -> int:
        if t <= self.start:
            return 0
        if t > self.now:
            return self.n
        # count whichever side of t is shorter
        if self.now - t < t - self.start:
            return self.n - count_cron(self.spec, t - _US, self.now)
        return 1 + count_cron(self.spec, self.start, t - _US)

    def first_from(self, t: datetime) -> datetime | None:
        if t <= self.start:
            return self.start
        f = self.spec.next_after(t - _US)
        return f if f <= self.now else None

    def since(self, t: datetime) -> list[datetime]:
        out: list[datetime] = []
        f = self.first_from(t)
        while f is not None and f <= self.now:
            out.append(f)
            f = self.spec.next_after(f)
        return out

    def last(self, k: int) -> list[datetime]:
        if k <= 0:
            return []
        # a window back from now, doubled until it holds k fire times; its first size is what k
        # fire times take on average over the whole gap
        window = max(timedelta(minutes=1), (self.now - self.start) * min(1.0, 2.0 * k / self.n))
        while True:
            lo = max(self.start, self.now - window)
            fires = self.since(lo)
            if len(fires) >= k or lo == self.start:
                return fires[-k:]
            window *= 2


def due_fires(spec: CronSpec | IntervalSpec, start: datetime, now: datetime) -> _Due:
    """The due fire times of a schedule whose first unaccounted fire time is ``start``."""
    if isinstance(spec, IntervalSpec):
        return _IntervalDue(spec, start, now)
    fires = [start]
    f = spec.next_after(start)
    while f <= now:
        if len(fires) >= ENUMERATE_UP_TO:
            return _CronDue(spec, start, now)
        fires.append(f)
        f = spec.next_after(f)
    return _ListDue(fires, f)


def _skipped(first: datetime, n: int, reason: str) -> Occurrence:
    """One ``skipped`` row standing for ``n`` fire times from ``first``."""
    if n > INT32_MAX:
        reason = f"{reason} ({n} occurrences)"
    return Occurrence(first, "skipped", min(n, INT32_MAX), reason)


def plan(
    row: ScheduleRow,
    spec: CronSpec | IntervalSpec,
    now: datetime,
    *,
    active: bool,
    threshold: float,
) -> Plan:
    """What schedule ``row`` must materialize at ``now`` (``row.next_run_at <= now``).

    * Every fire time in [start, now] is due, ``start`` being ``row.retry_from`` (a schedule in
      error: its first fire time not accounted for) or else ``row.next_run_at``. They are
      counted, not listed: an interval by arithmetic, a cron spec by day, so a gap of days of
      an every-second schedule costs as little as one of a minute.
    * Those older than ``misfire_grace`` are recorded as one ``skipped`` row (reason misfire_grace).
    * If the earliest remaining one is late by more than ``threshold`` seconds, the misfire
      policy applies: ``coalesce`` makes one job (scheduled for the latest, standing for all),
      ``all`` one job each (the latest ``max_catch_up``; older ones skipped), ``skip`` records
      the late ones as skipped and runs those on time. Otherwise each due fire is one job.
      One schedule writes at most MAX_ENUMERATED jobs per tick; older ones are one skipped row.
    * ``overlap: skip`` with a queued or running job of this schedule turns every job of
      this tick into one ``skipped`` row (reason overlap).
    * The new ``next_run_at`` is the first fire time strictly after ``now``.
    * A count that does not fit the ``occurrences`` column (2^31 - 1) saturates there; the
      row's reason states the exact number.

    Raises (``ValueError`` naming the option, ``OverflowError`` past the year 9999, ...) when the
    row cannot be planned; the tick marks that schedule and goes on with the others."""
    opts = parse_options(row.options)
    assert row.next_run_at is not None
    start = row.retry_from if row.retry_from is not None and row.retry_from <= row.next_run_at else row.next_run_at
    due = due_fires(spec, start, now)
    nxt = due.after
    occ: list[Occurrence] = []
    first: datetime | None = start
    n, done = due.n, 0  # done: fire times already recorded (misfire_grace)
    if opts.misfire_grace is not None:
        cutoff = now - timedelta(seconds=opts.misfire_grace)
        done = due.count_before(cutoff)
        if done:
            occ.append(_skipped(start, done, f"misfire: older than misfire_grace ({opts.misfire_grace:g}s)"))
            first = due.first_from(cutoff)
    left = n - done
    runs: list[Occurrence] = []
    if left and first is not None:
        late_cut = now - timedelta(seconds=threshold)
        late = max(0, due.count_before(late_cut) - done)
        if not late or opts.misfire == "all":
            keep = min(left if not late else opts.max_catch_up, MAX_ENUMERATED)
            if left > keep:
                beyond = (f"misfire: beyond max_catch_up ({keep})" if late
                          else f"more than {MAX_ENUMERATED} occurrences due at once")
                occ.append(_skipped(first, left - keep, beyond))
            runs = [Occurrence(x) for x in due.last(min(left, keep))]
        elif opts.misfire == "coalesce":
            (last,) = due.last(1)
            why = f"coalesced {left} occurrences from {first.isoformat()}" if left > 1 else None
            runs = [Occurrence(last, occurrences=min(left, INT32_MAX), reason=why)]
        else:  # skip: the late ones are recorded, those on time run
            occ.append(_skipped(first, late, "misfire: missed while no scheduler ran"))
            on_time = due.since(late_cut)
            if len(on_time) > MAX_ENUMERATED:
                occ.append(_skipped(on_time[0], len(on_time) - MAX_ENUMERATED,
                                    f"more than {MAX_ENUMERATED} occurrences due at once"))
                on_time = on_time[-MAX_ENUMERATED:]
            runs = [Occurrence(x) for x in on_time]
    if runs and active and opts.overlap == "skip":
        total = sum(r.occurrences for r in runs)
        occ.append(_skipped(runs[0].scheduled_for, total, "overlap: previous occurrence still queued or running"))
        runs = []
    occ.extend(runs)
    return Plan(
        name=row.name,
        expected=row.next_run_at,
        next_run_at=nxt,
        occurrences=occ,
        task=row.task,
        args=row.args,
        queue=opts.queue,
        priority=opts.priority,
        max_attempts=opts.max_attempts,
    )


def missed(row: ScheduleRow, now: datetime, reason: str) -> Occurrence | None:
    """Every due fire time of ``row``'s stored spec up to ``now`` as one ``skipped`` row (the
    occurrences a resume, a spec change or a re-enable does not catch up); None if none is due.
    Raises when the stored spec cannot be evaluated."""
    start = row.retry_from if row.retry_from is not None else row.next_run_at
    if start is None or start > now:
        return None
    n = due_fires(spec_from_row(row), start, now).n
    return _skipped(start, n, reason)


def record(row: ScheduleRow, occurrence: Occurrence, next_run_at: datetime | None, **job: Any) -> Plan:
    """A plan that records ``occurrence`` and moves ``row`` to ``next_run_at`` (compare-and-set
    on the row's current next_run_at). Job columns come from ``job`` or the row's options
    (defaults when those are unreadable: the occurrence is a ``skipped`` record, never run)."""
    try:
        opts = parse_options(row.options)
    except (ValueError, TypeError):
        opts = Options()
    assert row.next_run_at is not None or next_run_at is None
    return Plan(
        name=row.name, expected=row.next_run_at,  # type: ignore[arg-type]
        next_run_at=next_run_at, occurrences=[occurrence],
        task=job.get("task", row.task), args=job.get("args", row.args), queue=job.get("queue", opts.queue),
        priority=job.get("priority", opts.priority), max_attempts=job.get("max_attempts", opts.max_attempts),
    )


def resume_plan(row: ScheduleRow, now: datetime) -> tuple[Plan | None, datetime | None]:
    """Resuming paused ``row`` at ``now``: (one skipped row for the fire times missed while it
    was paused, or None; its new next_run_at, or None to leave it). The paused period is not
    caught up: the next fire is the first after now."""
    start = row.retry_from if row.retry_from is not None else row.next_run_at
    if start is None:
        return None, None
    try:
        if start > now:
            return None, start
        occ = missed(row, now, "paused: not run while the schedule was paused")
        nxt = spec_from_row(row).next_after(now)
    except Exception as exc:  # noqa: BLE001 - an unreadable row: unpause it; the tick marks it
        log.warning("schedule %s: cannot compute what its pause missed: %s", row.name, exc,
                    extra={"action": "resume_error", "schedule": row.name})
        return None, None
    return (record(row, occ, nxt) if occ is not None else None), nxt


# -- schedules created at runtime (app.add_schedule) ------------------------------------------
RUNTIME_OPTIONS = (
    "cron", "every", "tz", "anchor", "args", "kwargs", "priority", "queue", "max_attempts", "misfire", "misfire_grace",
    "max_catch_up", "overlap", "enabled",
)


def runtime_definition(name: Any, task: str, options: dict[str, Any], task_def: TaskDef | None) -> ScheduleDef:
    """A schedule created at runtime, checked exactly as a declared one is (the checks of
    :func:`~linger_sched.registry.build_schedule`; with ``task_def``, the task registered in
    this process, its arguments against the task's signature). ``options``: those of
    :data:`RUNTIME_OPTIONS` (None: not given). :class:`ConfigError` (or
    :class:`~linger_sched.errors.ConfigErrors`) naming the schedule and each bad option."""
    unknown = sorted(set(options) - set(RUNTIME_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} (allowed: task, {', '.join(RUNTIME_OPTIONS)})",
                          key=f"schedule {name!r}")
    given = {k: v for k, v in options.items() if v is not None}
    return build_schedule(name, task, source=f"schedule {name!r}", task_def=task_def, **given)


def stored_definition(row: ScheduleRow) -> dict[str, Any]:
    """The options of :func:`runtime_definition` that give ``row``'s schedule as it is stored
    (what ``update_schedule`` changes some of). ``ValueError`` for a row that cannot be read."""
    spec = spec_from_row(row)
    args, kwargs = decode_args(row.args)
    raw = json.loads(row.options or "{}")
    if not isinstance(raw, dict):
        raise ValueError(f"schedule {row.name!r}: its stored options are not a JSON object")
    out: dict[str, Any] = {k: raw[k] for k in ("priority", "queue", "max_attempts", "misfire", "misfire_grace",
                                               "max_catch_up", "overlap") if raw.get(k) is not None}
    out.update(args=args, kwargs=kwargs, enabled=row.enabled)
    if isinstance(spec, CronSpec):
        out.update(cron=spec.expr, tz=row.tz)
    else:
        out["every"] = spec.every
        # an anchor that was given is part of the spec hash; one taken at registration is not
        if row.anchor is not None and ScheduleDef(row.name, row.task, spec).spec_hash == row.spec_hash:
            out["anchor"] = row.anchor
    return out


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (StoreError, SpecError)) else f"{type(exc).__name__}: {exc}"


class Scheduler:
    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        clock: Clock | None = None,
        settings: SchedulerSettings | None = None,
        task_defaults: Callable[[str], dict[str, Any]] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.hooks = hooks if hooks is not None else Hooks()  # events: occurrence_*, leader_*
        self.clock = clock or Clock()
        self.settings = settings or SchedulerSettings()
        self.task_defaults = task_defaults or (lambda name: {})
        self.lease: Lease | None = None
        self._trusted_until = -1e18  # monotonic: leadership is trusted until then
        self._last_renew = -1e18
        self._specs: dict[tuple[str, str, Any], CronSpec | IntervalSpec] = {}
        self.on_leadership: Callable[[bool, Lease | None], None] | None = None
        self.on_materialized: Callable[[int], None] | None = None  # wakes a worker in this process
        self._doing = "starting"  # what the tick is doing: named when it fails
        # declared-schedule bookkeeping for the leader's reconcile (set by sync)
        self._declared: set[str] | None = None
        self._watch: set[str] = set()  # declared by other live nodes only
        self._missing: dict[str, float] = {}  # watched names no live node declares: since (monotonic)
        self._next_reconcile = float("inf")

    def _now(self) -> datetime:
        return self.clock.now() if self.clock.authoritative else self.store.db_now()

    def _spec(self, row: ScheduleRow) -> CronSpec | IntervalSpec:
        key = (row.spec, row.tz, row.anchor)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = spec_from_row(row)
        return spec

    # -- registration -------------------------------------------------------------------
    def sync(self, defs: list[ScheduleDef], *, disable_missing: bool = True) -> dict[str, list[str]]:
        """Upsert declared schedules by name. A changed spec or zone recomputes next_run_at, and
        the old spec's due fire times become one ``skipped`` row (reason "spec changed"); a
        re-enabled schedule records its disabled period the same way (reason "disabled"); a
        changed definition clears an error state. Schedules that neither this registry nor a
        live node (see :meth:`Store.live_declarations`) declares are disabled (kept, with their
        history, ``disabled_reason = 'not declared'``), with a warning."""
        report: dict[str, list[str]] = {"added": [], "changed": [], "disabled": [], "enabled": []}
        declared = {d.name for d in defs}
        pending = list(defs)
        for attempt in range(5):
            now = self._now()
            existing = {r.name: r for r in self.store.load_schedules(None if attempt == 0 else [d.name for d in pending])}
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            plans: list[Plan] = []
            entries: list[tuple[str, str]] = []
            for d in pending:
                self._sync_one(d, existing.get(d.name), now, inserts, updates, plans, entries)
            disable: list[str] = []
            if attempt == 0 and disable_missing:
                disable = self._undeclared(existing, declared)
            conflicts = set(self.store.save_schedules(inserts, updates, disable, now=self.clock.store_now(), plans=plans))
            for key, name in entries:
                if name not in conflicts:
                    report[key].append(name)
            for n in disable:
                report["disabled"].append(n)
                log.warning("schedule %s is no longer declared by any live node: disabled (history kept)", n,
                            extra={"action": "schedule_disabled", "schedule": n})
            if not conflicts:
                break
            # a leader advanced these meanwhile: read them again, so nothing is counted twice
            pending = [d for d in pending if d.name in conflicts]
        else:
            log.warning("schedules %s changed during every attempt to sync them; left as they are",
                        sorted(d.name for d in pending), extra={"action": "sync_conflict"})
        if disable_missing:
            self._declared = declared
            self._next_reconcile = self.clock.monotonic() + self.settings.reconcile_interval
        return report

    def _sync_one(
        self, d: ScheduleDef, old: ScheduleRow | None, now: datetime, inserts: list[dict[str, Any]],
        updates: list[dict[str, Any]], plans: list[Plan], entries: list[tuple[str, str]], *, source: str = "declared",
    ) -> None:
        """The writes that make the stored ``old`` (None: none) the definition ``d``, of
        ``source`` ("declared" at a sync, "runtime" for add_schedule/update_schedule). A
        declaration of a runtime schedule's name takes it over (logged with what it was)."""
        takeover = old is not None and source == "declared" and old.source == "runtime"
        if takeover:
            assert old is not None
            log.warning("schedule %s is now declared in code or schedules.yaml: the runtime schedule of that name "
                        "(created with add_schedule: task %s, %s %s, arguments %s, options %s) is replaced by the "
                        "declaration", d.name, old.task, old.spec, old.tz, old.args, old.options,
                        extra={"action": "schedule_taken_over", "schedule": d.name})
        task_opts = self.task_defaults(d.task)
        options = d.options()
        for k in ("queue", "priority", "max_attempts"):
            if options.get(k) is None and task_opts.get(k) is not None:
                options[k] = task_opts[k]
        args = encode_args(d.args, d.kwargs)
        options_text = json.dumps(options, sort_keys=True)
        spec = d.spec
        if isinstance(spec, IntervalSpec) and spec.anchor is None:
            anchor = old.anchor if old is not None and old.anchor is not None else now
            spec = spec.with_anchor(anchor)
        base = {
            "task": d.task, "spec": stored_spec(d.spec), "tz": d.spec.tz,
            "anchor": getattr(spec, "anchor", None), "args": args, "options": options_text,
            "spec_hash": d.spec_hash,
        }
        # an interval fires at its anchor itself; a cron spec strictly after registration
        first = spec.next_after(now - _US) if isinstance(spec, IntervalSpec) else spec.next_after(now)
        disabled_reason = None if d.enabled else "enabled: false"
        if old is None:
            inserts.append({"name": d.name, **base, "next_run_at": first, "paused": False, "enabled": d.enabled,
                            "disabled_reason": disabled_reason})
            entries.append(("added", d.name))
            return
        change: dict[str, Any] = {k: v for k, v in base.items() if getattr(old, k) != v}
        redefined = bool(change)
        respec = old.spec_hash != d.spec_hash or old.spec != base["spec"] or old.tz != base["tz"]
        reenabled = d.enabled and not old.enabled
        if respec or reenabled:
            change["next_run_at"] = first
            if respec:
                entries.append(("changed", d.name))
            # the fire times the old definition had due are recorded, not dropped: a disabled
            # period or an old spec is not caught up
            reason = ("disabled: not run while the schedule was disabled" if reenabled
                      else "spec changed: due under the previous spec, not run")
            try:
                occ = missed(old, now, reason)
            except Exception as exc:  # noqa: BLE001 - e.g. a stored spec that no longer parses
                log.warning("schedule %s: cannot account for the due occurrences of its previous definition: %s",
                            d.name, _describe(exc), extra={"action": "sync_unaccounted", "schedule": d.name})
                occ = None
            if occ is not None:
                plans.append(record(old, occ, first, task=d.task, args=args))
        elif redefined and old.error is not None:
            # the tick resumes from the first fire time the error left unaccounted
            change["next_run_at"] = old.retry_from or old.next_run_at
        if old.error is not None and (redefined or reenabled):
            change.update(error=None, error_since=None, retry_from=None)
        if old.enabled != d.enabled:
            change["enabled"] = d.enabled
            entries.append(("enabled" if d.enabled else "disabled", d.name))
        if old.disabled_reason != disabled_reason:
            change["disabled_reason"] = disabled_reason
        if takeover:
            change["source"] = "declared"
        if change:
            updates.append({"name": d.name, **change})

    def add_runtime(self, d: ScheduleDef) -> None:
        """Store ``d`` (see :func:`runtime_definition`) as a new schedule created at runtime
        (``source = 'runtime'``): its first fire time is computed as a sync computes a new
        declared one's, and no sync ever disables it.
        :class:`~linger_sched.errors.ScheduleStateError` when the name exists."""
        inserts: list[dict[str, Any]] = []
        self._sync_one(d, None, self._now(), inserts, [], [], [], source="runtime")
        (row,) = inserts
        self.store.insert_schedule({**row, "source": "runtime"}, now=self.clock.store_now())
        log.info("schedule %s added at runtime (task %s, %s)", d.name, d.task, d.spec.describe(),
                 extra={"action": "schedule_added", "schedule": d.name})

    def update_runtime(self, name: str, changes: dict[str, Any], task_def: Callable[[str], TaskDef | None]) -> None:
        """Change the runtime schedule ``name``: its stored definition with ``changes`` (options
        of :func:`runtime_definition`, and ``task``; ``cron`` replaces ``every`` and the other
        way round), checked as a new one is (``task_def(task name)``: the task if registered
        here). As at a sync, a changed spec recomputes the next fire time and records the old
        spec's due fire times as one ``skipped`` row. :class:`ScheduleNotFoundError`,
        :class:`ScheduleStateError` for a declared schedule, :class:`ConfigError` for bad
        options (nothing changes then)."""
        for _ in range(5):
            old = self.store.get_schedule(name)
            if old.source != "runtime":
                raise ScheduleStateError(
                    f"schedule {name!r} is declared in code or schedules.yaml and cannot be changed at runtime: "
                    "change it there (each node's start-up sync writes it again)")
            try:
                merged = stored_definition(old)
            except (ValueError, TypeError, LingerError) as exc:
                raise ConfigError(f"its stored definition cannot be read ({_describe(exc)}); remove it and add it again",
                                  key=f"schedule {name!r}") from None
            if "cron" in changes:
                merged.pop("every", None)
                merged.pop("anchor", None)
            if "every" in changes:
                merged.pop("cron", None)
                merged.pop("tz", None)
            opts = {k: v for k, v in changes.items() if k != "task"}
            task = changes.get("task") or old.task
            d = runtime_definition(name, task, {**merged, **opts}, task_def(task))
            updates: list[dict[str, Any]] = []
            plans: list[Plan] = []
            self._sync_one(d, old, self._now(), [], updates, plans, [], source="runtime")
            if not updates:
                return  # nothing changes
            values = {k: v for k, v in updates[0].items() if k != "name"}
            if self.store.update_runtime_schedule(name, values, expected=old.next_run_at, plan=plans[0] if plans else None,
                                                  now=self.clock.store_now()):
                log.info("schedule %s changed at runtime (task %s, %s)", name, d.task, d.spec.describe(),
                         extra={"action": "schedule_changed", "schedule": name})
                return
        raise LingerError(f"schedule {name!r} kept changing while it was being updated; try again")

    def _undeclared(self, existing: dict[str, ScheduleRow], declared: set[str]) -> list[str]:
        """The enabled schedules that neither ``declared`` nor any live node declares."""
        # a schedule created at runtime is nobody's declaration: never disabled for that
        candidates = sorted(n for n, r in existing.items() if r.enabled and n not in declared and r.source != "runtime")
        live = self.store.live_declarations(self.settings.live_within, now=self.clock.store_now())
        others = {n for names in live.values() for n in names} - declared
        self._watch = set(others)
        self._missing = {}
        disable = []
        for n in candidates:
            holders = sorted(node for node, names in live.items() if n in names)
            if holders:
                log.info("schedule %s is not declared here but live node(s) %s declare it: kept", n, ", ".join(holders),
                         extra={"action": "schedule_kept", "schedule": n})
            else:
                disable.append(n)
        return disable

    def _reconcile(self) -> None:
        """Leader, every reconcile_interval: disable the schedules whose last declaring node
        is gone (no live node has declared them for live_within seconds)."""
        assert self._declared is not None
        s = self.settings
        live = self.store.live_declarations(s.live_within, now=self.clock.store_now())
        others = {n for names in live.values() for n in names} - self._declared
        mono = self.clock.monotonic()
        for n in others:
            self._missing.pop(n, None)
        for n in self._watch - others:
            self._missing.setdefault(n, mono)
        self._watch |= others
        gone = sorted(n for n, since in self._missing.items() if mono - since >= s.live_within)
        if not gone:
            return
        for n in self.store.disable_schedules(gone, "not declared", now=self.clock.store_now()):
            log.warning("schedule %s: no live node declares it any more: disabled (history kept)", n,
                        extra={"action": "schedule_disabled", "schedule": n})
        for n in gone:
            self._watch.discard(n)
            self._missing.pop(n, None)

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.lease is not None and self.clock.monotonic() < self._trusted_until

    def _lead(self) -> bool:
        s = self.settings
        mono = self.clock.monotonic()
        if self.is_leader() and mono - self._last_renew < s.renew_interval:
            return True
        started = mono
        was = self.lease is not None
        try:
            lease = self.store.acquire_lease(LEADER, self.node_id, s.lease_ttl, now=self.clock.store_now())
        except LingerError as exc:
            log.warning("could not renew the leader lease: %s", exc, extra={"action": "lease_error"})
            if was and not self.is_leader():  # trusted no longer: another node may lead by now
                log.warning("lost the leader lease: it could not be renewed in time", extra={"action": "lease_lost"})
                self._set_lease(None, f"it could not be renewed in time: {exc}")
            return self.is_leader()
        self._last_renew = started
        if lease is None:
            if was:
                log.warning("lost the leader lease", extra={"action": "lease_lost"})
                self._set_lease(None, "another node holds it")
            return False
        # Trust the lease until the renewal *started* + TTL, less a margin for clock rates.
        self._trusted_until = started + s.lease_ttl * 0.9
        if not was or (self.lease and self.lease.epoch != lease.epoch):
            if was and self.lease is not None:  # another node led in between
                self._lost(self.lease, f"another node led meanwhile (epoch {self.lease.epoch}, now {lease.epoch})")
            log.info("became leader (epoch %s)", lease.epoch, extra={"action": "lease_acquired", "epoch": lease.epoch})
            self._set_lease(lease)
        self.lease = lease
        return True

    def _set_lease(self, lease: Lease | None, reason: str | None = None) -> None:
        old, self.lease = self.lease, lease
        if lease is None:
            self._trusted_until = -1e18
        if self.on_leadership:
            self.on_leadership(lease is not None, lease)
        if lease is not None and self.hooks.wanted("leader_acquired"):
            self.hooks.emit(Event("leader_acquired", self.node_id, at=self.clock.now(), epoch=lease.epoch))
        elif lease is None and old is not None:
            self._lost(old, reason)

    def _lost(self, old: Lease, reason: str | None) -> None:
        if self.hooks.wanted("leader_lost"):
            self.hooks.emit(Event("leader_lost", self.node_id, at=self.clock.now(), epoch=old.epoch, reason=reason))

    def resign(self) -> None:
        """Release the lease so a peer takes over on its next tick (clean shutdown)."""
        if self.lease is not None:
            try:
                self.store.release_lease(LEADER, self.node_id, now=self.clock.store_now())
                log.info("released the leader lease", extra={"action": "lease_released"})
            except LingerError as exc:
                log.warning("could not release the leader lease: %s", exc, extra={"action": "lease_release_error"})
            self._set_lease(None, "released")

    # -- the tick -----------------------------------------------------------------------
    def tick(self) -> TickReport:
        """Renew or acquire the lease; if leader, materialize every due occurrence.

        A schedule that cannot be planned, or whose occurrences the database rejects, is
        marked in error and retried after a backoff; the others go on."""
        report = TickReport(wait=self.settings.tick_interval)
        self._doing = "renewing the leader lease"
        if not self._lead():
            return report
        assert self.lease is not None
        report.leader, report.epoch = True, self.lease.epoch
        stuck = False
        debug = log.isEnabledFor(logging.DEBUG)
        lead = timedelta(seconds=self.clock.lead(self.settings.lead_time))
        while True:
            # one query when idle: the earliest fire time and the (database) clock together
            self._doing = "reading the next fire time"
            first, now = self.store.schedule_horizon(self.clock.store_now())
            if first is None or first > now + lead:
                break
            at = now + lead
            self._doing = "reading due schedules"
            due = self.store.due_schedules(now=at, limit=self.settings.batch)
            report.due += len(due)
            if not due:
                break
            rows = {row.name: row for row in due}
            plans = []
            failed: list[tuple[ScheduleRow, BaseException]] = []
            for row in due:
                self._doing = f"planning schedule {row.name}"
                try:
                    plans.append(plan(row, self._spec(row), at, active=row.active, threshold=self.settings.threshold))
                except Exception as exc:  # noqa: BLE001 - any row, however broken, is that schedule's problem
                    failed.append((row, exc))
            if not self.is_leader():
                break
            applied, rejected = self._materialize(plans)
            failed.extend((rows[p.name], exc) for p, exc in rejected)
            marked = sum(self._mark(row, exc, at) for row, exc in failed)
            report.failed += marked
            want_created, want_skipped = self.hooks.wanted("occurrence_created"), self.hooks.wanted("occurrence_skipped")
            for p in plans:
                if p.name not in applied:
                    continue
                report.applied += 1
                for o in p.occurrences:
                    if o.state == "skipped":
                        report.skipped += 1
                        log.warning("schedule %s: %s skipped (%s)", p.name, o.scheduled_for.isoformat(), o.reason,
                                    extra={"action": "occurrence_skipped", "schedule": p.name, "task": p.task,
                                           "scheduled_for": o.scheduled_for, "reason": o.reason,
                                           "occurrences": o.occurrences})
                        if want_skipped:
                            self._emit_occurrence("occurrence_skipped", p, o, now)
                    else:
                        report.jobs += 1
                        if debug:
                            log.debug("schedule %s: occurrence %s materialized", p.name, o.scheduled_for.isoformat(),
                                      extra={"action": "materialized", "schedule": p.name, "task": p.task,
                                             "scheduled_for": o.scheduled_for})
                        if want_created:
                            self._emit_occurrence("occurrence_created", p, o, now)
            if report.jobs and self.on_materialized is not None:
                self.on_materialized(report.jobs)
            if not applied and not marked:
                # what is left (a lost race, a mark that lost its race) waits for the next tick,
                # not a busy loop; while batches make progress, the horizon query above decides
                # whether another schedule came due (or within lead_time) meanwhile
                first, now = self.store.schedule_horizon(self.clock.store_now())
                stuck = first is not None and first <= now + lead
                break
        if self._declared is not None and self.clock.monotonic() >= self._next_reconcile:
            self._next_reconcile = self.clock.monotonic() + self.settings.reconcile_interval
            self._doing = "checking which schedules live nodes declare"
            try:
                self._reconcile()
            except LingerError as exc:
                log.warning("could not check which schedules live nodes declare: %s", exc, extra={"action": "reconcile_error"})
        if first is not None and not stuck:
            report.wait = max(0.0, min(self.settings.tick_interval, (first - now - lead).total_seconds()))
        return report

    def _emit_occurrence(self, name: str, p: Plan, o: Occurrence, now: datetime) -> None:
        """``occurrence_created`` or ``occurrence_skipped``, after the commit; ``data``:
        ``occurrences``, how many fire times the row stands for (a coalesced run, a skipped
        range)."""
        self.hooks.emit(Event(name, self.node_id, at=now, task=p.task, queue=p.queue, schedule=p.name,
                              scheduled_for=o.scheduled_for, reason=o.reason, data={"occurrences": o.occurrences}))

    def _materialize(self, plans: Sequence[Plan]) -> tuple[set[str], list[tuple[Plan, BaseException]]]:
        """Commit ``plans``; when the database rejects the batch's values, find the plans it
        rejects by bisection (the others commit). Returns (applied names, rejected plans).
        A lost connection or any failure that is not about the values written (schema,
        permissions, disk) is raised: no schedule is to blame, the run loop backs off."""
        if not plans:
            return set(), []
        assert self.lease is not None
        self._doing = f"materializing {len(plans)} schedule(s)" if len(plans) > 1 else f"materializing schedule {plans[0].name}"
        try:
            return set(self.store.materialize(plans, lease=LEADER, holder=self.node_id, epoch=self.lease.epoch,
                                              now=self.clock.store_now())), []
        except Exception as exc:
            if not self.store.rejects_values(exc):
                raise
            if len(plans) == 1:
                return set(), [(plans[0], exc)]
            log.warning("the database rejected a batch of %d schedules (%s); retrying in parts to find the one(s) it rejects",
                        len(plans), _describe(exc), extra={"action": "batch_rejected"})
        mid = len(plans) // 2
        a1, r1 = self._materialize(plans[:mid])
        a2, r2 = self._materialize(plans[mid:])
        return a1 | a2, r1 + r2

    def _mark(self, row: ScheduleRow, exc: BaseException, now: datetime) -> bool:
        """Mark ``row`` in error and skip it until a backoff passes: max(error_retry_min,
        time in error), at most error_retry_max, so retries double. Returns whether it applied."""
        s = self.settings
        self._doing = f"marking schedule {row.name} in error"
        since = row.error_since or now
        delay = min(s.error_retry_max, max(s.error_retry_min, (now - since).total_seconds()))
        retry_at = now + timedelta(seconds=delay)
        assert row.next_run_at is not None
        message = _describe(exc)
        ok = self.store.mark_schedule_error(row.name, message, expected=row.next_run_at, retry_at=retry_at,
                                            now=self.clock.store_now())
        log.error("schedule %s cannot be scheduled: %s; skipped until %s (the others go on)", row.name, message,
                  retry_at.isoformat(), exc_info=exc if not isinstance(exc, (SpecError, StoreError, ValueError)) else None,
                  extra={"action": "schedule_error", "schedule": row.name})
        return ok

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; sleep until the next fire time or tick, whichever first.

        Survives every exception: it is logged (with what the tick was doing), and the loop
        backs off (doubling from tick_interval, at most 10 s) and ticks again. The lease is
        trusted only until its deadline, so a node that cannot reach the database stops
        materializing on its own."""
        failures = 0
        while not stop.is_set():
            try:
                report = self.tick()
                wait = report.wait
                failures = 0
            except Exception as exc:  # the loop must not die: logged with its traceback below
                failures += 1
                wait = backoff(failures, base=self.settings.tick_interval, cap=10.0)
                log.error("scheduler tick failed while %s: %s; retrying in %.1fs", self._doing, _describe(exc), wait,
                          exc_info=not isinstance(exc, StoreError),
                          extra={"action": "tick_error", "doing": self._doing})
            self.clock.wait(max(wait, 0.001), stop)
