"""Prometheus metrics (``pip install "linger-sched[metrics]"``; docs/operations.md, "Metrics").

Two kinds of metric, read two ways:

* **what happens in this process** (jobs started and finished, their run time and their delay,
  occurrences, leadership) is counted by event hooks (:mod:`linger_sched.events`) into
  counters and histograms. Under gunicorn or any other pre-fork server, with
  ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client keeps them in files that every scrape
  sums over the processes;
* **what the database holds** (jobs by queue and state, the oldest due job of each queue,
  overdue schedules, the leader, the nodes) is read by the process that answers the scrape,
  once, with cheap indexed queries (see :meth:`Metrics.database_values`), and cached for
  ``ttl`` seconds, so that many scrapers or processes do not load the database. A database
  error never fails a scrape: the last values are served with ``linger_scrape_error 1``.

:func:`instrument` attaches the metrics to an app (once: call it at start-up, before jobs run,
so that every job is counted); :meth:`Metrics.render` is the exposition; :func:`serve` runs
``/metrics`` and ``/healthz`` on a thread (``linger-sched run --metrics-port``);
:func:`make_wsgi_app` mounts the same in a host web app. The dashboard serves ``/metrics`` too.

Label values are task, queue and schedule names, which come from the application's code;
never a job id. Each label keeps at most ``max_label_values`` distinct values per process (a
job enqueued under a made-up task or queue name cannot grow the series without bound); the
rest are counted under ``(other)``.

prometheus-client is imported only when metrics are made: the CLI imports this module
without the extra installed.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError, SpecError, StoreError
from .events import Event
from .health import healthz
from .scheduler import LEADER
from .specs import parse_duration
from .store.dialect import mask_url

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

    from .app import Linger

__all__ = [
    "DEFAULT_TTL", "EXTRA", "METRICS", "DatabaseValues", "EventMetrics", "MetricInfo", "Metrics", "MetricsServer", "instrument",
    "make_wsgi_app", "serve",
]

log = logging.getLogger(__name__)

EXTRA = 'pip install "linger-sched[metrics]"'
DEFAULT_TTL = 10.0  # seconds the database-wide values are cached between scrapes
TTL_ENV = "LINGER_METRICS_TTL"
MAX_TTL = 3600.0
MAX_LABEL_VALUES = 500
OTHER = "(other)"  # the label value of the names past max_label_values
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FIRST_READ_WAIT = 30.0  # seconds a scrape waits for another thread's first read of the database

# run time: a few milliseconds to an hour; delay: the same range from 10 ms
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0)
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# event name -> the outcome label of linger_jobs_finished_total
OUTCOMES: Mapping[str, str] = {
    "job_succeeded": "succeeded", "job_failed": "failed", "job_retried": "retried", "job_cancelled": "cancelled",
    "job_rescued": "rescued",
}
OCCURRENCE_OUTCOMES: Mapping[str, str] = {"occurrence_created": "created", "occurrence_skipped": "skipped"}
HOOKED = ("job_started", *OUTCOMES, *OCCURRENCE_OUTCOMES, "leader_acquired", "leader_lost")


@dataclass(frozen=True)
class MetricInfo:
    """One metric as documented: its name in the exposition (a counter's with ``_total``; a
    histogram's samples add ``_bucket``, ``_sum`` and ``_count``), type, labels and meaning.
    ``source``: ``events`` (counted in each process by event hooks, summed over processes),
    ``process`` (this process's own state) or ``database`` (read once per scrape, cached)."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    source: str


METRICS: Mapping[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("linger_jobs_started_total", "counter", ("task", "queue"),
               "Job attempts started by a worker of this process.", "events"),
    MetricInfo("linger_jobs_finished_total", "counter", ("task", "queue", "outcome"),
               "Job attempts that ended, by outcome: succeeded, failed (no attempt left), retried (queued again), "
               "cancelled, rescued (taken back from a node that stopped heartbeating).", "events"),
    MetricInfo("linger_job_duration_seconds", "histogram", ("task", "queue"),
               "How long job attempts ran (succeeded, failed, retried, cancelled while running).", "events"),
    MetricInfo("linger_job_delay_seconds", "histogram", ("task", "queue"),
               "How long after it was due (run_at) a job attempt started.", "events"),
    MetricInfo("linger_occurrences_total", "counter", ("schedule", "outcome"),
               "Schedule occurrences the leader wrote: created (a queued job) or skipped (overlap, misfire).", "events"),
    MetricInfo("linger_node_leader", "gauge", (),
               "1 while a node of this process holds the leader lease (with several processes: how many of the "
               "live ones do, at most 1).", "process"),
    MetricInfo("linger_queue_jobs", "gauge", ("queue", "state"),
               "Jobs in the table by queue and state (queued includes jobs due later; finished states until "
               "they are pruned).", "database"),
    MetricInfo("linger_queue_oldest_due_seconds", "gauge", ("queue",),
               "How long the oldest due job of the queue has been waiting since its run_at (0: none due).",
               "database"),
    MetricInfo("linger_schedules", "gauge", ("status",),
               "Schedules by status: active, paused, disabled, error (enabled and unpaused, but failing to plan "
               "or write).", "database"),
    MetricInfo("linger_schedules_overdue", "gauge", (),
               "Enabled, unpaused schedules whose next fire time is older than the misfire threshold: the "
               "scheduler is not firing them (no leader, a stalled tick, a database error).", "database"),
    MetricInfo("linger_schedules_overdue_seconds", "gauge", (),
               "How late the most overdue schedule is (now minus the earliest next fire time; 0 when none is due).",
               "database"),
    MetricInfo("linger_leader", "gauge", (), "1 when a node holds an unexpired leader lease, else 0.", "database"),
    MetricInfo("linger_leader_epoch", "gauge", (),
               "The leader lease's epoch: it grows by one at every change of leader (0: no lease yet).", "database"),
    MetricInfo("linger_nodes", "gauge", ("status",),
               "Registered nodes: alive (heartbeat recent) or lost (stopped heartbeating without leaving).",
               "database"),
    MetricInfo("linger_scrape_error", "gauge", (),
               "1 when the last read of the database values failed (the values shown are older), else 0.",
               "database"),
    MetricInfo("linger_scrape_duration_seconds", "gauge", (),
               "How long the last read of the database values took.", "database"),
    MetricInfo("linger_scrape_age_seconds", "gauge", (),
               "Age of the database values shown (they are cached for the TTL; older after a failed read).",
               "database"),
    MetricInfo("linger_build_info", "gauge", ("version",), "Always 1; the linger-sched version as a label.",
               "process"),
)}


def require_prometheus() -> None:
    """:class:`ConfigError` naming the extra to install when prometheus-client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"Prometheus metrics need prometheus-client ({exc}): {EXTRA}", key="metrics") from None


def ttl_from(value: Any, where: str = "ttl") -> float:
    """Seconds to cache the database values: ``value`` (seconds or a duration text), else
    ``LINGER_METRICS_TTL``, else :data:`DEFAULT_TTL`; 0 reads the database at every scrape."""
    if value is None:
        value = os.environ.get(TTL_ENV) or None
        where = TTL_ENV
        if value is None:
            return DEFAULT_TTL
    if isinstance(value, str):
        try:
            seconds = parse_duration(value.strip(), field=where).total_seconds() if value.strip() not in ("0", "0s") else 0.0
        except SpecError as exc:
            raise ConfigError(f"{exc.message}; got {value!r}", key=where) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(f"must be a number of seconds, got {type(value).__name__}", key=where)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TTL:
        raise ConfigError(f"must be from 0 to {MAX_TTL:g} seconds, got {value!r}", key=where)
    return seconds


class _Names:
    """The label values a label may take in this process: the first ``limit`` names seen,
    then :data:`OTHER`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        name = "" if value is None else str(value)
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(name)
                return name
        return OTHER


class EventMetrics:
    """The counters and histograms fed by event hooks, and the leadership gauge of this
    process; registered in ``registry`` (None: in multiprocess mode, where prometheus-client
    writes them to files that every scrape reads)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def doc(name: str) -> str:
            return METRICS[name].help

        def counter(name: str) -> Counter:
            return Counter(name, doc(name), METRICS[name].labels, registry=registry)

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc(name), METRICS[name].labels, buckets=buckets, registry=registry)

        self.started = counter("linger_jobs_started_total")
        self.finished = counter("linger_jobs_finished_total")
        self.occurrences = counter("linger_occurrences_total")
        self.duration = histogram("linger_job_duration_seconds", DURATION_BUCKETS)
        self.delay = histogram("linger_job_delay_seconds", DELAY_BUCKETS)
        # livesum: the processes that lead, among those alive (gunicorn's child_exit hook
        # calls mark_process_dead, which forgets a dead worker's value)
        self.leader: Gauge = Gauge("linger_node_leader", doc("linger_node_leader"), registry=registry,
                                   multiprocess_mode="livesum")


_shared: EventMetrics | None = None
_shared_lock = threading.Lock()


def _shared_event_metrics() -> EventMetrics:
    """Multiprocess mode: one set of event metrics per process (their values live in files
    keyed by metric and labels; two sets in one process would overwrite each other's)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EventMetrics(None)
        return _shared


def _seconds(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


@dataclass
class DatabaseValues:
    """The database-wide values of one read (see :meth:`Metrics.database_values`)."""

    now: datetime  # the database's clock (or the app's fake clock) at the read
    jobs: dict[tuple[str, str], int]  # (queue, state) -> jobs
    oldest_due: dict[str, float]  # queue -> seconds its oldest due job has waited (queues with queued jobs)
    schedules: dict[str, int]  # status -> schedules (active, paused, disabled, error)
    overdue: int
    overdue_seconds: float
    leader: bool
    epoch: int
    nodes: dict[str, int] = field(default_factory=dict)  # alive, lost
    read_seconds: float = 0.0  # how long the read took
    read_at: float = 0.0  # the app clock's monotonic time of the read


class Metrics:
    """The Prometheus metrics of one app. Make it with :func:`instrument` (once per app and
    process): it registers the app's event hooks.

    ``ttl``: seconds the database-wide values are cached (default ``LINGER_METRICS_TTL`` or
    10 s; 0: read at every scrape). ``multiprocess``: sum the event metrics over the processes
    that share ``PROMETHEUS_MULTIPROC_DIR`` (default: when it is set)."""

    def __init__(
        self, app: Linger, *, ttl: float | str | None = None, multiprocess: bool | None = None,
        max_label_values: int = MAX_LABEL_VALUES,
    ) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry

        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1:
            raise ConfigError(f"must be a positive integer, got {max_label_values!r}", key="max_label_values")
        # held weakly: the app holds this object (through its hooks and instrument()'s
        # registry), and an app that is dropped must be freed with its metrics
        self._app = weakref.ref(app)
        self.ttl = ttl_from(ttl)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV)) if multiprocess is None else bool(multiprocess)
        if self.multiprocess:
            path = os.environ.get(MULTIPROC_ENV)
            if not path or not os.path.isdir(path):
                raise ConfigError(f"multiprocess metrics need {MULTIPROC_ENV} set to an existing directory "
                                  f"(got {path!r}), set before prometheus_client is first imported", key=MULTIPROC_ENV)
            self.registry: CollectorRegistry | None = None
            self.events = _shared_event_metrics()
        else:
            self.registry = CollectorRegistry(auto_describe=False)
            self.events = EventMetrics(self.registry)
            self.registry.register(_Collector(self))
        self._tasks, self._queues, self._schedules = (_Names(max_label_values) for _ in range(3))
        self._known_queues: set[str] = set()  # reported with 0 queued / running once seen
        self._known_lock = threading.Lock()
        self._values: DatabaseValues | None = None
        self._checked_at: float | None = None  # monotonic time of the last read, good or not
        self._failing = False
        self._read_lock = threading.Lock()
        self._on_event_hook = self._on_event
        app.on(*HOOKED)(self._on_event_hook)

    @property
    def app(self) -> Linger:
        """The app whose metrics these are."""
        app = self._app()
        if app is None:
            raise ConfigError("the app of these metrics no longer exists", key="metrics")
        return app

    # -- events -------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        m, name = self.events, event.name
        if name == "job_started":
            labels = (self._tasks(event.task), self._queues(event.queue))
            m.started.labels(*labels).inc()
            delay = _seconds(event.delay)
            if delay is not None:
                m.delay.labels(*labels).observe(delay)
        elif name in OUTCOMES:
            task, queue = self._tasks(event.task), self._queues(event.queue)
            m.finished.labels(task, queue, OUTCOMES[name]).inc()
            duration = _seconds(event.duration)
            if duration is not None:
                m.duration.labels(task, queue).observe(duration)
        elif name in OCCURRENCE_OUTCOMES:
            m.occurrences.labels(self._schedules(event.schedule), OCCURRENCE_OUTCOMES[name]).inc()
        elif name == "leader_acquired":
            m.leader.set(1)
        elif name == "leader_lost":
            m.leader.set(0)

    def close(self) -> None:
        """Stop counting this app's events (the hooks are removed)."""
        for name in HOOKED:
            self.app.hooks.off(name, self._on_event_hook)
        with _instances_lock:
            if _instances.get(self.app) is self:
                del _instances[self.app]

    # -- the database -------------------------------------------------------------------
    def _read(self) -> DatabaseValues:
        """Every database-wide value, read now: seven short read-only transactions, each on an
        index, the counts table or a small table (leases, nodes, schedules): their cost does
        not grow with the jobs' history (``benchmarks/metrics.py``)."""
        app = self.app
        store = app.store
        mono = app.clock.monotonic()
        at = app.clock.store_now()
        jobs = store.count_by_queue_and_state()
        waiting = [q for (q, state), n in jobs.items() if state == "queued" and n]
        earliest, now = store.earliest_queued(waiting, now=at)
        # the misfire threshold, as health and the nodes' watch of the scheduler use it
        overdue, _, _ = store.overdue_schedules(app.new_scheduler_settings().threshold, now=at, limit=1)
        first, _ = store.schedule_horizon(now=now)
        lease = store.get_lease(LEADER)
        nodes = {"alive": 0, "lost": 0}
        for node in store.list_nodes():
            nodes["alive" if (now - node.heartbeat_at).total_seconds() <= app.settings.node_lost_after else "lost"] += 1
        return DatabaseValues(
            now=now, jobs=jobs,
            oldest_due={q: max(0.0, (now - t).total_seconds()) for q, t in earliest.items()},
            schedules={k: v for k, v in store.schedule_counts().items() if k != "total"},
            overdue=overdue,
            overdue_seconds=max(0.0, (now - first).total_seconds()) if first is not None else 0.0,
            leader=lease is not None and lease.expires_at > now, epoch=lease.epoch if lease is not None else 0,
            nodes=nodes, read_seconds=max(0.0, app.clock.monotonic() - mono), read_at=mono,
        )

    def database_values(self) -> DatabaseValues | None:
        """The database-wide values: cached ones when the last read (good or failed) is less
        than ``ttl`` seconds old, else read now. A failed read is logged (ERROR, action
        ``metrics_error``, once until a read succeeds again) and the previous values stay;
        None when no read has succeeded yet. While another thread reads, the values it
        replaces are returned at once (a hung database holds up one scrape thread, not all)."""
        clock = self.app.clock
        if self._checked_at is not None and clock.monotonic() - self._checked_at < self.ttl:
            return self._values
        # nothing to serve yet: wait for the read under way (bounded); else serve the old values
        if not self._read_lock.acquire(timeout=FIRST_READ_WAIT if self._values is None else 0):
            return self._values
        try:
            if self._checked_at is not None and clock.monotonic() - self._checked_at < self.ttl:
                return self._values  # another thread read meanwhile
            try:
                self._values = self._read()
                if self._failing:
                    log.info("metrics: the database values are read again", extra={"action": "metrics_recovered"})
                self._failing = False
            except Exception as exc:  # a scrape never fails on the database: the error is a metric
                if not self._failing:
                    log.error("metrics: reading the database values failed (serving the last ones, "
                              "linger_scrape_error 1): %s: %s", type(exc).__name__, mask_url(str(exc)),
                              exc_info=not isinstance(exc, StoreError), extra={"action": "metrics_error"})
                self._failing = True
            self._checked_at = clock.monotonic()
            return self._values
        finally:
            self._read_lock.release()

    @property
    def failing(self) -> bool:
        """Whether the last read of the database values failed."""
        return self._failing

    def _families(self) -> Iterator[Metric]:
        """The database-wide and process families of one scrape."""
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, value: float | None = None) -> GaugeMetricFamily:
            info = METRICS[name]
            if info.labels:
                return GaugeMetricFamily(name, info.help, labels=info.labels)
            return GaugeMetricFamily(name, info.help, value=value)

        info = gauge("linger_build_info")
        info.add_metric([__version__], 1.0)
        yield info
        values = self.database_values()
        yield gauge("linger_scrape_error", 1.0 if self._failing else 0.0)
        if values is None:
            return
        yield gauge("linger_scrape_duration_seconds", values.read_seconds)
        yield gauge("linger_scrape_age_seconds", max(0.0, self.app.clock.monotonic() - values.read_at))
        jobs: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {}
        for (queue, state), n in values.jobs.items():
            q = self._queues(queue)
            jobs[q, state] = jobs.get((q, state), 0) + n
        for queue, age in values.oldest_due.items():
            q = self._queues(queue)
            oldest[q] = max(oldest.get(q, 0.0), age)
        with self._known_lock:  # scrapes on several threads
            self._known_queues.update(q for q, _ in jobs)
            known = sorted(self._known_queues)
        family = gauge("linger_queue_jobs")
        for q in known:
            for state in ("queued", "running"):
                jobs.setdefault((q, state), 0)
        for (q, state), n in sorted(jobs.items()):
            family.add_metric([q, state], n)
        yield family
        family = gauge("linger_queue_oldest_due_seconds")
        for q in known:
            family.add_metric([q], oldest.get(q, 0.0))
        yield family
        family = gauge("linger_schedules")
        for status, n in sorted(values.schedules.items()):
            family.add_metric([status], n)
        yield family
        yield gauge("linger_schedules_overdue", values.overdue)
        yield gauge("linger_schedules_overdue_seconds", values.overdue_seconds)
        yield gauge("linger_leader", 1.0 if values.leader else 0.0)
        yield gauge("linger_leader_epoch", values.epoch)
        family = gauge("linger_nodes")
        for status, n in sorted(values.nodes.items()):
            family.add_metric([status], n)
        yield family

    # -- the exposition -----------------------------------------------------------------
    def scrape_registry(self) -> CollectorRegistry:
        """The registry one scrape renders: this process's metrics, or (multiprocess) the sum
        over every process's files; with the database-wide values read once, here."""
        self.events.leader.set(1 if self.app.is_leader() else 0)
        if self.registry is not None:
            return self.registry
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_Collector(self))
        return registry

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """``(body, content type)`` of a scrape, in the format the ``Accept`` header asks for
        (Prometheus text, or OpenMetrics)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.scrape_registry()), content_type


class _Collector:
    """The database-wide and process families, computed when a registry is collected."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._families())


