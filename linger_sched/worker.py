"""The worker: claim due jobs, run them on a thread pool, record outcomes, rescue the dead.

:meth:`Worker.run_once` is one iteration with no sleeping; :meth:`Worker.run` is the thin
loop around it. Outcomes are collected from the pool threads and written in batches by the
loop thread, so the database sees one claim and one finish transaction per batch, never one
per job. A job is marked done only after its function returned (at-least-once: a crash can
re-run a job, never mark an unfinished one done).
"""

from __future__ import annotations

import contextvars
import logging
import queue as queue_mod
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .clock import Clock
from .errors import LingerError, StoreError, UnknownTaskError
from .registry import Registry
from .store import Claimed, Store, decode_args

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a running task can learn about itself through :func:`current_job`."""

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


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("linger_current_job", default=None)


def current_job() -> JobContext | None:
    """The job the calling thread is running, or None outside a task."""
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


@dataclass
class Report:
    """What one :meth:`Worker.run_once` did."""

    claimed: int = 0
    finished: int = 0
    rescued: int = 0
    running: int = 0
    wait: float = 0.0  # how long the loop may sleep before the next iteration


@dataclass
class _Outcome:
    job: Claimed
    ok: bool
    error: str | None
    duration: float
    retryable: bool = True


_PACKAGE_DIR = __file__.rsplit("/", 1)[0]


def _format_error(exc: BaseException) -> str:
    """The traceback from the task's own first frame on (our calling frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR) and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


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
    ) -> None:
        self.store = store
        self.registry = registry
        self.node_id = node_id
        self.clock = clock or Clock()
        self.settings = settings or WorkerSettings()
        self.rng = rng or random.Random()
        self.wake = threading.Event()  # set by local enqueues, finished jobs, NOTIFY
        self._results: queue_mod.SimpleQueue[_Outcome] = queue_mod.SimpleQueue()
        # (job, monotonic instant it may start) for the pool threads; None stops a thread
        self._inbox: queue_mod.SimpleQueue[tuple[Claimed, float] | None] = queue_mod.SimpleQueue()
        # every job this worker holds: id -> monotonic start, or None while it waits for a thread
        self._running: dict[int, tuple[Claimed, float | None]] = {}
        self._timed_out: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._avg_duration: float | None = None  # moving average of job run time (seconds)
        self._last_heartbeat = -1e18
        self._last_rescue = -1e18
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------
    @property
    def lead_time(self) -> float:
        return self.clock.lead(self.settings.lead_time)

    def _ensure_threads(self) -> None:
        if not self._threads:
            for i in range(self.settings.concurrency):
                # daemon: a task stuck past the shutdown grace must not keep the process alive
                t = threading.Thread(target=self._thread_main, name=f"linger-job-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    @property
    def busy(self) -> int:
        """Jobs held: running on a thread or claimed and waiting for one."""
        with self._lock:
            return len(self._running)

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

    # -- one iteration ------------------------------------------------------------------
    def run_once(self, *, claim: bool = True) -> Report:
        """Flush finished outcomes, heartbeat and rescue when due, claim and start new jobs.

        Returns how much happened and how long the caller may wait before calling again."""
        report = Report()
        report.finished = self.flush()
        mono = self.clock.monotonic()
        ttl = self.settings.job_lease_ttl
        if mono - self._last_heartbeat >= ttl / 3:
            self._last_heartbeat = mono
            with self._lock:
                held = [i for i in self._running if i not in self._timed_out]
            if held:
                self.store.extend(self.node_id, ttl, now=self.clock.store_now(), ids=held)
        self._check_timeouts()
        if mono - self._last_rescue >= self.settings.rescue_interval:
            self._last_rescue = mono
            for job_id, dead, state in self.store.rescue(now=self.clock.store_now()):
                report.rescued += 1
                log.warning(
                    "rescued job %s from dead node %s: now %s", job_id, dead, state,
                    extra={"action": "rescue", "job_id": job_id, "node": dead},
                )
        capacity = self.capacity
        free = capacity - self.busy
        # while every thread is busy, refill only when a quarter of the capacity is free:
        # one claim (and later one finish) per batch instead of per finished job
        if claim and free > 0 and (self.busy < self.settings.concurrency or free >= max(1, capacity // 4)):
            jobs = self.store.claim(self.node_id, self.settings.queues, free, ttl, now=self.clock.store_now(),
                                    ahead=self.lead_time)
            report.claimed = len(jobs)
            claimed = self.clock.monotonic()
            for job in jobs:
                early = (job.run_at - job.claimed_at).total_seconds() if job.claimed_at is not None else 0.0
                self._start(job, claimed + max(0.0, early))
        report.running = self.busy
        report.wait = self._wait_hint(report, claim)
        return report

    def _wait_hint(self, report: Report, claim: bool) -> float:
        s = self.settings
        until_heartbeat = max(0.0, self._last_heartbeat + s.job_lease_ttl / 3 - self.clock.monotonic())
        until_heartbeat = min(until_heartbeat, self._check_timeouts())
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
            self._running[job.id] = (job, None)
        self._inbox.put((job, not_before))

    def _thread_main(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job, not_before = item
            early = not_before - self.clock.monotonic()
            if early > 0:  # claimed up to lead_time ahead of its run_at
                time.sleep(early)
            self._execute(job)

    def _execute(self, job: Claimed) -> None:
        start = self.clock.monotonic()
        with self._lock:
            if job.id not in self._running:
                return  # handed back at shutdown before a thread got to it
            self._running[job.id] = (job, start)  # a task's timeout counts from here
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s %s started (attempt %s/%s)", job.id, job.task, job.attempts, job.max_attempts,
                      extra={"action": "started", "job_id": job.id})
        ok, error, retryable = False, None, True
        try:
            task = self.registry.get_task(job.task)
            args, kwargs = decode_args(job.args)
            token = _current.set(
                JobContext(
                    job.id, job.task, job.attempts, job.max_attempts, job.queue, job.priority,
                    job.schedule_name, job.scheduled_for, tuple(args), kwargs,
                )
            )
            try:
                result = task.call(args, kwargs)
            finally:
                _current.reset(token)
            if result is False:
                error = "task returned False"
            else:
                ok = True
        except UnknownTaskError as exc:
            error, retryable = f"{exc}; the job was not run", False
        except BaseException as exc:  # noqa: BLE001 - a task's failure must never kill the worker
            error = _format_error(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                error = f"interrupted: {exc!r}"
        self._results.put(_Outcome(job, ok, error, self.clock.monotonic() - start, retryable))
        # wake the loop when it has something to do: the local backlog is (nearly) gone, so it
        # should record outcomes and refill; otherwise outcomes gather into one batch
        if self._inbox.qsize() <= self.settings.concurrency // 2:
            self.wake.set()

    def _check_timeouts(self) -> float:
        """Record attempts that ran past their task's timeout; returns seconds to the next deadline."""
        nearest = float("inf")
        if not any(t.timeout for t in self.registry.tasks.values()):
            return nearest
        now = self.clock.monotonic()
        with self._lock:
            running = [(job, started) for job, started in self._running.values() if started is not None]
        for job, started in running:
            task = self.registry.tasks.get(job.task)
            if not task or not task.timeout or job.id in self._timed_out:
                continue
            if now - started > task.timeout:
                # Python cannot kill a thread: the attempt is recorded as failed now and the
                # thread's eventual result is discarded; its slot stays busy until it returns.
                self._timed_out.add(job.id)
                self._record([_Outcome(job, False, f"timed out after {task.timeout:g}s", now - started)])
            else:
                nearest = min(nearest, started + task.timeout - now)
        return nearest

    def flush(self) -> int:
        """Write every outcome the pool has reported since the last flush; returns how many."""
        outcomes: list[_Outcome] = []
        while True:
            try:
                outcomes.append(self._results.get_nowait())
            except queue_mod.Empty:
                break
        if not outcomes:
            return 0
        fresh = []
        total = 0.0
        with self._lock:
            for o in outcomes:
                self._running.pop(o.job.id, None)
                total += o.duration
        avg = total / len(outcomes)
        self._avg_duration = avg if self._avg_duration is None else 0.8 * self._avg_duration + 0.2 * avg
        for o in outcomes:
            if o.job.id in self._timed_out:
                self._timed_out.discard(o.job.id)
                log.warning("job %s (%s) finished after its timeout; result discarded", o.job.id, o.job.task,
                            extra={"action": "late_result", "job_id": o.job.id})
            else:
                fresh.append(o)
        self._record(fresh)
        return len(fresh)

    def _record(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        ok_ids = [o.job.id for o in outcomes if o.ok]
        failed: list[tuple[int, str, float | None]] = []
        for o in outcomes:
            if o.ok:
                continue
            retry_in = self.retry_delay(o.job) if o.retryable and o.job.attempts < o.job.max_attempts else None
            failed.append((o.job.id, o.error or "failed", retry_in))
        self._finish_with_retry(ok_ids, failed)
        debug = log.isEnabledFor(logging.DEBUG)
        for o in outcomes:
            j = o.job
            if o.ok:
                if debug:
                    log.debug("job %s %s succeeded (attempt %s, ran %.3fs)", j.id, j.task, j.attempts, o.duration,
                              extra={"action": "succeeded", "job_id": j.id})
                continue
            first_line = (o.error or "").strip().splitlines()[-1] if o.error else ""
            will_retry = o.retryable and j.attempts < j.max_attempts
            log.warning(
                "job %s %s %s (attempt %s/%s, ran %.3fs): %s", j.id, j.task,
                "failed, will retry" if will_retry else "failed for good", j.attempts, j.max_attempts,
                o.duration, first_line, extra={"action": "retry" if will_retry else "failed", "job_id": j.id},
            )

    def _finish_with_retry(self, ok_ids: list[int], failed: list[tuple[int, str, float | None]]) -> None:
        # An outcome that was reported must not be lost to a passing database error: retry
        # until it is written or the lease runs out (then the job is rescued and re-run).
        delay = 0.05
        deadline = self.clock.monotonic() + self.settings.job_lease_ttl
        while True:
            try:
                lost_ok, lost_failed = self.store.finish(self.node_id, ok_ids, failed, now=self.clock.store_now())
                for job_id in lost_ok + lost_failed:
                    log.warning("job %s was rescued by another node before its outcome was recorded", job_id,
                                extra={"action": "lost_lease", "job_id": job_id})
                return
            except StoreError:
                if self.clock.monotonic() > deadline:
                    raise
                log.warning("could not record job outcomes; retrying in %.2fs", delay, exc_info=True)
                self.clock.wait(delay)
                delay = min(delay * 2, 2.0)

    def retry_delay(self, job: Claimed) -> float:
        """Exponential backoff with jitter: base * 2**(attempt-1) * U(0.75, 1.25), capped at 1 day."""
        task = self.registry.tasks.get(job.task)
        base = task.retry_backoff if task else 10.0
        if base <= 0:
            return 0.0
        delay = base * (2 ** max(0, job.attempts - 1)) * self.rng.uniform(0.75, 1.25)
        return min(delay, 86400.0)

    # -- loop and shutdown --------------------------------------------------------------
    def run(self, stop: threading.Event, *, burst: bool = False, on_error: Callable[[BaseException], float] | None = None) -> None:
        """Run until ``stop`` is set (or, with ``burst``, until no due job is left), then drain."""
        failures = 0
        while not stop.is_set():
            try:
                report = self.run_once()
                failures = 0
            except LingerError as exc:
                # the database went away: back off (0.5 s doubling to 10 s) and try again; a
                # node never exits because its database restarted
                failures += 1
                wait = on_error(exc) if on_error else min(10.0, 0.5 * 2 ** (failures - 1))
                log.error("worker iteration failed: %s; retrying in %.1fs", exc, wait, extra={"action": "store_error"})
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
        taking the thread with it); otherwise they keep their lock until it expires and are
        rescued then, so a thread that cannot be stopped never runs alongside a second copy.
        Returns how many jobs were handed back."""
        grace = self.settings.shutdown_grace if grace is None else grace
        # claimed jobs that no thread has started go back at once (a thread that takes one
        # later finds it gone from _running and skips it)
        with self._lock:
            unstarted = [job_id for job_id, (_job, started) in self._running.items() if started is None]
            for job_id in unstarted:
                del self._running[job_id]
        if unstarted:
            self.store.hand_back(self.node_id, unstarted, now=self.clock.store_now())
        end = self.clock.monotonic() + grace
        while self.busy and self.clock.monotonic() < end and not (force and force.is_set()):
            self.flush()
            self.wake.wait(0.05)
            self.wake.clear()
        self.flush()
        handed = 0
        with self._lock:
            left = list(self._running)
        if left and not hand_back_running:
            log.warning("%d job(s) still running after the grace period keep their lock until it expires: %s",
                        len(left), left, extra={"action": "left_running"})
            left = []
        if left:
            handed = self.store.hand_back(self.node_id, left, now=self.clock.store_now())
            log.warning("handed back %d unfinished job(s) at shutdown: %s", handed, left, extra={"action": "hand_back"})
            with self._lock:
                for job_id in left:
                    self._running.pop(job_id, None)
        for _ in self._threads:
            self._inbox.put(None)  # each idle thread exits; a busy one after its job
        self._threads = []
        return handed
