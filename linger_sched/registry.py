"""Tasks and schedules: what a node knows how to run, and when.

Sources are the ``@task`` decorator, :meth:`Registry.add_schedule` and ``schedules.yaml``
(:func:`load_config_file`). Every bad input raises :class:`ConfigError` naming the file,
line and key, or the decorated function.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ConfigError, ConfigErrors, JobArgumentsError, SpecError, UnknownTaskError
from .specs import CronSpec, IntervalSpec, parse_duration, parse_spec, validate_tz

MISFIRE_POLICIES = ("coalesce", "all", "skip")
OVERLAP_POLICIES = ("skip", "allow")
SCHEDULE_KEYS = (
    "task", "cron", "every", "tz", "anchor", "args", "kwargs", "priority", "queue", "max_attempts",
    "misfire", "misfire_grace", "max_catch_up", "overlap", "enabled",
)
TOP_KEYS = ("database", "imports", "defaults", "schedules", "table_prefix", "concurrency", "queues")


# the defaults of a job's options, in one place (tasks, schedules, enqueue, the store)
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 3


@dataclass
class TaskDef:
    """A registered task: a function, or a class whose instances have ``perform()``."""

    name: str
    func: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff: float = 10.0
    timeout: float | None = None
    is_class: bool = False

    def call(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.is_class:
            return self.func(*args, **kwargs).perform()
        return self.func(*args, **kwargs)

    @functools.cached_property
    def signature(self) -> inspect.Signature | None:
        """The task's signature (a class task: its constructor's); None when unreadable."""
        try:
            return inspect.signature(self.func)
        except (TypeError, ValueError):
            return None

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Bind ``args``/``kwargs`` to the task's signature (a class task: its constructor);
        :class:`JobArgumentsError` naming the task and the parameter when they do not fit.
        Tasks whose signature cannot be read (some builtins) are not checked."""
        sig = self.signature
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise JobArgumentsError(f"arguments do not fit task {self.name}{sig}: {exc}") from None

    def has_parameter(self, name: str) -> bool:
        """Whether the task takes a parameter called ``name`` (not counting ``**kwargs``)."""
        sig = self.signature
        if sig is None:
            return False
        p = sig.parameters.get(name)
        return p is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)

    def args_of(self, obj: Any) -> dict[str, Any]:
        """The JSON arguments of a class-job instance: its dataclass fields or attributes."""
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        return dict(vars(obj))


@dataclass
class ScheduleDef:
    """A recurring schedule as declared; the scheduler stores and ticks it."""

    name: str
    task: str
    spec: CronSpec | IntervalSpec
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    queue: str | None = None
    max_attempts: int | None = None
    misfire: str = "coalesce"
    misfire_grace: float | None = None
    max_catch_up: int = 1000
    overlap: str = "skip"
    enabled: bool = True
    source: str = "code"

    @property
    def spec_hash(self) -> str:
        anchor = getattr(self.spec, "anchor", None)
        text = f"{self.spec.text()}|{self.spec.tz}|{anchor.isoformat() if anchor else ''}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def options(self) -> dict[str, Any]:
        return {
            "misfire": self.misfire, "misfire_grace": self.misfire_grace, "max_catch_up": self.max_catch_up,
            "overlap": self.overlap, "priority": self.priority, "queue": self.queue,
            "max_attempts": self.max_attempts,
        }


def task_name_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "__main__"
    return f"{module}.{obj.__qualname__}"


def check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobArgumentsError(f"{what} must be JSON-serializable: {exc}") from exc
    except RecursionError:
        raise JobArgumentsError(f"{what} is nested too deeply to be stored as JSON") from None


# -- limits of the stored columns: a value outside them is refused before anything is written,
# never left for the database (or a worker's sort) to reject later
INT32 = (-(2**31), 2**31 - 1)
MAX_QUEUE_LEN = 64
MAX_TASK_NAME_LEN = 255
MAX_SCHEDULE_NAME_LEN = 191
MAX_UNIQUE_KEY_LEN = 191


