"""Health: database-wide checks that catch a stalled scheduler, and every node's watch on it.

:func:`check_health` reads a handful of cheap, indexed facts from the store (the leader lease,
the overdue schedules, the nodes' heartbeats, the expired job locks, the recent outcomes, the
oldest due job) and judges each with a pure function, so that each check says *what* is wrong:
schedule names, node ids, job ids, counts and ages. ``Linger.health()``, ``linger-sched
health``, the dashboard's ``/healthz`` and the metrics server's (:func:`healthz`) are front
ends over it.

The one check that matters most is ``schedules_overdue``: an enabled schedule whose fire time
is further in the past than the misfire threshold means no scheduler is materializing
occurrences, whatever the cause (no leader, a leader whose tick thread died or hangs, a
database error, a bad schedule). :class:`SchedulerWatch` is the same fact seen from every
node: it logs ``scheduler_stalled`` once per incident (and ``scheduler_recovered``), so that a
stalled leader is noticed by its peers, not only by itself.

Statuses: ``healthy``, ``degraded`` (something needs a look; jobs and schedules still run)
and ``unhealthy`` (schedules do not fire, or the database cannot be read), with the exit
codes of monitoring plugins (0, 1, 2). The thresholds and their settings are documented in
docs/operations.md ("Health").
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import SchemaError
from .store import Lease, NodeRow, ScheduleRow, Store
from .store.dialect import mask_url
from .store.rows import LockedJob

if TYPE_CHECKING:
    from .app import Linger

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}  # as monitoring plugins (Nagios, Icinga) expect
CHECKS = ("leader", "schedules_overdue", "nodes", "stuck_jobs", "failure_rate", "queue_age")
NAMED = 5  # names a message lists before "and N more"


@dataclass(frozen=True)
class Check:
    """One check's verdict. ``message`` says what is wrong (or what was found) in one line of
    names, ids, counts and ages, never stored free text (a task's error, a URL); ``details``
    holds the same as JSON-ready values (``linger-sched health --json``)."""

    name: str
    status: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class HealthReport:
    """The checks of one moment; the report's status is the worst of theirs."""

    checks: list[Check]
    checked_at: datetime | None = None  # the database's clock (the app's fake clock in tests)

    @property
    def status(self) -> str:
        return max((c.status for c in self.checks), key=EXIT_CODES.__getitem__, default=UNHEALTHY)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def check(self, name: str) -> Check:
        """The check named ``name`` (KeyError when it was not run)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """JSON-ready: ``status``, ``exit_code``, ``checked_at`` (ISO 8601 with offset) and
        ``checks`` (``name``, ``status``, ``message``; with ``details``, their details too).
        Without details it is what ``/healthz`` answers to anyone who asks."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "checked_at": None if self.checked_at is None else self.checked_at.isoformat(),
            "checks": [
                {"name": c.name, "status": c.status, "message": c.message, **({"details": dict(c.details)} if details else {})}
                for c in self.checks
            ],
        }


@dataclass(frozen=True)
class Thresholds:
    """When a check turns degraded or unhealthy (``Linger.health`` fills them from settings)."""

    overdue_after: float = 32.0  # misfire threshold: lease_ttl + 2 ticks by default
    node_lost_after: float = 30.0  # node_lost_after; also how stale an unrescued lock must be
    failure_window: float = 900.0  # health_window
    max_failure_rate: float = 0.5  # health_max_failure_rate
    min_finished: int = 10  # fewer finished jobs in the window are too few to judge a rate by
    max_queue_age: float = 300.0  # health_max_queue_age


