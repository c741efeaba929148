"""``schedules.yaml``: read it (bounded, safe, with the line of every key), check its top level
and its schedules against a :class:`~linger_sched.registry.Registry`, and import the modules it
names (only those, from the working directory or beside the file, after the standard library).

Every problem is a :class:`~linger_sched.errors.ConfigError` naming file, line and key; with an
``errors`` list the readers collect every problem instead of stopping at the first.
"""

from __future__ import annotations

import codecs
import importlib
import importlib.abc
import importlib.machinery
import os
import re
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

import yaml

from .errors import ConfigError, UnknownTaskError
from .registry import (
    MAX_QUEUE_LEN,
    SCHEDULE_KEYS,
    TOP_KEYS,
    Registry,
    ScheduleDef,
    _build_schedule,
    check_int,
    check_name,
    raise_errors,
)

# -- schedules.yaml -------------------------------------------------------------------
MAX_CONFIG_BYTES = 1024 * 1024  # 1 MiB: a schedules.yaml of thousands of schedules is far smaller
MAX_YAML_DEPTH = 100  # nesting of lists and mappings
MAX_ALIAS_NODES = 100_000  # nodes that aliases (*name) may repeat in total, counted expanded
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for with every alias expanded (memoized by id; the
    composer refuses recursive aliases first, so the graph has no cycle). Iterative: no
    recursion limit for deep documents."""
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in sizes:
            continue
        if isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            sizes[id(n)] = 1
            continue
        if done:
            sizes[id(n)] = 1 + sum(sizes[id(c)] for c in children)
        else:
            stack.append((n, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(node)]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember the line of each key (1-based), with merge keys,
    limits on nesting and alias expansion, and every constructor failure turned into a
    :class:`ConfigError` naming the line and the key path (``schedules.NAME.KEY``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open_anchors: list[str] = []
        self._sizes: dict[int, int] = {}
        self._alias_nodes = 0
        self._path: list[str] = []  # keys of the mapping values being constructed
        self._compose_path: list[str] = []  # ... and composed

    def key_path(self) -> str | None:
        return ".".join(self._path) or None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # the composer passes a mapping value's key node as ``index``: the path of keys
        keyed = isinstance(index, yaml.ScalarNode)
        if keyed:
            self._compose_path.append(str(index.value)[:200])
        try:
            return self._compose_node(parent, index)
        finally:
            if keyed:
                self._compose_path.pop()

    def _compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        key = ".".join(self._compose_path) or None
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise ConfigError(f"alias *{event.anchor} is inside the collection it names (a recursive alias)",
                                  line=line, key=key)
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._alias_nodes += _expanded_size(target, self._sizes)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise ConfigError(f"aliases (*{event.anchor} here) expand to more than {MAX_ALIAS_NODES} "
                                      "nodes: a schedules.yaml does not need that many repeats", line=line, key=key)
            return cast(yaml.Node, super().compose_node(parent, index))
        anchor = getattr(event, "anchor", None)
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if collection:
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(f"lists and mappings are nested more than {MAX_YAML_DEPTH} levels deep",
                                  line=line, key=key)
            if anchor is not None:
                self._open_anchors.append(anchor)
        try:
            return cast(yaml.Node, super().compose_node(parent, index))
        finally:
            if collection:
                self._depth -= 1
                if anchor is not None:
                    self._open_anchors.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ConfigError:
            raise
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            raise ConfigError(f"invalid YAML: {exc.problem or exc}", line=mark.line + 1, key=self.key_path()) from None
        except RecursionError:
            raise ConfigError("nested too deeply", line=node.start_mark.line + 1, key=self.key_path()) from None
        except Exception as exc:  # noqa: BLE001 - a constructor failed on a bad value: 2026-13-01, !!int abc
            tag = "!!" + node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org,2002:") else node.tag
            what = f"{node.value!r}" if isinstance(node, yaml.ScalarNode) else "this value"
            detail = f": {exc}" if isinstance(exc, ValueError) and str(exc) else ""
            raise ConfigError(f"{what[:80]} is not a valid {tag} value{detail}", line=node.start_mark.line + 1,
                              key=self.key_path()) from None


class LineDict(dict):  # type: ignore[type-arg]
    lines: dict[Any, int]
    line: int


def _merge_sources(loader: _LineLoader, key_node: yaml.Node, value_node: yaml.Node) -> list[LineDict]:
    """The mappings of a merge key (``<<: *a`` or ``<<: [*a, *b]``), highest priority first."""
    nodes = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    out = []
    for n in nodes:
        value = loader.construct_object(n, deep=True) if isinstance(n, yaml.MappingNode) else None
        if not isinstance(value, LineDict):
            raise ConfigError("a merge key (<<) takes a mapping or a list of mappings, e.g. '<<: *defaults'",
                              line=key_node.start_mark.line + 1, key=loader.key_path())
        out.append(value)
    return out


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> LineDict:
    """A :class:`LineDict`. Keys must be scalars (a list or mapping as a key is an error, not a
    TypeError) and unique; ``<<`` merges mappings as YAML 1.1 says: keys written in the mapping
    win over merged ones, and of several merged mappings the earlier wins."""
    out = LineDict()
    out.lines = {}
    out.line = node.start_mark.line + 1
    explicit: dict[Any, tuple[Any, int]] = {}
    merged: list[LineDict] = []
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            merged.extend(_merge_sources(loader, key_node, value_node))
            continue
        if key_node.tag == "tag:yaml.org,2002:value":  # a plain '=' key: text, as PyYAML does
            key_node.tag = "tag:yaml.org,2002:str"
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError("a key must be text or a number, not a list or a mapping", line=line,
                              key=loader.key_path()) from None
        if key in explicit:
            raise ConfigError(f"duplicate key {key!r}", line=line, key=str(key))
        loader._path.append(str(key))
        try:
            explicit[key] = (loader.construct_object(value_node, deep=True), line)
        finally:
            loader._path.pop()
    for source in merged:
        for key, value in source.items():
            if key not in explicit and key not in out:
                out[key] = value
                out.lines[key] = source.lines.get(key, source.line)
    for key, (value, line) in explicit.items():
        out[key] = value
        out.lines[key] = line
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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


def _read_bytes(p: str) -> bytes:
    """At most MAX_CONFIG_BYTES of a regular file: a FIFO, a device (/dev/zero) or a directory
    is refused without reading it (opened non-blocking, so a FIFO without a writer cannot hang)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=p) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"cannot read config file: {exc}", file=p) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("cannot read config file: it is a directory", file=p)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("cannot read config file: not a regular file (a device, FIFO or socket is not read)", file=p)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is larger than 1 MiB ({st.st_size} bytes)", file=p)
        chunks, size = [], 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=p) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("config file is larger than 1 MiB", file=p)
    return data


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _key_on_line(text: str, line: int | None) -> str | None:
    """The mapping key written on ``line`` of ``text``, if there is one."""
    source_lines = text.splitlines()
    if line is None or not 0 < line <= len(source_lines):
        return None
    m = re.match(r"\s*(?:-\s+)?([^\s:#'\"\[\]{},&*!|>%@`-][^:#]*?)\s*:(?:\s|$)", source_lines[line - 1][:1000])
    return m.group(1) if m else None


