"""The worker: claim due jobs, run them on a thread pool, record outcomes, rescue the dead.

:meth:`Worker.run_once` is one iteration with no sleeping; :meth:`Worker.run` is the thin
loop around it. Outcomes are collected from the pool threads and written in batches by the
loop thread, so the database sees one claim and one finish transaction per batch, never one
per job. A job is marked done only after its function returned (at-least-once: a crash can
re-run a job, never mark an unfinished one done).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import queue as queue_mod
import random
import threading
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import tracing
from .clock import Clock, backoff, sleep
from .errors import JobArgumentsError, JobCancelled, SchemaError, StoreError, UnknownTaskError
from .events import Event, Hooks
from .registry import Registry
from .store import Claimed, Store, decode_args
from .store.rows import Rescued, encode_result, progress_value
from .store.store import DONE_NOTIFY_EVERY

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between two progress writes of one job (at most)


_CONTROL_LOCK = threading.Lock()  # the rare cross-thread steps of every _Control (cheaper than one lock each)


class _Control:
    """The worker's side of one held attempt, shared with its task through
    :class:`JobContext`: the cancel request (learned at a heartbeat), the progress the task
    reports (written at most once per :data:`PROGRESS_INTERVAL`, the last value at the latest
    with the outcome), and, for an ``async def`` task, its asyncio task (to cancel it).

    One is made per claimed job, in the drain's hot loop: plain slots, and a lock only once the
    task reports progress."""

    __slots__ = ("worker", "job", "cancelled", "_lock", "_progress", "_pending", "_written_at", "_loop", "_task")

    def __init__(self, worker: Worker, job: Claimed) -> None:
        self.worker = worker
        self.job = job
        self.cancelled = False  # a cancel was requested (set once, by the heartbeat)
        self._lock: threading.Lock | None = None  # made by the first set_progress
        self._progress: tuple[float, str | None] | None = None  # the last value reported
        self._pending = False  # ... and not written yet
        self._written_at = -1e18  # monotonic instant of the last write (or failed try)
        self._loop: Any = None  # an async task's event loop and asyncio task
        self._task: Any = None

    # -- progress -------------------------------------------------------------------------
    def _progress_lock(self) -> threading.Lock:
        if self._lock is None:
            with _CONTROL_LOCK:
                if self._lock is None:
                    self._lock = threading.Lock()
        return self._lock

    def set_progress(self, value: tuple[float, str | None]) -> None:
        with self._progress_lock():
            self._progress, self._pending = value, True
            if self.worker.clock.monotonic() - self._written_at >= PROGRESS_INTERVAL:
                self._write()

    def flush_progress(self) -> None:
        """Write a value that waited for its interval, once the interval has passed."""
        if not self._pending:
            return
        with self._progress_lock():
            if self._pending and self.worker.clock.monotonic() - self._written_at >= PROGRESS_INTERVAL:
                self._write()

    def take_pending(self) -> tuple[float, str | None] | None:
        """The last value when it is not written yet (it goes with the outcome), else None."""
        if not self._pending:  # no progress reported, or all of it written
            return None
        with self._progress_lock():
            if not self._pending:
                return None
            self._pending = False
            return self._progress

    def _write(self) -> None:  # holding the lock, so that two writes never cross
        assert self._progress is not None
        job, w = self.job, self.worker
        self._written_at = w.clock.monotonic()
        try:
            w.store.set_progress(w.node_id, job.id, job.attempts, *self._progress)
            self._pending = False
        except Exception as exc:  # noqa: BLE001 - progress is advice: the task goes on
            log.warning("could not store the progress of job %s (%s): %s; trying again later", job.id, job.task, exc,
                        extra=_about(job, "progress_error"))

    # -- cancellation ---------------------------------------------------------------------
    def request_cancel(self) -> bool:
        """Note the cancel request (once; returns whether it is new) and cancel an async task."""
        with _CONTROL_LOCK:
            if self.cancelled:
                return False
            self.cancelled = True
            loop, task = self._loop, self._task
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        return True

    def bind_async(self, loop: Any, task: Any) -> bool:
        """Record an async task's loop and task; False when a cancel came first (do not run)."""
        with _CONTROL_LOCK:
            self._loop, self._task = loop, task
            return not self.cancelled


