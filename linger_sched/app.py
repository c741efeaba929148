"""The :class:`Linger` app: the public API that ties registry, store, scheduler and worker."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence, TypeVar, cast, overload

from . import __version__
from .clock import Clock
from .config import Settings, resolve
from .errors import ConfigError, JobArgumentsError, LingerError, NaiveDatetimeError
from .registry import (
    FileConfig, Registry, ScheduleDef, TaskDef, build_schedule, describe_callable, import_modules,
    read_config_file, schedules_from_config, seconds, task_name_of,
)
from .scheduler import Scheduler, SchedulerSettings, spec_from_row
from .specs import parse_duration
from .store import Job, Store, encode_args
from .worker import Worker, WorkerSettings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_SCHEDULE_OPTIONS = ("misfire", "misfire_grace", "max_catch_up", "overlap", "enabled", "args", "kwargs", "anchor")


class Task:
    """A registered function: still callable directly, plus ``.enqueue()``."""

    def __init__(self, app: "Linger", definition: TaskDef) -> None:
        self.app = app
        self.definition = definition
        self.name = definition.name
        functools.update_wrapper(self, definition.func)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.definition.func(*args, **kwargs)

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Queue a call of this task; takes ``run_at``/``delay``/``priority``/``queue``/``unique_key``."""
        return self.app.enqueue(self.name, *args, **kwargs)

    def enqueue_many(self, items: Iterable[Any], **options: Any) -> list[int]:
        return self.app.enqueue_many(self.name, items, **options)

    def __repr__(self) -> str:
        return f"<linger task {self.name}>"


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    task: str
    spec: str
    description: str
    tz: str
    next_runs: list[datetime]
    last_run_at: datetime | None
    last_state: str | None
    paused: bool
    enabled: bool


@dataclass(frozen=True)
class Status:
    leader: Any
    nodes: list[Any]
    counts: dict[str, int]
    db_now: datetime


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise JobArgumentsError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(what, value)
    return value


