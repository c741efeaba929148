"""Django for tests/django only (pytest-django), so that it changes nothing for the other tests.

pytest-django sets Django up when DJANGO_SETTINGS_MODULE is given (option, environment or ini),
for the whole session; and its session-wide test environment would make the in-process pytest
runs of tests/unit/test_testing.py (pytester) fail ("setup_test_environment() was already
called"). So no DJANGO_SETTINGS_MODULE anywhere: this conftest configures Django's settings
from ``linger_django_settings`` when tests/django is collected (as pytest-django documents for
``settings.configure()``), sets the test environment up around each test of this directory
(``django_test_environment``; tests/conftest.py makes it a no-op elsewhere), and creates the
test databases once (``django_db_setup``): SQLite always, PostgreSQL and MariaDB when selected
(LINGER_TEST_DATABASES) and reachable. A test that takes ``db_alias`` runs once per selected
database (``db_name``), as a ``django_db(transaction=True)`` test on that alias and "side".
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import linger_django_settings as test_settings
import pytest
import sqlalchemy as sa
from django.conf import settings

HERE = Path(__file__).resolve().parent
ALIASES = {"sqlite": "default", "postgresql": "postgresql", "mariadb": "mariadb"}
SERVER_URLS = {"postgresql": test_settings.POSTGRES_URL, "mariadb": test_settings.MYSQL_URL}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if not settings.configured:
    settings.configure(**{k: getattr(test_settings, k) for k in dir(test_settings) if k.isupper()})
django.setup()

_unreachable: dict[str, str | None] = {}


def unreachable(db_name: str) -> str | None:
    """Why the server of ``db_name`` cannot be used (None: it can; SQLite always can)."""
    if db_name not in SERVER_URLS:
        return None
    if db_name not in _unreachable:
        try:
            engine = sa.create_engine(SERVER_URLS[db_name])
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
            _unreachable[db_name] = None
        except Exception as exc:  # noqa: BLE001
            _unreachable[db_name] = f"{type(exc).__name__}: {exc}"
    return _unreachable[db_name]


def _mine(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _mine(item) and "db_alias" in getattr(item, "fixturenames", ()):
            alias = ALIASES[item.callspec.params["db_name"]]  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.django_db(transaction=True, databases=[alias, "side"]), append=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A server that is down skips its tests locally and fails them in CI (as tests/conftest.py)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    reason = unreachable(params["db_name"]) if _mine(item) and "db_name" in params else None
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true and the {params['db_name']} test database is unreachable: {reason}")
        pytest.skip(f"{params['db_name']} unreachable: {reason}")


@pytest.fixture(autouse=True)
def django_test_environment() -> Iterator[None]:
    """Django's test environment (locmem e-mail, ...) around each test here, never longer."""
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment(debug=False)
    yield
    teardown_test_environment()


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: Any) -> Iterator[None]:
    """The test databases, created (and migrated: the job tables of ``LINGER_SCHED`` on
    "default") once, dropped at the end of the session."""
    from django.test.utils import setup_databases, teardown_databases

    selected = [d.strip() for d in os.environ.get("LINGER_TEST_DATABASES", "sqlite,postgresql,mariadb").split(",")]
    aliases = ["default", "side", *(ALIASES[d] for d in SERVER_URLS if d in selected and unreachable(d) is None)]
    with django_db_blocker.unblock():
        created = setup_databases(verbosity=0, interactive=False, aliases=aliases)
    yield
    with django_db_blocker.unblock():
        teardown_databases(created, verbosity=0)
    shutil.rmtree(test_settings.TMP, ignore_errors=True)


@pytest.fixture
def db_alias(db_name: str) -> str:
    """The Django alias of the database under test (one run per ``db_name``)."""
    return ALIASES[db_name]
