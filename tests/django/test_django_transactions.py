"""Enqueue under Django's transactions, on SQLite, PostgreSQL and MariaDB: inside
``transaction.atomic()`` on the job table's database the job commits and rolls back with it;
with the atomic block on another database it waits for ``on_commit``; outside, it is plain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from django.db import IntegrityError, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test import override_settings
from djtestapp import tasks
from djtestapp.models import Note

from linger_sched import JobNotFoundError
from linger_sched.contrib.django import DjangoLinger, get_app


@pytest.fixture
def project_app(db_alias: str, prefix: str) -> Iterator[DjangoLinger]:
    """The project's app (tasks.py's ``record`` registered on it) with its job table on the
    database under test, in tables of this test's own."""
    with override_settings(LINGER_SCHED={"DATABASE": db_alias, "TABLE_PREFIX": prefix, "POLL_INTERVAL": 0.05}):
        app = get_app()
        app.install_schema()
        tasks.CALLS.clear()
        yield app
        app.store.drop_schema()
        app.store.dispose()


def committed_jobs(app: DjangoLinger) -> int:
    """The job rows another connection sees (committed ones), read without the app's store:
    on SQLite the store's transactions take the write lock up front, which Django's open
    transaction holds."""
    engine = sa.create_engine(app.store.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {app.store.prefix}jobs")).scalar_one())
    finally:
        engine.dispose()


def test_the_job_is_written_in_the_atomic_block_exists_once_it_commits_and_runs_once(
        project_app: DjangoLinger, db_alias: str) -> None:
    with transaction.atomic(using=db_alias):
        Note.objects.using(db_alias).create(text="order 1")
        job_id = tasks.record.enqueue("order 1")
        assert isinstance(job_id, int)
        assert committed_jobs(project_app) == 0  # not before the commit
    assert project_app.get_job(job_id).state == "queued"
    assert Note.objects.using(db_alias).count() == 1
    project_app.work(burst=True)
    project_app.work(burst=True)
    assert tasks.CALLS == ["order 1"]
    assert project_app.get_job(job_id).state == "succeeded"


def test_a_rolled_back_atomic_block_leaves_no_job(project_app: DjangoLinger, db_alias: str) -> None:
    with pytest.raises(RuntimeError), transaction.atomic(using=db_alias):
        Note.objects.using(db_alias).create(text="order 2")
        job_id = tasks.record.enqueue("order 2")
        raise RuntimeError("payment declined")
    assert Note.objects.using(db_alias).count() == 0
    assert committed_jobs(project_app) == 0
    with pytest.raises(JobNotFoundError):
        project_app.get_job(job_id)
    project_app.work(burst=True)
    assert tasks.CALLS == []


def test_a_rolled_back_savepoint_takes_its_job_with_it(project_app: DjangoLinger, db_alias: str) -> None:
    with transaction.atomic(using=db_alias):
        kept = tasks.record.enqueue("kept")
        with pytest.raises(RuntimeError), transaction.atomic(using=db_alias):
            tasks.record.enqueue("undone")
            raise RuntimeError("inner block fails")
        also = tasks.record.options(priority=5).enqueue("also kept")  # task.options(...).enqueue too
    assert sorted(j.id for j in project_app.jobs()) == sorted([kept, also])
    project_app.work(burst=True)
    assert sorted(tasks.CALLS) == ["also kept", "kept"]


def test_enqueue_many_and_unique_keys_inside_the_atomic_block(project_app: DjangoLinger, db_alias: str) -> None:
    with transaction.atomic(using=db_alias):
        Note.objects.using(db_alias).create(text="batch")  # Django's transaction has written first
        ids = project_app.enqueue_many(tasks.record, [("a",), ("b",), {"text": "c"}])
        first = tasks.record.enqueue("d", unique_key="digest")
        again = tasks.record.enqueue("e", unique_key="digest")  # sees the uncommitted holder
        assert committed_jobs(project_app) == 0
    assert len(ids) == 3 and first == again
    project_app.work(burst=True)
    assert sorted(tasks.CALLS) == ["a", "b", "c", "d"]


def test_outside_atomic_blocks_the_job_is_committed_at_once(project_app: DjangoLinger, db_alias: str) -> None:
    job_id = tasks.record.enqueue("now")
    assert committed_jobs(project_app) == 1
    assert project_app.get_job(job_id).state == "queued"


def test_with_the_atomic_block_on_another_database_the_job_waits_for_its_commit(
        project_app: DjangoLinger, db_alias: str) -> None:
    with transaction.atomic(using="side"):
        Note.objects.using("side").create(text="order 3")
        result = tasks.record.enqueue("order 3")
        many = project_app.enqueue_many(tasks.record, [("order 3b",)])
        assert result is None and many == [None]  # no id before the commit (documented)
        assert committed_jobs(project_app) == 0
    assert committed_jobs(project_app) == 2
    project_app.work(burst=True)
    assert sorted(tasks.CALLS) == ["order 3", "order 3b"]

    with pytest.raises(RuntimeError), transaction.atomic(using="side"):
        assert tasks.record.enqueue("order 4") is None
        raise RuntimeError("rolled back")
    assert committed_jobs(project_app) == 2  # the rolled-back one never came


def test_a_broken_transaction_refuses_the_job_as_django_refuses_queries(project_app: DjangoLinger, db_alias: str) -> None:
    with pytest.raises(TransactionManagementError), transaction.atomic(using=db_alias):
        Note.objects.using(db_alias).create(id=1, text="x")
        try:
            Note.objects.using(db_alias).create(id=1, text="duplicate")
        except IntegrityError:
            pass  # swallowed without a savepoint: Django marks the transaction for rollback
        tasks.record.enqueue("never")
    assert committed_jobs(project_app) == 0


def test_inline_mode_runs_the_job_after_the_commit(project_app: DjangoLinger, db_alias: str) -> None:
    with project_app.testing.inline():
        with transaction.atomic(using=db_alias):
            tasks.record.enqueue("inline")
            assert tasks.CALLS == []  # not inside the transaction: the row is not visible yet
        assert tasks.CALLS == ["inline"]
        with pytest.raises(RuntimeError), transaction.atomic(using=db_alias):
            tasks.record.enqueue("never")
            raise RuntimeError("rolled back")
    assert tasks.CALLS == ["inline"]


def test_django_keeps_its_connection_and_its_transaction(project_app: DjangoLinger, db_alias: str) -> None:
    """The borrowed connection is neither committed, rolled back nor closed by SQLAlchemy."""
    with transaction.atomic(using=db_alias):
        raw = connections[db_alias].connection
        tasks.record.enqueue("one")
        tasks.record.enqueue("two")
        assert connections[db_alias].connection is raw
        assert connections[db_alias].in_atomic_block
        Note.objects.using(db_alias).create(text="still usable")
    assert Note.objects.using(db_alias).count() == 1
    assert committed_jobs(project_app) == 2
