"""A SQLAlchemy ``Connection`` over the DB-API connection that Django holds for an alias in
this thread, so that linger-sched writes a job inside Django's transaction.

Django owns that connection and its transaction: SQLAlchemy must neither begin, commit, roll
back, reset nor close it. So the engine here is built by hand, without ``create_engine``'s
connect hooks (which would run the dialect's first-connect checks and a ROLLBACK on Django's
connection, and set session options on it): its dialect is learnt once per alias on a
connection of its own, then given no-op transaction and close methods; its pool hands out
Django's current connection for the thread and "closes" it by doing nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from django.db import connections

_engines: dict[tuple[str, str], sa.Engine] = {}
_lock = threading.Lock()


def _leave_alone(self: Any, dbapi_connection: Any) -> None:
    pass


# the dialect methods that would begin, end or reset the DB-API connection's transaction, or
# close the connection: on a borrowed connection each does nothing
_HANDS_OFF = {name: _leave_alone for name in (
    "do_begin", "do_commit", "do_rollback", "do_close", "do_terminate", "reset_isolation_level")}


def _django_dbapi_connection(alias: str) -> Any:
    wrapper = connections[alias]
    wrapper.ensure_connection()
    return wrapper.connection


def _engine(alias: str, url: str) -> sa.Engine:
    """The engine that borrows ``alias``'s connection, made once per (alias, URL)."""
    with _lock:
        engine = _engines.get((alias, url))
        if engine is not None:
            return engine
        # the dialect learns the server (version, features) on a connection of its own
        probe = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with probe.connect():
                pass
        finally:
            probe.dispose()
        dialect = probe.dialect
        base = type(dialect)
        # a subclass that adds only methods: the learnt dialect object can become one
        dialect.__class__ = type(f"Borrowing{base.__name__}", (base,), {**_HANDS_OFF, "supports_statement_cache": True})
        pool = sa.pool.NullPool(lambda: _django_dbapi_connection(alias), reset_on_return=None, dialect=dialect)
        engine = _engines[(alias, url)] = sa.engine.Engine(pool, dialect, probe.url)
        return engine


@contextmanager
def django_connection(alias: str, url: str) -> Iterator[sa.Connection]:
    """A SQLAlchemy ``Connection`` over Django's connection ``alias`` of this thread, in its
    current transaction (``url``: the database's URL, through the driver Django uses).
    Statements run in Django's transaction and are never committed or rolled back here."""
    connections[alias].validate_no_broken_transaction()  # as Django's own cursor would
    with _engine(alias, url).connect() as conn:
        yield conn