def _parse_yaml(p: str) -> Any:
    data = _read_bytes(p).removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} (save the file as UTF-8)",
                          file=p, line=line, key=_key_on_line(data.decode("utf-8", "replace"), line)) from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: safe
    except ConfigError as exc:
        raise ConfigError(exc.message, file=p, line=exc.line, key=exc.key) from None
    except yaml.reader.ReaderError as exc:
        line = _line_of(text, exc.position)
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(f"invalid YAML: character {char} is not allowed", file=p, line=line,
                          key=_key_on_line(text, line)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        context_mark = getattr(exc, "context_mark", None)
        if mark is not None and context_mark is not None and mark.index >= len(text.rstrip()):
            mark = context_mark  # "unexpected end of stream": point at what was left open
        where: int | None = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and context_mark is not None and context_mark.line + 1 != where:
            context += f" (started on line {context_mark.line + 1})"
        raise ConfigError(f"invalid YAML: {context + ', ' if context else ''}{problem}", file=p, line=where,
                          key=_key_on_line(text, where)) from None
    except (ValueError, OverflowError) as exc:
        # PyYAML's scanner turns a double-quoted "\\U" escape beyond U+10FFFF into chr(), which
        # raises a bare ValueError (OverflowError past 2**31) with no position: find the escape ourselves
        bad = next((m for m in re.finditer(r"\\U([0-9A-Fa-f]{8})", text) if int(m.group(1), 16) > 0x10FFFF), None)
        if bad is None:
            raise ConfigError(f"invalid YAML: {exc}", file=p) from None
        line = _line_of(text, bad.start())
        raise ConfigError(f"invalid YAML: the escape {bad.group(0)} is beyond U+10FFFF, the last Unicode code point",
                          file=p, line=line, key=_key_on_line(text, line)) from None
    except RecursionError:  # the depth limit comes first; this is the last line of defence
        raise ConfigError("invalid YAML: nested too deeply", file=p) from None


def read_config_file(path: str | os.PathLike[str], *, errors: list[ConfigError] | None = None) -> FileConfig:
    """Parse a schedules.yaml (safe_load) and check its top level; imports nothing.

    A file that cannot be read or parsed raises :class:`ConfigError` at once. Problems of the
    top level (unknown keys, wrongly typed values) are all collected: appended to ``errors``
    when a list is given (the FileConfig is returned without the bad values), else raised (one
    ConfigError, or a :class:`ConfigErrors` listing them)."""
    p = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    data = _parse_yaml(p)
    if data is None:
        data = LineDict()
        data.lines = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping (database:, imports:, schedules:, ...)", file=p, line=1)
    problems: list[ConfigError] = []
    lines = getattr(data, "lines", {})

    def report(key: str, message: str, line: int | None = None) -> None:
        problems.append(ConfigError(message, file=p, line=line if line is not None else lines.get(key), key=key))

    for key in data:
        if key not in TOP_KEYS:
            report(str(key)[:200], f"unknown key (expected one of: {', '.join(TOP_KEYS)})", lines.get(key))
    cfg = FileConfig(path=p, lines=lines)

    def typed(key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            report(key, f"must be {what}, got {value!r}"[:300])
            return None
        return value

    cfg.database = typed("database", str, "a database URL string")
    # table_prefix and concurrency: the rules of store.tables.check_table_prefix and
    # config.MAX_CONCURRENCY (modules registry does not import), checked here to name the line
    prefix = typed("table_prefix", str, "a string")
    if prefix is not None and (not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix) or len(prefix) > 32):
        report("table_prefix", f"must be 1 to 32 ASCII letters, digits or '_', not starting with a digit; got {prefix!r}"[:300])
        prefix = None
    cfg.table_prefix = prefix
    concurrency = typed("concurrency", int, "an integer")
    if concurrency is not None:
        try:
            check_int(concurrency, "concurrency", 1, 10_000)
        except (TypeError, ValueError) as exc:
            report("concurrency", str(exc))
            concurrency = None
    cfg.concurrency = concurrency
    queues = typed("queues", (list, str), "a list of queue names")
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",")]
    if queues is not None:
        for q in queues:
            try:
                check_name(q, "queues", MAX_QUEUE_LEN)
            except (TypeError, ValueError) as exc:
                report("queues", f"must list queue names: {exc}")
                queues = None
                break
    cfg.queues = queues
    imports = typed("imports", list, "a list of module names") or []
    for mod in imports:
        if not isinstance(mod, str) or not mod or len(mod) > 255:
            report("imports", f"must list module names, got {mod!r}"[:300])
            imports = []
            break
    cfg.imports = imports
    cfg.defaults = typed("defaults", dict, "a mapping of schedule options") or {}
    dl = getattr(cfg.defaults, "lines", {})
    for key in list(cfg.defaults):
        if key not in SCHEDULE_KEYS or key in ("task", "cron", "every"):
            report(f"defaults.{str(key)[:200]}", "unknown or not defaultable schedule option", dl.get(key))
    if any(key not in SCHEDULE_KEYS or key in ("task", "cron", "every") for key in cfg.defaults):
        good = LineDict({k: v for k, v in cfg.defaults.items() if k in SCHEDULE_KEYS and k not in ("task", "cron", "every")})
        good.lines, good.line = dl, getattr(cfg.defaults, "line", 1)
        cfg.defaults = good
    cfg.schedules = typed("schedules", dict, "a mapping of schedule name to options") or LineDict()
    if not hasattr(cfg.schedules, "lines"):
        cfg.schedules.lines = {}
    if errors is not None:
        errors.extend(problems)
    else:
        raise_errors(problems)
    return cfg