def check_int(value: Any, key: str, low: int = INT32[0], high: int = INT32[1]) -> int:
    """``value`` as an int in [low, high]; ``ValueError``/``TypeError`` naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}, got {value!r}")
    return value


def check_name(value: Any, key: str, max_len: int) -> str:
    """A non-empty string of at most ``max_len`` characters with no NUL (queue, task, key)."""
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, got {value!r}")
    if not value or not value.strip():
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise ValueError(f"{key} must be at most {max_len} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{key} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key} must be valid Unicode text (no lone surrogates)") from None
    return value


def _yaml_location(source: str) -> tuple[str | None, int | None]:
    """(file, line) of a schedule source written as ``path:line`` (YAML), else (None, None)."""
    head, sep, num = source.rpartition(":")
    if sep and num.isdigit():
        return head, int(num)
    return None, None


class Registry:
    """Tasks by name and schedules by name. One per :class:`~linger_sched.Linger` app."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.schedules: dict[str, ScheduleDef] = {}

    def add_task(self, task: TaskDef) -> TaskDef:
        old = self.tasks.get(task.name)
        # re-importing the same module (e.g. __main__ and by name) registers an equal
        # function again; only a different object under one name is a conflict
        if (old is not None and old.func is not task.func
                and getattr(old.func, "__qualname__", None) != getattr(task.func, "__qualname__", None)):
            raise ConfigError(f"task name {task.name!r} is registered twice", key="name")
        self.tasks[task.name] = task
        return task

    def get_task(self, name: str) -> TaskDef:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self.tasks)) from None

    def add_schedule(self, sched: ScheduleDef) -> ScheduleDef:
        """Register ``sched``. Its arguments must fit its task when the task is registered here
        (every source: YAML, ``@task(cron=...)``, ``app.schedule()``)."""
        old = self.schedules.get(sched.name)
        if old is not None and old.source != sched.source:
            # point at the YAML side ("path:line") when there is one, so the error names file and line
            file, line = None, None
            for src in (sched.source, old.source):
                file, line = _yaml_location(src)
                if file is not None:
                    break
            raise ConfigError(
                f"schedule {sched.name!r} is declared twice: in {old.source} and in {sched.source}",
                file=file, line=line, key=f"schedules.{sched.name}" if file else sched.name,
            )
        task_def = self.tasks.get(sched.task)
        if task_def is not None:
            try:
                task_def.check_arguments(sched.args, sched.kwargs)
            except JobArgumentsError as exc:
                key = _arguments_key(task_def, sched.args, sched.kwargs)
                file, line = _yaml_location(sched.source)
                raise ConfigError(f"schedule {sched.name!r}: {exc}", file=file, line=line,
                                  key=f"schedules.{sched.name}.{key}" if file else key) from None
        self.schedules[sched.name] = sched
        return sched

    def hash(self) -> str:
        """A digest of task names and schedule specs: nodes with different registries differ."""
        h = hashlib.sha256()
        for name in sorted(self.tasks):
            h.update(name.encode() + b"\0")
        for name in sorted(self.schedules):
            h.update(f"{name}={self.schedules[name].spec_hash}".encode() + b"\0")
        return h.hexdigest()[:16]


# -- limits of a schedule (besides the stored columns' above) ---------------------------------
MAX_INTERVAL = timedelta(days=36525)  # 100 years: a longer interval is a mistake, not a plan
# An interval's anchor: years 1000 (the earliest MySQL/MariaDB DATETIME) up to 9899, so that
# anchor + the longest interval is still a date (year <= 9999) on every supported database.
MIN_ANCHOR = datetime(1000, 1, 1, tzinfo=UTC)
MAX_ANCHOR = datetime(9900, 1, 1, tzinfo=UTC)  # exclusive
MAX_CATCH_UP = 100_000  # the scheduler enumerates at most this many missed fire times per tick
MAX_TZ_LEN = 64  # linger_schedules.tz


def raise_errors(errors: Sequence[ConfigError]) -> None:
    """Raise the one error, or a :class:`ConfigErrors` for several; nothing for none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def _arguments_key(task_def: TaskDef, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Which option to blame when ``args``/``kwargs`` do not fit: ``kwargs`` when the positional
    arguments alone fit (and keyword arguments were given), else ``args``."""
    sig = task_def.signature
    if not kwargs or sig is None:
        return "args"
    try:
        sig.bind_partial(*args)
    except TypeError:
        return "args"
    return "kwargs"


