"""``manage.py migrate`` installs the job tables on the job table's database (and unapplying
drops them); ``manage.py linger ...`` is the linger-sched CLI on the project's app. On SQLite,
PostgreSQL and MariaDB, each test in tables of its own prefix."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from djtestapp import tasks

from linger_sched.contrib.django import DjangoLinger, conf, get_app
from linger_sched.contrib.django.management.commands.linger import run_cli
from linger_sched.store import SCHEMA_VERSION, Store


def job_store(alias: str, prefix: str) -> Store:
    return Store(conf.database_url(alias), table_prefix=prefix)


def test_migrate_installs_the_job_tables_and_unapplying_the_migration_drops_them(db_alias: str, prefix: str) -> None:
    store = job_store(db_alias, prefix)
    try:
        with override_settings(LINGER_SCHED={"DATABASE": db_alias, "TABLE_PREFIX": prefix}):
            # the test database was migrated when it was made (tables of the run's own prefix on
            # "default" only): start from "not applied"
            call_command("migrate", "linger_sched", "zero", database=db_alias, verbosity=0)
            assert store.schema_version() is None
            call_command("migrate", "linger_sched", database=db_alias, verbosity=0)
            assert store.schema_version() == SCHEMA_VERSION
            store.check_schema()
            job_id = tasks.record.enqueue("migrated")
            assert get_app().get_job(job_id).state == "queued"
            call_command("migrate", "linger_sched", "zero", database=db_alias, verbosity=0)
            assert store.schema_version() is None  # unapplied: dropped, rows and all
    finally:
        store.drop_schema()
        store.dispose()
        call_command("migrate", "linger_sched", database=db_alias, verbosity=0)  # recorded again


def test_migrate_of_another_database_creates_nothing_there(db_alias: str, prefix: str) -> None:
    store = job_store(db_alias, prefix)
    try:
        with override_settings(LINGER_SCHED={"DATABASE": "side", "TABLE_PREFIX": prefix}):
            call_command("migrate", "linger_sched", "zero", database=db_alias, verbosity=0)
            call_command("migrate", "linger_sched", database=db_alias, verbosity=0)
        assert store.schema_version() is None
    finally:
        store.drop_schema()
        store.dispose()


@pytest.fixture
def project_app(db_alias: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DjangoLinger]:
    """The project's app on the database under test, tables made by migrate; the commands run
    in an empty directory (a schedules.yaml in the working directory would be read)."""
    monkeypatch.chdir(tmp_path)
    with override_settings(LINGER_SCHED={"DATABASE": db_alias, "TABLE_PREFIX": prefix, "POLL_INTERVAL": 0.05}):
        call_command("migrate", "linger_sched", "zero", database=db_alias, verbosity=0)
        call_command("migrate", "linger_sched", database=db_alias, verbosity=0)
        tasks.CALLS.clear()
        app = get_app()
        yield app
        app.store.drop_schema()
        app.store.dispose()
    call_command("migrate", "linger_sched", database=db_alias, verbosity=0)


def linger(*args: str) -> str:
    out = io.StringIO()
    call_command("linger", *args, stdout=out)
    return out.getvalue()


def test_manage_py_linger_enqueue_jobs_worker_and_status(project_app: DjangoLinger) -> None:
    job_id = int(linger("enqueue", "djtestapp.tasks.record", "--args", '["from the CLI"]'))
    listing = linger("jobs")
    assert f"{job_id}" in listing and "djtestapp.tasks.record" in listing and "queued" in listing
    status = linger("status", "--json")
    assert json.loads(status)["jobs"]["queued"] == 1
    # `linger worker --burst` ends its process like the CLI (tests/acceptance/test_django_app.py
    # runs `manage.py linger run` for real): here the app's own worker runs the job
    project_app.work(burst=True)
    assert tasks.CALLS == ["from the CLI"]
    assert project_app.get_job(job_id).state == "succeeded"
    assert "jobs: queued 0, running 0, succeeded 1" in linger("status")
    shown = json.loads(linger("jobs", "show", str(job_id), "--json"))
    assert (shown["id"], shown["state"]) == (job_id, "succeeded")


def test_manage_py_linger_exit_status_and_messages(project_app: DjangoLinger) -> None:
    err = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("linger", "jobs", "show", "987654321", stderr=err)
    assert raised.value.returncode == 1
    assert "987654321" in err.getvalue()
    with pytest.raises(CommandError) as raised:
        call_command("linger", "enqueue", "djtestapp.tasks.nope", stderr=io.StringIO())
    assert raised.value.returncode == 2  # usage error: an unknown task among the discovered ones


def test_manage_py_linger_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"], prog_name="manage.py") == 0
    out = capsys.readouterr().out
    assert "Usage: manage.py linger [OPTIONS] COMMAND [ARGS]..." in out
    for command in ("run", "worker", "jobs", "status", "schedules", "db", "enqueue", "validate"):
        assert f"  {command} " in out
    assert run_cli(["no-such-command"]) == 2