class _UserModuleFinder(importlib.abc.MetaPathFinder):
    """Finds, in the working directory and next to the config file, the modules a user names
    (``--import``, ``imports:``, ``--app``) and whatever code living there imports from there,
    and nothing else. It is the LAST finder on ``sys.meta_path`` and ``sys.path`` is left alone:
    the standard library and installed packages always win, and a name looked up by library code
    (``sqlite3``, or a driver's optional accelerator such as ``psycopg_c`` or PyMySQL's
    ``cryptography``) is never answered from these directories, even while a named module is
    being imported or long after (a task importing a sibling module when it runs still works)."""

    def __init__(self) -> None:
        self.dirs: list[str] = []  # most recently named first
        self.names: set[str] = set()  # top-level names of the modules named

    def allow(self, names: Sequence[str], dirs: Sequence[str]) -> None:
        for d in reversed(dirs):
            if d in self.dirs:
                self.dirs.remove(d)
            self.dirs.insert(0, d)
        self.names.update(n.partition(".")[0] for n in names)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if path is not None or not self.dirs:  # a submodule: its package's __path__ finds it
            return None
        if fullname not in self.names and not self._imported_by_user_code():
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, list(self.dirs))

    def _imported_by_user_code(self) -> bool:
        """Whether the import statement being served is in a file of one of the directories."""
        frame = sys._getframe(2)
        while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                     or frame.f_code.co_filename == importlib.__file__):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return False
        try:
            where = Path(frame.f_code.co_filename).resolve()
        except (OSError, ValueError):
            return False
        return any(where.is_relative_to(d) for d in self.dirs)


