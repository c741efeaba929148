"""Hardening of schedules.yaml loading and schedule building (hardening issue points 11, 5, 9):
every bad input is a ConfigError naming file, line and key, never another exception; sizes and
alias expansion are capped; merge keys work; every error of a file is reported."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from linger_sched import ConfigError, Linger
from linger_sched.configfile import read_config_file, schedules_from_config
from linger_sched.registry import (
    MAX_QUEUE_LEN,
    MAX_SCHEDULE_NAME_LEN,
    MAX_TASK_NAME_LEN,
    ConfigErrors,
    Registry,
    TaskDef,
    build_schedule,
)


def _noop(*args: object, **kwargs: object) -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


class Report:
    def __init__(self, day: str) -> None:
        self.day = day

    def perform(self) -> None:
        return None


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add_task(TaskDef(name="noop", func=_noop))
    reg.add_task(TaskDef(name="add", func=add))
    reg.add_task(TaskDef(name="report", func=Report, is_class=True))
    return reg


def write(tmp_path: Path, text: str | bytes, name: str = "schedules.yaml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def load(path: str, registry: Registry) -> list[Any]:
    cfg = read_config_file(path)
    return schedules_from_config(cfg, registry)


def located(err: ConfigError, path: str, line: int, key: str | None = None) -> None:
    text = str(err)
    assert err.file == path, text
    assert err.line == line, text
    assert f"{path}:{line}:" in text, text
    if key is not None:
        assert err.key is not None and key in err.key, text


def only_config_error(path: str, registry: Registry) -> ConfigError:
    """Loading ``path`` raises a ConfigError (and nothing else)."""
    try:
        load(path, registry)
    except ConfigError as exc:
        return exc
    raise AssertionError("no error")


# -- point 11: every failure while loading is a located ConfigError --------------------------
HEAD = "schedules:\n  x:\n    task: noop\n"
LOADING = {
    "byte that is not UTF-8": (HEAD.encode() + b"    cron: \"0 0 * * *\"\n    queue: \"caf\xe9\"\n", 5, None),
    "month 13 (timestamp constructor)": (HEAD + "    every: 1h\n    anchor: 2026-13-01\n", 5, "schedules.x.anchor"),
    "!!int abc": (HEAD + "    every: 1h\n    priority: !!int abc\n", 5, "schedules.x.priority"),
    "!!bool maybe": (HEAD + "    every: 1h\n    enabled: !!bool maybe\n", 5, "schedules.x.enabled"),
    "!!timestamp foo": (HEAD + "    every: 1h\n    anchor: !!timestamp foo\n", 5, "schedules.x.anchor"),
    "!!float abc": (HEAD + "    every: !!float abc\n", 4, "schedules.x.every"),
    "!!binary not base64": (HEAD + "    every: 1h\n    args: [!!binary '%%%']\n", 5, "schedules.x.args"),
    "!!python/object (unsafe tag)": (HEAD + "    every: !!python/object:os.system echo\n", 4, None),
    "list as a key": ("schedules:\n  [a, b]: {task: noop, every: 1h}\n", 2, None),
    "mapping as a key": ("schedules:\n  x:\n    task: noop\n    ? {a: 1}\n    : 2\n", 4, None),
    "mapping as a top-level key": ("imports: []\n? {a: 1}\n: 2\n", 2, None),
    "NUL character": ("schedules:\n  x:\n    task: no\x00op\n", 3, None),
    "control character": ("imports: []\nschedules:\n  x:\n    task: \x07\n", 4, None),
    "anchor at year 1": (HEAD + "    every: 1h\n    anchor: 0001-01-01T00:00:00+05:00\n", 5, "schedules.x.anchor"),
    "anchor at year 9999": (HEAD + "    every: 1h\n    anchor: 9999-12-31T23:00:00-05:00\n", 5, "schedules.x.anchor"),
    "anchor string at year 9999": (HEAD + "    every: 1h\n    anchor: '9999-12-31T23:59:59+00:00'\n", 5, "schedules.x.anchor"),
    "anchor as a date": (HEAD + "    every: 1h\n    anchor: 2026-01-01\n", 5, "schedules.x.anchor"),
    "deep nesting (900 brackets)": (HEAD + "    every: 1h\n    args: " + "[" * 900 + "]" * 900 + "\n", 5, None),
    "deep nesting of mappings": (HEAD + "    every: 1h\n    kwargs: " + "{a: " * 300 + "1" + "}" * 300 + "\n", 5, None),
    "recursive alias": (HEAD + "    every: 1h\n    args: &a [1, *a]\n", 5, None),
    "recursive alias in a mapping": (HEAD + "    every: 1h\n    kwargs: &k {a: *k}\n", 5, None),
    "merge of a scalar": ("base: &b 1\nschedules:\n  x:\n    <<: *b\n    task: noop\n    every: 1h\n", 4, None),
    "merge of a list of scalars": ("schedules:\n  x:\n    <<: [1, 2]\n    task: noop\n    every: 1h\n", 3, None),
    "undefined alias": (HEAD + "    every: *nowhere\n", 4, None),
}


@pytest.mark.parametrize("case", list(LOADING), ids=list(LOADING))
def test_loading_errors_are_located_config_errors(case: str, tmp_path: Path, registry: Registry) -> None:
    text, line, key = LOADING[case]
    path = write(tmp_path, text)
    err = only_config_error(path, registry)
    located(err, path, line, key)


def test_non_utf8_names_the_byte(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, b"imports: []\n\n# caf\xe9\nschedules: {}\n")
    err = only_config_error(path, registry)
    located(err, path, 3)
    assert "UTF-8" in str(err) and "0xe9" in str(err)


def test_utf8_bom_is_accepted(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "\ufeffschedules:\n  x: {task: noop, every: 1h}\n".encode())
    assert [d.name for d in load(path, registry)] == ["x"]


def test_billion_laughs_is_refused_quickly(tmp_path: Path, registry: Registry) -> None:
    lines = ["schedules:", "  x:", "    task: noop", "    every: 1h", "    args:",
             "      - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 1200
    path = write(tmp_path, text)
    start = time.monotonic()
    err = only_config_error(path, registry)
    assert time.monotonic() - start < 2
    # l4 = 10 x l3 (11111 nodes each) passes 100000 expanded nodes: its line is named
    located(err, path, 10, "schedules.x.args")
    assert "alias" in str(err)


def test_moderate_aliases_are_fine(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        defaults: &d {misfire: skip}
        schedules:
          a: &s {task: noop, every: 1h, args: &args [1, 2, 3, [4, 5]]}
          b: {task: noop, every: 2h, args: *args}
          c: {task: noop, every: 3h, kwargs: {x: *args, y: *args}}
        """)
    defs = {d.name: d for d in load(path, registry)}
    assert defs["b"].args == [1, 2, 3, [4, 5]] and defs["c"].kwargs["y"] == [1, 2, 3, [4, 5]]


