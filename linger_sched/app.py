"""The :class:`Linger` app: the public API that ties registry, store, scheduler and worker."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import logging
import math
import os
import secrets
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from . import tracing
from .clock import Clock
from .config import Settings, resolve
from .configfile import FileConfig, import_modules, read_config_file, schedules_from_config
from .errors import ConfigError, JobArgumentsError, JobOptionError, LingerError, NaiveDatetimeError, SpecError
from .events import Event, Hooks
from .harness import LingerTesting
from .health import HealthReport, Thresholds, check_health, database_down
from .node import Node
from .registry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    INT32,
    MAX_QUEUE_LEN,
    MAX_TASK_NAME_LEN,
    MAX_UNIQUE_KEY_LEN,
    Registry,
    ScheduleDef,
    TaskDef,
    build_schedule,
    check_int,
    check_name,
    describe_callable,
    seconds,
    task_name_of,
)
from .scheduler import Scheduler, SchedulerSettings, runtime_definition, spec_from_row
from .specs import parse_duration
from .store import Job, Store, encode_args
from .worker import Worker, WorkerSettings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
P = ParamSpec("P")
R = TypeVar("R")

_SCHEDULE_OPTIONS = ("misfire", "misfire_grace", "max_catch_up", "overlap", "enabled", "args", "kwargs", "anchor")
JOB_OPTIONS = ("run_at", "delay", "priority", "queue", "unique_key", "max_attempts", "connection", "session")
MAX_DELAY = timedelta(days=36525)  # 100 years: a later run_at is a mistake, not a plan


class Task(Generic[P, R]):
    """A registered function: still callable directly, plus ``.enqueue()``."""

    def __init__(self, app: Linger, definition: TaskDef) -> None:
        self.app = app
        self.definition = definition
        self.name = definition.name
        functools.update_wrapper(self, definition.func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, self.definition.func(*args, **kwargs))

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Queue a call of this task; returns the job id. The job options ``run_at, delay,
        priority, queue, unique_key, max_attempts, connection, session`` (see
        :meth:`Linger.enqueue`) may be mixed with the task's keyword
        arguments; when the task itself has a parameter of such a name the call is ambiguous
        and refused: use :meth:`options` then."""
        return self.app.enqueue(self, *args, **kwargs)

    def options(self, **options: Any) -> JobOptions:
        """Job options apart from the task's arguments, e.g.
        ``notify.options(queue="email").enqueue(user_id, queue="sms")`` (the second ``queue``
        is the task's own parameter)."""
        return self.app.with_options(self, **options)

    def enqueue_many(self, items: Iterable[Any], **options: Any) -> list[int]:
        return self.app.enqueue_many(self, items, **options)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> int:
        """:meth:`enqueue` for ``async`` code: checked here, written on a thread (see :meth:`Linger.aenqueue`)."""
        return await self.app.aenqueue(self, *args, **kwargs)

    async def aenqueue_many(self, items: Iterable[Any], **options: Any) -> list[int]:
        return await self.app.aenqueue_many(self, items, **options)

    def __repr__(self) -> str:
        return f"<linger task {self.name}>"


class JobOptions:
    """A task bound to job options: every keyword of :meth:`enqueue` is the task's own."""

    def __init__(self, app: Linger, task: Any, options: dict[str, Any]) -> None:
        unknown = set(options) - set(JOB_OPTIONS)
        if unknown:
            raise JobOptionError(f"unknown job option(s) {', '.join(sorted(unknown))} (allowed: {', '.join(JOB_OPTIONS)})")
        self.app, self.task, self.job_options = app, task, options

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        row = self.app._row(self.task, args, kwargs, self.job_options, options_apart=True)
        return self.app._insert([row], self.job_options)[0]

    def enqueue_many(self, items: Iterable[Any]) -> list[int]:
        return self.app.enqueue_many(self.task, items, **self.job_options)

    async def aenqueue(self, *args: Any, **kwargs: Any) -> int:
        """:meth:`enqueue` for ``async`` code (see :meth:`Linger.aenqueue`)."""
        row = self.app._row(self.task, args, kwargs, self.job_options, options_apart=True)
        return (await self.app._ainsert([row], self.job_options))[0]

    async def aenqueue_many(self, items: Iterable[Any]) -> list[int]:
        return await self.app.aenqueue_many(self.task, items, **self.job_options)


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: C) -> C: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...


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
    # in error: the tick cannot plan or write it (see docs/schedules.md); retried at retry_at
    error: str | None = None
    error_since: datetime | None = None
    retry_at: datetime | None = None
    disabled_reason: str | None = None  # "not declared" (no live node declares it) or "enabled: false"
    source: str = "declared"  # or "runtime": created with add_schedule (never disabled by a sync)


