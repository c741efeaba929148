"""Settings and their precedence: CLI flags > environment > schedules.yaml > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from .errors import ConfigError
from .registry import FileConfig
from .specs import parse_duration

DEFAULT_DATABASE_URL = "sqlite:///linger.db"


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
}


def parse_queues(value: Any, where: str = "queues") -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(q).strip() for q in items if str(q).strip())
    if not out:
        raise ConfigError("needs at least one queue name", key=where)
    return out


def _coerce(name: str, kind: Any, raw: Any, where: str) -> Any:
    try:
        if kind == "queues":
            return parse_queues(raw, where)
        if kind == _DURATION:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                value = float(raw)
            else:
                value = parse_duration(str(raw), field=where).total_seconds()
            return value
        if kind is int:
            value = int(raw)
            if value < 1:
                raise ValueError("must be >= 1")
            return value
        return kind(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {raw!r}: {exc}", key=where) from exc


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
    settings = replace(Settings(), **values)
    check(settings)
    return settings


def check(s: Settings) -> None:
    if s.concurrency < 1:
        raise ConfigError(f"must be >= 1, got {s.concurrency}", key="concurrency")
    if s.renew_interval >= s.lease_ttl:
        raise ConfigError(
            f"renew_interval ({s.renew_interval:g}s) must be shorter than lease_ttl ({s.lease_ttl:g}s)", key="renew_interval"
        )
    for name in ("poll_interval", "tick_interval", "lease_ttl", "job_lease_ttl", "rescue_interval"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"must be > 0, got {getattr(s, name)}", key=name)
    if not s.table_prefix.replace("_", "").isalnum():
        raise ConfigError(f"table_prefix may hold letters, digits and '_' only, got {s.table_prefix!r}", key="table_prefix")