class Linger:
    """One linger-sched installation: a database, its tasks and schedules.

    ``Linger()`` uses ``LINGER_DATABASE_URL`` or ``sqlite:///linger.db``. Settings may be
    given as keyword arguments (``concurrency=4``, ``lease_ttl=10``, ...)."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        table_prefix: str | None = None,
        clock: Clock | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        self._explicit: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if database_url is not None:
            self._explicit["database_url"] = database_url
        if table_prefix is not None:
            self._explicit["table_prefix"] = table_prefix
        if settings is None:
            code = dict(options)
            env = dict(os.environ)
            if database_url is not None:  # an explicit argument beats the environment
                env.pop("LINGER_DATABASE_URL", None)
                code["database_url"] = database_url
            if table_prefix is not None:
                env.pop("LINGER_TABLE_PREFIX", None)
                code["table_prefix"] = table_prefix
            settings = resolve(code=code, env=env)
        self.settings = settings
        self.clock = clock if clock is not None else Clock(settings.clock_offset)
        self.registry = Registry()
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._store: Store | None = None
        self._store_pid = os.getpid()
        self._store_lock = threading.Lock()
        self._halt_hooks: list[Callable[[], Any]] = []
        self._node: _Node | None = None
        self.config_file: FileConfig | None = None

    # -- configuration ------------------------------------------------------------------
    @property
    def store(self) -> Store:
        with self._store_lock:
            if self._store is not None and self._store_pid != os.getpid():
                # forked (gunicorn, multiprocessing): the parent's pooled connections are not
                # ours to use or close; start a fresh pool in this process
                self._store.engine.dispose(close=False)
                self._store_pid = os.getpid()
            if self._store is None:
                self._store = Store(self.settings.database_url, table_prefix=self.settings.table_prefix)
                self._store_pid = os.getpid()
            return self._store

    def configure(self, **changes: Any) -> None:
        """Change settings before the store is first used (the CLI applies flags this way)."""
        if self._store is not None and any(k in changes for k in ("database_url", "table_prefix")):
            self._store.dispose()
            self._store = None
        self.settings = replace(self.settings, **{k: v for k, v in changes.items() if v is not None})
        if "clock_offset" in changes:
            self.clock = Clock(self.settings.clock_offset)

    def load_config(self, path: str | os.PathLike[str], *, cli: dict[str, Any] | None = None) -> FileConfig:
        """Read ``schedules.yaml``: apply its settings (under env and ``cli``), import its modules,
        and register its schedules. Raises :class:`ConfigError` naming file, line and key;
        nothing is written to the database."""
        cfg = read_config_file(path)
        import_modules(cfg.imports, file=cfg.path, line=cfg.lines.get("imports"))
        for d in schedules_from_config(cfg, self.registry):
            self.registry.add_schedule(d)
        # arguments given to Linger(...) explicitly rank with the CLI flags, above env and file
        settings = resolve(cli={**self._explicit, **(cli or {})}, file=cfg)
        self.configure(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})
        self.config_file = cfg
        return cfg

    # -- tasks --------------------------------------------------------------------------
    @overload
    def task(self, fn: F) -> F: ...
    @overload
    def task(self, fn: None = None, **options: Any) -> Callable[[F], F]: ...

    def task(self, fn: Any = None, **options: Any) -> Any:
        """Register a function (or a class with ``perform()``) as a task.

        Options: ``name, queue, priority, max_attempts, retry_backoff, timeout``; and for a
        recurring schedule ``cron=`` or ``every=`` with ``tz, schedule, args, kwargs, misfire,
        misfire_grace, max_catch_up, overlap, enabled, anchor``."""
        if fn is not None:
            return self._register(fn, options)
        return lambda f: self._register(f, options)

    def _register(self, fn: Any, options: dict[str, Any]) -> Any:
        allowed = {"name", "queue", "priority", "max_attempts", "retry_backoff", "timeout", "cron", "every", "tz", "schedule", *_SCHEDULE_OPTIONS}
        unknown = set(options) - allowed
        where = describe_callable(fn)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})", key=where)
        is_class = isinstance(fn, type)
        if is_class and not callable(getattr(fn, "perform", None)):
            raise ConfigError("a class registered with @task needs a perform() method", key=where)
        if not is_class and not callable(fn):
            raise ConfigError("@task needs a function or a class", key=where)
        try:
            max_attempts = options.get("max_attempts")
            if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
                raise ConfigError(f"max_attempts must be an integer >= 1, got {max_attempts!r}", key="max_attempts")
            priority = options.get("priority", 0)
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise ConfigError(f"priority must be an integer, got {priority!r}", key="priority")
            definition = TaskDef(
                name=options.get("name") or task_name_of(fn),
                func=fn,
                queue=options.get("queue") or "default",
                priority=priority,
                max_attempts=max_attempts or 3,
                # seconds() returns a float for a value that is not None
                retry_backoff=cast(float, seconds(options.get("retry_backoff"), "retry_backoff")) if options.get("retry_backoff") is not None else 10.0,
                timeout=seconds(options.get("timeout"), "timeout"),
                is_class=is_class,
            )
            self.registry.add_task(definition)
            if options.get("cron") is not None or options.get("every") is not None:
                sched = build_schedule(
                    options.get("schedule") or definition.name,
                    definition.name,
                    cron=options.get("cron"),
                    every=options.get("every"),
                    tz=options.get("tz"),
                    source=where,
                    **{k: options[k] for k in _SCHEDULE_OPTIONS if k in options},
                )
                self.registry.add_schedule(sched)
            elif options.get("tz") is not None or options.get("schedule") is not None:
                raise ConfigError("tz= and schedule= need cron= or every=", key="tz")
        except ConfigError as exc:
            raise ConfigError(exc.message, key=f"{where}: {exc.key}" if exc.key else where) from None
        if is_class:
            fn.__linger_task__ = definition
            fn.enqueue = staticmethod(lambda *a, **kw: self._enqueue_instance(fn, a, kw))  # type: ignore[attr-defined]
            return fn
        return Task(self, definition)

    def _enqueue_instance(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        opts = {k: kwargs.pop(k) for k in ("run_at", "delay", "priority", "queue", "unique_key", "max_attempts") if k in kwargs}
        return self.enqueue(cls(*args, **kwargs), **opts)

    def schedule(self, name: str, task: Any, *, cron: str | None = None, every: Any = None, tz: str | None = None, **options: Any) -> ScheduleDef:
        """Declare a recurring schedule in code: ``app.schedule("nightly", cleanup, cron="0 3 * * *")``."""
        task_name = self._task_name(task)
        self.registry.get_task(task_name)
        d = build_schedule(name, task_name, cron=cron, every=every, tz=tz, source=f"app.schedule({name!r})", **options)
        return self.registry.add_schedule(d)

    def _task_name(self, task: Any) -> str:
        if isinstance(task, str):
            return task
        if isinstance(task, Task):
            return task.name
        definition = getattr(task, "__linger_task__", None)
        if definition is not None:
            return definition.name
        return task_name_of(task)

    # -- enqueueing ---------------------------------------------------------------------
    def _row(
        self, task: Any, args: Sequence[Any], kwargs: dict[str, Any], *, run_at: datetime | None, delay: Any,
        priority: int | None, queue: str | None, unique_key: str | None, max_attempts: int | None,
    ) -> dict[str, Any]:
        definition = getattr(type(task), "__linger_task__", None) if not isinstance(task, (str, type, Task)) and not callable(task) else None
        if definition is not None:  # a class-job instance
            if args or kwargs:
                raise JobArgumentsError("pass a class job's arguments to its constructor, not to enqueue()")
            kwargs = definition.args_of(task)
            name = definition.name
        else:
            name = self._task_name(task)
            definition = self.registry.tasks.get(name)
        if run_at is not None and delay is not None:
            raise JobArgumentsError("give run_at or delay, not both")
        row: dict[str, Any] = {"task": name}
        if run_at is not None:
            row["run_at"] = _aware(run_at, "run_at")
        elif delay is not None:
            d = delay.total_seconds() if isinstance(delay, timedelta) else parse_duration(delay, field="delay").total_seconds() if isinstance(delay, str) else float(delay)
            if self.clock.authoritative:
                row["run_at"] = self.clock.now() + timedelta(seconds=d)
            else:
                row["delay"] = d
        elif self.clock.authoritative:
            row["run_at"] = self.clock.now()
        try:
            row["args"] = encode_args(args, kwargs)
        except (TypeError, ValueError) as exc:
            raise JobArgumentsError(f"arguments of {name} must be JSON-serializable: {exc}") from exc
        row["queue"] = queue or (definition.queue if definition else "default")
        row["priority"] = priority if priority is not None else (definition.priority if definition else 0)
        row["max_attempts"] = max_attempts or (definition.max_attempts if definition else 3)
        if unique_key is not None:
            row["unique_key"] = str(unique_key)
        return row

    def enqueue(
        self, task: Any, *args: Any, run_at: datetime | None = None, delay: float | timedelta | str | None = None,
        priority: int | None = None, queue: str | None = None, unique_key: str | None = None,
        max_attempts: int | None = None, **kwargs: Any,
    ) -> int:
        """Queue one job; returns its id. ``task`` is a task, its name, or a class-job instance."""
        row = self._row(task, args, kwargs, run_at=run_at, delay=delay, priority=priority, queue=queue,
                        unique_key=unique_key, max_attempts=max_attempts)
        (job_id,) = self.store.enqueue([row], now=self.clock.store_now())
        self._wake(row)
        return job_id

    def enqueue_many(
        self, task_or_items: Any, items: Iterable[Any] | None = None, *, run_at: datetime | None = None,
        delay: float | timedelta | str | None = None, priority: int | None = None, queue: str | None = None,
        max_attempts: int | None = None,
    ) -> list[int]:
        """Queue many jobs in one statement; returns their ids in order.

        ``enqueue_many(task, items)``: each item is a tuple/list of positional arguments, a
        dict of keyword arguments, or ``(args, kwargs)`` given as a 2-tuple ``(list, dict)``.
        ``enqueue_many([ClassJob(...), ...])``: class-job instances."""
        rows = []
        opts: dict[str, Any] = dict(run_at=run_at, delay=delay, priority=priority, queue=queue, unique_key=None, max_attempts=max_attempts)
        if items is None:
            for obj in task_or_items:
                rows.append(self._row(obj, (), {}, **opts))
        else:
            a: tuple[Any, ...]
            for item in items:
                if isinstance(item, dict):
                    a, kw = (), item
                elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (list, tuple)) and isinstance(item[1], dict):
                    a, kw = tuple(item[0]), item[1]
                elif isinstance(item, (list, tuple)):
                    a, kw = tuple(item), {}
                else:
                    a, kw = (item,), {}
                rows.append(self._row(task_or_items, a, kw, **opts))
        if not rows:
            return []
        if not self.clock.authoritative and all("run_at" not in r for r in rows):
            now = self.store.db_now()  # one clock read makes the rows bindable in one statement
            for r in rows:
                seconds = r.pop("delay", 0.0)
                r["run_at"] = now + timedelta(seconds=seconds) if seconds else now
        ids = self.store.enqueue(rows, now=self.clock.store_now())
        self._wake(rows[0])
        return ids

    def _wake(self, row: dict[str, Any]) -> None:
        node = self._node
        if node is not None and node.worker is not None and "delay" not in row:
            node.worker.wake.set()

    # -- jobs ---------------------------------------------------------------------------
    def install_schema(self) -> None:
        """Create the tables if missing (idempotent)."""
        self.store.install_schema()

    def get_job(self, job_id: int) -> Job:
        return self.store.get_job(job_id)

    def jobs(self, state: str | None = None, limit: int = 50, **filters: Any) -> list[Job]:
        return self.store.list_jobs(state, limit, **filters)

    def retry(self, job_id: int) -> Job:
        return self.store.retry_job(job_id, now=self.clock.store_now())

    def cancel(self, job_id: int) -> Job:
        return self.store.cancel_job(job_id, now=self.clock.store_now())

    # -- schedules ----------------------------------------------------------------------
    def new_scheduler(self) -> Scheduler:
        s = self.settings
        return Scheduler(
            self.store, self.node_id, clock=self.clock,
            settings=SchedulerSettings(tick_interval=s.tick_interval, lease_ttl=s.lease_ttl,
                                       renew_interval=s.renew_interval, misfire_threshold=s.misfire_threshold),
            task_defaults=self._task_defaults,
        )

    def _task_defaults(self, name: str) -> dict[str, Any]:
        t = self.registry.tasks.get(name)
        return {} if t is None else {"queue": t.queue, "priority": t.priority, "max_attempts": t.max_attempts}

    def new_worker(self, concurrency: int | None = None, queues: Sequence[str] | None = None) -> Worker:
        s = self.settings
        ws = WorkerSettings(
            concurrency=concurrency or s.concurrency, queues=list(queues) if queues else (list(s.queues) if s.queues else None),
            poll_interval=s.poll_interval, job_lease_ttl=s.job_lease_ttl, rescue_interval=s.rescue_interval,
            shutdown_grace=s.shutdown_grace,
        )
        return Worker(self.store, self.registry, self.node_id, clock=self.clock, settings=ws)

    def sync_schedules(self) -> dict[str, list[str]]:
        """Write the declared schedules to the database (done by every node that schedules)."""
        return self.new_scheduler().sync(list(self.registry.schedules.values()))

    def pause(self, name: str) -> None:
        self.store.set_paused(name, True, now=self.clock.store_now())

    def resume(self, name: str) -> None:
        row = self.store.get_schedule(name)
        now = self.clock.now() if self.clock.authoritative else self.store.db_now()
        # the paused period is not caught up: the next fire is the first after now
        self.store.set_paused(name, False, next_run_at=spec_from_row(row).next_after(now), now=self.clock.store_now())

    def trigger(self, name: str) -> int:
        """Run schedule ``name`` now, outside its cadence (marked ``reason='manual'``)."""
        row = self.store.get_schedule(name)
        import json as _json

        opts = _json.loads(row.options or "{}")
        now = self.clock.now() if self.clock.authoritative else self.store.db_now()
        (job_id,) = self.store.enqueue(
            [{
                "task": row.task, "args": row.args, "queue": opts.get("queue") or "default",
                "priority": opts.get("priority") or 0, "max_attempts": opts.get("max_attempts") or 3,
                "run_at": now, "schedule_name": name, "scheduled_for": now, "reason": "manual",
            }],
            now=now,
        )
        if self._node is not None and self._node.worker is not None:
            self._node.worker.wake.set()
        return job_id

    def schedules(self, next_n: int = 1) -> list[ScheduleInfo]:
        rows = self.store.load_schedules()
        outcomes = self.store.last_outcomes([r.name for r in rows])
        out = []
        for r in rows:
            spec = spec_from_row(r)
            runs: list[datetime] = []
            t = r.next_run_at
            while t is not None and len(runs) < next_n:
                runs.append(t)
                t = spec.next_after(t)
            last = outcomes.get(r.name)
            out.append(ScheduleInfo(
                r.name, r.task, r.spec, spec.describe(), r.tz, runs, last[0] if last else r.last_run_at,
                last[1] if last else None, r.paused, r.enabled,
            ))
        return out

    def status(self) -> Status:
        from .scheduler import LEADER

        return Status(self.store.get_lease(LEADER), self.store.list_nodes(), self.store.count_by_state(), self.store.db_now())

    # -- running ------------------------------------------------------------------------
    def _own_node_id(self) -> None:
        # after a fork the child must not share its parent's node id (job locks, the lease)
        if self.node_id.rsplit(":", 2)[1] != str(os.getpid()):
            self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    def on_halt(self, fn: F) -> F:
        """Register a hook called once when this node is asked to stop."""
        self._halt_hooks.append(fn)
        return fn

    def _fire_halt(self) -> None:
        hooks, self._halt_hooks = self._halt_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001
                log.exception("on_halt hook %r failed", hook)

    def start(self, concurrency: int | None = None, queues: Sequence[str] | None = None, *, worker: bool = True, scheduler: bool = True) -> None:
        """Run a node on background threads inside this process (e.g. a web app).

        Call :meth:`stop` at shutdown; it is also called at interpreter exit. In a server that
        forks workers (gunicorn), call it in each worker after the fork."""
        self._own_node_id()
        if self._node is not None:
            raise LingerError("this app's node is already running")
        self._node = _Node(self, concurrency=concurrency, queues=queues, worker=worker, scheduler=scheduler)
        self._node.start()
        atexit.register(self.stop)

    def stop(self, grace: float | None = None, *, hand_back_running: bool = False) -> None:
        """Stop the background node: fire ``on_halt``, stop claiming, wait up to ``grace`` for
        running jobs, and release the leader lease.

        Claimed jobs that have not started go back to the queue at once. A job still running
        after the grace period keeps running on its thread (Python cannot stop it) and keeps
        its lock until the lock expires, so no other node runs it at the same time; pass
        ``hand_back_running=True`` when the process exits right after (the thread dies with it)."""
        node, self._node = self._node, None
        if node is not None:
            node.stop(grace, hand_back_running=hand_back_running)

    def is_leader(self) -> bool:
        """Whether this process's node (:meth:`start` or :meth:`run`) holds the leader lease now
        (e.g. for a health endpoint); False when no node with a scheduler is running."""
        node = self._node
        return node is not None and node.scheduler is not None and node.scheduler.is_leader()

    def run(
        self, *, concurrency: int | None = None, queues: Sequence[str] | None = None, worker: bool = True,
        scheduler: bool = True, burst: bool = False, handle_signals: bool = True,
    ) -> int:
        """Run a node in the foreground until SIGTERM/SIGINT (a second signal forces).

        Returns the exit status: 0 after a clean stop, 1 after a forced one."""
        self._own_node_id()
        node = _Node(self, concurrency=concurrency, queues=queues, worker=worker, scheduler=scheduler, burst=burst)
        self._node = node
        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            def handler(signum: int, _frame: Any) -> None:
                # Only set flags here: the main thread does the work outside the handler, so
                # a signal never interrupts a transaction half-way.
                if node.stopping.is_set():
                    node.force.set()
                node.stopping.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, handler)
        try:
            node.start()
            while not node.stopping.is_set():
                if node.stopping.wait(0.2):
                    break
                if node.finished.is_set():
                    break
            # the caller exits right after (the CLI leaves without waiting for job threads)
            forced = node.stop(None, hand_back_running=True)
            return 1 if forced else 0
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            self._node = None

    def work(self, *, burst: bool = True, concurrency: int | None = None, queues: Sequence[str] | None = None) -> None:
        """Run a worker in this thread until no due job is left (tests, scripts, cron)."""
        w = self.new_worker(concurrency, queues)
        stop = threading.Event()
        w.run(stop, burst=burst)
        w.drain(grace=self.settings.shutdown_grace)


class _Node:
    """The threads of one running node: scheduler, worker, and a housekeeping loop."""

    def __init__(self, app: Linger, *, concurrency: int | None, queues: Sequence[str] | None, worker: bool, scheduler: bool, burst: bool = False) -> None:
        self.app = app
        self.stopping = threading.Event()  # stop claiming and ticking
        self.force = threading.Event()  # stop waiting for running jobs
        self.finished = threading.Event()  # the worker left its loop (burst mode)
        self._sched_stop = threading.Event()
        self._work_stop = threading.Event()
        self.worker = app.new_worker(concurrency, queues) if worker else None
        self.scheduler = app.new_scheduler() if scheduler else None
        if self.scheduler is not None and self.worker is not None:
            wake = self.worker.wake
            self.scheduler.on_materialized = lambda _n: wake.set()
        self.burst = burst
        self.threads: list[threading.Thread] = []
        self._stopped = False

    def start(self) -> None:
        app = self.app
        app.store.check_schema()
        roles = ",".join(r for r, on in (("scheduler", self.scheduler), ("worker", self.worker)) if on)
        app.store.register_node(
            app.node_id, host=socket.gethostname(), pid=os.getpid(), roles=roles, registry_hash=app.registry.hash(),
            version=__version__, now=app.clock.store_now(),
        )
        if self.scheduler is not None:
            report = self.scheduler.sync(list(app.registry.schedules.values()))
            log.info("schedules synced: %s", {k: v for k, v in report.items() if v}, extra={"action": "sync"})
            self._spawn("linger-scheduler", self.scheduler.run, self._sched_stop)
        if self.worker is not None:
            self._spawn("linger-worker", self._run_worker, self._work_stop)
            if app.store.dialect.can_notify:
                wake = self.worker.wake
                self._spawn("linger-listen", lambda stop: app.store.listen(wake.set, stop), self._work_stop)
        self._spawn("linger-housekeeping", self._housekeeping, self._work_stop)
        log.info("node %s started (%s) on %s", app.node_id, roles,
                 app.store.engine.url.render_as_string(hide_password=True), extra={"action": "node_started"})

    def _spawn(self, name: str, target: Callable[[threading.Event], object], stop: threading.Event) -> None:
        t = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _run_worker(self, stop: threading.Event) -> None:
        assert self.worker is not None
        try:
            self.worker.run(stop, burst=self.burst)
        finally:
            self.finished.set()
            self.stopping.set() if self.burst else None

    def _housekeeping(self, stop: threading.Event) -> None:
        app = self.app
        every = 10.0
        while not app.clock.wait(every, stop) if not app.clock.authoritative else not stop.wait(every):
            try:
                app.store.heartbeat_node(app.node_id, now=app.clock.store_now())
                if self.scheduler is not None and self.scheduler.is_leader():
                    app.store.prune_nodes(max(600.0, 20 * app.settings.lease_ttl), now=app.clock.store_now())
                    if app.settings.keep_finished is not None:
                        app.store.prune(app.settings.keep_finished, now=app.clock.store_now())
            except LingerError as exc:
                log.warning("housekeeping failed: %s", exc)

    def stop(self, grace: float | None, *, hand_back_running: bool = True) -> bool:
        """Graceful stop; returns True when it was forced (second signal)."""
        if self._stopped:
            return False
        self._stopped = True
        self.stopping.set()
        app = self.app
        app._fire_halt()
        self._sched_stop.set()
        self._work_stop.set()
        for t in self.threads:
            if t.name != "linger-worker" or True:
                t.join(timeout=5.0)
        if self.scheduler is not None:
            self.scheduler.resign()
        if self.worker is not None:
            try:
                self.worker.drain(grace, force=self.force, hand_back_running=hand_back_running)
            except LingerError as exc:
                log.error("could not hand back jobs at shutdown: %s", exc)
        try:
            app.store.remove_node(app.node_id)
        except LingerError:
            pass
        log.info("node %s stopped", app.node_id, extra={"action": "node_stopped"})
        return self.force.is_set()


_default: Linger | None = None


def default_app() -> Linger:
    """The optional process-wide app that the module-level ``task`` decorator registers on."""
    global _default
    if _default is None:
        _default = Linger()
    return _default
