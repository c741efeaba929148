"""The runtime of a node: its threads (scheduler, worker, listener, housekeeping), their
supervision, and shutdown.

Every loop catches every exception itself (logs it at ERROR, backs off, goes on). A thread
that still dies is a bug: the supervisor logs it and restarts the loop, and after
``MAX_RESTARTS`` deaths within ``RESTART_WINDOW`` seconds it stops the node, which then exits
non-zero (``Linger.run``) — a node is never left silently half-alive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .clock import backoff
from .errors import StoreError
from .events import Event
from .health import SchedulerWatch
from .scheduler import LEADER

if TYPE_CHECKING:
    from .app import Linger

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class _Loop:
    """One supervised thread: its target, its stop event and its recent deaths."""

    def __init__(self, name: str, target: Callable[[threading.Event], object], stop: threading.Event) -> None:
        self.name, self.target, self.stop = name, target, stop
        self.thread: threading.Thread | None = None
        self.deaths: list[float] = []  # monotonic instants
        self.restart_at = 0.0
        self.error: BaseException | None = None

    def start(self) -> None:
        def main() -> None:
            try:
                self.target(self.stop)
            except BaseException as exc:
                self.error = exc
                log.critical("thread %s died: %r", self.name, exc, exc_info=True, extra={"action": "thread_died"})

        self.error = None
        self.thread = threading.Thread(target=main, name=self.name, daemon=True)
        self.thread.start()

    @property
    def dead(self) -> bool:
        return self.thread is not None and not self.thread.is_alive() and not self.stop.is_set()


class Node:
    """The threads of one running node: scheduler, worker, listener, housekeeping."""

    def __init__(
        self, app: Linger, *, concurrency: int | None, queues: Sequence[str] | None, worker: bool, scheduler: bool,
        burst: bool = False,
    ) -> None:
        self.app = app
        self.stopping = threading.Event()  # stop claiming and ticking
        self.force = threading.Event()  # stop waiting for running jobs
        self.finished = threading.Event()  # the worker left its loop (burst mode)
        self.failed: str | None = None  # why the supervisor gave up on this node
        self._sched_stop = threading.Event()
        self._work_stop = threading.Event()
        self.worker = app.new_worker(concurrency, queues) if worker else None
        self.scheduler = app.new_scheduler() if scheduler else None
        if self.scheduler is not None and self.worker is not None:
            wake = self.worker.wake
            self.scheduler.on_materialized = lambda _n: wake.set()
        self.burst = burst
        self.loops: dict[str, _Loop] = {}
        self._stopped = False
        self._lock = threading.Lock()
        # how the worker drains when it leaves its loop (set by stop())
        self._grace: float | None = None
        self._hand_back_running = True
        self._drained = False
        self._drain_lock = threading.Lock()
        # told (action, details) of a shutdown that waits for jobs, a forced one and a burst's
        # end, besides the log record (the CLI prints them): see Linger.run
        self.announce: Callable[[str, dict[str, Any]], object] | None = None
        self._started_at: float | None = None  # monotonic

    @property
    def threads(self) -> list[threading.Thread]:
        return [loop.thread for loop in self.loops.values() if loop.thread is not None]

    def start(self, *, supervise: bool = False) -> None:
        """Register the node, sync its schedules and start its threads; with ``supervise`` a
        thread of its own watches them (a node inside a host process; ``Linger.run`` calls
        :meth:`supervise` from its main loop instead)."""
        app = self.app
        self._started_at = app.clock.monotonic()
        app.store.check_schema()
        roles = ",".join(r for r, on in (("scheduler", self.scheduler), ("worker", self.worker)) if on)
        app.store.register_node(
            app.node_id, host=socket.gethostname(), pid=os.getpid(), roles=roles, registry_hash=app.registry.hash(),
            version=__version__, now=app.clock.store_now(),
            # what this node declares: a peer's sync never disables a schedule a live node declares
            schedules=list(app.registry.schedules) if self.scheduler is not None else None,
        )
        if self.scheduler is not None:
            report = self.scheduler.sync(list(app.registry.schedules.values()))
            log.info("schedules synced: %s", {k: v for k, v in report.items() if v}, extra={"action": "sync"})
            self._spawn("linger-scheduler", self.scheduler.run, self._sched_stop)
        if self.worker is not None:
            self._spawn("linger-worker", self._run_worker, self._work_stop)
            if app.store.can_listen:
                self._spawn("linger-listen", self._listen, self._work_stop)
        self._spawn("linger-housekeeping", self._housekeeping, self._work_stop)
        self._spawn("linger-watch", self._watch, self._work_stop)
        if supervise:
            threading.Thread(target=self._supervise_main, name="linger-supervisor", daemon=True).start()
        log.info("node %s started (%s) on %s", app.node_id, roles,
                 app.store.display_url, extra={"action": "node_started", "node": app.node_id, "roles": roles})
        if app.hooks.wanted("node_started"):
            app.hooks.emit(Event("node_started", app.node_id, at=app.clock.now(),
                                 data={"roles": roles, "host": socket.gethostname(), "pid": os.getpid()}))

    def _spawn(self, name: str, target: Callable[[threading.Event], object], stop: threading.Event) -> None:
        loop = self.loops[name] = _Loop(name, target, stop)
        loop.start()

    # -- the loops ----------------------------------------------------------------------
    def _run_worker(self, stop: threading.Event) -> None:
        worker = self.worker
        assert worker is not None
        try:
            worker.run(stop, burst=self.burst, on_exit=self._drain)
        finally:
            if stop.is_set() or self.burst:
                self.finished.set()
                if self.burst:
                    self.stopping.set()

    def _drain(self) -> None:
        assert self.worker is not None
        with self._drain_lock:  # once: the worker's thread, or stop() when a forced stop left it blocked
            if self._drained:
                return
            self._drained = True
        if self.burst and not self._stopped:
            self.worker.drain(None, self.force)  # burst: nothing runs any more
            return
        self.worker.drain(self._grace, self.force, hand_back_running=self._hand_back_running)

    def _listen(self, stop: threading.Event) -> None:
        """Wake the worker on commits by other processes; reconnects after any failure."""
        assert self.worker is not None
        wake = self.worker.wake
        failures = 0
        while not stop.is_set():
            try:
                self.app.store.listen(wake.set, stop)
                failures = 0
            except Exception as exc:
                failures += 1
                wait = backoff(failures, base=0.5, cap=10.0)
                log.error("listening for new jobs failed: %s; retrying in %.1fs", exc, wait,
                          exc_info=True, extra={"action": "listen_error"})
                stop.wait(wait)

    def _housekeeping(self, stop: threading.Event) -> None:
        app = self.app
        # the heartbeat: often enough that a live node is never taken for lost (node_lost_after)
        every = max(0.5, min(10.0, app.settings.node_lost_after / 3))
        failures = 0
        while not (app.clock.wait(every, stop) if not app.clock.authoritative else stop.wait(every)):
            try:
                app.store.heartbeat_node(app.node_id, now=app.clock.store_now())
                if self.scheduler is not None and self.scheduler.is_leader():
                    app.store.prune_nodes(max(600.0, 20 * app.settings.lease_ttl), now=app.clock.store_now())
                    if app.settings.keep_finished is not None:
                        app.store.prune(app.settings.keep_finished, now=app.clock.store_now())
                    app.store.fold_counts()
                failures = 0
            except Exception as exc:
                failures += 1
                log.error("housekeeping failed: %s", exc, exc_info=not isinstance(exc, StoreError),
                          extra={"action": "housekeeping_error"})
                stop.wait(backoff(failures, base=1.0, cap=every))

    def _watch(self, stop: threading.Event) -> None:
        """Every node watches the scheduler: schedules overdue while some node holds the lease
        are logged once per incident (:class:`~linger_sched.health.SchedulerWatch`)."""
        app = self.app
        watch = SchedulerWatch(app.node_id, app.new_scheduler_settings().threshold, lease=LEADER)
        every = watch.interval
        failures = 0
        while not (app.clock.wait(every, stop) if not app.clock.authoritative else stop.wait(every)):
            try:
                watch.poll(app.store, now=app.clock.store_now())
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:  # once per outage: the other loops log the database's errors
                    log.warning("watching the scheduler failed: %s", exc, exc_info=not isinstance(exc, StoreError),
                                extra={"action": "watch_error"})
                stop.wait(backoff(failures, base=1.0, cap=every))

    # -- supervision --------------------------------------------------------------------
    def supervise(self) -> bool:
        """Restart every loop whose thread died; returns False (and stops the node) once a loop
        died ``MAX_RESTARTS`` times within ``RESTART_WINDOW`` seconds."""
        if self.stopping.is_set():
            return self.failed is None
        mono = self.app.clock.monotonic()
        for loop in list(self.loops.values()):
            if not loop.dead or mono < loop.restart_at:
                continue
            loop.deaths = [t for t in loop.deaths if mono - t < RESTART_WINDOW] + [mono]
            if len(loop.deaths) > MAX_RESTARTS:
                self.failed = (f"thread {loop.name} died {len(loop.deaths)} times within {RESTART_WINDOW:g}s "
                               f"(last: {loop.error!r})")
                log.critical("giving up: %s; stopping the node", self.failed, extra={"action": "node_failed"})
                self.stopping.set()
                return False
            wait = backoff(len(loop.deaths), base=0.5, cap=10.0)
            log.error("restarting thread %s (death %d within %gs)", loop.name, len(loop.deaths), RESTART_WINDOW,
                      extra={"action": "thread_restarted"})
            loop.restart_at = mono + wait
            loop.start()
        return True

    def _supervise_main(self) -> None:
        while not self.stopping.wait(1.0):
            if not self.supervise():
                self.stop(None, hand_back_running=False)
                return

    # -- shutdown -----------------------------------------------------------------------
    def stop(self, grace: float | None, *, hand_back_running: bool = True) -> bool:
        """Graceful stop: fire ``on_halt``, stop claiming and ticking, let the worker drain on
        its own thread (up to ``grace`` for running jobs), release the lease. Returns True when
        it was forced (second signal) or the supervisor gave up on the node."""
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
        self._grace, self._hand_back_running = grace, hand_back_running
        self.stopping.set()
        app = self.app
        waiting = self._tell_waiting(grace)
        app._fire_halt()
        self._sched_stop.set()
        self._work_stop.set()
        worker_loop = self.loops.get("linger-worker")
        current = threading.current_thread()
        if worker_loop is not None and worker_loop.thread is not None and worker_loop.thread is not current:
            # outcomes are written by the worker's thread alone: wait for it to drain and leave
            # (polling, so that a second signal is handled meanwhile)
            limit = app.clock.monotonic() + (app.settings.shutdown_grace if grace is None else grace) + 30.0
            while worker_loop.thread.is_alive() and app.clock.monotonic() < limit:
                worker_loop.thread.join(0.1)
                if self.force.is_set():
                    if waiting:
                        self._tell("shutdown_forced", "second signal: not waiting for the running jobs any more",
                                   {"hand_back": hand_back_running})
                    # a forced stop stops at once, even when the worker's thread is held up
                    # (a slow event hook, a hung database call): give it a moment to drain on
                    # its own thread, then drain from here
                    worker_loop.thread.join(0.5)
                    break
            if worker_loop.thread.is_alive() and self.force.is_set():
                log.warning("forced stop: the worker's thread is busy (a slow event hook?); not waiting for it",
                            extra={"action": "drain_forced"})
                try:
                    self._drain()
                except Exception as exc:  # noqa: BLE001
                    log.error("could not hand back jobs at shutdown: %s", exc, extra={"action": "drain_error"})
                if self.worker is not None:
                    self.worker.stop_heartbeat()
            elif worker_loop.thread.is_alive():
                log.error("the worker did not finish draining in time", extra={"action": "drain_timeout"})
            elif not self._drained:  # the worker loop had died: drain here, no one else writes
                try:
                    self._drain()
                except Exception as exc:  # noqa: BLE001
                    log.error("could not hand back jobs at shutdown: %s", exc, extra={"action": "drain_error"})
        for loop in self.loops.values():
            if loop.thread is not None and loop.thread is not current:
                loop.thread.join(timeout=0.5 if self.force.is_set() else 5.0)
        if self.scheduler is not None:
            self.scheduler.resign()
        try:
            app.store.remove_node(app.node_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not remove node %s: %s", app.node_id, exc, extra={"action": "node_remove_error"})
        log.info("node %s stopped", app.node_id, extra={"action": "node_stopped", "node": app.node_id})
        if app.hooks.wanted("node_stopped"):
            app.hooks.emit(Event("node_stopped", app.node_id, at=app.clock.now(), reason=self.failed,
                                 data={"forced": self.force.is_set()}))
        if self.burst and self.worker is not None:
            self._tell_burst()
        return self.force.is_set() or self.failed is not None

    def _tell(self, action: str, message: str, details: dict[str, Any], level: int = logging.WARNING) -> None:
        """Log ``message`` with ``action`` and ``details`` in the record, and pass them to
        :attr:`announce` (a failing callback is logged, never raised: the node stops all the same)."""
        log.log(level, "%s", message, extra={"action": action, **details})
        if self.announce is not None:
            try:
                self.announce(action, details)
            except Exception as exc:  # noqa: BLE001
                log.error("announcing %s failed: %r", action, exc, extra={"action": "announce_error"})

    def _tell_waiting(self, grace: float | None) -> bool:
        """On a stop with jobs running: say which (id, task, for how long), how long at most
        the node waits for them, and that a second signal forces. Returns whether it did."""
        if self.worker is None or self.force.is_set():
            return False
        running = self.worker.running_jobs()
        if not running:
            return False
        limit = self.worker.settings.shutdown_grace if grace is None else grace
        jobs = [{"id": job_id, "task": task, "running_for": round(seconds, 3)} for job_id, task, seconds in running]
        self._tell("shutdown_wait",
                   f"stopping: waiting up to {limit:g}s for {len(jobs)} running job(s) "
                   f"({', '.join(str(j['id']) for j in jobs[:20])}{', ...' if len(jobs) > 20 else ''}); "
                   "a second signal stops at once",
                   {"jobs": jobs, "job_ids": [j["id"] for j in jobs], "grace": limit, "hand_back": self._hand_back_running})
        return True

    def _tell_burst(self) -> None:
        """A burst worker's end: what the jobs it ran came to, and how long it took."""
        assert self.worker is not None
        t = self.worker.tally
        elapsed = self.app.clock.monotonic() - (self._started_at or self.app.clock.monotonic())
        counts = {"ran": t.ran, "succeeded": t.succeeded, "failed": t.failed, "retried": t.retried, "cancelled": t.cancelled}
        self._tell("burst_summary",
                   f"burst done: ran {t.ran} job(s): {t.succeeded} succeeded, {t.failed} failed, {t.retried} to retry, "
                   f"{t.cancelled} cancelled, in {elapsed:.3f}s",
                   {**counts, "elapsed": round(elapsed, 3)}, level=logging.INFO)
