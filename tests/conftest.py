"""Fixtures shared by every test level.

``db_url`` runs a test once per database: SQLite (a temporary file), PostgreSQL and
MariaDB/MySQL (URLs from LINGER_TEST_POSTGRES_URL / LINGER_TEST_MYSQL_URL, defaulting to the
CI servers). Each test gets its own table prefix and drops its tables afterwards. A server
that cannot be reached skips its tests locally, but fails them when CI=true.
LINGER_TEST_DATABASES=sqlite,postgresql,mariadb picks which databases run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from linger_sched import FakeClock, Linger
from linger_sched.store import Store

POSTGRES_URL = os.environ.get("LINGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("LINGER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
SELECTED = [d.strip() for d in os.environ.get("LINGER_TEST_DATABASES", "sqlite,postgresql,mariadb").split(",") if d.strip()]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, str | None] = {}


def server_url(name: str) -> str:
    return POSTGRES_URL if name == "postgresql" else MYSQL_URL


def require_server(name: str) -> None:
    """Skip (locally) or fail (CI) when the server for ``name`` is down."""
    if name not in _reachable:
        try:
            engine = sa.create_engine(server_url(name))
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
            _reachable[name] = None
        except Exception as exc:  # noqa: BLE001
            _reachable[name] = f"{type(exc).__name__}: {exc}"
    error = _reachable[name]
    if error is not None:
        if IN_CI:
            pytest.fail(f"CI=true and the {name} test database is unreachable: {error}")
        pytest.skip(f"{name} unreachable: {error}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real clock (``real_app``) wait for real time: they are timing tests, marked
    slow so that ``-m "not slow"`` is the quick, deterministic suite (CI runs both)."""
    for item in items:
        if "real_app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def django_test_environment() -> Iterator[None]:
    """In place of pytest-django's fixture of this name, which sets Django's test environment
    up for the rest of the session once settings are configured: a pytest run inside this one
    (pytester) would then fail. Only tests/django needs it; its conftest sets it up per test."""
    yield


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_name" in metafunc.fixturenames:
        metafunc.parametrize("db_name", SELECTED, scope="function")


@pytest.fixture
def db_url(db_name: str, tmp_path: Path) -> str:
    if db_name == "sqlite":
        return f"sqlite:///{tmp_path / 'linger.db'}"
    require_server(db_name)
    return server_url(db_name)


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}_"


@pytest.fixture
def store(db_url: str, prefix: str) -> Iterator[Store]:
    s = Store(db_url, table_prefix=prefix)
    s.install_schema()
    yield s
    s.drop_schema()
    s.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2030, 1, 1, tzinfo=timezone.utc))


@pytest.fixture
def app(db_url: str, prefix: str, clock: FakeClock) -> Iterator[Linger]:
    """An app on a fresh schema with a fake clock (time moves only when the test says)."""
    a = Linger(db_url, table_prefix=prefix, clock=clock, poll_interval=0.05)
    a.install_schema()
    yield a
    a.stop(grace=1)
    a.store.drop_schema()
    a.store.dispose()


@pytest.fixture
def real_app(db_url: str, prefix: str) -> Iterator[Linger]:
    """An app on a fresh schema with the real clock (and the database's clock)."""
    a = Linger(db_url, table_prefix=prefix, poll_interval=0.05)
    a.install_schema()
    yield a
    a.stop(grace=1)
    a.store.drop_schema()
    a.store.dispose()