_instances: weakref.WeakKeyDictionary[Linger, Metrics] = weakref.WeakKeyDictionary()
_instances_lock = threading.Lock()


def instrument(app: Linger, *, ttl: float | str | None = None, multiprocess: bool | None = None) -> Metrics:
    """The :class:`Metrics` of ``app`` in this process, made (and its event hooks registered)
    on the first call; later calls return the same object (a ``ttl`` given then replaces the
    old one). Call it at start-up, before the node runs jobs: events before it are not counted.
    :class:`ConfigError` naming the extra when prometheus-client is missing."""
    with _instances_lock:
        metrics = _instances.get(app)
        if metrics is None:
            metrics = _instances[app] = Metrics(app, ttl=ttl, multiprocess=multiprocess)
        elif ttl is not None:
            metrics.ttl = ttl_from(ttl)
        return metrics


# -- serving ----------------------------------------------------------------------------------
def _answer(metrics: Metrics, path: str, accept: str | None) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET of ``path``: /metrics, /healthz, else 404."""
    if path == "/metrics":
        body, content_type = metrics.render(accept)
        return 200, body, content_type
    if path == "/healthz":
        status, body = healthz(metrics.app)
        return status, body, "application/json"
    return 404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8"


def make_wsgi_app(app: Linger, *, ttl: float | str | None = None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that serves ``/metrics`` and ``/healthz`` of ``app`` (paths relative to
    where it is mounted), for a host web app (werkzeug's ``DispatcherMiddleware``, a route).
    Instruments ``app`` now (:func:`instrument`)."""
    metrics = instrument(app, ttl=ttl)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET")])
            return [b"method not allowed\n"]
        status, body, content_type = _answer(metrics, environ.get("PATH_INFO") or "/", environ.get("HTTP_ACCEPT"))
        reason = {200: "OK", 404: "Not Found", 501: "Not Implemented", 503: "Service Unavailable"}.get(status, "")
        start_response(f"{status} {reason}".strip(), [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return wsgi


class _Handler(BaseHTTPRequestHandler):
    server_version = "linger-sched"
    timeout = 30  # a client that sends nothing does not hold a thread for ever
    metrics: Metrics  # set on the subclass made per server

    def do_GET(self) -> None:
        try:
            status, body, content_type = _answer(self.metrics, self.path.split("?", 1)[0], self.headers.get("Accept"))
        except Exception as exc:  # an answer, not a dead server thread
            log.error("metrics: answering %s failed: %s", self.path, exc, exc_info=True,
                      extra={"action": "metrics_error"})
            status, body, content_type = 500, b"internal error (see the node's log)\n", "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: %s " + format, self.address_string(), *args, extra={"action": "metrics_request"})


class MetricsServer:
    """``/metrics`` and ``/healthz`` of an app over HTTP, on a daemon thread of this process
    (:func:`serve`). :meth:`stop` closes it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"must be a port number from 1 to 65535, got {port!r}", key="--metrics-port")
        handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {
            "daemon_threads": True, "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        })
        try:
            self._httpd = server_class((host, port), handler)
        except OSError as exc:  # in use, not an address of this machine, no such host
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {reason}", key="--metrics-port") from None
        self.metrics = metrics
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="linger-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)


def serve(app: Linger, *, host: str = "127.0.0.1", port: int, ttl: float | str | None = None) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` of ``app`` on ``host:port`` (0: a free port; see
    :attr:`MetricsServer.port`) from a daemon thread, until :meth:`MetricsServer.stop`.
    :class:`ConfigError` when the port is in use or the address is not this machine's, or
    when prometheus-client is missing. The metrics reveal task, queue and schedule names:
    bind to an address only your Prometheus reaches."""
    server = MetricsServer(instrument(app, ttl=ttl), host, port)
    log.info("metrics on %s (and /healthz)", server.url, extra={"action": "metrics_serving"})
    return server
