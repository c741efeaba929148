"""Fixtures of the acceptance tests: a :class:`~.helpers.Cluster` on a fresh schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linger_sched.store import Store

from .helpers import Cluster


@pytest.fixture
def server_db(db_name: str, request: pytest.FixtureRequest) -> str:
    """``db_url`` of a server database: the fault tests are about PostgreSQL and MariaDB, so
    SQLite is skipped (an unreachable server fails with CI=true, as ``db_url`` decides)."""
    if db_name == "sqlite":
        pytest.skip("fault tests run against PostgreSQL and MariaDB only")
    return str(request.getfixturevalue("db_url"))


@pytest.fixture
def cluster(store: Store, db_url: str, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    """Processes on ``db_url`` with tables ``prefix*`` (installed by ``store``, dropped after it).

    Every process still running is killed before the tables are dropped."""
    c = Cluster(tmp_path / "work", db_url, prefix)
    try:
        yield c
    finally:
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed test, attach every process log of its cluster to the report."""
    rep = yield
    if rep.failed and rep.when in ("call", "setup"):
        c = getattr(item, "funcargs", {}).get("cluster")
        if isinstance(c, Cluster):
            rep.sections.append(("linger-sched process logs", c.logs()[-60000:]))
    return rep