@dataclass(frozen=True)
class Status:
    leader: Any
    nodes: list[Any]
    counts: dict[str, int]
    db_now: datetime
    schedule_errors: Sequence[Any] = ()  # the schedules in error (store rows: name, error, error_since, ...)
    node_lost_after: float = 30.0  # a node whose last heartbeat is older is lost (settings.node_lost_after)

    @property
    def leader_state(self) -> str:
        """``"held"`` (a valid lease), ``"released"`` (given back at a clean shutdown),
        ``"expired"`` (its node stopped renewing it) or ``"none"`` (no node ever led)."""
        if self.leader is None:
            return "none"
        if self.leader.expires_at > self.db_now:
            return "held"
        return "released" if self.leader.released else "expired"

    def is_lost(self, node: Any) -> bool:
        """Whether ``node`` (one of :attr:`nodes`) stopped heartbeating."""
        return bool((self.db_now - node.heartbeat_at).total_seconds() > self.node_lost_after)


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise JobOptionError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(what, value)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise JobOptionError(f"{what} {value!r} is out of range") from None


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_level() -> int:
    """``warnings.warn`` stacklevel of the first frame outside this package (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _config_checked(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), key=str(args[1])) from None


def _refuse_ambiguous(definition: TaskDef, options: dict[str, Any]) -> None:
    """A job option given where the task has a parameter of the same name: never guess."""
    clash = [k for k in JOB_OPTIONS if options.get(k) is not None and definition.has_parameter(k)]
    if clash:
        k = clash[0]
        raise JobOptionError(
            f"task {definition.name} has a parameter named {k!r}, so enqueue(..., {k}=...) is ambiguous; "
            f"pass job options apart from the task's arguments: task.options({k}=...).enqueue(...) "
            f"(or app.with_options(task, {k}=...).enqueue(...)), where every keyword of enqueue() is the task's"
        )


def _construct(definition: TaskDef, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """A class job's instance from its constructor's arguments (checked first)."""
    definition.check_arguments(args, kwargs)
    return definition.func(*args, **kwargs)


def _delay_seconds(delay: Any) -> float:
    """``delay`` (seconds, a timedelta or a duration such as ``"10m"``) as seconds in
    [0, 100 years]; :class:`JobOptionError` naming ``delay`` otherwise."""
    if isinstance(delay, bool):
        raise JobOptionError(f"delay must be seconds, a timedelta or a duration such as '10m', got {delay!r}")
    if isinstance(delay, timedelta):
        d = delay.total_seconds()
    elif isinstance(delay, (int, float)):
        d = float(delay)
    elif isinstance(delay, str):
        try:
            d = parse_duration(delay, field="delay").total_seconds()
        except SpecError as exc:
            raise JobOptionError(str(exc)) from None
    else:
        raise JobOptionError(f"delay must be seconds, a timedelta or a duration such as '10m', got {type(delay).__name__}")
    if not math.isfinite(d) or d < 0:
        raise JobOptionError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    if d > MAX_DELAY.total_seconds():
        raise JobOptionError(f"delay must be at most 100 years, got {delay!r}")
    return d


def _checked(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError) as exc:
        raise JobOptionError(str(exc)) from None


class Linger:
    """One linger-sched installation: a database, its tasks and schedules.

    ``Linger()`` uses ``LINGER_DATABASE_URL`` or ``sqlite:///linger.db``. Settings may be
    given as keyword arguments (``concurrency=4``, ``lease_ttl=10``, ...)."""

    _testing: LingerTesting | None = None  # app.testing, made on first use
    # inline mode (app.testing.inline()): called with the ids of every enqueue's new jobs
    _after_insert: Callable[[list[int]], None] | None = None

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
        self._clock_given = clock is not None
        self.clock = clock if clock is not None else Clock(settings.clock_offset)
        self.registry = Registry()
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._store: Store | None = None
        self._store_pid = os.getpid()
        self._store_lock = threading.Lock()
        self._halt_hooks: list[Callable[[], Any]] = []
        self.hooks = Hooks()  # event hooks (app.on); the worker, scheduler and node emit through it
        self._node: Node | None = None
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
                store = Store(self.settings.database_url, table_prefix=self.settings.table_prefix)
                auto_install = self.settings.auto_install
                if store.auto_install_default if auto_install is None else auto_install:
                    # the embedded default just works: a script's first enqueue on a new
                    # SQLite file creates the tables (once per process; idempotent)
                    try:
                        store.install_schema()
                    except BaseException:
                        store.dispose()
                        raise
                self._store = store
                self._store_pid = os.getpid()
            return self._store

    def configure(self, **changes: Any) -> None:
        """Change settings before the store is first used (the CLI applies flags this way).
        Invalid values raise :class:`ConfigError` and change nothing."""
        settings = replace(self.settings, **{k: v for k, v in changes.items() if v is not None})
        if self._store is not None and any(k in changes for k in ("database_url", "table_prefix")):
            self._store.dispose()
            self._store = None
        self.settings = settings
        if "clock_offset" in changes and not self._clock_given:  # a clock passed to Linger() stays
            self.clock = Clock(self.settings.clock_offset)

    def load_config(self, path: str | os.PathLike[str], *, cli: dict[str, Any] | None = None) -> FileConfig:
        """Read ``schedules.yaml``: apply its settings (under env and ``cli``), import its modules,
        and register its schedules. Raises :class:`ConfigError` naming file, line and key;
        nothing is written to the database."""
        cfg = read_config_file(path)
        import_modules(cfg.imports, file=cfg.path, line=cfg.lines.get("imports"))
        for d in schedules_from_config(cfg, self.registry):
            self.registry.add_schedule(d)
        # as in __init__: Linger(...) keywords under the file and the environment, but an explicit
        # database URL or table prefix above the environment (with the CLI flags)
        pinned = {k: v for k, v in self._explicit.items() if k in ("database_url", "table_prefix")}
        code = {k: v for k, v in self._explicit.items() if k not in pinned}
        settings = resolve(code=code, cli={**pinned, **(cli or {})}, file=cfg)
        self.configure(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})
        self.config_file = cfg
        return cfg

    # -- tasks --------------------------------------------------------------------------
    @overload
    def task(self, fn: C) -> C: ...  # type: ignore[overload-overlap]
    @overload
    def task(self, fn: Callable[P, R]) -> Task[P, R]: ...
    @overload
    def task(self, fn: None = None, **options: Any) -> _TaskDecorator: ...

    def task(self, fn: Any = None, **options: Any) -> Any:
        """Register a function (or a class with ``perform()``) as a task.

        Options: ``name, queue, priority, max_attempts, retry_backoff, timeout``; and for a
        recurring schedule ``cron=`` or ``every=`` with ``tz, schedule, args, kwargs, misfire,
        misfire_grace, max_catch_up, overlap, enabled, anchor``. ``async def`` functions (and
        classes whose ``perform`` is ``async def``) run on the worker's event loop."""
        if fn is not None:
            return self._register(fn, options)
        return lambda f: self._register(f, options)

    def _register(self, fn: Any, options: dict[str, Any]) -> Any:
        allowed = {"name", "queue", "priority", "max_attempts", "retry_backoff", "timeout", "cron", "every", "tz", "schedule", *_SCHEDULE_OPTIONS}
        unknown = set(options) - allowed
        is_class = isinstance(fn, type)
        if not is_class and not callable(fn):
            raise ConfigError(f"@task needs a function or a class, got {fn!r}", key="@task")
        where = describe_callable(fn)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})", key=where)
        if is_class and not callable(getattr(fn, "perform", None)):
            raise ConfigError("a class registered with @task needs a perform() method", key=where)
        try:
            max_attempts = options.get("max_attempts")
            if max_attempts is not None:
                _config_checked(check_int, max_attempts, "max_attempts", 1, INT32[1])
            priority = _config_checked(check_int, options.get("priority", 0), "priority")
            queue = options.get("queue")
            if queue is not None:
                _config_checked(check_name, queue, "queue", MAX_QUEUE_LEN)
            name = options.get("name")
            if name is not None:
                _config_checked(check_name, name, "name", MAX_TASK_NAME_LEN)
            else:
                name = task_name_of(fn)
                if name.startswith("__main__."):
                    warnings.warn(
                        f"task {name!r} is defined in __main__: a worker that imports your modules by name "
                        f"(linger-sched run/worker) cannot find it, so its jobs fail as an unknown task. "
                        f"Define it in an importable module, or give it a name= that such a worker also registers.",
                        stacklevel=_caller_level(),
                    )
            definition = TaskDef(
                name=name,
                func=fn,
                queue=queue or DEFAULT_QUEUE,
                priority=priority,
                max_attempts=max_attempts or DEFAULT_MAX_ATTEMPTS,
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
                self.registry.add_schedule(sched)  # binds args/kwargs to the task's signature
            elif options.get("tz") is not None or options.get("schedule") is not None:
                raise ConfigError("tz= and schedule= need cron= or every=", key="tz")
        except ConfigError as exc:
            raise ConfigError(exc.message, key=f"{where}: {exc.key}" if exc.key else where) from None
        if is_class:
            fn.__linger_task__ = definition
            fn.enqueue = staticmethod(lambda *a, **kw: self._enqueue_instance(fn, a, kw))
            fn.options = staticmethod(lambda **o: self.with_options(fn, **o))
            return fn
        return Task(self, definition)

    def _enqueue_instance(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        definition: TaskDef = cls.__linger_task__  # type: ignore[attr-defined]
        opts = {k: kwargs.pop(k) for k in JOB_OPTIONS if k in kwargs}
        _refuse_ambiguous(definition, opts)
        return self.enqueue(_construct(definition, args, kwargs), **opts)

    def schedule(self, name: str, task: Any, *, cron: str | None = None, every: Any = None, tz: str | None = None, **options: Any) -> ScheduleDef:
        """Declare a recurring schedule in code: ``app.schedule("nightly", cleanup, cron="0 3 * * *")``."""
        task_name = self._task_name(task)
        definition = self.registry.get_task(task_name)
        d = build_schedule(name, task_name, cron=cron, every=every, tz=tz, source=f"app.schedule({name!r})",
                           task_def=definition, **options)
        return self.registry.add_schedule(d)

    def _task_name(self, task: Any) -> str:
        if isinstance(task, str):
            return cast(str, _checked(check_name, task, "task", MAX_TASK_NAME_LEN))
        if isinstance(task, Task):
            return task.name
        definition = getattr(task, "__linger_task__", None)
        if definition is not None:
            return cast(str, definition.name)
        if not callable(task) or not hasattr(task, "__qualname__"):
            raise JobOptionError(f"task must be a registered task, its name or a class-job instance, got {task!r}")
        return task_name_of(task)

    # -- enqueueing ---------------------------------------------------------------------
    def _row(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any], options: dict[str, Any], *,
             options_apart: bool = False) -> dict[str, Any]:
        """One job row, every value checked before anything is written. ``options`` are the job
        options given (None = not given); with ``options_apart`` they came from
        :meth:`with_options`, so a task parameter of the same name is no conflict."""
        definition = getattr(type(task), "__linger_task__", None) if not isinstance(task, (str, type, Task)) and not callable(task) else None
        if definition is not None:  # a class-job instance
            if args or kwargs:
                raise JobArgumentsError("pass a class job's arguments to its constructor, not to enqueue()")
            kwargs = definition.args_of(task)
            name = definition.name
        else:
            if isinstance(task, type) and getattr(task, "__linger_task__", None) is not None:
                definition = getattr(task, "__linger_task__")  # noqa: B009
                task = _construct(definition, args, kwargs)
                return self._row(task, (), {}, options, options_apart=True)
            name = self._task_name(task)
            definition = self.registry.tasks.get(name)
            if definition is not None:
                if not options_apart:
                    _refuse_ambiguous(definition, options)
                definition.check_arguments(args, kwargs)
        run_at, delay = options.get("run_at"), options.get("delay")
        if run_at is not None and delay is not None:
            raise JobOptionError("give run_at or delay, not both")
        row: dict[str, Any] = {"task": name}
        if run_at is not None:
            row["run_at"] = _aware(run_at, "run_at")
        elif delay is not None:
            d = _delay_seconds(delay)
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
        except RecursionError:
            raise JobArgumentsError(f"arguments of {name} are nested too deeply to be stored as JSON") from None
        queue, priority, max_attempts, unique_key = (options.get(k) for k in ("queue", "priority", "max_attempts", "unique_key"))
        row["queue"] = _checked(check_name, queue, "queue", MAX_QUEUE_LEN) if queue is not None else (definition.queue if definition else DEFAULT_QUEUE)
        row["priority"] = _checked(check_int, priority, "priority") if priority is not None else (definition.priority if definition else DEFAULT_PRIORITY)
        row["max_attempts"] = (_checked(check_int, max_attempts, "max_attempts", 1, INT32[1]) if max_attempts is not None
                               else (definition.max_attempts if definition else DEFAULT_MAX_ATTEMPTS))
        if unique_key is not None:
            if isinstance(unique_key, int) and not isinstance(unique_key, bool):
                unique_key = str(unique_key)
            row["unique_key"] = _checked(check_name, unique_key, "unique_key", MAX_UNIQUE_KEY_LEN)
        return row

    def enqueue(
        self, task: Any, /, *args: Any, run_at: datetime | None = None, delay: float | timedelta | str | None = None,
        priority: int | None = None, queue: str | None = None, unique_key: str | None = None,
        max_attempts: int | None = None, connection: Any = None, session: Any = None, **kwargs: Any,
    ) -> int:
        """Queue one job; returns its id. ``task`` is a task, its name, or a class-job instance.

        Every option is checked before anything is written (:class:`JobOptionError`, a
        ``TypeError``/``ValueError``), and so are the arguments against the task's signature
        when the task is registered in this process (:class:`JobArgumentsError`). A task
        parameter named like a job option makes the call ambiguous: use :meth:`with_options`.

        ``connection`` (a SQLAlchemy ``Connection``) or ``session`` (an ORM ``Session``) to the
        database of the job table writes the job in the caller's transaction: it exists when
        the caller commits (on PostgreSQL the workers' wake-up goes out with the commit) and
        never if it rolls back; nothing is committed or retried here. See
        docs/transactional-enqueue.md."""
        options = dict(run_at=run_at, delay=delay, priority=priority, queue=queue, unique_key=unique_key,
                       max_attempts=max_attempts, connection=connection, session=session)
        row = self._row(task, args, kwargs, options)
        return self._insert([row], options)[0]

    def with_options(self, task: Any, **options: Any) -> JobOptions:
        """``task`` bound to job options, so that every keyword of its ``enqueue()`` is the
        task's own argument: ``app.with_options(notify, queue="email").enqueue(1, queue="x")``."""
        return JobOptions(self, task, options)

    def _insert(self, rows: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        conn, session = self._callers_connection(options.get("connection"), options.get("session"))
        # (not through a caller's connection: our own would wait on a SQLite write lock that
        # the caller's transaction holds; the store reads the clock through the caller's then)
        if conn is None and not self.clock.authoritative and len(rows) > 1 and all("run_at" not in r for r in rows):
            now = self.store.db_now()  # one clock read makes the rows bindable in one statement
            for r in rows:
                seconds = r.pop("delay", 0.0)
                r["run_at"] = now + timedelta(seconds=seconds) if seconds else now
        # (tracing never changes an enqueue: an OpenTelemetry exception is logged, never raised)
        with tracing.enqueue_span(rows[0]["task"], rows[0].get("queue"), len(rows)) as span:
            if span is not None:  # OpenTelemetry: the job spans link to this one
                parent = tracing.traceparent(span)
                for r in rows:
                    r["trace_context"] = parent
            ids = self.store.enqueue(rows, now=self.clock.store_now(), connection=conn)
            if span is not None and len(ids) == 1:
                tracing.set_attribute(span, "linger.job.id", ids[0])
        if conn is None:
            self._inserted(rows[0], ids)
        elif session is not None:
            self._after_commit(session, lambda: self._inserted(rows[0], ids))
        # a bare Connection has no after-commit event: its jobs are found by NOTIFY
        # (PostgreSQL), the file watch (SQLite) or the next poll
        return ids

    def _inserted(self, first: dict[str, Any], ids: list[int]) -> None:
        """The jobs ``ids`` are committed: wake this process's worker, run them in inline mode."""
        self._wake(first)
        if self._after_insert is not None:
            self._after_insert(ids)

    @staticmethod
    def _after_commit(session: Any, fn: Callable[[], None]) -> None:
        """Call ``fn`` once after ``session``'s transaction commits; never if it rolls back."""
        from sqlalchemy import event

        live = [True]

        def committed(_session: Any) -> None:
            if live[0]:
                live[0] = False
                fn()

        def rolled_back(_session: Any, *_: Any) -> None:
            live[0] = False

        event.listen(session, "after_commit", committed, once=True)
        event.listen(session, "after_soft_rollback", rolled_back, once=True)

    def _callers_connection(self, connection: Any, session: Any) -> tuple[Any, Any]:
        """The caller's SQLAlchemy connection to write in (and its ORM session), checked: a
        Connection or Session to the database of the job table; (None, None) for our own."""
        if connection is None and session is None:
            return None, None
        import sqlalchemy as sa
        from sqlalchemy import orm

        if connection is not None and session is not None:
            raise JobOptionError("give connection= or session=, not both")
        if session is not None:
            if isinstance(session, orm.scoped_session):  # Flask-SQLAlchemy's db.session
                session = session()
            if not isinstance(session, orm.Session):
                raise JobOptionError(f"session= must be a SQLAlchemy ORM Session, got {type(session).__name__}")
            connection = session.connection()
        elif not isinstance(connection, sa.Connection):
            raise JobOptionError(
                f"connection= must be a SQLAlchemy Connection (from engine.connect() or engine.begin()), "
                f"got {type(connection).__name__}")
        if not self.store.is_same_database(connection):
            theirs = connection.engine.url.render_as_string(hide_password=True)
            raise JobOptionError(
                f"connection= is to {theirs}, another database than the one holding the job table "
                f"({self.store.display_url}): a job written there would never run; enqueue through a "
                "connection to the job table's database (or without connection=)")
        return connection, session

    def enqueue_many(
        self, task_or_items: Any, items: Iterable[Any] | None = None, *, run_at: datetime | None = None,
        delay: float | timedelta | str | None = None, priority: int | None = None, queue: str | None = None,
        max_attempts: int | None = None, connection: Any = None, session: Any = None,
    ) -> list[int]:
        """Queue many jobs in one statement; returns their ids in order. ``connection`` and
        ``session`` write them in the caller's transaction, as in :meth:`enqueue`.

        ``enqueue_many(task, items)``: each item is a tuple/list of positional arguments, a
        dict of keyword arguments, or ``(args, kwargs)`` given as a 2-tuple ``(list, dict)``.
        ``enqueue_many([ClassJob(...), ...])``: class-job instances. Every item is checked
        before any is written: one bad item stores none."""
        opts: dict[str, Any] = dict(run_at=run_at, delay=delay, priority=priority, queue=queue, unique_key=None,
                                    max_attempts=max_attempts, connection=connection, session=session)
        rows = self._rows_of_many(task_or_items, items, opts)
        if not rows:
            self._callers_connection(connection, session)  # checked all the same
            return []
        return self._insert(rows, opts)

    def _rows_of_many(self, task_or_items: Any, items: Iterable[Any] | None, opts: dict[str, Any]) -> list[dict[str, Any]]:
        """The checked rows of :meth:`enqueue_many`."""
        rows = []
        if items is None:
            if isinstance(task_or_items, (str, Task)):
                raise JobArgumentsError("enqueue_many(task, items) needs the items")
            for obj in task_or_items:
                rows.append(self._row(obj, (), {}, opts, options_apart=True))
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
                rows.append(self._row(task_or_items, a, kw, opts, options_apart=True))
        return rows

    # -- enqueueing from async code -------------------------------------------------------
    async def aenqueue(self, task: Any, /, *args: Any, **kwargs: Any) -> int:
        """:meth:`enqueue` for ``async`` code (FastAPI, Starlette, ...): the same arguments and
        job options, every check made and every error raised here, in the caller, before the
        insert runs on a thread (``asyncio.to_thread``), so the event loop never waits on the
        database."""
        options = {k: kwargs.pop(k, None) for k in JOB_OPTIONS}
        row = self._row(task, args, kwargs, options)
        return (await self._ainsert([row], options))[0]

    async def aenqueue_many(self, task_or_items: Any, items: Iterable[Any] | None = None, **options: Any) -> list[int]:
        """:meth:`enqueue_many` for ``async`` code: checked here, written on a thread."""
        allowed = [k for k in JOB_OPTIONS if k != "unique_key"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise JobOptionError(f"unknown job option(s) {', '.join(unknown)} of enqueue_many (allowed: {', '.join(allowed)})")
        opts = {k: options.get(k) for k in JOB_OPTIONS}
        rows = self._rows_of_many(task_or_items, items, opts)
        if not rows:
            self._callers_connection(opts.get("connection"), opts.get("session"))
            return []
        return await self._ainsert(rows, opts)

    async def _ainsert(self, rows: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        if options.get("session") is None:
            # a connection= is checked here too (its check reads no database; a session's
            # check begins its transaction, so that one runs on the thread)
            self._callers_connection(options.get("connection"), None)
        return await asyncio.to_thread(self._insert, rows, options)

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
        """Cancel job ``job_id``: a queued job is ``cancelled`` at once; a running one is asked
        to stop (``cancel_requested``; it comes back still ``running``): its worker learns it at
        its next lease extension (at once when it runs in this process), cancels an ``async
        def`` task, and a plain function sees ``current_job().cancel_requested`` (Python
        cannot stop a thread). It then ends ``cancelled``, not retried; one that ignores the
        request ends as it would have. :class:`JobStateError` for a finished job."""
        job = self.store.cancel_job(job_id, now=self.clock.store_now())
        if job.state == "cancelled" and self.hooks.wanted("job_cancelled"):
            self.hooks.emit(Event("job_cancelled", self.node_id, at=self.clock.now(), job_id=job.id, task=job.task,
                                  queue=job.queue, attempt=job.attempts, max_attempts=job.max_attempts,
                                  schedule=job.schedule_name, scheduled_for=job.scheduled_for,
                                  reason="cancelled while queued"))
        node = self._node
        if job.state == "running" and node is not None and node.worker is not None and node.worker.holds(job_id):
            node.worker.nudge_heartbeat()
        return job

    def wait(self, job_id: int, timeout: float | timedelta | None = None) -> Job:
        """Block until job ``job_id`` has finished (``succeeded``, ``failed``, ``cancelled`` or
        ``skipped``) and return it (``.result`` holds a task's return value); ``timeout``
        seconds (or a ``timedelta``; None: no limit), in real time. Wakes on PostgreSQL's
        NOTIFY at the finish, SQLite's change counter, and polls (backing off to 1 s) on
        MySQL/MariaDB. :class:`~linger_sched.errors.WaitTimeout` (a ``TimeoutError``) naming the
        job and its state when it has not finished in time; :class:`JobNotFoundError` for an
        unknown id."""
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout < 0):
            raise JobOptionError(f"wait(): timeout must be a number of seconds >= 0, a timedelta or None, got {timeout!r}")
        return self.store.wait_finished(job_id, None if timeout is None else float(timeout))

    # -- schedules ----------------------------------------------------------------------
    def new_scheduler(self) -> Scheduler:
        return Scheduler(self.store, self.node_id, clock=self.clock, settings=self.new_scheduler_settings(),
                         task_defaults=self._task_defaults, hooks=self.hooks)

    def new_scheduler_settings(self) -> SchedulerSettings:
        """The scheduler's settings from :attr:`settings` (its ``threshold`` is the misfire
        threshold that health and the nodes' watch of the scheduler use too)."""
        s = self.settings
        return SchedulerSettings(tick_interval=s.tick_interval, lease_ttl=s.lease_ttl, renew_interval=s.renew_interval,
                                 misfire_threshold=s.misfire_threshold)

    def _task_defaults(self, name: str) -> dict[str, Any]:
        t = self.registry.tasks.get(name)
        return {} if t is None else {"queue": t.queue, "priority": t.priority, "max_attempts": t.max_attempts}

    def new_worker(self, concurrency: int | None = None, queues: Sequence[str] | None = None) -> Worker:
        s = self.settings
        ws = WorkerSettings(
            concurrency=concurrency or s.concurrency, queues=list(queues) if queues else (list(s.queues) if s.queues else None),
            poll_interval=s.poll_interval, job_lease_ttl=s.job_lease_ttl, rescue_interval=s.rescue_interval,
            shutdown_grace=s.shutdown_grace, result_max_bytes=s.result_max_bytes,
        )
        return Worker(self.store, self.registry, self.node_id, clock=self.clock, settings=ws, hooks=self.hooks)

    def sync_schedules(self) -> dict[str, list[str]]:
        """Write the declared schedules to the database (done by every node that schedules)."""
        return self.new_scheduler().sync(list(self.registry.schedules.values()))

    def pause(self, name: str) -> None:
        self.store.set_paused(name, True, now=self.clock.store_now())

    def resume(self, name: str) -> bool:
        """Resume paused schedule ``name`` from its first fire time after now. The paused period
        is not caught up: its fire times become one ``skipped`` row (reason "paused"). An error
        state is cleared (it is tried again at its next fire time). Returns False, changing
        nothing, when the schedule is not paused."""
        from .scheduler import resume_plan

        for _ in range(5):
            row = self.store.get_schedule(name)
            if not row.paused:
                log.info("schedule %s is not paused: nothing to resume", name, extra={"action": "resume_noop"})
                return False
            now = self.clock.now() if self.clock.authoritative else self.store.db_now()
            plan, next_run_at = resume_plan(row, now)
            # compare-and-set on next_run_at: a sync may change the schedule meanwhile
            if self.store.resume_schedule(name, expected=row.next_run_at, next_run_at=next_run_at, plan=plan,
                                          now=self.clock.store_now()):
                return True
        raise LingerError(f"schedule {name!r} kept changing while it was being resumed; try again")

    def trigger(self, name: str) -> int:
        """Run schedule ``name`` now, outside its cadence (marked ``reason='manual'``)."""
        row = self.store.get_schedule(name)
        import json as _json

        opts = _json.loads(row.options or "{}")
        now = self.clock.now() if self.clock.authoritative else self.store.db_now()
        (job_id,) = self.store.enqueue(
            [{
                "task": row.task, "args": row.args, "queue": opts.get("queue") or DEFAULT_QUEUE,
                "priority": opts.get("priority") or DEFAULT_PRIORITY,
                "max_attempts": opts.get("max_attempts") or DEFAULT_MAX_ATTEMPTS,
                "run_at": now, "schedule_name": name, "scheduled_for": now, "reason": "manual",
            }],
            now=now,
        )
        if self._node is not None and self._node.worker is not None:
            self._node.worker.wake.set()
        return job_id

    def add_schedule(self, name: str, task: Any, **options: Any) -> ScheduleInfo:
        """Create a recurring schedule while the app runs (one per customer, say), stored in
        the database (``source = 'runtime'``): ``cron=`` or ``every=``, and ``tz, anchor, args,
        kwargs, priority, queue, max_attempts, misfire, misfire_grace, max_catch_up, overlap,
        enabled`` as a declared schedule takes them, checked the same way (:class:`ConfigError`
        naming each bad option; nothing is stored). ``task``: a task or its name (it need not
        be registered in this process; a name no node registers fails its jobs as an unknown
        task). It survives restarts and no node's start-up sync disables it; a schedule later
        declared in code or YAML under the same name takes it over (logged).
        :class:`ScheduleStateError` when the name exists. Returns it as :meth:`schedules` shows it."""
        task_name = self._task_name(task)
        definition = runtime_definition(name, task_name, options, self.registry.tasks.get(task_name))
        self.new_scheduler().add_runtime(definition)
        return self.schedules(1, names=[name])[0]

    def update_schedule(self, name: str, **changes: Any) -> ScheduleInfo:
        """Change a schedule created with :meth:`add_schedule`: the options given replace the
        stored ones (``task=`` too; ``cron=`` replaces ``every=`` and the other way round), the
        rest stays, all checked again. A changed spec or zone recomputes the next fire time.
        :class:`ScheduleNotFoundError`; :class:`ScheduleStateError` for a declared schedule."""
        if changes.get("task") is not None:
            changes["task"] = self._task_name(changes["task"])
        self.new_scheduler().update_runtime(name, changes, self.registry.tasks.get)
        return self.schedules(1, names=[name])[0]

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule created with :meth:`add_schedule`: it fires no more; its jobs stay
        (history, and an occurrence already queued). :class:`ScheduleNotFoundError`;
        :class:`ScheduleStateError` for a declared schedule (remove it from code or YAML)."""
        self.store.delete_runtime_schedule(name)

    def schedules(self, next_n: int = 1, *, names: Sequence[str] | None = None) -> list[ScheduleInfo]:
        rows = self.store.load_schedules(names)
        outcomes = self.store.last_outcomes([r.name for r in rows])
        out = []
        for r in rows:
            runs: list[datetime] = []
            try:
                spec = spec_from_row(r)
                description = spec.describe()
            except (LingerError, ValueError) as exc:  # a row the tick marks in error
                description = f"invalid: {exc}"
            else:
                # in error, next_run_at is the retry instant, not a fire time
                t = r.next_run_at if r.error is None else None
                while t is not None and len(runs) < next_n:
                    runs.append(t)
                    try:
                        t = spec.next_after(t)
                    except (LingerError, OverflowError):  # no fire time before the year 10000
                        break
            last = outcomes.get(r.name)
            out.append(ScheduleInfo(
                r.name, r.task, r.spec, description, r.tz, runs, last[0] if last else r.last_run_at,
                last[1] if last else None, r.paused, r.enabled, error=r.error, error_since=r.error_since,
                retry_at=r.next_run_at if r.error is not None else None, disabled_reason=r.disabled_reason, source=r.source,
            ))
        return out

    def status(self) -> Status:
        from .scheduler import LEADER

        now = self.clock.now() if self.clock.authoritative else self.store.db_now()  # leases, heartbeats: this clock
        return Status(self.store.get_lease(LEADER), self.store.list_nodes(), self.store.count_by_state(), now,
                      schedule_errors=self.store.schedule_errors(), node_lost_after=self.settings.node_lost_after)

    def health(self, *, now: datetime | None = None) -> HealthReport:
        """Check the whole installation (every node, not only this process) and return a
        :class:`~linger_sched.health.HealthReport`: ``.status`` (``healthy``, ``degraded``,
        ``unhealthy``), ``.exit_code`` (0, 1, 2), ``.checks`` (each naming what is wrong) and
        ``.as_dict()``. The checks and their thresholds (settings ``misfire_threshold``,
        ``node_lost_after``, ``health_window``, ``health_max_failure_rate``,
        ``health_max_queue_age``) are in docs/operations.md ("Health"). ``now``: the instant
        to judge at (default: the database's clock; the app's clock when it is a fake one).
        Never raises for a database that cannot be read: that is an unhealthy ``database``
        check."""
        from .scheduler import LEADER

        s = self.settings
        thresholds = Thresholds(
            overdue_after=self.new_scheduler_settings().threshold, node_lost_after=s.node_lost_after,
            failure_window=s.health_window, max_failure_rate=s.health_max_failure_rate,
            max_queue_age=s.health_max_queue_age,
        )
        try:
            store = self.store
        except Exception as exc:  # noqa: BLE001 - e.g. auto-install on a database that is down
            return HealthReport([database_down(self.settings.database_url, exc)])
        return check_health(store, thresholds, now=now if now is not None else self.clock.store_now(), lease=LEADER)

    # -- running ------------------------------------------------------------------------
    def _own_node_id(self) -> None:
        # after a fork the child must not share its parent's node id (job locks, the lease)
        if self.node_id.rsplit(":", 2)[1] != str(os.getpid()):
            self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    def on(self, *events: str) -> Callable[[F], F]:
        """Decorator: call the function with an :class:`~linger_sched.events.Event` each time
        one of ``events`` happens (``"job_succeeded"``, ``"job_failed"``, ... or ``"*"``; the
        list is :data:`linger_sched.events.EVENTS`). Hooks run on the emitting thread: keep them
        quick. One that raises is logged and never affects the job."""
        return self.hooks.on(*events)

    def on_halt(self, fn: F) -> F:
        """Register a hook called once when this node is asked to stop."""
        self._halt_hooks.append(fn)
        return fn

    def _fire_halt(self) -> None:
        hooks, self._halt_hooks = self._halt_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("on_halt hook %r failed", hook, extra={"action": "halt_hook_error"})

    def start(self, concurrency: int | None = None, queues: Sequence[str] | None = None, *, worker: bool = True, scheduler: bool = True) -> None:
        """Run a node on background threads inside this process (e.g. a web app).

        Call :meth:`stop` at shutdown; it is also called at interpreter exit. In a server that
        forks workers (gunicorn), call it in each worker after the fork."""
        self._own_node_id()
        if self._node is not None:
            raise LingerError("this app's node is already running")
        node = Node(self, concurrency=concurrency, queues=queues, worker=worker, scheduler=scheduler)
        node.start(supervise=True)
        self._node = node
        atexit.register(self.stop)

    def stop(self, grace: float | None = None, *, hand_back_running: bool = False) -> None:
        """Stop the background node: fire ``on_halt``, stop claiming, wait up to ``grace`` for
        running jobs, and release the leader lease.

        Claimed jobs that have not started go back to the queue at once. A job still running
        after the grace period keeps running on its thread (Python cannot stop it) and keeps
        its lock, renewed until the job returns (its outcome is then written), so no other node
        runs it at the same time; pass ``hand_back_running=True`` when the process exits right
        after (the thread dies with it)."""
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
        announce: Callable[[str, dict[str, Any]], object] | None = None,
    ) -> int:
        """Run a node in the foreground until SIGTERM/SIGINT (a second signal forces).

        Returns the exit status: 0 after a clean stop, 1 after a forced one or when a thread
        of the node kept dying (see :mod:`linger_sched.node`). ``announce(action, details)``
        is called, from this thread, with what the node also logs for an operator:
        ``"shutdown_wait"`` (a stop that waits for running jobs: ``jobs`` [{id, task,
        running_for}], ``grace``), ``"shutdown_forced"`` (the second signal) and, with
        ``burst``, ``"burst_summary"`` (``ran``, ``succeeded``, ``failed``, ``retried``,
        ``cancelled``, ``elapsed`` seconds)."""
        self._own_node_id()
        node = Node(self, concurrency=concurrency, queues=queues, worker=worker, scheduler=scheduler, burst=burst)
        node.announce = announce
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
                if node.finished.is_set() or not node.supervise():
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
        w.run(threading.Event(), burst=burst)

    @property
    def testing(self) -> LingerTesting:
        """Test helpers for this app, made on first use: ``run_pending()``, ``advance()``,
        ``advance_to()``, ``assert_enqueued()``, ``refute_enqueued()``, ``enqueued_jobs()`` and
        ``inline()`` (see docs/testing.md; the pytest fixtures are in :mod:`linger_sched.testing`)."""
        if self._testing is None:
            self._testing = LingerTesting(self)
        return self._testing


_default: Linger | None = None


def default_app() -> Linger:
    """The optional process-wide app that the module-level ``task`` decorator registers on."""
    global _default
    if _default is None:
        _default = Linger()
    return _default