def test_file_larger_than_the_cap(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "schedules: {}\n" + "#" * (1024 * 1024) + "\n")
    err = only_config_error(path, registry)
    assert err.file == path and "MiB" in str(err)


def test_file_just_under_the_cap_is_read(tmp_path: Path, registry: Registry) -> None:
    body = "schedules: {}\n"
    path = write(tmp_path, body + "#" * (1024 * 1024 - len(body) - 1) + "\n")
    assert os.path.getsize(path) == 1024 * 1024
    assert load(path, registry) == []


def run_bounded(fn: Any, seconds: float = 10) -> Any:
    """Run ``fn`` on a daemon thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hangs"
    if "error" in box:
        raise box["error"]
    return box.get("result")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_without_reading_it() -> None:
    with pytest.raises(ConfigError) as info:
        run_bounded(lambda: read_config_file("/dev/zero"))
    assert info.value.file == "/dev/zero"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "schedules.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        run_bounded(lambda: read_config_file(fifo))
    assert info.value.file == str(fifo)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config_file(tmp_path)
    assert info.value.file == str(tmp_path)


# -- merge keys -------------------------------------------------------------------------
def test_merge_key_applies_and_explicit_keys_override(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          base: &common {task: noop, every: 1h, misfire: skip, queue: q1}
          nightly:
            <<: *common
            every: 2h
            queue: q2
        """)
    defs = {d.name: d for d in load(path, registry)}
    n = defs["nightly"]
    assert (n.task, n.spec.text(), n.misfire, n.queue) == ("noop", "every:7200s", "skip", "q2")


