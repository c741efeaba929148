"""Settings and their precedence: CLI flags > environment > schedules.yaml > defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from .configfile import FileConfig
from .errors import ConfigError
from .specs import parse_duration
from .store.tables import check_table_prefix

DEFAULT_DATABASE_URL = "sqlite:///linger.db"
# every duration and the clock offset: a larger one cannot be added to a date or waited on
MAX_SECONDS = 100 * 365 * 86400.0
MAX_CONCURRENCY = 10_000
MAX_RESULT_BYTES = 1 << 30  # 1 GiB: a result is stored in one statement


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    table_prefix: str = "linger_"
    concurrency: int = 8
    queues: tuple[str, ...] | None = None
    poll_interval: float = 1.0  # idle re-check of the table (a local enqueue wakes at once)
    tick_interval: float = 1.0  # scheduler tick
    lease_ttl: float = 30.0  # leader lease
    renew_interval: float = 10.0
    job_lease_ttl: float = 30.0  # a claimed job's lock; rescued this long after its node died
    rescue_interval: float = 5.0
    shutdown_grace: float = 30.0
    misfire_threshold: float | None = None  # None: lease_ttl + 2 ticks
    keep_finished: float | None = 7 * 86400.0  # succeeded/cancelled rows are pruned after this
    clock_offset: float = 0.0  # simulate a node whose clock is off (tests, demos)
    # create missing tables when the app first uses its store; None: on SQLite only (the
    # embedded default just works), a server database needs `linger-sched db init`
    auto_install: bool | None = None
    # a task's result (as JSON) larger than this is not stored (the job succeeds; a WARNING says so)
    result_max_bytes: int = 64 * 1024
    # health (docs/operations.md, "Health checks"): a node whose last heartbeat is older than this is
    # lost (nodes heartbeat every 10 s, or every third of this when it is shorter)
    node_lost_after: float = 30.0
    health_window: float = 900.0  # the failure rate is over the jobs finished this long back
    health_max_failure_rate: float = 0.5  # degraded above this share of failed jobs in the window
    health_max_queue_age: float = 300.0  # degraded when a due job waited longer than this

    def __post_init__(self) -> None:
        check(self)


# environment variable -> (field, parser)
_DURATION = "duration"
ENV_VARS: dict[str, tuple[str, Any]] = {
    "LINGER_DATABASE_URL": ("database_url", str),
    "LINGER_TABLE_PREFIX": ("table_prefix", str),
    "LINGER_CONCURRENCY": ("concurrency", int),
    "LINGER_QUEUES": ("queues", "queues"),
    "LINGER_POLL_INTERVAL": ("poll_interval", _DURATION),
    "LINGER_TICK_INTERVAL": ("tick_interval", _DURATION),
    "LINGER_LEASE_TTL": ("lease_ttl", _DURATION),
    "LINGER_RENEW_INTERVAL": ("renew_interval", _DURATION),
    "LINGER_JOB_LEASE_TTL": ("job_lease_ttl", _DURATION),
    "LINGER_RESCUE_INTERVAL": ("rescue_interval", _DURATION),
    "LINGER_SHUTDOWN_GRACE": ("shutdown_grace", _DURATION),
    "LINGER_MISFIRE_THRESHOLD": ("misfire_threshold", _DURATION),
    "LINGER_KEEP_FINISHED": ("keep_finished", _DURATION),
    "LINGER_CLOCK_OFFSET": ("clock_offset", float),
    "LINGER_RESULT_MAX_BYTES": ("result_max_bytes", int),
    "LINGER_NODE_LOST_AFTER": ("node_lost_after", _DURATION),
    "LINGER_HEALTH_WINDOW": ("health_window", _DURATION),
    "LINGER_HEALTH_MAX_FAILURE_RATE": ("health_max_failure_rate", "rate"),
    "LINGER_HEALTH_MAX_QUEUE_AGE": ("health_max_queue_age", _DURATION),
}


def parse_queues(value: Any, where: str = "queues") -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(q).strip() for q in items if str(q).strip())
    if not out:
        raise ConfigError("needs at least one queue name", key=where)
    return out


def parse_rate(raw: Any) -> float:
    """A share: a number from 0 to 1, or a percentage (``"25%"``)."""
    if isinstance(raw, str) and raw.strip().endswith("%"):
        return float(raw.strip()[:-1]) / 100.0
    return float(raw)


def _coerce(name: str, kind: Any, raw: Any, where: str) -> Any:
    try:
        if kind == "queues":
            return parse_queues(raw, where)
        if kind == "rate":
            value = parse_rate(raw)
            check_value(name, value, where)
            return value
        if kind == _DURATION:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                value = float(raw)
            else:
                value = parse_duration(str(raw), field=where).total_seconds()
        elif kind is int:
            value = int(raw)
            if value < 1:
                raise ValueError("must be >= 1")
        else:
            value = kind(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {raw!r}: {exc}", key=where) from exc
    check_value(name, value, where)
    return value


# setting -> its parser in ENV_VARS: the one table the environment, Flask's app.config and
# Django's LINGER_SCHED go through, so that a setting is read the same way everywhere
KINDS: dict[str, Any] = {name: kind for name, kind in ENV_VARS.values()}


def coerce_setting(name: str, raw: Any, where: str) -> Any:
    """``raw`` for setting ``name``, given as a Python value (``4``, ``0.25``, a ``timedelta``)
    or as a string in the environment's form (``"4"``, ``"25%"``, ``"10m"``), through the
    parser :data:`ENV_VARS` names for it, then checked. :class:`ConfigError` keyed ``where``."""
    kind = KINDS.get(name)
    if kind is None or kind is str:
        check_value(name, raw, where)
        return raw
    if kind == "rate":  # "25%", "0.25" or 0.25; the error names what was given
        try:
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = parse_rate(raw)
            check_value(name, value, where)
        except (TypeError, ValueError, ConfigError):
            raise ConfigError(f"must be a share from 0 to 1 (or a percentage such as '25%'), got {raw!r}",
                              key=where) from None
        return value
    if isinstance(raw, bool):  # float(True) == 1.0: never a number of anything
        raise ConfigError(f"invalid value {raw!r}", key=where)
    if kind == _DURATION and isinstance(raw, timedelta):
        raw = raw.total_seconds()
    if kind == "queues" and raw is None:
        return None
    if kind is int and isinstance(raw, int):  # checked (with the setting's own range) as it is
        check_value(name, raw, where)
        return raw
    return _coerce(name, kind, raw, where)


def resolve(
    cli: Mapping[str, Any] | None = None,
    file: FileConfig | None = None,
    env: Mapping[str, str] | None = None,
    code: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the sources; a later source in (defaults, code, file, env, cli) wins."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    for k, v in (code or {}).items():
        if k not in known:
            raise ConfigError(f"unknown setting {k!r}", key=k)
        if v is not None:
            values[k] = v
    if file is not None:
        for k in ("database_url", "table_prefix", "concurrency", "queues"):
            v = getattr(file, "database" if k == "database_url" else k)
            if v is not None:
                values[k] = parse_queues(v, "queues") if k == "queues" else v
    for var, (name, kind) in ENV_VARS.items():
        raw = env.get(var)
        if raw not in (None, ""):
            values[name] = _coerce(name, kind, raw, var)
    for k, v in (cli or {}).items():
        if v is not None:
            values[k] = parse_queues(v, "--queues") if k == "queues" else v
    return replace(Settings(), **values)  # checked by Settings itself


_POSITIVE = ("poll_interval", "tick_interval", "lease_ttl", "renew_interval", "job_lease_ttl", "rescue_interval",
             "node_lost_after", "health_window", "health_max_queue_age")
_SECONDS = (*_POSITIVE, "shutdown_grace", "misfire_threshold", "keep_finished")


def check_value(name: str, value: Any, where: str | None = None) -> None:
    """Raise :class:`ConfigError` (keyed ``where``, default ``name``) unless ``value`` is in
    range for setting ``name``: no value may overflow a date, a wait or a database column."""
    key = where or name
    if name == "table_prefix":
        try:
            check_table_prefix(value)
        except ConfigError as exc:
            raise ConfigError(exc.message, key=key) from None
    elif name == "concurrency":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CONCURRENCY:
            raise ConfigError(f"must be an integer from 1 to {MAX_CONCURRENCY}, got {value!r}", key=key)
    elif name in _SECONDS or name == "clock_offset":
        if value is None and name in ("misfire_threshold", "keep_finished"):
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"must be a finite number of seconds, got {value!r}", key=key)
        if abs(value) > MAX_SECONDS:
            raise ConfigError(f"must be within 100 years ({MAX_SECONDS:.0f} seconds), got {value:g}", key=key)
        if name in _POSITIVE and value <= 0:
            raise ConfigError(f"must be > 0, got {value}", key=key)
        if name != "clock_offset" and value < 0:
            raise ConfigError(f"must not be negative, got {value}", key=key)
    elif name == "result_max_bytes":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RESULT_BYTES:
            raise ConfigError(f"must be an integer number of bytes from 1 to {MAX_RESULT_BYTES}, got {value!r}", key=key)
    elif name == "health_max_failure_rate":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"must be a share from 0 to 1 (or a percentage such as '25%'), got {value!r}", key=key)
    elif name == "auto_install" and value is not None and not isinstance(value, bool):
        raise ConfigError(f"must be true, false or None, got {value!r}", key=key)


def check(s: Settings) -> None:
    for f in fields(s):
        check_value(f.name, getattr(s, f.name))
    if s.renew_interval >= s.lease_ttl:
        raise ConfigError(
            f"renew_interval ({s.renew_interval:g}s) must be shorter than lease_ttl ({s.lease_ttl:g}s)", key="renew_interval"
        )