# -- schedule options shared by the decorator, app.schedule() and YAML --------------------
def build_schedule(
    name: str,
    task: str,
    *,
    cron: str | None = None,
    every: Any = None,
    tz: str | None = None,
    anchor: datetime | None = None,
    args: Any = None,
    kwargs: Any = None,
    priority: Any = None,
    queue: Any = None,
    max_attempts: Any = None,
    misfire: Any = "coalesce",
    misfire_grace: Any = None,
    max_catch_up: Any = 1000,
    overlap: Any = "skip",
    enabled: Any = True,
    source: str = "code",
    key_error: Callable[[str, str], ConfigError] | None = None,
    task_def: TaskDef | None = None,
) -> ScheduleDef:
    """Validate schedule options and build a :class:`ScheduleDef`.

    ``key_error(key, message)`` makes the error for a bad key (YAML passes one that knows
    the file and line). Every bad option is reported: one :class:`ConfigError`, or a
    :class:`ConfigErrors` listing them all. With ``task_def`` (the registered task), ``args``
    and ``kwargs`` must fit its signature."""
    problems: list[ConfigError] = []

    def report(key: str, message: str) -> None:
        if key_error is not None:
            problems.append(key_error(key, message))
        else:
            problems.append(ConfigError(message, key=f"{source}: {key}" if source != "code" else key))

    sched = _build_schedule(
        name, task, cron=cron, every=every, tz=tz, anchor=anchor, args=args, kwargs=kwargs, priority=priority,
        queue=queue, max_attempts=max_attempts, misfire=misfire, misfire_grace=misfire_grace,
        max_catch_up=max_catch_up, overlap=overlap, enabled=enabled, source=source, report=report,
        task_def=task_def,
    )
    raise_errors(problems)
    assert sched is not None  # None only when a problem was reported
    return sched


