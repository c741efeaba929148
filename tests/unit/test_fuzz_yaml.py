"""Property-based fuzzing of the schedules.yaml loader (hardening issue: fuzzing).

Random YAML-ish text built from tokens, random bytes, and random structures dumped with PyYAML
then mutated: read_config_file + schedules_from_config (raising, and collecting into a list as
``validate`` does) raise nothing but ConfigError, and every schedule they return can be
registered and asked for its next fire time. Derandomized: CI runs the same examples every time."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from linger_sched.configfile import read_config_file, schedules_from_config
from linger_sched.errors import ConfigError, NaiveDatetimeError, SpecError
from linger_sched.registry import Registry, TaskDef

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_DIR = Path(tempfile.mkdtemp(prefix="linger-fuzz-yaml-"))
atexit.register(shutil.rmtree, _DIR, True)
PATH = _DIR / "schedules.yaml"


def _noop(*args: object, **kwargs: object) -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


class Report:
    def __init__(self, day: str, *, dry: bool = False) -> None:
        self.day = day

    def perform(self) -> None:
        return None


def registry() -> Registry:
    reg = Registry()
    reg.add_task(TaskDef(name="noop", func=_noop))
    reg.add_task(TaskDef(name="add", func=add))
    reg.add_task(TaskDef(name="report", func=Report, is_class=True))
    return reg


def load(data: bytes) -> str:
    """Everything a node and ``validate`` do with a file, none of it touching a database:
    only ConfigError may come out."""
    PATH.write_bytes(data)
    outcome = "loaded"
    for collect in (False, True):
        reg = registry()
        errors: list[ConfigError] = []
        try:
            if collect:
                cfg = read_config_file(PATH, errors=errors)
                defs = schedules_from_config(cfg, reg, errors=errors, check_tasks=False)
            else:
                cfg = read_config_file(PATH)
                defs = schedules_from_config(cfg, reg)
            for d in defs:
                reg.add_schedule(d)
                spec = d.spec
                spec = spec.with_anchor(NOW) if getattr(spec, "anchor", 1) is None else spec  # type: ignore[union-attr]
                assert spec.describe()
                try:
                    assert spec.next_after(NOW) > NOW
                except (SpecError, NaiveDatetimeError):
                    pass
        except ConfigError as exc:
            assert str(exc)  # renders
            for e in getattr(exc, "errors", [exc]):
                assert e.file == str(PATH), repr(e)
            outcome = "ConfigError"
        for e in errors:
            assert isinstance(e, ConfigError) and e.file == str(PATH), repr(e)
        if errors:
            outcome = "ConfigError"
    return outcome


# -- random YAML-ish text ------------------------------------------------------------------
TOKENS = [
    "schedules:", "imports:", "defaults:", "database:", "queues:", "concurrency:", "table_prefix:", "colour:",
    "x:", "nightly:", "task:", "noop", "add", "report", "nosuch", "cron:", "every:", "tz:", "anchor:", "args:",
    "kwargs:", "priority:", "queue:", "max_attempts:", "max_catch_up:", "misfire:", "overlap:", "enabled:",
    "misfire_grace:", "'0 0 * * *'", '"*/15 * * * *"', "'0 12 5-5 * *'", "'*/61 * * * *'", "@daily", "1h", "15m",
    "5000000d", "10m", "2026-13-01", "2026-01-01", "2026-01-01T00:00:00+00:00", "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00", "1000-01-01T00:00:00Z", "!!int", "!!bool", "!!timestamp", "!!float", "!!binary",
    "!!set", "!!omap", "!!pairs", "!!str", "!!map", "!!seq", "!!null", "!!python/object:os.system", "!foo",
    "&a", "&b", "*a", "*b", "<<:", "<<: *a", "<<: [*a, *b]", "[", "]", "{", "}", ",", "- ", "? ", ": ", "|", ">",
    "#", "'", '"', "\t", "\n", "\n  ", "\n    ", "\n      ", "  ", "null", "~", "true", "yes", "on", "maybe",
    ".nan", ".inf", "-.inf", "1e400", "2147483648", "-2147483649", "0", "1", "-1", "abc", "é", "\x00", "\ufeff",
    "\x85", "\u2028", "%YAML 1.1\n---\n", "---", "...", "!!", "!<tag:yaml.org,2002:str>", "Europe/Berlin",
    "Mars/Base", "skip", "all", "coalesce", "allow", "q" * 70, "9" * 5000, "[[[[[[[[", "]]]]]]]]", "{a: 1}",
    "[1, 2]", "=", "0o17", "0x1F", "1_000", "+1", "12:30:00", "\\", "\r\n",
]


@st.composite
def yamlish(draw) -> bytes:
    parts = draw(st.lists(st.sampled_from(TOKENS), max_size=60))
    seps = draw(st.lists(st.sampled_from([" ", "", "\n", "\n  ", "\n    ", ": "]), min_size=len(parts), max_size=len(parts)))
    return "".join(p + s for p, s in zip(parts, seps)).encode("utf-8", "surrogatepass")


SKELETON = """\
defaults: &d
  misfire: skip
  tz: Europe/Berlin