# -- wording ----------------------------------------------------------------------------
def age(seconds: float) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.0d``: a duration as a message shows it."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _listed(items: Sequence[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:NAMED])
    more = total - min(len(items), NAMED)
    return f"{shown} and {more} more" if more > 0 else shown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _since(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


# -- the checks, as pure functions of what the store said ---------------------------------
def leader_check(lease: Lease | None, now: datetime, active_schedules: bool, t: Thresholds) -> Check:
    """A leader holds a fresh lease. Without one: *healthy* when no enabled, unpaused schedule
    needs it; *degraded* for up to ``overdue_after`` seconds after the lease ended (a release
    at shutdown or a crash: a peer takes over on its next tick, or once the lease expired);
    *unhealthy* after that, or when no node ever led."""
    if lease is not None and lease.expires_at > now:
        left = _since(lease.expires_at, now)
        return Check("leader", HEALTHY, f"{lease.holder} leads (epoch {lease.epoch}; lease valid for {age(left)})",
                     {"holder": lease.holder, "epoch": lease.epoch, "expires_at": lease.expires_at.isoformat()})
    if lease is None:
        if not active_schedules:
            return Check("leader", HEALTHY, "no leader yet (none needed: no enabled, unpaused schedule)", {})
        return Check("leader", UNHEALTHY, "no node has ever held the leader lease, and schedules are enabled: "
                     "is a node with a scheduler running (linger-sched run)?", {})
    gone = _since(now, lease.expires_at)
    how = "released it at shutdown" if lease.released else "let it expire (stopped renewing it)"
    details = {"holder": lease.holder, "epoch": lease.epoch, "expires_at": lease.expires_at.isoformat(),
               "released": lease.released, "leaderless_for": round(gone, 3)}
    what = f"no leader for {age(gone)}: {lease.holder} (epoch {lease.epoch}) {how}"
    if not active_schedules:
        return Check("leader", HEALTHY, f"{what}; none needed: no enabled, unpaused schedule", details)
    if gone <= t.overdue_after:
        return Check("leader", DEGRADED, f"{what}; a peer with a scheduler takes over on its next tick", details)
    return Check("leader", UNHEALTHY, f"{what}, and no node took over within {age(t.overdue_after)}: "
                 "is a node with a scheduler running?", details)


def schedules_check(
    overdue: int, first: Sequence[ScheduleRow], errors: Sequence[ScheduleRow], now: datetime, t: Thresholds,
) -> Check:
    """No enabled, unpaused schedule is overdue by more than ``overdue_after`` seconds, and
    none is in error (``errors``: the schedules in error, any state) since a fire time that
    long ago: *unhealthy* otherwise, naming them."""
    limit = now - timedelta(seconds=t.overdue_after)
    failing = [r for r in errors if r.enabled and not r.paused and (r.retry_from or r.error_since or now) < limit]
    if not overdue and not failing:
        return Check("schedules_overdue", HEALTHY, f"no schedule is overdue by more than {age(t.overdue_after)}",
                     {"overdue": 0, "in_error": 0, "threshold": t.overdue_after})
    parts = []
    if overdue:
        named = [f"{r.name} (due {age(_since(now, r.next_run_at))} ago)" for r in first if r.next_run_at is not None]
        parts.append(f"{_plural(overdue, 'schedule')} overdue by more than {age(t.overdue_after)}: {_listed(named, overdue)}")
    if failing:
        named = [f"{r.name} (since {age(_since(now, r.error_since))} ago)" if r.error_since else r.name for r in failing]
        parts.append(f"{_plural(len(failing), 'schedule')} in error: {_listed(named)}")
    details = {
        "overdue": overdue, "in_error": len(failing), "threshold": t.overdue_after,
        "schedules": [{"name": r.name, "next_run_at": r.next_run_at and r.next_run_at.isoformat()} for r in first],
        "errors": [{"name": r.name, "since": r.error_since and r.error_since.isoformat(), "error": r.error} for r in failing],
    }
    return Check("schedules_overdue", UNHEALTHY, "; ".join(parts), details)


def lost_nodes(nodes: Sequence[NodeRow], now: datetime, lost_after: float) -> list[NodeRow]:
    """The nodes whose last heartbeat is more than ``lost_after`` seconds old."""
    return [n for n in nodes if _since(now, n.heartbeat_at) > lost_after]


def nodes_check(nodes: Sequence[NodeRow], now: datetime, t: Thresholds) -> Check:
    """Every node heartbeats (a node silent for ``node_lost_after`` seconds is *lost*), and
    the live scheduler nodes run the same registry (tasks and schedules, DESIGN
    "Registration drift"): *degraded* otherwise, as when no node is live at all."""
    lost = lost_nodes(nodes, now, t.node_lost_after)
    live = [n for n in nodes if n not in lost]
    by_hash: dict[str, list[str]] = {}
    for n in live:
        if "scheduler" in n.roles and n.registry_hash:
            by_hash.setdefault(n.registry_hash, []).append(n.id)
    details: dict[str, Any] = {
        "live": [n.id for n in live],
        "lost": [{"id": n.id, "heartbeat_at": n.heartbeat_at.isoformat()} for n in lost],
        "registries": {h: ids for h, ids in sorted(by_hash.items())},
        "lost_after": t.node_lost_after,
    }
    problems = []
    if lost:
        named = [f"{n.id} (last heartbeat {age(_since(now, n.heartbeat_at))} ago)" for n in lost]
        problems.append(f"{_plural(len(lost), 'node')} lost (no heartbeat for more than {age(t.node_lost_after)}): "
                        f"{_listed(named)}")
    if len(by_hash) > 1:
        groups = [f"{h[:8]}: {', '.join(ids)}" for h, ids in sorted(by_hash.items(), key=lambda kv: -len(kv[1]))]
        problems.append(f"scheduler nodes run {len(by_hash)} different registries (tasks/schedules): {'; '.join(groups)}")
    if not live:
        problems.insert(0, "no live node: nothing runs jobs or schedules")
    if problems:
        return Check("nodes", DEGRADED, "; ".join(problems), details)
    schedulers = sum(1 for n in live if "scheduler" in n.roles)
    return Check("nodes", HEALTHY, f"{_plural(len(live), 'live node')} ({schedulers} with a scheduler)", details)


def stuck_check(count: int, first: Sequence[LockedJob], now: datetime, t: Thresholds) -> Check:
    """No job is ``running`` with a lock that expired more than ``node_lost_after`` seconds
    ago (every worker rescues expired locks within seconds: such a job means no worker does):
    *degraded* otherwise, naming the jobs."""
    if not count:
        return Check("stuck_jobs", HEALTHY, "no running job is past its lock", {"count": 0})
    named = [f"#{j.id} {j.task} (locked by {j.locked_by}, lock expired {age(_since(now, j.locked_until))} ago)"
             for j in first if j.locked_until is not None]
    return Check(
        "stuck_jobs", DEGRADED,
        f"{_plural(count, 'running job')} past its lock by more than {age(t.node_lost_after)} and not rescued: "
        f"{_listed(named, count)}: is a worker running?",
        {"count": count, "jobs": [{"id": j.id, "task": j.task, "queue": j.queue, "locked_by": j.locked_by,
                                   "locked_until": j.locked_until and j.locked_until.isoformat()} for j in first]},
    )


def failure_check(finished: Mapping[str, tuple[int, int]], t: Thresholds) -> Check:
    """The share of jobs that ended ``failed`` among those that finished (succeeded or failed)
    in the last ``failure_window`` seconds is at most ``max_failure_rate``: *degraded*
    otherwise, naming the queues with the most failures. ``finished``: ``{queue:
    (succeeded, failed)}``. Fewer than ``min_finished`` jobs are too few to judge."""
    ok = sum(s for s, _ in finished.values())
    bad = sum(f for _, f in finished.values())
    total = ok + bad
    window = age(t.failure_window)
    details = {"succeeded": ok, "failed": bad, "window": t.failure_window, "max_rate": t.max_failure_rate,
               "by_queue": {q: {"succeeded": s, "failed": f} for q, (s, f) in sorted(finished.items())}}
    if total < t.min_finished:
        return Check("failure_rate", HEALTHY, f"{_plural(total, 'job')} finished in the last {window} "
                     f"(fewer than {t.min_finished}: too few to judge a rate)", details)
    rate = bad / total
    details["rate"] = round(rate, 4)
    if rate <= t.max_failure_rate:
        return Check("failure_rate", HEALTHY, f"{bad} of {total} jobs finished in the last {window} failed ({rate:.0%})",
                     details)
    worst = sorted(((f, q) for q, (_, f) in finished.items() if f), reverse=True)
    named = [f"{q} ({f} of {sum(finished[q])})" for f, q in worst]
    return Check("failure_rate", DEGRADED, f"{bad} of {total} jobs finished in the last {window} failed ({rate:.0%}, "
                 f"over {t.max_failure_rate:.0%}); by queue: {_listed(named)}", details)


def queue_check(oldest: Mapping[str, datetime], now: datetime, t: Thresholds) -> Check:
    """No due job has waited more than ``max_queue_age`` seconds: *degraded* otherwise, naming
    the queues. ``oldest``: ``{queue: the earliest run_at of its queued jobs}`` (``""``: of
    every queue, when the queues were not told apart)."""
    ages = {q: _since(now, at) for q, at in oldest.items()}
    due = {q: a for q, a in ages.items() if a > 0}
    details = {"max_age": t.max_queue_age, "oldest_due": {q: round(a, 3) for q, a in sorted(due.items())}}
    late = sorted(((a, q) for q, a in due.items() if a > t.max_queue_age), reverse=True)
    if not late:
        worst = max(due.values(), default=0.0)
        return Check("queue_age", HEALTHY, f"the oldest due job waited {age(worst)}" if due else "no due job is waiting",
                     details)
    named = [f"{q} ({age(a)})" if q else age(a) for a, q in late]
    if late[0][1]:
        message = f"due jobs waited more than {age(t.max_queue_age)} in {_plural(len(late), 'queue')}: {_listed(named)}"
    else:
        message = f"the oldest due job waited {named[0]} (over {age(t.max_queue_age)})"
    return Check("queue_age", DEGRADED, message + ": are enough workers serving these queues?", details)


# -- reading the store -------------------------------------------------------------------
def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    """``fn()``; a check whose reads fail is unhealthy, and the others still run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing read must not hide the other checks
        # the driver's text (hosts, SQL) in the details only: /healthz shows messages to anyone
        return Check(name, UNHEALTHY, f"could not check: the database read failed ({type(exc).__name__})",
                     {"error": mask_url(_first_line(exc))})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def database_down(url: str, exc: BaseException) -> Check:
    """The ``database`` check of a database that cannot be read (``url`` masked). The
    driver's text goes to the details: the message is shown to anyone by ``/healthz``."""
    return Check("database", UNHEALTHY, f"cannot read the database ({type(exc).__name__})",
                 {"url": mask_url(url), "error": mask_url(_first_line(exc))})


def check_health(store: Store, t: Thresholds, *, now: datetime | None = None, lease: str = "leader") -> HealthReport:
    """Run every check against ``store`` at ``now`` (None: the database's clock, read once
    and used for every check). A database that cannot be read gives one ``database`` check,
    unhealthy, naming the error (never raised). ``lease``: the leader lease's name.

    Cost: a few indexed reads (the lease row, two ranges of ``schedules_due_ix``, the node
    rows, the schedules in error, a range of ``jobs_running_ix``, the recent finished jobs
    by id (``jobs_done_ix`` from the first job created a window before), and the earliest
    ``run_at`` through the claim index), whatever the number of jobs."""
    try:
        store.check_schema()  # a schema of another version: no node of this package can run on it
        first_fire, at = store.schedule_horizon(now)
    except SchemaError as exc:
        error = mask_url(_first_line(exc))
        message = error if error.startswith("schema version") else \
            "the tables are missing or out of date (linger-sched db init or db upgrade)"  # no URL: /healthz is public
        return HealthReport([Check("database", UNHEALTHY, message, {"url": store.display_url, "error": error})])
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, anything: reported, not raised
        return HealthReport([database_down(store.display_url, exc)])
    active = first_fire is not None

    def leader() -> Check:
        return leader_check(store.get_lease(lease), at, active, t)

    def schedules() -> Check:
        n, first, _ = store.overdue_schedules(t.overdue_after, now=at, limit=NAMED + 5)
        return schedules_check(n, first, store.schedule_errors(), at, t)

    def nodes() -> Check:
        return nodes_check(store.list_nodes(), at, t)

    def stuck() -> Check:
        n, first = store.expired_locks(t.node_lost_after, now=at, limit=NAMED)
        return stuck_check(n, first, at, t)

    def failures() -> Check:
        since = at - timedelta(seconds=t.failure_window)
        # jobs created up to a window before the window began: a job that waited or ran
        # longer than that before it finished is not counted (Store.finished_histogram)
        min_id = store.first_job_id_since(since - timedelta(seconds=t.failure_window))
        finished: dict[str, tuple[int, int]] = {}
        if min_id is not None:
            counts = store.finished_histogram([since, at + timedelta(microseconds=1)], min_id=min_id)
            for (queue, state), (n,) in counts.items():
                ok, bad = finished.get(queue, (0, 0))
                finished[queue] = (ok + n, bad) if state == "succeeded" else (ok, bad + n)
        return failure_check(finished, t)

    def queues() -> Check:
        first, _ = store.next_due(None, now=at)
        if first is None or _since(at, first) <= t.max_queue_age:
            return queue_check({"": first} if first is not None else {}, at, t)
        # over the threshold: tell the queues apart (one seek per queue with queued jobs)
        names = sorted({q for (q, state), n in store.count_by_queue_and_state().items() if state == "queued" and n})
        oldest = {q: o for q in names if (o := store.next_due([q], now=at)[0]) is not None}
        return queue_check(oldest or {"": first}, at, t)

    checks = [_guarded(name, fn) for name, fn in zip(CHECKS, (leader, schedules, nodes, stuck, failures, queues))]
    return HealthReport(checks, at)


# -- every node's watch on the scheduler ----------------------------------------------------
class SchedulerWatch:
    """Notices a stalled scheduler from any node: schedules overdue by more than
    ``threshold`` seconds while some node holds a valid leader lease (a leader that renews
    its lease but does not materialize: its tick thread died or hangs, or it was frozen
    before its lease ran out). Logs ``scheduler_stalled`` at ERROR once per incident, naming
    the schedules and the lease holder, and ``scheduler_recovered`` at WARNING once no
    schedule is overdue any more. Overdue schedules without a valid lease are the
    ``leader`` check's business (no leader: a peer takes over once the lease expired).

    :meth:`observe` is the decision (pure, given what the store said); :meth:`poll` reads
    the store and calls it. A node calls :meth:`poll` every :attr:`interval` seconds."""

    def __init__(self, node_id: str, threshold: float, *, lease: str = "leader") -> None:
        self.node_id = node_id
        self.threshold = float(threshold)
        self.lease = lease
        self.since: datetime | None = None  # the incident's start (None: no incident)
        self.holder: str | None = None  # the lease holder when it started

    @property
    def interval(self) -> float:
        """Seconds between polls: a third of the threshold, from 1 s to 10 s."""
        return min(10.0, max(1.0, self.threshold / 3))

    def observe(self, now: datetime, overdue: int, first: Sequence[ScheduleRow], lease: Lease | None) -> str | None:
        """Take in one observation; returns ``"stalled"`` or ``"recovered"`` when an incident
        starts or ends (and logs it), else None."""
        held = lease is not None and lease.expires_at > now
        if self.since is None:
            if not overdue or not held:
                return None
            assert lease is not None
            self.since, self.holder = now, lease.holder
            names = [r.name for r in first]
            oldest = min((r.next_run_at for r in first if r.next_run_at is not None), default=None)
            late = age(_since(now, oldest)) if oldest is not None else "?"
            log.error(
                "scheduler stalled: %s overdue by more than %s (oldest due %s ago: %s) while %s holds the leader lease "
                "(epoch %s); its scheduler is not materializing occurrences", _plural(overdue, "schedule"),
                age(self.threshold), late, _listed(names, overdue), lease.holder, lease.epoch,
                extra={"action": "scheduler_stalled", "schedules": names, "overdue": overdue, "leader": lease.holder,
                       "epoch": lease.epoch, "observer": self.node_id},
            )
            return "stalled"
        if overdue:
            return None
        lasted = _since(now, self.since)
        holder = lease.holder if held and lease is not None else None
        log.warning(
            "scheduler recovered: no schedule is overdue any more (stalled for about %s; leader now %s)", age(lasted),
            holder or "none", extra={"action": "scheduler_recovered", "leader": holder, "stalled_for": round(lasted, 3),
                                     "observer": self.node_id},
        )
        self.since = self.holder = None
        return "recovered"

    def poll(self, store: Store, now: datetime | None = None) -> str | None:
        """Read the overdue schedules and the lease (two indexed reads) and :meth:`observe`."""
        overdue, first, at = store.overdue_schedules(self.threshold, now=now, limit=NAMED + 5)
        lease = store.get_lease(self.lease) if overdue or self.since is not None else None
        return self.observe(at, overdue, first, lease)


# -- /healthz ---------------------------------------------------------------------------------
HEALTHZ_MAX_AGE = 1.0  # seconds a /healthz answer is reused: a flood of probes costs one check a second
HEALTHZ_WAIT = 10.0  # seconds a probe waits for the check another probe is running, then 503
# per app: (lock held while a check runs, [answer, when it was made (monotonic, after the check), generation])
_healthz: weakref.WeakKeyDictionary[Any, tuple[threading.Lock, list[Any]]] = weakref.WeakKeyDictionary()
_healthz_lock = threading.Lock()


def _healthz_busy(waited: float) -> tuple[int, bytes]:
    return 503, json.dumps({"status": UNHEALTHY, "exit_code": 2, "checked_at": None, "checks": [
        {"name": "health", "status": UNHEALTHY,
         "message": f"a health check is in progress and did not finish within {waited:g}s (timed out)"}]},
        separators=(",", ":")).encode()


def healthz(app: Linger) -> tuple[int, bytes]:
    """``(HTTP status, JSON body)`` for a ``/healthz`` endpoint: 200 when healthy or degraded,
    503 when unhealthy; the body is :meth:`HealthReport.as_dict` (status, check names and
    messages: no details, no credentials), so it may be served without authentication. One
    answer is reused for :data:`HEALTHZ_MAX_AGE` seconds after its check finished, and
    callers that arrive while a check runs wait for that check and share its answer, so
    probes cannot flood the database; one that waited :data:`HEALTHZ_WAIT` seconds gets 503
    (a check in progress, timed out) rather than a thread piled up behind a slow database."""
    with _healthz_lock:
        slot = _healthz.get(app)
        if slot is None:
            slot = _healthz[app] = (threading.Lock(), [None, -1e18, 0])
    lock, cached = slot
    generation = cached[2]  # the answer in hand when this call came in
    if not lock.acquire(timeout=HEALTHZ_WAIT):
        return _healthz_busy(HEALTHZ_WAIT)
    try:
        if cached[0] is not None and (cached[2] != generation  # a check ran while this call waited
                                      or app.clock.monotonic() - cached[1] < HEALTHZ_MAX_AGE):
            answer: tuple[int, bytes] = cached[0]
            return answer
        try:
            report = app.health()
            answer = (503 if report.status == UNHEALTHY else 200,
                      json.dumps(report.as_dict(), separators=(",", ":")).encode())
        except Exception as exc:  # a probe gets an answer, not a traceback
            log.error("health check failed: %s", exc, exc_info=True, extra={"action": "health_error"})
            answer = (503, json.dumps({"status": UNHEALTHY, "exit_code": 2, "checked_at": None, "checks": [
                {"name": "health", "status": UNHEALTHY, "message": f"the health check failed: {type(exc).__name__}"}]}).encode())
        # stamped after the check: a slow check's answer is fresh for its whole max age
        cached[0], cached[1], cached[2] = answer, app.clock.monotonic(), cached[2] + 1
        return answer
    finally:
        lock.release()
