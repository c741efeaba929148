"""Tasks and schedules: what a node knows how to run, and when.

Sources are the ``@task`` decorator, :meth:`Registry.add_schedule` and ``schedules.yaml``
(:func:`load_config_file`). Every bad input raises :class:`ConfigError` naming the file,
line and key, or the decorated function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError, JobArgumentsError, SpecError, UnknownTaskError
from .specs import CronSpec, IntervalSpec, parse_duration, parse_spec

MISFIRE_POLICIES = ("coalesce", "all", "skip")
OVERLAP_POLICIES = ("skip", "allow")
SCHEDULE_KEYS = (
    "task", "cron", "every", "tz", "anchor", "args", "kwargs", "priority", "queue", "max_attempts",
    "misfire", "misfire_grace", "max_catch_up", "overlap", "enabled",
)
TOP_KEYS = ("database", "imports", "defaults", "schedules", "table_prefix", "concurrency", "queues")


@dataclass
class TaskDef:
    """A registered task: a function, or a class whose instances have ``perform()``."""

    name: str
    func: Callable[..., Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    retry_backoff: float = 10.0
    timeout: float | None = None
    is_class: bool = False

    def call(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.is_class:
            return self.func(*args, **kwargs).perform()
        return self.func(*args, **kwargs)

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


class Registry:
    """Tasks by name and schedules by name. One per :class:`~linger_sched.Linger` app."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.schedules: dict[str, ScheduleDef] = {}

    def add_task(self, task: TaskDef) -> TaskDef:
        old = self.tasks.get(task.name)
        if old is not None and old.func is not task.func:
            # re-importing the same module (e.g. __main__ and by name) registers an equal
            # function again; only a different object under one name is a conflict
            if getattr(old.func, "__qualname__", None) != getattr(task.func, "__qualname__", None):
                raise ConfigError(f"task name {task.name!r} is registered twice", key="name")
        self.tasks[task.name] = task
        return task

    def get_task(self, name: str) -> TaskDef:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self.tasks)) from None

    def add_schedule(self, sched: ScheduleDef) -> ScheduleDef:
        old = self.schedules.get(sched.name)
        if old is not None and old.source != sched.source:
            # point at the YAML side ("path:line") when there is one, so the error names file and line
            file, line = None, None
            for src in (sched.source, old.source):
                head, sep, num = src.rpartition(":")
                if sep and num.isdigit():
                    file, line = head, int(num)
                    break
            raise ConfigError(
                f"schedule {sched.name!r} is declared twice: in {old.source} and in {sched.source}",
                file=file, line=line, key=f"schedules.{sched.name}" if file else sched.name,
            )
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
) -> ScheduleDef:
    """Validate schedule options and build a :class:`ScheduleDef`.

    ``key_error(key, message)`` makes the error for a bad key (YAML passes one that knows
    the file and line)."""

    def fail(key: str, message: str) -> ConfigError:
        if key_error is not None:
            return key_error(key, message)
        return ConfigError(message, key=f"{source}: {key}" if source != "code" else key)

    if cron is None and every is None:
        raise fail("cron", f"schedule {name!r} needs one of 'cron' or 'every'")
    if cron is not None and every is not None:
        raise fail("every", f"schedule {name!r} has both 'cron' and 'every'; give one")
    if tz is not None and not isinstance(tz, str):
        raise fail("tz", f"tz must be a zone name like 'Europe/Berlin', got {tz!r}")
    if anchor is not None and not isinstance(anchor, datetime):
        raise fail("anchor", f"anchor must be an aware ISO 8601 date-time, got {anchor!r}")
    if cron is not None and not isinstance(cron, str):
        raise fail("cron", f"cron must be a string like '0 0 1 * *', got {cron!r}")
    try:
        spec = parse_spec(cron=cron, every=every, tz=tz, anchor=anchor)
    except SpecError as exc:
        key = "tz" if exc.field == "tz" else ("cron" if cron is not None else "every")
        raise fail(key, str(exc)) from exc
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, (list, tuple)):
        raise fail("args", f"args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise fail("kwargs", f"kwargs must be a mapping, got {type(kwargs).__name__}")
    for key, value in (("args", list(args)), ("kwargs", dict(kwargs))):
        try:
            check_json(value, key)
        except JobArgumentsError as exc:
            raise fail(key, str(exc)) from exc
    if misfire not in MISFIRE_POLICIES:
        raise fail("misfire", f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, got {misfire!r}")
    if overlap not in OVERLAP_POLICIES:
        raise fail("overlap", f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {overlap!r}")
    grace: float | None = None
    if misfire_grace is not None:
        try:
            grace = parse_duration(misfire_grace, field="misfire_grace").total_seconds()
        except SpecError as exc:
            raise fail("misfire_grace", str(exc)) from exc
    for key, value, low in (("max_catch_up", max_catch_up, 1), ("max_attempts", max_attempts, 1), ("priority", priority, None)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            bound = f" >= {low}" if low is not None else ""
            raise fail(key, f"{key} must be an integer{bound}, got {value!r}")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise fail("queue", f"queue must be a non-empty string, got {queue!r}")
    if not isinstance(enabled, bool):
        raise fail("enabled", f"enabled must be true or false, got {enabled!r}")
    return ScheduleDef(
        name=name, task=task, spec=spec, args=list(args), kwargs=dict(kwargs), priority=priority, queue=queue,
        max_attempts=max_attempts, misfire=misfire, misfire_grace=grace, max_catch_up=max_catch_up,
        overlap=overlap, enabled=enabled, source=source,
    )


# -- schedules.yaml -------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember the line of each key (1-based)."""


class LineDict(dict):  # type: ignore[type-arg]
    lines: dict[Any, int]
    line: int


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.lines = {}
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1, key=str(key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


@dataclass
class FileConfig:
    """The parsed top level of a schedules.yaml."""

    path: str
    database: str | None = None
    table_prefix: str | None = None
    concurrency: int | None = None
    queues: list[str] | None = None
    imports: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    schedules: LineDict = field(default_factory=LineDict)
    lines: dict[Any, int] = field(default_factory=dict)


def read_config_file(path: str | os.PathLike[str]) -> FileConfig:
    """Parse a schedules.yaml (safe_load) and check its top level; imports nothing."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=p) from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        exc.file = p
        raise ConfigError(exc.message, file=p, line=exc.line, key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        if mark is not None and context_mark is not None and mark.index >= len(text.rstrip()):
            mark = context_mark  # "unexpected end of stream": point at what was left open
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            context += f" (started on line {context_mark.line + 1})"
        # name the key written on the offending line, if there is one
        key = None
        source_lines = text.splitlines()
        if line is not None and 0 < line <= len(source_lines):
            m = re.match(r"\s*(?:-\s+)?([^\s:#'\"\[\]{},&*!|>%@`-][^:#]*?)\s*:(?:\s|$)", source_lines[line - 1])
            key = m.group(1) if m else None
        raise ConfigError(f"invalid YAML: {context + ', ' if context else ''}{problem}", file=p, line=line, key=key) from None
    if data is None:
        data = LineDict()
        data.lines = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping (database:, imports:, schedules:, ...)", file=p, line=1)
    lines = getattr(data, "lines", {})
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(
                f"unknown key (expected one of: {', '.join(TOP_KEYS)})", file=p, line=lines.get(key), key=str(key)
            )
    cfg = FileConfig(path=p, lines=lines)

    def typed(key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            raise ConfigError(f"must be {what}, got {value!r}", file=p, line=lines.get(key), key=key)
        return value

    cfg.database = typed("database", str, "a database URL string")
    cfg.table_prefix = typed("table_prefix", str, "a string")
    cfg.concurrency = typed("concurrency", int, "an integer")
    queues = typed("queues", (list, str), "a list of queue names")
    cfg.queues = [q.strip() for q in queues.split(",")] if isinstance(queues, str) else queues
    imports = typed("imports", list, "a list of module names") or []
    for mod in imports:
        if not isinstance(mod, str):
            raise ConfigError(f"must list module names, got {mod!r}", file=p, line=lines.get("imports"), key="imports")
    cfg.imports = imports
    cfg.defaults = typed("defaults", dict, "a mapping of schedule options") or {}
    for key in cfg.defaults:
        if key not in SCHEDULE_KEYS or key in ("task", "cron", "every"):
            dl = getattr(cfg.defaults, "lines", {})
            raise ConfigError("unknown or not defaultable schedule option", file=p, line=dl.get(key), key=f"defaults.{key}")
    cfg.schedules = typed("schedules", dict, "a mapping of schedule name to options") or LineDict()
    return cfg


def import_modules(modules: list[str], *, file: str | None = None, line: int | None = None) -> None:
    """Import modules so that their ``@task`` decorators run. The working directory, and the
    directory of the config file that names them, are on the path."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    if file is not None:
        here = str(Path(file).resolve().parent)
        if here not in sys.path:
            sys.path.append(here)  # after the working directory: cwd modules win on a clash
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure is a configuration error
            raise ConfigError(f"cannot import module {mod!r}: {type(exc).__name__}: {exc}", file=file, line=line, key="imports") from exc


def schedules_from_config(cfg: FileConfig, registry: Registry) -> list[ScheduleDef]:
    """Validate every schedule of a parsed file against the registry's tasks."""
    out = []
    for name, body in cfg.schedules.items():
        line = cfg.schedules.lines.get(name)
        if not isinstance(name, str) or not name:
            raise ConfigError("schedule names must be non-empty strings", file=cfg.path, line=line, key=f"schedules.{name}")
        if not isinstance(body, dict):
            raise ConfigError("must be a mapping of options (task:, cron: or every:, ...)", file=cfg.path, line=line, key=f"schedules.{name}")
        blines = getattr(body, "lines", {})
        for key in body:
            if key not in SCHEDULE_KEYS:
                raise ConfigError(
                    f"unknown key (expected one of: {', '.join(SCHEDULE_KEYS)})",
                    file=cfg.path, line=blines.get(key), key=f"schedules.{name}.{key}",
                )
        merged = {**cfg.defaults, **body}

        def key_error(key: str, message: str, *, _name: str = name, _blines: dict[Any, int] = blines, _line: int | None = line) -> ConfigError:
            where = _blines.get(key) or getattr(cfg.defaults, "lines", {}).get(key) or _line
            return ConfigError(message, file=cfg.path, line=where, key=f"schedules.{_name}.{key}")

        task = merged.pop("task", None)
        if not isinstance(task, str) or not task:
            raise key_error("task", "each schedule needs 'task': the name of a registered task")
        if task not in registry.tasks:
            raise key_error("task", str(UnknownTaskError(task, list(registry.tasks))))
        anchor = merged.pop("anchor", None)
        if isinstance(anchor, str):
            try:
                anchor = datetime.fromisoformat(anchor)
            except ValueError:
                raise key_error("anchor", f"anchor must be an ISO 8601 date-time, got {anchor!r}") from None
        if isinstance(anchor, datetime) and anchor.tzinfo is None:
            raise key_error("anchor", "anchor must include a UTC offset (e.g. 2026-01-01T00:00:00+00:00)")
        out.append(build_schedule(name, task, anchor=anchor, source=f"{cfg.path}:{line}", key_error=key_error, **merged))
    return out


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
