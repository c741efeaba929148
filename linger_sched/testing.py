"""Testing helpers for linger-sched users: a pytest plugin (loaded by itself once
linger-sched is installed, through the ``pytest11`` entry point) and ``app.testing``.

Fixtures:

* ``linger_clock``: a :class:`~linger_sched.FakeClock` (2030-01-01 00:00 UTC) the test moves;
* ``linger_database_url``: a new SQLite file per test, or the database named by
  ``--linger-database-url``, else the environment variable ``LINGER_TEST_DATABASE_URL``, else
  the ini option ``linger_database_url``;
* ``linger_table_prefix``: a table prefix of the test's own (``lt<8 hex>_``);
* ``linger_app``: a fresh :class:`~linger_sched.Linger` on those, its tables created before the
  test and dropped after it. Override it with :func:`for_app` to test your own app.

``app.testing`` (:class:`LingerTesting`) runs due jobs (``run_pending``), moves the clock
through the schedules (``advance``), asserts on the queue (``assert_enqueued``,
``refute_enqueued``, ``enqueued_jobs``) and has an inline mode (``inline``). See
docs/testing.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .app import Linger
from .clock import Clock, FakeClock
from .config import DEFAULT_DATABASE_URL
from .errors import LingerError
from .harness import ANY, LingerTesting, RunResult, describe_job

__all__ = [
    "ANY", "DATABASE_URL_ENV", "LingerTesting", "RunResult", "configured_database_url", "describe_job", "file_database_url", "for_app",
    "on_test_database",
]

DATABASE_URL_ENV = "LINGER_TEST_DATABASE_URL"
_INI = "linger_database_url"


_NAMES = ("linger_sched", "linger_sched.testing")  # the entry point's name, the module's


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # pytest registers this module under the entry point's name, and again under its own name
    # for ``-p linger_sched.testing`` or ``pytest_plugins = ["linger_sched.testing"]``, which
    # pluggy refuses (the same module twice). Whichever comes first wins; the other is a no-op.
    for name in _NAMES:
        if pluginmanager.get_plugin(name) is None:
            pluginmanager.set_blocked(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linger", "linger-sched")
    group.addoption(
        "--linger-database-url", dest="linger_database_url", default=None, metavar="URL",
        help=f"database of the linger_app fixture (each test on tables of its own prefix, dropped after it); "
             f"default: ${DATABASE_URL_ENV}, the ini option {_INI}, else a new database file per test",
    )
    parser.addini(_INI, default="", help="database of the linger_app fixture (see --linger-database-url)")


def configured_database_url(config: pytest.Config) -> str | None:
    """The test database the user named: ``--linger-database-url`` > ``$LINGER_TEST_DATABASE_URL``
    > ini ``linger_database_url``; None for a new SQLite file per test."""
    for url in (config.getoption("linger_database_url", default=None), os.environ.get(DATABASE_URL_ENV),
                config.getini(_INI)):
        if isinstance(url, str) and url.strip():
            return url.strip()
    return None


def file_database_url(path: Path) -> str:
    """The URL of the embedded default database (SQLite) in a file at ``path``."""
    return DEFAULT_DATABASE_URL.removesuffix("linger.db") + str(path)


@contextlib.contextmanager
def on_test_database(app: Linger, database_url: str, *, table_prefix: str | None = None,
                  clock: Clock | None = None) -> Iterator[Linger]:
    """Point ``app`` (your own app, tasks and schedules registered on it) at ``database_url``
    with tables of their own (``table_prefix``, default a new ``lt<hex>_``) for the block, and
    at ``clock`` if given (a :class:`~linger_sched.FakeClock` for ``app.testing.advance()``).
    The tables are created first and dropped at the end, when the app's database, prefix and
    clock are put back as they were (its ``app.testing`` state too)."""
    if app._node is not None:
        raise LingerError("stop the app's node (app.stop()) before pointing it at a test database")
    saved_settings, saved_clock, saved_testing, saved_inline = app.settings, app.clock, app._testing, app._after_insert
    app.configure(database_url=database_url, table_prefix=table_prefix or f"lt{secrets.token_hex(4)}_")
    if clock is not None:
        app.clock = clock
    app._testing, app._after_insert = None, None
    try:
        app.install_schema()
        yield app
    finally:
        try:
            app.stop(grace=1)
            app.store.drop_schema()
        finally:
            # back to the app's own database (configure() disposes of the test store)
            app.configure(database_url=saved_settings.database_url, table_prefix=saved_settings.table_prefix)
            app.settings, app.clock = saved_settings, saved_clock
            app._testing, app._after_insert = saved_testing, saved_inline


def for_app(app: Linger | Callable[[], Linger]) -> Any:
    """A ``linger_app`` fixture on your own app: put ``linger_app = for_app(app)`` in a
    ``conftest.py`` (``app`` or a function returning it, e.g. ``linger_sched.default_app`` for
    ``@task`` functions). Each test then runs ``app`` on ``linger_database_url`` with tables of
    its own and the ``linger_clock`` fakeclock (:func:`on_test_database`), so that the code under
    test, which enqueues through ``app``, fills the test's tables."""

    @pytest.fixture(name="linger_app")
    def linger_app(linger_database_url: str, linger_table_prefix: str, linger_clock: Clock) -> Iterator[Linger]:
        target = app if isinstance(app, Linger) else app()
        if not isinstance(target, Linger):
            raise TypeError(f"for_app() needs a Linger app or a function returning one, got {target!r}")
        with on_test_database(target, linger_database_url, table_prefix=linger_table_prefix, clock=linger_clock) as a:
            yield a

    return linger_app


@pytest.fixture
def linger_clock() -> Clock:
    """A FakeClock at 2030-01-01 00:00 UTC: time moves only when the test moves it
    (``linger_clock.set(...)``, ``app.testing.advance(...)``). Override this fixture to start
    elsewhere, or to return ``Clock()`` for tests on the real time."""
    return FakeClock()


@pytest.fixture
def linger_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``linger_app`` fixture's database (see :func:`configured_database_url`)."""
    return configured_database_url(request.config) or file_database_url(tmp_path / "linger.db")


@pytest.fixture
def linger_table_prefix() -> str:
    return f"lt{secrets.token_hex(4)}_"


@pytest.fixture
def linger_app(linger_database_url: str, linger_table_prefix: str, linger_clock: Clock) -> Iterator[Linger]:
    """A fresh app per test: register test tasks on it (``@linger_app.task``); its tables are
    created first and dropped after the test. To test your own app, see :func:`for_app`."""
    app = Linger(linger_database_url, table_prefix=linger_table_prefix, clock=linger_clock)
    try:
        app.install_schema()
        yield app
    finally:
        try:
            app.stop(grace=1)
            app.store.drop_schema()
        finally:
            app.store.dispose()
