"""``settings.LINGER_SCHED`` and ``settings.DATABASES`` as linger-sched settings.

Nothing here connects to a database. Every bad value is an ``ImproperlyConfigured`` that names
the setting (``LINGER_SCHED['CONCURRENCY']``, ``DATABASES['default']['ENGINE']``) and the value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from linger_sched.config import ENV_VARS, Settings, coerce_setting, parse_queues, resolve
from linger_sched.errors import ConfigError, SpecError
from linger_sched.specs import parse_duration
from linger_sched.store.dialect import url_from_parts

SETTING = "LINGER_SCHED"
ALIAS_KEY = "DATABASE"
DEFAULT_ALIAS = "default"

# the settings LINGER_SCHED may hold (upper case, as Django settings are; lower case works too):
# every field of linger_sched.config.Settings but the database URL, which DATABASES gives
FIELDS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "database_url")
KEYS = (ALIAS_KEY, *(name.upper() for name in FIELDS))
_DURATIONS = frozenset(name for name, kind in ENV_VARS.values() if kind == "duration")

# OPTIONS that Django itself consumes (not arguments of the driver's connect())
DJANGO_OPTIONS = frozenset({"isolation_level", "server_side_binding", "assume_role", "pool", "transaction_mode", "init_command"})


@dataclass(frozen=True)
class DjangoSettings:
    """What ``LINGER_SCHED`` says: the database alias of the job table and the app's settings
    (``settings.database_url`` built from that alias's ``DATABASES`` entry)."""

    alias: str
    settings: Settings


def _where(key: str) -> str:
    return f"{SETTING}[{key!r}]"


def _coerce(name: str, key: str, value: Any) -> Any:
    """``value`` of setting ``name`` as :class:`Settings` holds it: a duration may be seconds,
    a ``timedelta`` or a string such as ``"10m"``; queues a list or ``"a,b"``."""
    try:
        if name in _DURATIONS or name == "clock_offset":
            if value is None and name in ("misfire_threshold", "keep_finished"):
                return None
            if isinstance(value, timedelta):
                return value.total_seconds()
            if isinstance(value, str) and name != "clock_offset":
                return parse_duration(value, field=key).total_seconds()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"must be seconds, a timedelta or a duration such as '10m', got {value!r}")
            return float(value)
        if name == "queues":
            return parse_queues(value, _where(key))
        if name == "concurrency" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"must be an integer, got {value!r}")
        if name == "table_prefix" and not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}")
        # the environment's parser (ENV_VARS): "25%" for a rate, ...
        return coerce_setting(name, value, _where(key))
    except (ConfigError, SpecError) as exc:
        raise ImproperlyConfigured(f"{_where(key)}: {exc.message}") from None


def read(raw: Any = None) -> DjangoSettings:
    """The settings in ``raw`` (default: ``settings.LINGER_SCHED``, ``{}`` when absent), with
    the job table's database taken from ``DATABASES[alias]``. Environment variables
    (``LINGER_*``) are not read: settings.py is the one place (read ``os.environ`` there)."""
    if raw is None:
        raw = getattr(django_settings, SETTING, None) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{SETTING} must be a dict, got {type(raw).__name__}")
    alias = DEFAULT_ALIAS
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower() if isinstance(key, str) else None
        if name == ALIAS_KEY.lower():
            if not isinstance(value, str) or not value:
                raise ImproperlyConfigured(f"{_where(key)} must name an alias of DATABASES, got {value!r}")
            alias = value
        elif name in ("database_url", "url"):
            raise ImproperlyConfigured(
                f"{_where(key)}: the job table's database comes from DATABASES, so there is no second URL to keep "
                f"in sync; name its alias instead: {SETTING} = {{'{ALIAS_KEY}': 'default'}}")
        elif name not in FIELDS:
            raise ImproperlyConfigured(f"{SETTING} has an unknown key {key!r} (known: {', '.join(KEYS)})")
        else:
            values[name] = _coerce(name, key, value)
    # the tables come from `manage.py migrate`; creating them on first use could wait on a
    # SQLite write lock that the caller's own transaction holds
    values.setdefault("auto_install", False)
    url = database_url(alias)
    try:
        s = resolve(code={**values, "database_url": url}, env={})
    except ConfigError as exc:
        key = next((k for k in raw if isinstance(k, str) and k.lower() == exc.key), (exc.key or "").upper())
        raise ImproperlyConfigured(f"{_where(key)}: {exc.message}") from None
    return DjangoSettings(alias, s)


def database_url(alias: str) -> str:
    """The SQLAlchemy URL of ``DATABASES[alias]`` (as the connection sees it now: under a test
    runner, the test database), through the driver Django uses for it."""
    if alias not in django_settings.DATABASES:
        raise ImproperlyConfigured(
            f"{SETTING}[{ALIAS_KEY!r}] = {alias!r} is not an alias of DATABASES (aliases: {', '.join(django_settings.DATABASES)})")
    where = f"DATABASES[{alias!r}]"
    try:
        wrapper = connections[alias]
    except (ImproperlyConfigured, ImportError) as exc:  # an ENGINE (or its driver) that cannot be imported
        raise ImproperlyConfigured(f"{where}['ENGINE'] = {django_settings.DATABASES[alias].get('ENGINE')!r} cannot be loaded: {exc}") from exc
    entry = wrapper.settings_dict
    if not entry.get("ENGINE") or entry["ENGINE"].endswith(".dummy"):
        raise ImproperlyConfigured(f"{where}['ENGINE'] is not set: linger-sched needs a real database for its job table")
    options = {k: v for k, v in (entry.get("OPTIONS") or {}).items() if k not in DJANGO_OPTIONS}
    name = entry.get("NAME")
    try:
        url = url_from_parts(
            wrapper.vendor, wrapper.Database.__name__, database=os.fspath(name) if name else None,
            username=entry.get("USER") or None, password=entry.get("PASSWORD") or None, host=entry.get("HOST") or None,
            port=entry.get("PORT") or None, options=options,
        )
    except ConfigError as exc:
        raise ImproperlyConfigured(f"{where}[{exc.key!r}] (ENGINE {entry['ENGINE']!r}): {exc.message}") from None
    return url.render_as_string(hide_password=False)
