"""Fixtures of the CLI tests (helpers live in cli_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import TASKS_MODULE, TASKS_SOURCE, Cli
from linger_sched.store import Store


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    (d / f"{TASKS_MODULE}.py").write_text(TASKS_SOURCE, encoding="utf-8")
    return d


@pytest.fixture
def nodb_cli(workdir: Path) -> Cli:
    """No database involved: LINGER_DATABASE_URL points at a SQLite file that must stay absent."""
    return Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'untouched.db'}"})


@pytest.fixture
def cli(workdir: Path, db_url: str, prefix: str) -> Cli:
    return Cli(workdir, {"LINGER_DATABASE_URL": db_url, "LINGER_TABLE_PREFIX": prefix})


@pytest.fixture
def empty_db(db_url: str, prefix: str) -> Iterator[Store]:
    """A Store on the test database whose tables are NOT installed; dropped afterwards."""
    s = Store(db_url, table_prefix=prefix)
    yield s
    s.drop_schema()
    s.dispose()