_USER_MODULES = _UserModuleFinder()


def allow_user_modules(modules: Sequence[str], *, file: str | os.PathLike[str] | None = None) -> None:
    """Make ``modules`` importable from the working directory (and the directory of ``file``,
    the config file that names them), after the standard library and installed packages, and
    only for them and the code they contain (see :class:`_UserModuleFinder`). Nothing is done
    when no module is named."""
    if not modules:
        return
    dirs = [str(Path.cwd().resolve())]
    if file is not None:
        dirs.append(str(Path(file).resolve().parent))  # after the working directory: cwd modules win on a clash
    _USER_MODULES.allow(modules, dirs)
    if _USER_MODULES not in sys.meta_path:
        sys.meta_path.append(_USER_MODULES)


def import_modules(modules: list[str], *, file: str | None = None, line: int | None = None) -> None:
    """Import modules so that their ``@task`` decorators run. They are found in the working
    directory and next to the config file naming them, never in place of a module of the
    standard library or an installed package (:func:`allow_user_modules`)."""
    allow_user_modules(modules, file=file)
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # any import failure is a configuration error
            raise ConfigError(f"cannot import module {mod!r}: {type(exc).__name__}: {exc}", file=file, line=line, key="imports") from exc


def schedules_from_config(
    cfg: FileConfig, registry: Registry, *, errors: list[ConfigError] | None = None, check_tasks: bool = True,
) -> list[ScheduleDef]:
    """Validate every schedule of a parsed file against the registry's tasks.

    Every problem of every schedule is reported (file, line, ``schedules.NAME.KEY``): appended
    to ``errors`` when a list is given (the good schedules are returned), else raised (one
    ConfigError, or a :class:`ConfigErrors` listing them). A schedule whose task is registered
    has its ``args``/``kwargs`` bound against the task's signature. ``check_tasks=False``
    (``validate --no-import``) accepts task names that are not registered."""
    out = []
    problems: list[ConfigError] = []
    schedule_lines = getattr(cfg.schedules, "lines", {})
    default_lines = getattr(cfg.defaults, "lines", {})
    for name, body in cfg.schedules.items():
        line = schedule_lines.get(name)
        where = f"schedules.{str(name)[:200]}"
        if not isinstance(name, str) or not name:
            problems.append(ConfigError("schedule names must be non-empty strings", file=cfg.path, line=line, key=where))
            continue
        if not isinstance(body, dict):
            problems.append(ConfigError("must be a mapping of options (task:, cron: or every:, ...)", file=cfg.path, line=line, key=where))
            continue
        blines = getattr(body, "lines", {})
        local: list[ConfigError] = []

        def report(key: str, message: str, *, _where: str = where, _blines: dict[Any, int] = blines,
                   _line: int | None = line, _local: list[ConfigError] = local) -> None:
            if key == "name":
                _local.append(ConfigError(message, file=cfg.path, line=_line, key=_where))
                return
            at = _blines.get(key) or default_lines.get(key) or _line
            _local.append(ConfigError(message, file=cfg.path, line=at, key=f"{_where}.{key}"))

        for key in body:
            if key not in SCHEDULE_KEYS:
                report(str(key)[:200], f"unknown key (expected one of: {', '.join(SCHEDULE_KEYS)})")
        merged = {**cfg.defaults, **{k: v for k, v in body.items() if k in SCHEDULE_KEYS}}
        task = merged.pop("task", None)
        task_def = None
        if not isinstance(task, str) or not task:
            report("task", "each schedule needs 'task': the name of a registered task")
            task = None
        elif task in registry.tasks:
            task_def = registry.tasks[task]
        elif check_tasks:
            report("task", str(UnknownTaskError(task, list(registry.tasks))))
        anchor = merged.pop("anchor", None)
        if isinstance(anchor, str):
            try:
                anchor = datetime.fromisoformat(anchor)
            except ValueError:
                report("anchor", f"anchor must be an ISO 8601 date-time, got {anchor[:100]!r}")
                anchor = None
        elif isinstance(anchor, date) and not isinstance(anchor, datetime):
            report("anchor", f"anchor must be a date-time with a UTC offset, got the date {anchor.isoformat()}")
            anchor = None
        sched = _build_schedule(
            name, task, anchor=anchor, source=f"{cfg.path}:{line}", report=report, task_def=task_def,
            **{k: merged.get(k, d) for k, d in _OPTION_DEFAULTS.items()},
        )
        local.sort(key=lambda e: e.line or 0)
        problems.extend(local)
        if sched is not None and not local:
            out.append(sched)
    if errors is not None:
        errors.extend(problems)
    else:
        raise_errors(problems)
    return out


_OPTION_DEFAULTS: dict[str, Any] = {
    "cron": None, "every": None, "tz": None, "args": None, "kwargs": None, "priority": None, "queue": None,
    "max_attempts": None, "misfire": "coalesce", "misfire_grace": None, "max_catch_up": 1000, "overlap": "skip",
    "enabled": True,
}