schedules:
  a: &a
    task: noop
    cron: "0 3 * * *"
    args: [1, 2]
  b:
    <<: *a
    every: 1h
    cron:
  c:
    <<: [*a, *d]
    task: add
    args: [1, 2]
    anchor: 2026-01-01T00:00:00+00:00
    every: 15m
"""


@settings(FUZZ, max_examples=700)
@given(data=yamlish())
def test_yamlish_text(data: bytes) -> None:
    event(load(data))


@settings(FUZZ, max_examples=400)
@given(data=st.one_of(st.binary(max_size=400), st.binary(max_size=200).map(lambda b: SKELETON.encode() + b),
                      st.binary(max_size=200).map(lambda b: b"schedules:\n  x:\n    task: noop\n    every: " + b)))
def test_random_bytes(data: bytes) -> None:
    event(load(data))


# -- random structures, dumped, then mutated ---------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**31) - 2, 2**31 + 1), st.floats(),
    st.text(max_size=20), st.sampled_from(["noop", "add", "report", "0 0 * * *", "5-5 0 * * *", "1h", "5000000d",
                                           "Europe/Berlin", "skip", "allow", "all", "10m", "x" * 200]),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])),
    st.datetimes(), st.dates(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
KEYS = st.one_of(st.sampled_from(["task", "cron", "every", "tz", "anchor", "args", "kwargs", "priority", "queue",
                                  "max_attempts", "max_catch_up", "misfire", "misfire_grace", "overlap", "enabled"]),
                 st.text(max_size=6))


@st.composite
def documents(draw) -> dict[str, Any]:
    schedules = draw(st.dictionaries(st.one_of(st.text(max_size=12), st.integers()),
                                     st.dictionaries(KEYS, VALUES, max_size=8), max_size=4))
    shared = draw(st.lists(st.integers(), min_size=1, max_size=3))  # the same object twice: anchors and aliases
    for body in list(schedules.values())[:2]:
        body.setdefault("args", shared)
    doc: dict[str, Any] = {"schedules": schedules}
    if draw(st.booleans()):
        doc["defaults"] = draw(st.dictionaries(KEYS, VALUES, max_size=3))
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["imports", "queues", "concurrency", "table_prefix", "database", "colour"]))] = draw(VALUES)
    return doc


MUTATIONS = st.sampled_from(["none", "delete", "insert", "duplicate-line", "swap-lines", "replace-char", "truncate"])


@settings(FUZZ, max_examples=700)
@given(doc=documents(), how=MUTATIONS, where=st.integers(0, 10**6), length=st.integers(0, 40),
       token=st.sampled_from(TOKENS))
def test_dumped_structures_mutated(doc: dict[str, Any], how: str, where: int, length: int, token: str) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=draw_flow(where))
    n = len(text)
    i = where % (n + 1)
    if how == "delete":
        text = text[:i] + text[i + length:]
    elif how == "insert":
        text = text[:i] + token + text[i:]
    elif how == "replace-char" and n:
        text = text[:i] + token[:1] + text[i + 1:]
    elif how == "truncate":
        text = text[:i]
    elif how in ("duplicate-line", "swap-lines"):
        lines = text.splitlines(keepends=True)
        if lines:
            j, k = i % len(lines), (i + length) % len(lines)
            if how == "duplicate-line":
                lines.insert(j, lines[j])
            else:
                lines[j], lines[k] = lines[k], lines[j]
            text = "".join(lines)
    event(load(text.encode("utf-8", "surrogatepass")))


def draw_flow(where: int) -> bool | None:
    return (None, False, True)[where % 3]


def test_dates_and_times_survive_a_dump() -> None:
    """The structure strategy does produce timestamps the loader must handle."""
    text = yaml.safe_dump({"schedules": {"x": {"task": "noop", "every": "1h", "anchor": date(2026, 1, 1)}}})
    assert load(text.encode()) == "ConfigError"  # a date is not a date-time
