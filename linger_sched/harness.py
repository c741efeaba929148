"""The test helpers behind ``app.testing``: run due jobs in the caller's thread, move a fake
clock through the schedules' fire times, assert on what is queued, and inline mode.

The pytest plugin (fixtures, options) is :mod:`linger_sched.testing`, a front end over the app;
this module sits below :mod:`linger_sched.app`, which makes ``app.testing`` from it, and drives
the same :class:`~linger_sched.worker.Worker` and :class:`~linger_sched.scheduler.Scheduler` a
node runs, so a test sees what production would record. See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .clock import FakeClock
from .errors import (
    FakeClockRequiredError,
    JobArgumentsError,
    JobFailedError,
    LingerError,
    NaiveDatetimeError,
    RunLimitError,
    SpecError,
)
from .scheduler import LEADER
from .specs import parse_duration
from .store import Job, decode_args, encode_args

if TYPE_CHECKING:
    from .app import Linger

DEFAULT_RUN_LIMIT = 1000  # attempts one run_pending() call runs at most
DEFAULT_MAX_STEPS = 10_000  # instants one advance() call stops at at most
_SHOWN = 25  # jobs listed in a failure message


class _Any:
    def __repr__(self) -> str:
        return "<any>"


ANY: Any = _Any()  # a filter that is not given


class RunResult(list[Job]):
    """What one :meth:`LingerTesting.run_pending` call ran: a list of every job it ran, as
    recorded after the call (state, attempts, last_error), in the order each first ran; with
    ``attempts``, how many attempts it ran (a job retried within the call counts once per
    attempt), and the views ``succeeded``, ``failed`` and ``retrying``."""

    def __init__(self, jobs: Iterable[Job] = (), attempts: int = 0) -> None:
        super().__init__(jobs)
        self.attempts = attempts

    @property
    def jobs(self) -> list[Job]:
        return list(self)

    @property
    def succeeded(self) -> list[Job]:
        return [j for j in self if j.state == "succeeded"]

    @property
    def failed(self) -> list[Job]:
        """Failed for good (max_attempts reached, or a job that cannot run: unknown task...)."""
        return [j for j in self if j.state == "failed"]

    @property
    def retrying(self) -> list[Job]:
        """Their last attempt failed; queued again at their backoff time."""
        return [j for j in self if j.state == "queued"]

    def __repr__(self) -> str:
        return f"RunResult({list.__repr__(self)}, attempts={self.attempts})"


def _utc(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be an aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(what, value)
    return value.astimezone(timezone.utc)


def _duration(by: Any) -> timedelta:
    """``by`` (a timedelta, seconds, or a duration such as ``"90m"``) as a timedelta >= 0."""
    if isinstance(by, timedelta) or (isinstance(by, (int, float)) and not isinstance(by, bool)):
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        if not math.isfinite(seconds):
            raise SpecError("duration must be finite", expr=str(by), field="advance")
        if seconds < 0:
            raise SpecError("time only moves forward: advance() takes a duration >= 0 (to start a test at an "
                            "earlier time, set the clock before the first advance: linger_clock.set(...))",
                            expr=str(by), field="advance")
        try:
            return by if isinstance(by, timedelta) else timedelta(seconds=seconds)
        except OverflowError:
            raise SpecError("duration is too large", expr=str(by), field="advance") from None
    return parse_duration(by, field="advance")  # SpecError (a ValueError) for "banana", bools, ...


def describe_job(job: Job) -> str:
    """One line of a failure message: what assert_enqueued() can match on."""
    state = f" [{job.state}]" if job.state != "queued" else ""
    parts = [f"#{job.id}{state} {job.task}", f"args={job.args!r}", f"kwargs={job.kwargs!r}", f"queue={job.queue!r}",
             f"priority={job.priority}", f"run_at={job.run_at.isoformat()}", f"attempts={job.attempts}/{job.max_attempts}"]
    if job.schedule_name is not None:
        parts.append(f"schedule_name={job.schedule_name!r}")
    if job.scheduled_for is not None:
        parts.append(f"scheduled_for={job.scheduled_for.isoformat()}")
    if job.unique_key is not None:
        parts.append(f"unique_key={job.unique_key!r}")
    return " ".join(parts)


class LingerTesting:
    """``app.testing``: helpers for tests of one :class:`~linger_sched.Linger` app.

    * :meth:`run_pending` runs every due job in the calling thread, as a worker would;
    * :meth:`advance` / :meth:`advance_to` move the app's :class:`~linger_sched.FakeClock` and
      materialize the schedules' occurrences on the way, as a running scheduler would;
    * :meth:`assert_enqueued`, :meth:`refute_enqueued`, :meth:`enqueued_jobs` look at the queue;
    * :meth:`inline` makes every enqueue run its job at once.
    """

    __test__ = False  # not a pytest test class, whatever pytest makes of the name

    def __init__(self, app: Linger) -> None:
        self.app = app
        self._running = False  # a run_pending() call is running jobs
        self._inline: list[bool] = []  # raise_failures of each open inline() block
        self._rng = random.Random(0)  # the retry backoff's jitter, reproducible from run to run

    # -- running jobs ---------------------------------------------------------------------
    def run_pending(self, *, queues: str | Sequence[str] | None = None, limit: int = DEFAULT_RUN_LIMIT) -> RunResult:
        """Run every due job (``queued`` with ``run_at <=`` the app's now; of ``queues``, or all)
        one at a time in the calling thread, in claim order (priority, run_at, id), and record
        each outcome exactly as a worker does: success, a failed attempt queued again at its
        backoff time, ``failed`` at ``max_attempts``, an unknown task failed at once.

        Jobs that become due while it runs (enqueued by a task, a retry with no backoff) run in
        the same call; it returns when nothing is due. ``async def`` tasks run to their end on an
        event loop of their own. A task's exception is never raised here: it is recorded (see
        :class:`RunResult`). After ``limit`` attempts with jobs still due it raises
        :class:`~linger_sched.errors.RunLimitError` (a task that enqueues itself forever)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive number of attempts, got {limit!r}")
        if self._running:
            raise LingerError("run_pending() was called while it is running jobs (from inside a task?): "
                              "the jobs a task enqueues run in the same run_pending() call anyway")
        names = [queues] if isinstance(queues, str) else (list(queues) if queues is not None else None)
        worker = self.app.new_worker(concurrency=1)
        worker.settings.queues = names or None  # all queues unless named (not the app's LINGER_QUEUES)
        worker.rng = self._rng
        order: dict[int, None] = {}
        tasks: Counter[str] = Counter()
        attempts = 0
        self._running = True
        try:
            while attempts < limit:
                ran = worker.run_here(1)
                if not ran:
                    break
                attempts += len(ran)
                for job in ran:
                    order.setdefault(job.id)
                    tasks[job.task] += 1
                if worker.busy:
                    raise LingerError(f"could not record the outcome of job(s) {worker.held_ids()} "
                                      "(the database refused or is unreachable; see the log)")
            else:
                due = self._due_now(names)
                if due:
                    busiest = ", ".join(f"{name} ({n}x)" for name, n in tasks.most_common(3))
                    raise RunLimitError(
                        f"run_pending() ran {attempts} attempts (limit={limit}) and jobs are still due, "
                        f"next {describe_job(due[0])}; most run: {busiest}. A task that enqueues itself, "
                        f"or a failing job retried with retry_backoff=0? Pass limit= to allow more."
                    )
        finally:
            self._running = False
        store = self.app.store
        return RunResult([store.get_job(job_id) for job_id in order], attempts)

    def _due_now(self, queues: list[str] | None) -> list[Job]:
        store = self.app.store
        earliest, now = store.next_due(queues, now=self.app.clock.store_now())
        if earliest is None or earliest > now:
            return []
        due = [j for j in self._queued() if j.run_at <= now and (not queues or j.queue in queues)]
        return sorted(due, key=lambda j: (j.priority, j.run_at, j.id))  # claim order

    @contextlib.contextmanager
    def inline(self, *, raise_failures: bool = True) -> Iterator[LingerTesting]:
        """Inline (eager) mode for the block: every enqueue (``fn.enqueue``, ``app.enqueue``,
        ``enqueue_many``, class jobs) stores its job as usual (same checks, the arguments
        through JSON) and then, before it returns the job id, runs the due jobs as
        :meth:`run_pending` does: the new job (unless its ``run_at`` is in the future) has run,
        and its outcome is recorded. A job that a running task enqueues runs right after that
        task's attempt, in the same call; :meth:`advance` runs due jobs at each step.

        With ``raise_failures`` (default), an attempt that failed (the job is ``failed``, or
        queued again for a retry) raises :class:`~linger_sched.errors.JobFailedError` from the
        enqueue, with the job's traceback; with ``raise_failures=False`` only the row says so."""
        app = self.app
        previous = app._after_insert
        app._after_insert = lambda ids: self._after_insert(ids, raise_failures)
        self._inline.append(raise_failures)
        try:
            yield self
        finally:
            self._inline.pop()
            app._after_insert = previous

    def _after_insert(self, ids: list[int], raise_failures: bool) -> None:
        if self._running:
            return  # a task run by run_pending() enqueued: that loop runs the job next
        result = self.run_pending()
        if not raise_failures:
            return
        for job in result.jobs:
            if job.state in ("failed", "queued"):
                again = (f"queued again for {job.run_at.isoformat()}" if job.state == "queued"
                         else "failed for good")
                raise JobFailedError(
                    f"job {job.id} ({job.task}) run inline: attempt {job.attempts} of {job.max_attempts} failed, "
                    f"{again}:\n{job.last_error}", job)

    # -- moving time ----------------------------------------------------------------------
    def _fake_clock(self, what: str) -> FakeClock:
        clock = self.app.clock
        if not isinstance(clock, FakeClock):
            raise FakeClockRequiredError(
                f"app.testing.{what}() moves the app's clock, so the app must run on a FakeClock: "
                f"Linger(..., clock=FakeClock(...)) (the linger_app fixture does); this app's clock is "
                f"{type(clock).__name__}, the real time, which a test cannot move")
        return clock

    def advance(self, by: timedelta | str | float, *, run: bool | None = None,
                max_steps: int = DEFAULT_MAX_STEPS) -> list[Job]:
        """Move the app's FakeClock forward by ``by`` (a ``timedelta``, seconds, or a duration
        such as ``"90m"``, ``"1d"``, ``"1h30m"``; 0 materializes what is due now) as a running
        scheduler would live through it. See :meth:`advance_to`."""
        clock = self._fake_clock("advance")
        delta = _duration(by)
        try:
            target = clock.now() + delta
        except OverflowError:
            raise SpecError("moves the clock past the year 9999", expr=str(by), field="advance") from None
        return self._advance(clock, target, run, max_steps)

    def advance_to(self, when: datetime, *, run: bool | None = None, max_steps: int = DEFAULT_MAX_STEPS) -> list[Job]:
        """Move the app's FakeClock forward to ``when`` (aware), as a running scheduler would
        live through the time: first the app's declared schedules are synced (as a node does at
        start), then the clock stops at every fire time on the way, and the scheduler's tick
        materializes each occurrence on time (no misfire; overlap, DST and the rest as in
        production). With ``run=True`` (the default inside :meth:`inline`) the clock also stops
        at every job's ``run_at`` and due jobs run at each stop, as a worker would run them.

        Returns the occurrence rows made on the way (jobs and ``skipped`` records), oldest
        first, as they are after the call. At most ``max_steps`` stops:
        :class:`~linger_sched.errors.RunLimitError` beyond (the clock stays at the last one)."""
        clock = self._fake_clock("advance_to")
        target = _utc(when, "advance_to(when)")
        if target < clock.now():
            raise SpecError(f"is before the clock's now ({clock.now().isoformat()}): time only moves forward "
                            "(to start a test at an earlier time, set the clock before the first advance)",
                            expr=when.isoformat(), field="advance_to")
        return self._advance(clock, target, run, max_steps)

    def _advance(self, clock: FakeClock, target: datetime, run: bool | None, max_steps: int) -> list[Job]:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive number, got {max_steps!r}")
        run_jobs = bool(self._inline) if run is None else run
        store = self.app.store
        newest = store.list_jobs(limit=1)
        before = newest[0].id if newest else 0
        scheduler = self.app.new_scheduler()
        scheduler.sync(list(self.app.registry.schedules.values()))

        def step() -> None:
            if not scheduler.tick().leader:
                lease = store.get_lease(LEADER)
                holder = f" (held by {lease.holder} until {lease.expires_at.isoformat()})" if lease else ""
                raise LingerError(f"the scheduler could not take the leader lease of these tables{holder}: "
                                  "is a node running on them? A test needs tables of its own (the linger_app "
                                  "fixture gives each test its own table prefix)")
            if run_jobs:
                self.run_pending()

        step()  # what is due now
        steps = 0
        while True:
            stop = self._next_stop(run_jobs)
            if stop is None or stop > target:
                break
            if stop <= clock.now():
                raise LingerError(f"advance(): something due at {stop.isoformat()} was not materialized or run "
                                  "(a schedule the scheduler cannot plan? see the log)")
            steps += 1
            if steps > max_steps:
                raise RunLimitError(
                    f"advance() stopped at {clock.now().isoformat()} after {max_steps} steps (max_steps), short of "
                    f"{target.isoformat()}: a schedule fires (or jobs come due) more often than that; advance in "
                    "smaller steps, or pass max_steps=")
            clock.set(stop)
            step()
        if clock.now() < target:
            clock.set(target)
        return [j for j in store.list_jobs(limit=0, newest_first=False) if j.id > before and j.schedule_name is not None]

    def _next_stop(self, run_jobs: bool) -> datetime | None:
        """The next instant something happens: a schedule's fire time, or (``run_jobs``) a
        queued job's run_at."""
        store, now = self.app.store, self.app.clock.now()
        first, _ = store.schedule_horizon(now)
        if run_jobs:
            earliest, _ = store.next_due(None, now=now)
            if earliest is not None and (first is None or earliest < first):
                return earliest
        return first

    # -- looking at the queue -------------------------------------------------------------
    def _queued(self) -> list[Job]:
        return self.app.store.list_jobs("queued", limit=0, newest_first=False)

    def _matcher(
        self, task: Any, filters: dict[str, Any],
    ) -> tuple[Callable[[Job], bool], str, str | None]:
        """(does a job match, the expectation in words, the task name or None)."""
        name = None if task is None else self.app._task_name(task)
        given = {k: v for k, v in filters.items() if v is not ANY}
        if "args" in given or "kwargs" in given:
            args, kwargs = given.get("args", ()), given.get("kwargs", {})
            if not isinstance(args, (list, tuple)):
                raise TypeError(f"args= must be a list or tuple of positional arguments, got {type(args).__name__}")
            if not isinstance(kwargs, dict):
                raise TypeError(f"kwargs= must be a dict of keyword arguments, got {type(kwargs).__name__}")
            try:  # the same JSON round trip as enqueue: (1, 2) matches the stored [1, 2]
                args, kwargs = decode_args(encode_args(args, kwargs))
            except (TypeError, ValueError) as exc:
                raise JobArgumentsError(f"no job can have these arguments, they are not JSON-serializable: {exc}") from None
            if "args" in given:
                given["args"] = args
            if "kwargs" in given:
                given["kwargs"] = kwargs
        for key in ("run_at", "scheduled_for"):
            if key in given and given[key] is not None:
                given[key] = _utc(given[key], key)

        def match(job: Job) -> bool:
            if name is not None and job.task != name:
                return False
            return all(getattr(job, k) == v for k, v in given.items())

        words = f" of task {name!r}" if name is not None else ""
        if given:
            words += " with " + ", ".join(f"{k}={v!r}" for k, v in given.items())
        return match, words, name

    def _listing(self, queued: list[Job], match: Callable[[Job], bool], name: str | None, found: list[Job]) -> str:
        if not queued:
            lines = ["No job is queued."]
        else:
            mark = " (* = matching)" if found else ""
            lines = [f"Queued jobs ({len(queued)}){mark}:"]
            lines += [f"  {'* ' if match(j) else ''}{describe_job(j)}" for j in queued[:_SHOWN]]
            if len(queued) > _SHOWN:
                lines.append(f"  ... and {len(queued) - _SHOWN} more")
        if name is not None and not found:
            # the usual surprise: it ran already (inline mode, run_pending) or failed
            others = [j for j in self.app.store.list_jobs(None, limit=_SHOWN, task=name) if j.state != "queued"]
            if others:
                lines.append(f"Jobs of {name} in other states ({len(others)}{'+' if len(others) >= _SHOWN else ''}):")
                lines += [f"  {describe_job(j)}" for j in others]
        return "\n".join(lines)

    def enqueued_jobs(
        self, task: Any = None, *, args: Any = ANY, kwargs: Any = ANY, queue: Any = ANY, priority: Any = ANY,
        run_at: Any = ANY, scheduled_for: Any = ANY, schedule_name: Any = ANY, unique_key: Any = ANY,
        max_attempts: Any = ANY, attempts: Any = ANY,
    ) -> list[Job]:
        """The queued jobs (state ``queued``: waiting, due or not, retries included) that match,
        oldest first. ``task`` is a task, its name or a class job; each filter given must equal
        the job's column (``args`` a list or tuple and ``kwargs`` a dict, compared after the JSON
        round trip enqueue does; ``run_at``/``scheduled_for`` aware datetimes); omitted ones
        match anything."""
        match, _, _ = self._matcher(task, dict(
            args=args, kwargs=kwargs, queue=queue, priority=priority, run_at=run_at, scheduled_for=scheduled_for,
            schedule_name=schedule_name, unique_key=unique_key, max_attempts=max_attempts, attempts=attempts))
        return [j for j in self._queued() if match(j)]

    def assert_enqueued(
        self, task: Any = None, *, args: Any = ANY, kwargs: Any = ANY, queue: Any = ANY, priority: Any = ANY,
        run_at: Any = ANY, scheduled_for: Any = ANY, schedule_name: Any = ANY, unique_key: Any = ANY,
        max_attempts: Any = ANY, attempts: Any = ANY, count: int | None = None,
    ) -> Job:
        """Assert that a queued job matches (filters as in :meth:`enqueued_jobs`); with ``count``,
        that exactly that many do. Returns the oldest matching job. The ``AssertionError`` says
        what was expected and lists the queued jobs."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"count must be a positive integer (for none, use refute_enqueued()), got {count!r}")
        match, expected, name = self._matcher(task, dict(
            args=args, kwargs=kwargs, queue=queue, priority=priority, run_at=run_at, scheduled_for=scheduled_for,
            schedule_name=schedule_name, unique_key=unique_key, max_attempts=max_attempts, attempts=attempts))
        queued = self._queued()
        found = [j for j in queued if match(j)]
        if found and (count is None or len(found) == count):
            return found[0]
        want = "a queued job" if count is None else f"{count} queued job{'s' if count != 1 else ''}"
        got = "none" if not found else str(len(found))
        raise AssertionError(f"expected {want}{expected}; found {got}.\n{self._listing(queued, match, name, found)}")

    def refute_enqueued(
        self, task: Any = None, *, args: Any = ANY, kwargs: Any = ANY, queue: Any = ANY, priority: Any = ANY,
        run_at: Any = ANY, scheduled_for: Any = ANY, schedule_name: Any = ANY, unique_key: Any = ANY,
        max_attempts: Any = ANY, attempts: Any = ANY,
    ) -> None:
        """Assert that no queued job matches (filters as in :meth:`enqueued_jobs`; none given:
        that nothing at all is queued). The ``AssertionError`` lists the queued jobs, the
        matching ones marked."""
        __tracebackhide__ = True
        match, expected, name = self._matcher(task, dict(
            args=args, kwargs=kwargs, queue=queue, priority=priority, run_at=run_at, scheduled_for=scheduled_for,
            schedule_name=schedule_name, unique_key=unique_key, max_attempts=max_attempts, attempts=attempts))
        queued = self._queued()
        found = [j for j in queued if match(j)]
        if found:
            raise AssertionError(f"expected no queued job{expected}; found {len(found)}.\n"
                                 f"{self._listing(queued, match, None, found)}")