def test_merge_of_several_mappings_earlier_wins(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          a: &a {task: noop, every: 1h, queue: from-a}
          b: &b {task: add, every: 2h, queue: from-b, args: [1, 2], priority: 5}
          c:
            <<: [*a, *b]
            priority: 7
        """)
    c = {d.name: d for d in load(path, registry)}["c"]
    assert (c.task, c.spec.text(), c.queue, c.priority, c.args) == ("noop", "every:3600s", "from-a", 7, [1, 2])


def test_merged_key_error_names_where_the_value_is_written(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          base: &common {task: noop, every: 1h}
          bad: &bad
            tz: Mars/Olympus
          nightly:
            <<: [*bad, *common]
        """)
    err = only_config_error(path, registry)
    assert isinstance(err, ConfigErrors)
    keys = {(e.key, e.line) for e in err.errors}
    assert ("schedules.nightly.tz", 4) in keys, str(err)


def test_duplicate_keys_are_still_errors_next_to_a_merge(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          base: &common {task: noop, every: 1h}
          nightly:
            <<: *common
            every: 2h
            every: 3h
        """)
    located(only_config_error(path, registry), path, 6, "every")


# -- every error is reported -------------------------------------------------------------
def test_every_error_of_a_file_is_collected(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          one:
            task: noop
            cron: "0 25 * * *"
            colour: red
            priority: high
          two:
            task: nosuch
            every: 1h
          three:
            task: noop
            every: 1h
            misfire: sometimes
            overlap: maybe
          fine:
            task: noop
            every: 1h
        """)
    err = only_config_error(path, registry)
    assert isinstance(err, ConfigErrors) and isinstance(err, ConfigError)
    got = [(e.line, e.key) for e in err.errors]
    assert got == [(4, "schedules.one.cron"), (5, "schedules.one.colour"), (6, "schedules.one.priority"),
                   (8, "schedules.two.task"), (13, "schedules.three.misfire"), (14, "schedules.three.overlap")]
    assert all(e.file == path for e in err.errors)
    located(err, path, 4, "schedules.one.cron")  # the exception itself is the first error
    assert str(err).splitlines() == [str(e) for e in err.errors]


def test_collecting_into_a_list(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        colour: red
        concurrency: many
        schedules:
          one: {task: noop, cron: "0 25 * * *"}
          two: {task: noop, every: 1h}
        """)
    errors: list[ConfigError] = []
    cfg = read_config_file(path, errors=errors)
    defs = schedules_from_config(cfg, registry, errors=errors)
    assert [(e.line, e.key) for e in errors] == [(1, "colour"), (2, "concurrency"), (4, "schedules.one.cron")]
    assert [d.name for d in defs] == ["two"]


def test_top_level_values_the_node_would_refuse(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        table_prefix: "bad-prefix;"
        concurrency: 0
        queues: [a, "", {"q" * 65}]
        imports: [1]
        """)
    errors: list[ConfigError] = []
    read_config_file(path, errors=errors)
    assert [(e.line, e.key) for e in errors] == [(1, "table_prefix"), (2, "concurrency"), (3, "queues"), (4, "imports")]