@dataclass(frozen=True)
class JobContext:
    """What a running task can learn about itself through :func:`current_job`, and the two
    things it can tell its worker: its progress (:meth:`set_progress`) and that it stopped
    because it was cancelled (:meth:`raise_if_cancelled`, or raise
    :class:`~linger_sched.errors.JobCancelled`)."""

    id: int
    task: str
    attempt: int
    max_attempts: int
    queue: str
    priority: int
    schedule_name: str | None
    scheduled_for: datetime | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    _control: _Control | None = field(default=None, repr=False, compare=False)

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress: ``fraction`` from 0 to 1 (``TypeError``/``ValueError`` otherwise),
        with an optional ``message`` (text; at most 500 characters are kept). Shown by
        ``Job.progress``/``progress_message`` and ``linger-sched jobs show``. Cheap to call in
        a tight loop: it is written at most about once a second (the first call at once),
        and the last value is always written, at the latest with the job's outcome."""
        value = progress_value(fraction, message)
        if self._control is not None:
            self._control.set_progress(value)

    @property
    def cancel_requested(self) -> bool:
        """True once the job's cancellation was requested (``app.cancel(id)``, ``linger-sched
        jobs cancel ID``) and this worker learned it (at its next lease extension, within a
        third of the job lease TTL). A plain function checks it and stops by raising
        :class:`~linger_sched.errors.JobCancelled`; Python cannot stop its thread for it."""
        return self._control is not None and self._control.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~linger_sched.errors.JobCancelled` if :attr:`cancel_requested`."""
        if self.cancel_requested:
            raise JobCancelled(f"job {self.id} was cancelled while it ran")


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("linger_current_job", default=None)


def current_job() -> JobContext | None:
    """The job the calling thread (or ``async def`` task) is running, or None outside a task."""
    return _current.get()


@dataclass
class WorkerSettings:
    concurrency: int = 8
    queues: list[str] | None = None
    poll_interval: float = 1.0
    job_lease_ttl: float = 30.0
    rescue_interval: float = 5.0
    shutdown_grace: float = 30.0
    prefetch: int | None = None  # jobs claimed beyond free threads; None: adaptive (see Worker)
    prefetch_seconds: float = 0.05  # adaptive prefetch holds about this much work per thread
    max_prefetch: int = 500
    # claim jobs due within this many seconds and start each at its run_at on a local timer,
    # so the claim's round trip and commit are not part of a job's start delay (real clock only)
    lead_time: float = 0.05
    result_max_bytes: int = 64 * 1024  # a larger result (as JSON) is not stored (a WARNING says so)


@dataclass
class Report:
    """What one :meth:`Worker.run_once` did."""

    claimed: int = 0
    finished: int = 0
    rescued: int = 0
    running: int = 0
    wait: float = 0.0  # how long the loop may sleep before the next iteration


@dataclass
class Tally:
    """What the attempts this worker finished came to (``linger-sched worker --burst`` ends
    with it). Counted when an outcome is written, on the worker's loop thread."""

    succeeded: int = 0
    failed: int = 0  # failed for good (max_attempts reached, or not retryable)
    retried: int = 0  # failed attempts queued again for a retry
    cancelled: int = 0

    @property
    def ran(self) -> int:
        return self.succeeded + self.failed + self.retried + self.cancelled


@dataclass
class _Outcome:
    job: Claimed
    ok: bool
    error: str | None
    duration: float
    retryable: bool = True
    result: str | None = None  # a success's return value as JSON text (None: nothing to store)
    progress: tuple[float, str | None] | None = None  # the last progress, not written yet
    cancelled: bool = False  # the job ends cancelled (error says why)
    cancel_requested: bool = False  # a failure is then final: a cancelled job is not retried
    retry_in: float | None = None  # a failure queued again: seconds to its next attempt (set when written)

    @property
    def key(self) -> tuple[int, int]:
        return (self.job.id, self.job.attempts)


@dataclass
class _Held:
    """A job this worker holds: claimed and waiting for a thread, running, or finished with
    its outcome not yet written. Its lock is extended by every heartbeat until the outcome is
    written, so no peer runs it meanwhile."""

    job: Claimed
    control: _Control
    started: float | None = None  # monotonic; None while it waits for a thread
    timed_out: bool = False  # ran past its task's timeout; the attempt fails when it ends


_PACKAGE_DIR = __file__.rsplit("/", 1)[0]


def _about(job: Claimed, action: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log record about ``job``: its action, id, task and attempt."""
    return {"action": action, "job_id": job.id, "task": job.task, "attempt": job.attempts, **more}


def _final(o: _Outcome) -> bool:
    """Whether a failed attempt ends the job (``failed``): a cancel was requested, the error
    is not retryable, or no attempt is left."""
    return o.cancel_requested or not (o.retryable and o.job.attempts < o.job.max_attempts)


def _event(name: str, node_id: str, at: datetime | None, o: _Outcome, **fields: Any) -> Event:
    """The event of a stored outcome."""
    j = o.job
    return Event(name, node_id, at=at, job_id=j.id, task=j.task, queue=j.queue, attempt=j.attempts,
                 max_attempts=j.max_attempts, schedule=j.schedule_name, scheduled_for=j.scheduled_for,
                 duration=o.duration, **fields)


def _format_error(exc: BaseException) -> str:
    """The traceback from the task's own first frame on (our calling frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR) and tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    except Exception:  # noqa: BLE001 - an exception whose formatting fails is still a failure
        return f"{type(exc).__name__} (its message could not be formatted)"


def _cancelled(job: Claimed, exc: BaseException | None) -> str:
    """The ``last_error`` of an attempt that ended cancelled."""
    why = f": {type(exc).__name__}: {exc}" if exc is not None and str(exc) else ""
    how = "its coroutine was cancelled" if exc is None else "the task stopped"
    return f"cancelled while it ran (attempt {job.attempts}; {how}){why}"


class _TimedOut(Exception):
    """An ``async def`` task run by :meth:`Worker.run_here` went past its timeout."""


def _await_here(awaitable: Awaitable[Any], context: JobContext, timeout: float | None) -> Any:
    """Run a coroutine task to its end on a new event loop in the calling thread, or on a
    thread of its own when the calling thread already runs a loop (an ``async def`` test)."""
    import asyncio

    async def attempt() -> Any:
        _current.set(context)  # current_job() works inside the coroutine
        if not timeout:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            raise _TimedOut(f"timed out after {timeout:g}s") from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(attempt())
    outcome: list[Any] = []

    def main() -> None:
        try:
            outcome.append((True, asyncio.run(attempt())))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, exc))

    thread = threading.Thread(target=main, name="linger-await-here", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def malformed(job: Claimed) -> str | None:
    """Why a claimed row cannot be run (written by hand or by a broken client), or None.

    Such a row is failed with this reason; it must never raise inside the worker loop."""
    for name in ("priority", "attempts", "max_attempts"):
        value = getattr(job, name)
        if isinstance(value, bool) or not isinstance(value, int):
            return f"malformed job row: {name} is {value!r}, not an integer"
    if not isinstance(job.run_at, datetime):
        return f"malformed job row: run_at is {job.run_at!r}, not a time"
    if not isinstance(job.args, str):
        return f"malformed job row: args is {type(job.args).__name__}, not JSON text"
    return None


class Worker:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        node_id: str,
        *,
        clock: Clock | None = None,
        settings: WorkerSettings | None = None,
        rng: random.Random | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.node_id = node_id
        self.hooks = hooks if hooks is not None else Hooks()  # events: job_started, job_succeeded, ...
        self._tracer: Any = None  # OpenTelemetry's tracer when a provider is configured (read per claim)
        self.clock = clock or Clock()
        self.settings = settings or WorkerSettings()
        self.rng = rng or random.Random()
        self.wake = threading.Event()  # set by local enqueues, finished jobs, NOTIFY
        self._results: queue_mod.SimpleQueue[_Outcome] = queue_mod.SimpleQueue()
        # (job, monotonic instant it may start) for the pool threads; None stops a thread
        self._inbox: queue_mod.SimpleQueue[tuple[Claimed, float] | None] = queue_mod.SimpleQueue()
        # every attempt this worker holds, by (job id, attempt): a late result is matched to
        # its own attempt, never to a later one of the same job
        self._running: dict[tuple[int, int], _Held] = {}
        self._unwritten: list[_Outcome] = []  # outcomes whose write failed for a passing reason
        self._write_retry_at = -1e18
        self._write_failures = 0  # outcome writes failed in a row (for the retry's back-off)
        self._threads: list[threading.Thread] = []
        self._executing = 0  # pool threads inside _execute (the others are idle)
        self._loop: Any = None  # the asyncio loop of ``async def`` tasks, made for the first one
        self._loop_thread: threading.Thread | None = None
        self._closed = False  # drained: no thread pool or event loop is started again
        self._avg_duration: float | None = None  # moving average of job run time (seconds)
        self._last_heartbeat = -1e18
        self._last_rescue = -1e18
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        self._outliving = False  # the loop left with jobs still running: the heartbeat holds and flushes them
        self._heartbeat_wake = threading.Event()  # a heartbeat now (a cancel was requested here)
        self._lock = threading.Lock()
        self.tally = Tally()

    # -- helpers ------------------------------------------------------------------------
    @property
    def lead_time(self) -> float:
        return self.clock.lead(self.settings.lead_time)

    def _ensure_threads(self) -> None:
        if not self._threads and not self._closed:
            for i in range(self.settings.concurrency):
                # daemon: a task stuck past the shutdown grace must not keep the process alive
                t = threading.Thread(target=self._thread_main, name=f"linger-job-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def _ensure_loop(self) -> Any:
        """The worker's own event loop for ``async def`` tasks, on a thread of its own."""
        import asyncio  # only a node that runs an async task pays for the import

        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="linger-asyncio", daemon=True)
                t.start()
                self._loop, self._loop_thread = loop, t
            return self._loop

    @property
    def busy(self) -> int:
        """Jobs held: waiting for a thread, running, or with an outcome not yet written."""
        with self._lock:
            return len(self._running)

    def held_ids(self) -> list[int]:
        with self._lock:
            return sorted({job_id for job_id, _attempt in self._running})

    @property
    def capacity(self) -> int:
        """Threads plus prefetch. The adaptive prefetch keeps about ``prefetch_seconds`` of
        work per thread at the measured job duration: short jobs are claimed in large batches
        (one claim and one finish transaction per batch), long jobs one per free thread, so a
        node never sits on a backlog that an idle peer could run."""
        s = self.settings
        if s.prefetch is not None:
            return s.concurrency + s.prefetch
        if self._avg_duration is None:
            return 2 * s.concurrency
        extra = int(s.concurrency * s.prefetch_seconds / max(self._avg_duration, 1e-6))
        return s.concurrency + min(max(extra, 0), s.max_prefetch)

    # -- heartbeat ----------------------------------------------------------------------
    def heartbeat(self) -> int:
        """Extend the lock of every job this worker holds (running, timed out and still
        running, or waiting for its outcome to be written); returns how many were extended.

        The same transaction says which of them were asked to cancel: an ``async def`` task
        is cancelled at once, a plain function sees ``current_job().cancel_requested``. Then
        the progress values that waited for their interval are written."""
        self._last_heartbeat = self.clock.monotonic()
        held = self.held_ids()
        if not held:
            return 0
        n, asked = self.store.extend_and_check(self.node_id, self.settings.job_lease_ttl, now=self.clock.store_now(),
                                               ids=held)
        with self._lock:
            holds = list(self._running.values())
        wanted = set(asked)
        for h in holds:
            if h.job.id in wanted and h.control.request_cancel():
                log.info("job %s (%s): cancel requested; %s", h.job.id, h.job.task,
                         "cancelling its coroutine" if h.control._task is not None else "the task sees cancel_requested",
                         extra=_about(h.job, "cancel_requested"))
        for h in holds:
            h.control.flush_progress()
        return n

    def nudge_heartbeat(self) -> None:
        """Heartbeat soon rather than at the next interval (a cancel was requested through
        this process): the heartbeat thread wakes, or the next :meth:`run_once` heartbeats."""
        self._last_heartbeat = -1e18
        self._heartbeat_wake.set()

    def running_jobs(self) -> list[tuple[int, str, float]]:
        """``(job id, task, seconds it has run)`` of each attempt running here now, the
        longest running first (what a shutdown waits for)."""
        now = self.clock.monotonic()
        with self._lock:
            running = [(h.job.id, h.job.task, now - h.started) for h in self._running.values() if h.started is not None]
        return sorted(running, key=lambda r: -r[2])

    def holds(self, job_id: int) -> bool:
        """Whether this worker holds an attempt of job ``job_id``."""
        with self._lock:
            return any(i == job_id for i, _ in self._running)

    def start_heartbeat(self) -> None:
        """Heartbeat on a thread of its own, so that no outcome write, claim or slow query of
        the loop can delay it past a job's lease (a peer would then run the job again)."""
        self._outliving = False
        if self._heartbeat_thread is not None and self._heartbeat_thread.is_alive():
            return
        self._heartbeat_stop.clear()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_main, name="linger-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        self._heartbeat_wake.set()
        t = self._heartbeat_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
        self._heartbeat_thread = None

    def outlive(self) -> None:
        """The loop has left (the node stopped) but threads still run jobs that were not handed
        back (:meth:`drain` without ``hand_back_running``): the heartbeat thread goes on holding
        their locks, so that no peer rescues a job whose thread still runs, and writes each
        outcome when its thread returns; it ends with the last of them (or with the tables)."""
        self._outliving = True
        if self._heartbeat_thread is None or not self._heartbeat_thread.is_alive():
            self._heartbeat_stop.clear()
            self._heartbeat_thread = threading.Thread(target=self._heartbeat_main, name="linger-heartbeat", daemon=True)
            self._heartbeat_thread.start()
        self._heartbeat_wake.set()

    def _heartbeat_main(self) -> None:
        every = self.settings.job_lease_ttl / 3
        failures = 0
        while not self._heartbeat_stop.is_set():
            try:
                if self._outliving:
                    self.flush()  # the outcomes of the threads that returned since
                    if not self.held_ids():
                        log.info("the jobs that outlived the node's stop have finished", extra={"action": "outlived"})
                        return
                self.heartbeat()
                failures = 0
                wait = min(every, 0.2) if self._outliving else every
            except Exception as exc:
                if self._outliving and isinstance(exc, SchemaError):  # the tables are gone: nothing to hold
                    return
                failures += 1
                wait = backoff(failures, cap=every)
                log.error("job heartbeat failed: %s; retrying in %.1fs", exc, wait,
                          exc_info=not isinstance(exc, StoreError), extra={"action": "heartbeat_error"})
            self._heartbeat_wake.wait(wait)
            self._heartbeat_wake.clear()
            if self._heartbeat_stop.is_set():
                return

    # -- one iteration ------------------------------------------------------------------
    def run_once(self, *, claim: bool = True) -> Report:
        """Flush finished outcomes, heartbeat (unless a heartbeat thread runs) and rescue when
        due, claim and start new jobs.

        Returns how much happened and how long the caller may wait before calling again."""
        report = Report()
        report.finished = self.flush()
        self.store.send_owed_notify()  # a finish's NOTIFY to waiters that a busy drain held back
        mono = self.clock.monotonic()
        ttl = self.settings.job_lease_ttl
        if self._heartbeat_thread is None and mono - self._last_heartbeat >= ttl / 3:
            self.heartbeat()
        self._check_timeouts()
        if mono - self._last_rescue >= self.settings.rescue_interval:
            self._last_rescue = mono
            for r in self.store.rescue_jobs(now=self.clock.store_now()):
                report.rescued += 1
                self._rescued(r)
        capacity = self.capacity
        free = capacity - self.busy
        # while every thread is busy, refill only when a quarter of the capacity is free:
        # one claim (and later one finish) per batch instead of per finished job
        if claim and not self._closed and free > 0 and (self.busy < self.settings.concurrency or free >= max(1, capacity // 4)):
            jobs = self.store.claim(self.node_id, self.settings.queues, free, ttl, now=self.clock.store_now(),
                                    ahead=self.lead_time)
            report.claimed = len(jobs)
            if jobs:
                self._tracer = tracing.tracer()
            claimed = self.clock.monotonic()
            for job in jobs:
                early = 0.0
                if job.claimed_at is not None and isinstance(job.run_at, datetime):
                    early = (job.run_at - job.claimed_at).total_seconds()
                self._start(job, claimed + max(0.0, early))
        report.running = self.busy
        report.wait = self._wait_hint(report, claim)
        return report

    def run_here(self, limit: int = 1) -> list[Claimed]:
        """Claim up to ``limit`` due jobs (of this worker's queues), run them one after another
        in the calling thread, and write their outcomes as the loop does (retry with backoff,
        ``failed`` after max_attempts); returns the attempts run. The testing helpers'
        engine (``app.testing.run_pending()``): no pool, no lead time, no heartbeat thread. An
        ``async def`` task runs to its end on an event loop of its own (see :func:`_await_here`);
        a plain function's ``timeout`` is not enforced (the caller's thread cannot be left)."""
        jobs = self.store.claim(self.node_id, self.settings.queues, limit, self.settings.job_lease_ttl,
                                now=self.clock.store_now())
        if jobs:
            self._tracer = tracing.tracer()
        for job in jobs:
            with self._lock:
                self._running[(job.id, job.attempts)] = _Held(job, _Control(self, job))
            self._execute(job, here=True)
        self.flush()
        self.store.send_owed_notify()
        return jobs

    def _wait_hint(self, report: Report, claim: bool) -> float:
        s = self.settings
        until_heartbeat = float("inf")
        if self._heartbeat_thread is None:
            until_heartbeat = max(0.0, self._last_heartbeat + s.job_lease_ttl / 3 - self.clock.monotonic())
        until_heartbeat = min(until_heartbeat, self._check_timeouts(), s.poll_interval)
        if self._unwritten:
            until_heartbeat = min(until_heartbeat, max(0.0, self._write_retry_at - self.clock.monotonic()))
        if self.store.owes_notify:  # waiters of finished jobs are told within a tenth of a second
            until_heartbeat = min(until_heartbeat, DONE_NOTIFY_EVERY)
        if report.claimed and self.busy < s.concurrency:
            return 0.0  # there may be more due work right now
        if not claim or self.busy >= self.capacity:
            return until_heartbeat  # woken early by the next finished job
        earliest, db_now = self.store.next_due(s.queues, now=self.clock.store_now())
        wait = s.poll_interval
        if earliest is not None:
            wait = min(wait, max(0.0, (earliest - db_now).total_seconds() - self.lead_time))
        return min(wait, until_heartbeat, s.rescue_interval)

    # -- running a job ------------------------------------------------------------------
    def _start(self, job: Claimed, not_before: float) -> None:
        self._ensure_threads()
        with self._lock:
            self._running[(job.id, job.attempts)] = _Held(job, _Control(self, job))
        self._inbox.put((job, not_before))

    def _thread_main(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job, not_before = item
            early = not_before - self.clock.monotonic()
            if early > 0:  # claimed up to lead_time ahead of its run_at
                sleep(early)
            with self._lock:
                self._executing += 1
            try:
                self._execute(job)
            except BaseException as exc:
                log.exception("internal error running job %s (%s)", job.id, job.task, extra=_about(job, "internal_error"))
                self._report(_Outcome(job, False, f"internal error in the worker: {exc!r}", 0.0))
            finally:
                with self._lock:
                    self._executing -= 1

    def _report(self, outcome: _Outcome) -> None:
        self._results.put(outcome)
        # wake the loop when it has something to do: the local backlog is (nearly) gone, so it
        # should record outcomes and refill; otherwise outcomes gather into one batch
        if self._inbox.qsize() <= self.settings.concurrency // 2:
            self.wake.set()

    def _execute(self, job: Claimed, *, here: bool = False) -> None:
        start = self.clock.monotonic()
        with self._lock:
            held = self._running.get((job.id, job.attempts))
            if held is None:
                return  # handed back at shutdown before a thread got to it
            held.started = start  # a task's timeout counts from here
        control = held.control
        if control.cancelled:  # learned while the job waited for a thread: never started
            self._report(self._ended(_Outcome(job, False, f"cancelled before attempt {job.attempts} started", 0.0,
                                              cancelled=True), control))
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s %s started (attempt %s/%s)", job.id, job.task, job.attempts, job.max_attempts,
                      extra=_about(job, "started"))
        if self.hooks.wanted("job_started"):
            self._emit_started(job)
        span = tracing.start_job(job, self._tracer)  # None unless OpenTelemetry is installed and configured
        ok, error, retryable, cancelled = False, None, True, False
        failure: BaseException | None = None
        result: Any = None
        try:
            problem = malformed(job)
            if problem is not None:
                raise JobArgumentsError(problem)
            task = self.registry.get_task(job.task)
            args, kwargs = decode_args(job.args)
            context = JobContext(
                job.id, job.task, job.attempts, job.max_attempts, job.queue, job.priority,
                job.schedule_name, job.scheduled_for, tuple(args), kwargs, control,
            )
            token = _current.set(context)
            try:
                result = task.call(args, kwargs)
            finally:
                _current.reset(token)
            if inspect.isawaitable(result):
                if not here:
                    tracing.detach(span)  # the coroutine's own context makes it current; ended when it ends
                    handed, span = span, None
                    self._run_async(job, result, context, start, task.timeout, handed)
                    return
                result = _await_here(result, context, task.timeout)
            if result is False:
                error = "task returned False"
            else:
                ok = True
        except JobCancelled as exc:
            error, cancelled, failure = _cancelled(job, exc), True, exc
        except UnknownTaskError as exc:
            error, retryable, failure = f"{exc}; the job was not run", False, exc
        except JobArgumentsError as exc:
            error, retryable, failure = f"{exc}; the job was not run", False, exc
        except _TimedOut as exc:
            error, failure = str(exc), exc
        except BaseException as exc:  # noqa: BLE001 - a task's failure must never kill the worker
            error, failure = _format_error(exc), exc
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                error = f"interrupted: {exc!r}"
        if span is not None:
            late = ok and held.timed_out  # ran past its timeout: the attempt is recorded as failed
            tracing.end_job(span, ok and not late, "timed out (ran past its task's timeout)" if late else error, failure)
        outcome = _Outcome(job, ok, error, self.clock.monotonic() - start, retryable, cancelled=cancelled)
        if ok and result is not None:
            outcome.result = self._stored_result(job, result)
        self._report(self._ended(outcome, control))

    def _ended(self, outcome: _Outcome, control: _Control) -> _Outcome:
        """``outcome`` with what its attempt left behind: the progress not yet written, and
        whether a cancel was requested (a failure is then not retried)."""
        outcome.progress = control.take_pending()
        outcome.cancel_requested = control.cancelled
        return outcome

    def _stored_result(self, job: Claimed, value: Any) -> str | None:
        """A success's return value as the JSON text to store, or None (with a WARNING naming
        the job and its task) when it is not JSON-serializable or larger than
        ``result_max_bytes``: the job succeeded all the same."""
        try:
            text = encode_result(value)
        except (TypeError, ValueError, RecursionError) as exc:
            log.warning("job %s (%s) succeeded, but its result is not JSON-serializable (%s): not stored",
                        job.id, job.task, exc, extra=_about(job, "result_not_stored"))
            return None
        if len(text) > self.settings.result_max_bytes:  # ASCII: characters are bytes
            log.warning("job %s (%s) succeeded, but its result is %d bytes of JSON, more than result_max_bytes "
                        "(%d; LINGER_RESULT_MAX_BYTES): not stored", job.id, job.task, len(text),
                        self.settings.result_max_bytes, extra=_about(job, "result_not_stored"))
            return None
        return text

    def _run_async(self, job: Claimed, awaitable: Awaitable[Any], context: JobContext, start: float, timeout: float | None,
                   span: tuple[Any, Any] | None = None) -> None:
        """Run a coroutine task on the worker's event loop; its outcome is reported when it has
        really ended (``timeout`` cancels it, and a cancelled coroutine is waited for)."""
        import asyncio
        import concurrent.futures

        control = context._control
        assert control is not None

        async def attempt() -> Any:
            _current.set(context)  # this task's own context: current_job() works inside it
            tracing.use_span(span)  # ... and the attempt's span is the current span
            if not control.bind_async(asyncio.get_running_loop(), asyncio.current_task()):
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()
                raise asyncio.CancelledError  # cancelled before it started
            if timeout:
                return await asyncio.wait_for(awaitable, timeout)
            return await awaitable

        if self._closed:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()
            tracing.end_job(span, False, "worker shut down before the coroutine started", detached=True)
            self._report(_Outcome(job, False, "worker shut down before the coroutine started", 0.0))
            return
        future = asyncio.run_coroutine_threadsafe(attempt(), self._ensure_loop())

        def done(f: Any) -> None:
            ok, error, cancelled, result = False, None, False, None
            failure: BaseException | None = None
            outcome: _Outcome | None = None
            try:
                try:
                    result = f.result()
                    ok = result is not False
                    error = None if ok else "task returned False"
                except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since Python 3.11
                    error, failure = f"timed out after {timeout:g}s", exc
                except JobCancelled as exc:
                    error, cancelled, failure = _cancelled(job, exc), True, exc
                except BaseException as exc:  # noqa: BLE001 - includes CancelledError at shutdown
                    failure = exc
                    if control.cancelled and isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)):
                        error, cancelled = _cancelled(job, None), True  # our task.cancel(): the coroutine has ended
                    else:
                        error = _format_error(exc)
                outcome = _Outcome(job, ok, error, self.clock.monotonic() - start, cancelled=cancelled)
                tracing.end_job(span, ok, error, failure, detached=True)  # never raises
                if ok and result is not None:
                    outcome.result = self._stored_result(job, result)
            except BaseException as exc:  # a bug here must not leave the job running forever
                log.exception("internal error recording the outcome of job %s (%s)", job.id, job.task,
                              extra=_about(job, "internal_error"))
                if outcome is None:
                    outcome = _Outcome(job, False, f"internal error in the worker: {exc!r}", 0.0)
            finally:
                # always reported: an unreported attempt would stay `running`, its lock renewed
                self._report(self._ended(outcome or _Outcome(job, False, "internal error in the worker", 0.0),
                                         control))

        future.add_done_callback(done)

    def _check_timeouts(self) -> float:
        """Mark attempts that ran past their task's timeout; returns seconds to the next deadline.

        Python cannot stop a thread: a timed-out attempt keeps its thread, its slot and its lock
        (extended by the heartbeat) until the function returns, so the job never runs twice at
        once; the attempt is then recorded as failed and the function's result discarded."""
        nearest = float("inf")
        if not any(t.timeout for t in self.registry.tasks.values()):
            return nearest
        now = self.clock.monotonic()
        with self._lock:
            running = [h for h in self._running.values() if h.started is not None and not h.timed_out]
        for held in running:
            task = self.registry.tasks.get(held.job.task)
            if not task or not task.timeout or held.started is None:
                continue
            if now - held.started > task.timeout:
                held.timed_out = True
                log.warning(
                    "job %s (%s) timed out after %gs; it keeps its lock until its thread returns, then fails",
                    held.job.id, held.job.task, task.timeout, extra=_about(held.job, "timed_out"),
                )
            else:
                nearest = min(nearest, held.started + task.timeout - now)
        return nearest

    def flush(self) -> int:
        """Write every outcome the pool has reported since the last flush (and those whose
        write failed before, once their retry is due); returns how many were written."""
        outcomes: list[_Outcome] = []
        while True:
            try:
                outcomes.append(self._results.get_nowait())
            except queue_mod.Empty:
                break
        if outcomes:
            total = sum(o.duration for o in outcomes)
            avg = total / len(outcomes)
            self._avg_duration = avg if self._avg_duration is None else 0.8 * self._avg_duration + 0.2 * avg
        fresh = []
        with self._lock:
            for o in outcomes:
                held = self._running.get(o.key)
                if held is None:  # handed back at shutdown while it ran: not ours to record
                    log.warning("job %s (%s) attempt %s finished after it was handed back; result discarded",
                                o.job.id, o.job.task, o.job.attempts, extra=_about(o.job, "late_result"))
                    continue
                if held.timed_out:
                    task = self.registry.tasks.get(o.job.task)
                    limit = task.timeout if task and task.timeout else 0.0
                    log.warning("job %s (%s) returned %.1fs after it started, past its %gs timeout; result discarded",
                                o.job.id, o.job.task, o.duration, limit, extra=_about(o.job, "late_result"))
                    if not o.cancelled:
                        o = replace(o, ok=False, error=f"timed out after {limit:g}s", result=None)
                fresh.append(o)
        if self._unwritten and (fresh or self.clock.monotonic() >= self._write_retry_at):
            fresh = self._unwritten + fresh
            self._unwritten = []
        if not fresh:
            return 0
        return self._record(fresh)

    def _finish(self, outcomes: list[_Outcome]) -> set[int]:
        """Write ``outcomes`` in one transaction (raises what the store raises); returns the ids
        of the jobs whose outcome was not written because a peer rescued them meanwhile."""
        ok = [o for o in outcomes if o.ok]
        failed: list[tuple[int, str, float | None]] = []
        cancelled: list[tuple[int, str]] = []
        results: dict[int, str] = {}
        progress: dict[int, tuple[float, str | None]] = {}
        for o in outcomes:
            if o.progress is not None:
                progress[o.job.id] = o.progress
            if o.ok:
                if o.result is not None:
                    results[o.job.id] = o.result
                continue
            if o.cancelled:
                cancelled.append((o.job.id, o.error or "cancelled"))
                continue
            # a cancel was requested: a failure is not retried
            o.retry_in = None if _final(o) else self.retry_delay(o.job)
            failed.append((o.job.id, o.error or "failed", o.retry_in))
        # every failure is written for its own attempt only (one row, by primary key); a success
        # too when this node holds another attempt of the same job (a batch of successes is one
        # UPDATE, which a row-value IN list would slow down for nothing in the common case)
        with self._lock:
            counts = Counter(job_id for job_id, _ in self._running)
        held_twice = {job_id for job_id, n in counts.items() if n > 1}
        attempts = {o.job.id: o.job.attempts for o in outcomes if not o.ok or o.job.id in held_twice}
        lost_ok, lost_failed = self.store.finish(self.node_id, [o.job.id for o in ok], failed,
                                                 now=self.clock.store_now(), attempts=attempts,
                                                 queues={o.job.id: o.job.queue for o in outcomes},
                                                 results=results or None, progress=progress or None,
                                                 cancelled=cancelled)
        lost = set(lost_ok) | set(lost_failed)
        for o in outcomes:
            if o.job.id in lost:
                log.warning("job %s (%s) was rescued by another node before the outcome of attempt %s was recorded",
                            o.job.id, o.job.task, o.job.attempts, extra=_about(o.job, "lost_lease"))
        return lost

    def _record(self, outcomes: list[_Outcome]) -> int:
        """Write outcomes; one that cannot be written is isolated from the rest. Returns how
        many were written (an outcome that failed for a passing reason is kept for later).
        Then logs each outcome as it was stored, and emits its event."""
        written: list[_Outcome] = []  # dealt with: no longer held
        stored: list[_Outcome] = []  # ... and what the database now says of each (for logs, events)
        try:
            lost = self._finish(outcomes)
            written = outcomes
            stored = [o for o in outcomes if o.job.id not in lost] if lost else outcomes
        except Exception as exc:  # noqa: BLE001 - never lose the other outcomes to one bad row
            if len(outcomes) == 1 or not self.store.is_transient(exc):
                if len(outcomes) > 1:
                    log.warning("could not record %d job outcomes together (%s); writing them one by one",
                                len(outcomes), exc, extra={"action": "outcome_error"})
                for o in outcomes:
                    done, as_stored = self._record_one(o)
                    if done:
                        written.append(o)
                    if as_stored is not None:
                        stored.append(as_stored)
            else:
                self._keep_unwritten(outcomes, exc)
        with self._lock:
            for o in written:
                self._running.pop(o.key, None)
        if written:
            self._write_failures = 0
        if stored:
            self._count_outcomes(stored)
            self._outcomes_stored(stored)
        return len(written)

    def _count_outcomes(self, outcomes: list[_Outcome]) -> None:
        """Add stored outcomes to :attr:`tally` (the burst summary)."""
        t = self.tally
        for o in outcomes:
            if o.ok:
                t.succeeded += 1
            elif o.cancelled:
                t.cancelled += 1
            elif _final(o):
                t.failed += 1
            else:
                t.retried += 1

    def _record_one(self, o: _Outcome) -> tuple[bool, _Outcome | None]:
        """Write one outcome alone; if the database refuses it, write a failure that says so
        instead. Returns (dealt with, the outcome as stored or None when nothing was): not
        dealt with when it must be retried later (the database is unreachable)."""
        try:
            return True, (None if self._finish([o]) else o)
        except Exception as exc:  # noqa: BLE001
            if self.store.is_transient(exc):
                self._keep_unwritten([o], exc)
                return False, None
            if o.result is not None or o.progress is not None:
                # the database refuses the result (or progress) the outcome carries: the outcome
                # itself is still true and stored, without them
                log.warning("job %s (%s): its result or progress cannot be stored (%s): recorded without them",
                            o.job.id, o.job.task, exc, extra=_about(o.job, "result_not_stored"))
                return self._record_one(replace(o, result=None, progress=None))
            log.error("the outcome of job %s (%s) cannot be stored: %s", o.job.id, o.job.task, exc,
                      extra=_about(o.job, "outcome_error"))
            fallback = _Outcome(o.job, False, f"the attempt's outcome could not be stored: {type(exc).__name__}: {exc}",
                                o.duration, o.retryable, cancel_requested=o.cancel_requested)
            try:
                return True, (None if self._finish([fallback]) else fallback)
            except Exception as again:  # noqa: BLE001
                if self.store.is_transient(again):
                    self._keep_unwritten([o], again)
                    return False, None
                # nothing about this job can be written: let its lock expire (it is then
                # rescued and counted as a failed attempt) rather than stall every other job
                log.error("giving up on job %s (%s): %s", o.job.id, o.job.task, again, extra=_about(o.job, "outcome_lost"))
                return True, None

    def _keep_unwritten(self, outcomes: list[_Outcome], exc: BaseException) -> None:
        # The job keeps its lock (the heartbeat extends it) while its outcome waits: an outcome
        # that was reported is never lost to a passing database error.
        self._unwritten.extend(outcomes)
        self._write_failures += 1
        delay = backoff(self._write_failures, base=0.05, cap=2.0)
        self._write_retry_at = self.clock.monotonic() + delay
        log.warning("could not record %d job outcome(s) (%s); retrying in %.2fs", len(outcomes), exc,
                    delay, extra={"action": "outcome_retry", "job_ids": [o.job.id for o in outcomes[:100]]})

    def _outcomes_stored(self, outcomes: list[_Outcome]) -> None:
        """Log each stored outcome (a success at INFO, one short line) and emit its event
        (``job_succeeded``, ``job_retried``, ``job_failed``, ``job_cancelled``). Cheap when no
        one listens: the events nobody wants are never built."""
        hooks = self.hooks
        want = {name: hooks.wanted(name) for name in ("job_succeeded", "job_retried", "job_failed", "job_cancelled")}
        emit = any(want.values())
        at = self.clock.now() if emit else None
        info = log.isEnabledFor(logging.INFO)
        for o in outcomes:
            j = o.job
            if o.ok:
                if info:
                    log.info("job %s %s succeeded in %.3fs (attempt %s)", j.id, j.task, o.duration, j.attempts,
                             extra={"action": "succeeded", "job_id": j.id, "task": j.task, "attempt": j.attempts,
                                    "queue": j.queue, "duration": o.duration})
                if want["job_succeeded"]:
                    hooks.emit(_event("job_succeeded", self.node_id, at, o))
                continue
            if o.cancelled:
                log.info("job %s %s cancelled (attempt %s, ran %.3fs)", j.id, j.task, j.attempts, o.duration,
                         extra=_about(j, "cancelled", queue=j.queue, duration=o.duration))
                if want["job_cancelled"]:
                    hooks.emit(_event("job_cancelled", self.node_id, at, o, reason=o.error))
                continue
            lines = (o.error or "").strip().splitlines()
            first_line = lines[-1][:500] if lines else ""
            final = _final(o)
            log.warning(
                "job %s %s %s (attempt %s/%s, ran %.3fs): %s", j.id, j.task,
                "failed for good" if final else "failed, will retry", j.attempts, j.max_attempts,
                o.duration, first_line,
                extra=_about(j, "failed" if final else "retry", queue=j.queue, duration=o.duration, error=first_line),
            )
            if final and want["job_failed"]:
                reason = ("cancel requested" if o.cancel_requested else "not retryable" if not o.retryable
                          else "no attempt left")
                hooks.emit(_event("job_failed", self.node_id, at, o, error=o.error, reason=reason))
            elif not final and want["job_retried"]:
                retry_at = at + timedelta(seconds=o.retry_in) if at is not None and o.retry_in else at
                hooks.emit(_event("job_retried", self.node_id, at, o, error=o.error, retry_at=retry_at))

    def _emit_started(self, job: Claimed) -> None:
        """``job_started``, on the job's thread, before its task runs."""
        now = self.clock.now()
        delay = (now - job.run_at).total_seconds() if isinstance(job.run_at, datetime) else None
        self.hooks.emit(Event("job_started", self.node_id, at=now, job_id=job.id, task=job.task, queue=job.queue,
                              attempt=job.attempts, max_attempts=job.max_attempts, schedule=job.schedule_name,
                              scheduled_for=job.scheduled_for, delay=delay))

    def _cancelled_at_shutdown(self, jobs: list[Claimed]) -> None:
        """Log the jobs :meth:`drain` found with a cancel request and stopped as ``cancelled``
        (instead of handing them back), and emit ``job_cancelled`` for each."""
        if not jobs:
            return
        ids = [j.id for j in jobs]
        log.warning("cancelled %d job(s) at shutdown whose cancel was requested while they ran: %s", len(ids), ids,
                    extra={"action": "cancelled_at_shutdown", "job_ids": ids})
        if self.hooks.wanted("job_cancelled"):
            at = self.clock.now()
            for j in jobs:
                self.hooks.emit(Event("job_cancelled", self.node_id, at=at, job_id=j.id, task=j.task, queue=j.queue,
                                      attempt=j.attempts, max_attempts=j.max_attempts, schedule=j.schedule_name,
                                      scheduled_for=j.scheduled_for, reason="cancel requested; stopped at shutdown"))

    def _rescued(self, r: Rescued) -> None:
        """Log a job taken back from a dead node, and emit ``job_rescued``."""
        log.warning("rescued job %s (%s, attempt %s) from dead node %s: now %s", r.id, r.task, r.attempts, r.node,
                    r.state, extra={"action": "rescue", "job_id": r.id, "task": r.task, "attempt": r.attempts,
                                    "queue": r.queue, "node": r.node, "state": r.state})
        if self.hooks.wanted("job_rescued"):
            self.hooks.emit(Event("job_rescued", self.node_id, at=self.clock.now(), job_id=r.id, task=r.task,
                                  queue=r.queue, attempt=r.attempts, max_attempts=r.max_attempts,
                                  schedule=r.schedule_name, error=r.error,
                                  reason=f"lease expired: node {r.node} stopped heartbeating",
                                  data={"node": r.node, "state": r.state}))

    def retry_delay(self, job: Claimed) -> float:
        """Exponential backoff with jitter: base * 2**(attempt-1) * U(0.75, 1.25), capped at 1 day."""
        task = self.registry.tasks.get(job.task)
        base = task.retry_backoff if task else 10.0
        if base <= 0:
            return 0.0
        return backoff(job.attempts, base=base, cap=86400.0, jitter=self.rng.uniform(0.75, 1.25))

    # -- loop and shutdown --------------------------------------------------------------
    def run(
        self, stop: threading.Event, *, burst: bool = False, on_exit: Callable[[], object] | None = None,
        on_error: Callable[[BaseException], float] | None = None,
    ) -> None:
        """Run until ``stop`` is set (or, with ``burst``, until no due job is left), then call
        ``on_exit`` (default: :meth:`drain`) on this same thread, so that outcomes are only
        ever written by it. A heartbeat thread extends the held jobs' locks meanwhile.

        Every exception of an iteration is logged and backed off: the loop never dies of one."""
        failures = 0
        self.start_heartbeat()
        left = False
        try:
            while not stop.is_set():
                try:
                    report = self.run_once()
                    failures = 0
                except Exception as exc:
                    # the database went away or a row is broken: back off (0.5 s doubling to
                    # 10 s) and try again; a node never exits because its database restarted
                    failures += 1
                    wait = on_error(exc) if on_error else backoff(failures, base=0.5, cap=10.0)
                    log.error("worker iteration failed: %s; retrying in %.1fs", exc, wait,
                              exc_info=not isinstance(exc, StoreError), extra={"action": "worker_error"})
                    self.clock.wait(wait, stop)
                    continue
                if burst and report.claimed == 0 and report.running == 0:
                    earliest, db_now = self.store.next_due(self.settings.queues, now=self.clock.store_now())
                    if earliest is None or earliest > db_now:
                        break
                    continue
                if report.wait > 0:
                    self.wake.clear()
                    if self._results.empty():
                        self._wait(report.wait, stop)
            left = True
        finally:
            # Only a loop that was asked to leave drains; one that died (a bug) is restarted by
            # its supervisor, and its jobs keep their heartbeat meanwhile.
            if left:
                try:
                    on_exit() if on_exit is not None else self.drain()
                except Exception as exc:  # noqa: BLE001
                    log.error("could not hand back jobs at shutdown: %s", exc, extra={"action": "drain_error"})
                finally:
                    if self.held_ids():  # threads that outlived the grace, not handed back
                        self.outlive()
                    else:
                        self.stop_heartbeat()

    def _wait(self, seconds: float, stop: threading.Event) -> None:
        # Both a stop and a wake end the wait: wait on wake with a bounded timeout, so that a
        # stop is seen within 50 ms without a second thread.
        if self.clock.authoritative:
            # fake time never passes by itself: wait (in real time) only for a wake-up
            self.wake.wait(min(seconds, 0.05))
            return
        end = self.clock.monotonic() + seconds
        while not stop.is_set():
            left = end - self.clock.monotonic()
            if left <= 0:
                return
            if self.wake.wait(min(left, 0.05)):
                return

    def drain(self, grace: float | None = None, force: threading.Event | None = None, *, hand_back_running: bool = True) -> int:
        """Stop claiming; wait up to ``grace`` seconds for running jobs; hand back the rest.

        Claimed jobs that never started are always handed back. Jobs whose thread is still
        running are handed back only with ``hand_back_running`` (the process is about to exit,
        taking the thread with it); otherwise they keep their lock, renewed by the heartbeat
        until they return (:meth:`outlive`), so a thread that cannot be stopped never runs
        alongside a second copy.
        A job whose cancel was requested while it ran becomes ``cancelled`` instead (logged
        apart, ``job_cancelled`` emitted). Returns how many jobs were handed back."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._closed = True
        # claimed jobs that no thread will start go back at once (a thread that takes one later
        # finds it gone from _running and skips it); the first few, as many as there are idle
        # threads, start within milliseconds anyway (they are next in the threads' queue) and
        # are waited for like running ones
        with self._lock:
            unstarted = [key for key, held in self._running.items() if held.started is None]
            idle = 0 if force is not None and force.is_set() else max(0, len(self._threads) - self._executing)
            unstarted = unstarted[idle:]
            jobs = {key[0]: self._running.pop(key).job for key in unstarted}
        if unstarted:
            _, cancelled = self.store.hand_back_jobs(self.node_id, list(jobs), now=self.clock.store_now())
            self._cancelled_at_shutdown([jobs[i] for i in cancelled])
        end = self.clock.monotonic() + grace
        while self.busy and self.clock.monotonic() < end and not (force and force.is_set()):
            self.flush()
            self.wake.wait(0.05)
            self.wake.clear()
        self.flush()
        if self._unwritten:  # the database is away: a last try, then the locks expire and rescue
            self._write_retry_at = -1e18
            self.flush()
        try:
            self.store.send_owed_notify()
        except Exception as exc:  # noqa: BLE001 - waiters poll too
            log.warning("could not notify waiters of finished jobs: %s", exc, extra={"action": "notify_error"})
        handed = 0
        with self._lock:
            left = [key for key, held in self._running.items() if held.started is not None]
            jobs = {key[0]: self._running[key].job for key in left}
        if left and not hand_back_running:
            log.warning("%d job(s) still running after the grace period keep their lock until they return: %s",
                        len(left), [k[0] for k in left], extra={"action": "left_running", "job_ids": [k[0] for k in left]})
            left = []
        if left:
            ids = [job_id for job_id, _ in left]
            handed, cancelled = self.store.hand_back_jobs(self.node_id, ids, now=self.clock.store_now())
            if handed:
                back = [i for i in ids if i not in cancelled]
                log.warning("handed back %d unfinished job(s) at shutdown: %s", handed, back,
                            extra={"action": "hand_back", "job_ids": back})
            with self._lock:
                for key in left:
                    self._running.pop(key, None)
            self._cancelled_at_shutdown([jobs[i] for i in cancelled])
        for _ in self._threads:
            self._inbox.put(None)  # each idle thread exits; a busy one after its job
        self._threads = []
        loop = self._loop
        if loop is not None and not self.busy:
            loop.call_soon_threadsafe(loop.stop)
        return handed
