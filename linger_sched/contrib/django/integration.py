"""The project's linger-sched app under Django: :class:`DjangoLinger` and :func:`get_app`."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any, cast

from django.core.signals import setting_changed
from django.db import connections, transaction

from linger_sched import Linger
from linger_sched.clock import Clock
from linger_sched.config import Settings
from linger_sched.store import Store

from . import conf
from .borrowed import django_connection


class DjangoLinger(Linger):
    """A :class:`~linger_sched.Linger` app configured by Django's settings: the job table lives
    in ``DATABASES[LINGER_SCHED["DATABASE"]]`` (default ``"default"``), the other settings are
    the keys of ``LINGER_SCHED`` (``CONCURRENCY``, ``TABLE_PREFIX``, ...; see docs/django.md).

    Enqueueing (``enqueue``, ``enqueue_many``, ``task.enqueue``, ``task.options(...).enqueue``)
    follows Django's transactions:

    * inside ``transaction.atomic()`` on the job table's database, the job row is written in
      that transaction, through Django's connection: it exists once the block commits, never if
      it rolls back (a savepoint's rollback included). The call returns the job id;
    * inside ``transaction.atomic()`` on another database only, the job is enqueued by
      ``transaction.on_commit`` of that database (the first such alias in ``DATABASES`` order)
      and never if it rolls back; the id is not known yet, so the call returns ``None``
      (``enqueue_many``: a list of ``None``);
    * outside atomic blocks, as plain :meth:`Linger.enqueue` (its own short transaction).

    An explicit ``connection=``/``session=`` is used as given."""

    def __init__(self, settings: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> None:
        """``settings``: a mapping like ``LINGER_SCHED`` (default: ``settings.LINGER_SCHED``,
        read again when a test overrides it or ``DATABASES``)."""
        self._conf = settings
        d = conf.read(settings)
        self.alias = d.alias
        self._django_url = d.settings.database_url
        # every setting counts as given in code: a schedules.yaml or LINGER_* variables never
        # override what settings.py says (manage.py linger's flags still do)
        super().__init__(settings=d.settings, clock=clock, **_given(d.settings))

    def reload_settings(self) -> None:
        """Read the settings again (``setting_changed``: a test's ``override_settings``); the
        registered tasks and schedules stay. :class:`~django.core.exceptions.ImproperlyConfigured`
        for bad ones, changing nothing."""
        d = conf.read(self._conf)
        if (d.settings.database_url, d.settings.table_prefix) != (self.settings.database_url, self.settings.table_prefix):
            self.configure(database_url=d.settings.database_url, table_prefix=d.settings.table_prefix)
        self.settings = d.settings
        self._explicit = _given(d.settings)  # what Linger.load_config ranks above a schedules.yaml
        self.alias = d.alias
        self._django_url = d.settings.database_url

    @property
    def store(self) -> Store:
        """The app's :class:`~linger_sched.store.Store`, on the database Django's connection
        for the alias uses now (a test runner renames it to the test database)."""
        url = conf.database_url(self.alias)
        if url != self._django_url:
            self._django_url = url
            self.configure(database_url=url)
        return super().store

    def _insert(self, rows: list[dict[str, Any]], options: dict[str, Any]) -> list[int]:
        if options.get("connection") is not None or options.get("session") is not None:
            return super()._insert(rows, options)
        if connections[self.alias].in_atomic_block:
            store = self.store
            with django_connection(self.alias, store.url) as conn:
                ids = super()._insert(rows, {**options, "connection": conn})
            first = rows[0]
            # wake this process's worker, and run inline-mode jobs, once the rows are visible
            transaction.on_commit(lambda: self._inserted(first, ids), using=self.alias)
            return ids
        other = _atomic_alias(exclude=self.alias)
        if other is not None:
            transaction.on_commit(functools.partial(Linger._insert, self, rows, options), using=other)
            return cast(list[int], [None] * len(rows))  # no id before the commit: documented
        return super()._insert(rows, options)


def _given(s: Settings) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if getattr(s, f.name) is not None}


def _atomic_alias(exclude: str) -> str | None:
    """The first database (in ``DATABASES`` order) but ``exclude`` whose connection in this
    thread is inside an atomic block."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.alias != exclude and wrapper.in_atomic_block:
            return cast(str, wrapper.alias)
    return None


_app: DjangoLinger | None = None
_app_lock = threading.Lock()


def get_app() -> DjangoLinger:
    """The project's app, made on first use from ``settings.LINGER_SCHED`` (and again when a
    test overrides ``LINGER_SCHED`` or ``DATABASES``, keeping its tasks)."""
    global _app
    with _app_lock:
        if _app is None:
            _app = DjangoLinger()
        return _app


def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting in (conf.SETTING, "DATABASES") and _app is not None:
        _app.reload_settings()


setting_changed.connect(_settings_changed)


def _on_job_database(alias: str, act: Callable[[Store], object]) -> bool:
    """Run ``act`` on a Store of the job tables when ``alias`` is their database, as settings
    say now; returns whether it was."""
    d = conf.read()
    if d.alias != alias:
        return False
    store = Store(d.settings.database_url, table_prefix=d.settings.table_prefix)
    try:
        act(store)
    finally:
        store.dispose()
    return True


def install_tables(alias: str) -> bool:
    """Create (or upgrade) the job tables when ``alias`` is the job table's database, as
    settings say now; returns whether it was. Run by this app's migration."""
    return _on_job_database(alias, Store.upgrade_schema)


def drop_tables(alias: str) -> bool:
    """Drop the job tables (every job, schedule and node row) when ``alias`` is the job
    table's database; returns whether it was. Run when this app's migration is unapplied."""
    return _on_job_database(alias, Store.drop_schema)