def test_load_config_still_raises_one_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, """
        schedules:
          one: {task: nosuch, every: 1h}
          two: {task: nosuch, every: 1h}
        """)
    app = Linger(f"sqlite:///{tmp_path / 'unused.db'}")
    with pytest.raises(ConfigError) as info:
        app.load_config(path)
    located(info.value, path, 2, "schedules.one.task")
    assert not app.registry.schedules


# -- point 5: values the database would reject are refused when the schedule is built --------
def build(**options: Any) -> Any:
    name = options.pop("name", "s")
    task = options.pop("task", "noop")
    if "cron" not in options and "every" not in options:
        options["every"] = "1h"
    return build_schedule(name, task, **options)


@pytest.mark.parametrize("options, key", [
    ({"priority": 2**31}, "priority"), ({"priority": -(2**31) - 1}, "priority"), ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"), ({"max_attempts": 0}, "max_attempts"), ({"max_attempts": 2**31}, "max_attempts"),
    ({"max_catch_up": 0}, "max_catch_up"), ({"max_catch_up": 10**6}, "max_catch_up"),
    ({"queue": "q" * (MAX_QUEUE_LEN + 1)}, "queue"), ({"queue": ""}, "queue"), ({"queue": " "}, "queue"),
    ({"queue": "a\x00b"}, "queue"), ({"name": "n" * (MAX_SCHEDULE_NAME_LEN + 1)}, "name"), ({"name": ""}, "name"),
    ({"task": "t" * (MAX_TASK_NAME_LEN + 1)}, "task"), ({"task": ""}, "task"),
    ({"every": "5000000d"}, "every"), ({"every": "36526d"}, "every"), ({"every": 10**12}, "every"),
    ({"every": "1h", "anchor": datetime(1, 1, 1, tzinfo=UTC)}, "anchor"),
    ({"every": "1h", "anchor": datetime(9999, 12, 31, tzinfo=UTC)}, "anchor"),
    ({"every": "1h", "anchor": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "anchor"),
    ({"every": "1h", "anchor": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "anchor"),
    ({"every": "1h", "anchor": datetime(999, 12, 31, tzinfo=UTC)}, "anchor"),
    ({"cron": "0 0 * * " + ",".join(["MON"] * 70)}, "cron"), ({"cron": ",".join(["1"] * 200) + " * * * *"}, "cron"),
    ({"kwargs": {1: 2}}, "kwargs"), ({"misfire_grace": "9" * 5000}, "misfire_grace"),
])
def test_build_refuses_what_the_database_would_reject(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**options)
    assert info.value.key is not None and key in info.value.key, str(info.value)


def test_build_accepts_the_limits() -> None:
    d = build(priority=2**31 - 1, max_attempts=2**31 - 1, max_catch_up=100_000, queue="q" * MAX_QUEUE_LEN,
              name="n" * MAX_SCHEDULE_NAME_LEN, task="t" * MAX_TASK_NAME_LEN, every="36525d",
              anchor=datetime(1000, 1, 1, tzinfo=UTC))
    assert d.priority == 2**31 - 1
    assert build(priority=-(2**31)).priority == -(2**31)
    assert build(anchor=datetime(9899, 12, 31, 23, 59, tzinfo=UTC)).spec.anchor.year == 9899


def test_build_collects_every_bad_option() -> None:
    with pytest.raises(ConfigErrors) as info:
        build(priority=2**40, queue="", misfire="often")
    assert sorted(e.key or "" for e in info.value.errors) == ["misfire", "priority", "queue"]


def test_yaml_limits_name_file_line_and_key(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, f"""
        schedules:
          x:
            task: noop
            every: 5000000d
            priority: {2**31}
          {"n" * 200}:
            task: noop
            every: 1h
        """)
    err = only_config_error(path, registry)
    assert isinstance(err, ConfigErrors)
    got = [(e.line, (e.key or "")[:20]) for e in err.errors]
    assert got == [(4, "schedules.x.every"), (5, "schedules.x.priority"), (6, "schedules." + "n" * 10)], got


# -- point 9: arguments are bound against the task's signature -----------------------------
@pytest.mark.parametrize("body, line, key, words", [
    ("task: add\n    every: 1h\n    args: [only-one]", 5, "schedules.x.args", ["add", "'b'"]),
    ("task: add\n    every: 1h\n    args: [1, 2, 3]", 5, "schedules.x.args", ["add", "positional"]),
    ("task: add\n    every: 1h\n    args: [1, 2]\n    kwargs: {c: 3}", 6, "schedules.x.kwargs", ["add", "'c'"]),
    ("task: add\n    every: 1h\n    args: [1]\n    kwargs: {a: 3}", 6, "schedules.x.kwargs", ["add", "'a'"]),
    ("task: add\n    every: 1h\n    kwargs: {a: 1}", 5, "schedules.x.kwargs", ["add", "'b'"]),
    ("task: report\n    every: 1h", 2, "schedules.x.args", ["report", "'day'"]),
])
def test_yaml_arguments_must_fit_the_task(tmp_path: Path, registry: Registry, body: str, line: int, key: str,
                                          words: list[str]) -> None:
    path = write(tmp_path, "schedules:\n  x:\n    " + body + "\n")
    err = only_config_error(path, registry)
    located(err, path, line, key)
    assert err.key == key, str(err)
    for w in words:
        assert w in str(err), str(err)


def test_fitting_arguments_pass(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          a: {task: add, every: 1h, args: [1, 2]}
          b: {task: add, every: 1h, args: [1], kwargs: {b: 2}}
          c: {task: report, every: 1h, kwargs: {day: mon}}
          d: {task: noop, every: 1h, args: [1, 2, 3], kwargs: {z: 1}}
        """)
    assert [d.name for d in load(path, registry)] == ["a", "b", "c", "d"]


def test_unknown_tasks_pass_when_tasks_are_not_checked(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        schedules:
          a: {task: not.imported, every: 1h, args: [1]}
          b: {task: add, every: 1h, args: [1]}
        """)
    errors: list[ConfigError] = []
    defs = schedules_from_config(read_config_file(path), registry, errors=errors, check_tasks=False)
    assert [d.name for d in defs] == ["a"]  # known tasks are still checked
    assert [e.key for e in errors] == ["schedules.b.args"]


def test_build_schedule_with_task_def() -> None:
    with pytest.raises(ConfigError) as info:
        build_schedule("s", "add", every="1h", args=[1], task_def=TaskDef(name="add", func=add))
    assert info.value.key == "args" and "'b'" in str(info.value)


def test_code_schedules_check_arguments(tmp_path: Path) -> None:
    app = Linger(f"sqlite:///{tmp_path / 'unused.db'}")

    @app.task(name="pair")
    def pair(a: int, b: int) -> None:
        return None

    with pytest.raises(ConfigError) as info:
        app.schedule("s", pair, every="1h", args=[1])
    assert "'b'" in str(info.value) and "pair" in str(info.value)
    with pytest.raises(ConfigError) as info:
        @app.task(name="solo", cron="0 0 * * *", args=[1, 2])
        def solo(a: int) -> None:
            return None
    assert "solo" in str(info.value) and "args" in str(info.value)
    app.schedule("ok", pair, every="1h", args=[1], kwargs={"b": 2})
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize("escape", ["\\U00110000", "\\UFFFFFFFF"])
def test_a_unicode_escape_beyond_the_last_code_point_is_located(escape: str, tmp_path: Path) -> None:
    # PyYAML's scanner raises a bare ValueError (chr() arg not in range) for these
    path = write(tmp_path, f'imports: []\nschedules:\n  "a{escape}": {{task: noop, every: 1h}}\n')
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert info.value.line == 3
    assert escape.lower() in str(info.value).lower() and "U+10FFFF" in str(info.value)