def _build_schedule(
    name: Any, task: Any, *, cron: Any, every: Any, tz: Any, anchor: Any, args: Any, kwargs: Any, priority: Any,
    queue: Any, max_attempts: Any, misfire: Any, misfire_grace: Any, max_catch_up: Any, overlap: Any, enabled: Any,
    source: str, report: Callable[[str, str], None], task_def: TaskDef | None,
) -> ScheduleDef | None:
    """:func:`build_schedule`'s checks, each problem passed to ``report(key, message)`` (all of
    them, not only the first); the ScheduleDef, or None when anything was reported. ``task``
    None: the caller has reported a missing task already."""
    failed = False

    def fail(key: str, message: str) -> None:
        nonlocal failed
        failed = True
        report(key, message)

    def check(key: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (TypeError, ValueError) as exc:
            fail(key, str(exc))
            return None

    check("name", lambda: check_name(name, "schedule name", MAX_SCHEDULE_NAME_LEN))
    if task is not None:
        check("task", lambda: check_name(task, "task name", MAX_TASK_NAME_LEN))

    # -- when: cron or every, tz, anchor ---------------------------------------------------
    spec: CronSpec | IntervalSpec | None = None
    when_ok = True
    if cron is None and every is None:
        fail("cron", f"schedule {name!r} needs one of 'cron' or 'every'")
        when_ok = False
    elif cron is not None and every is not None:
        fail("every", f"schedule {name!r} has both 'cron' and 'every'; give one")
        when_ok = False
    if cron is not None and not isinstance(cron, str):
        fail("cron", f"cron must be a string like '0 0 1 * *', got {cron!r}")
        when_ok = False
    if tz is not None:
        if not isinstance(tz, str):
            fail("tz", f"tz must be a zone name like 'Europe/Berlin', got {tz!r}")
            tz, when_ok = None, False
        elif len(tz) > MAX_TZ_LEN:
            fail("tz", f"tz must be at most {MAX_TZ_LEN} characters, got {len(tz)}")
            tz, when_ok = None, False
        else:
            try:
                validate_tz(tz)
            except SpecError as exc:
                fail("tz", str(exc))
                tz, when_ok = None, False
    if anchor is not None:
        if not isinstance(anchor, datetime):
            fail("anchor", f"anchor must be an aware ISO 8601 date-time, got {anchor!r}")
            anchor, when_ok = None, False
        elif anchor.utcoffset() is None:
            fail("anchor", "anchor must include a UTC offset (e.g. 2026-01-01T00:00:00+00:00)")
            anchor, when_ok = None, False
        elif every is not None:
            try:
                in_utc: datetime | None = anchor.astimezone(UTC)
            except OverflowError:
                in_utc = None
            if in_utc is None or not MIN_ANCHOR <= in_utc < MAX_ANCHOR:
                fail("anchor", f"anchor must be from the year 1000 up to the end of 9899 (UTC), got {anchor.isoformat()}")
                anchor, when_ok = None, False
    if (isinstance(cron, str) and every is None) or (cron is None and every is not None):
        # parsed even when tz or anchor was bad (without them), so that its own errors show too
        try:
            spec = parse_spec(cron=cron, every=every, tz=tz, anchor=anchor)
        except SpecError as exc:
            key = {"tz": "tz", "anchor": "anchor"}.get(exc.field or "", "cron" if cron is not None else "every")
            fail(key, str(exc))
        if isinstance(spec, IntervalSpec) and spec.every > MAX_INTERVAL:
            fail("every", f"an interval is at most 100 years ({MAX_INTERVAL.days} days), got {spec.describe()[6:]}")
            spec = None
    if not when_ok:
        spec = None

    # -- arguments ------------------------------------------------------------------------
    args_ok = True
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, (list, tuple)):
        fail("args", f"args must be a list, got {type(args).__name__}")
        args_ok = False
    if not isinstance(kwargs, Mapping):
        fail("kwargs", f"kwargs must be a mapping, got {type(kwargs).__name__}")
        args_ok = False
    elif any(not isinstance(k, str) for k in kwargs):
        bad = next(k for k in kwargs if not isinstance(k, str))
        fail("kwargs", f"kwargs must map parameter names (text) to values, got the key {bad!r}")
        args_ok = False
    for key, value, ok in (("args", args, isinstance(args, (list, tuple))), ("kwargs", kwargs, isinstance(kwargs, Mapping))):
        if not ok:
            continue
        try:
            check_json(list(value) if key == "args" else dict(value), key)
        except JobArgumentsError as exc:
            fail(key, str(exc))
            args_ok = False
    if args_ok and task_def is not None:
        try:
            task_def.check_arguments(list(args), dict(kwargs))
        except JobArgumentsError as exc:
            fail(_arguments_key(task_def, list(args), dict(kwargs)), str(exc))

    # -- policies and job options -----------------------------------------------------------
    if misfire not in MISFIRE_POLICIES:
        fail("misfire", f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, got {misfire!r}")
    if overlap not in OVERLAP_POLICIES:
        fail("overlap", f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {overlap!r}")
    grace: float | None = None
    if misfire_grace is not None:
        try:
            grace = parse_duration(misfire_grace, field="misfire_grace").total_seconds()
        except SpecError as exc:
            fail("misfire_grace", str(exc))
    if max_catch_up is not None:
        check("max_catch_up", lambda: check_int(max_catch_up, "max_catch_up", 1, MAX_CATCH_UP))
    if max_attempts is not None:
        check("max_attempts", lambda: check_int(max_attempts, "max_attempts", 1))
    if priority is not None:
        check("priority", lambda: check_int(priority, "priority"))
    if queue is not None:
        check("queue", lambda: check_name(queue, "queue", MAX_QUEUE_LEN))
    if not isinstance(enabled, bool):
        fail("enabled", f"enabled must be true or false, got {enabled!r}")
    if failed or spec is None:
        return None
    return ScheduleDef(
        name=name, task=task, spec=spec, args=list(args), kwargs=dict(kwargs), priority=priority, queue=queue,
        max_attempts=max_attempts, misfire=misfire, misfire_grace=grace, max_catch_up=max_catch_up,
        overlap=overlap, enabled=enabled, source=source,
    )


def describe_callable(obj: Any) -> str:
    try:
        file = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
        return f"@task on {task_name_of(obj)} ({file}:{line})"
    except (OSError, TypeError):
        return f"@task on {task_name_of(obj)}"


def seconds(value: float | timedelta | str | None, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"must be >= 0, got {value!r}", key=field)
        return float(value)
    try:
        return parse_duration(value, field=field).total_seconds()
    except SpecError as exc:
        raise ConfigError(str(exc), key=field) from exc
