"""Transactional enqueue (issue 12): ``enqueue(..., connection=)`` / ``session=`` write the job
row inside the caller's transaction; commit makes the job, rollback leaves none. On every
database."""

from __future__ import annotations

import select
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from linger_sched import JobOptionError, Linger

pytestmark = pytest.mark.usefixtures("db_name")


def _engine(app: Linger) -> sa.Engine:
    """The caller's own engine: another pool, the same database (as a web app's would be)."""
    return sa.create_engine(app.settings.database_url)


@pytest.fixture
def ran(app: Linger) -> list[int]:
    got: list[int] = []

    @app.task(name="tx.record")
    def record(n: int) -> None:
        got.append(n)

    return got


def test_commit_makes_the_job_and_it_runs_once(app: Linger, ran: list[int]) -> None:
    engine = _engine(app)
    with engine.connect() as conn:
        job_id = app.enqueue("tx.record", 1, connection=conn)
        ids = app.enqueue_many("tx.record", [(2,), (3,)], connection=conn)
        conn.commit()
    assert [j.id for j in app.testing.enqueued_jobs("tx.record")] == [job_id, *ids]
    app.testing.run_pending()
    app.testing.run_pending()
    assert sorted(ran) == [1, 2, 3]
    assert app.store.count_by_state() == {"succeeded": 3}
    engine.dispose()


def test_rollback_leaves_no_job(app: Linger, ran: list[int]) -> None:
    engine = _engine(app)
    with engine.connect() as conn:
        app.enqueue("tx.record", 1, connection=conn)
        app.enqueue_many("tx.record", [(2,), (3,)], connection=conn)
        conn.rollback()
    assert app.testing.enqueued_jobs() == []
    assert app.testing.run_pending().jobs == []
    assert ran == []
    assert app.store.count_by_state() == {}
    engine.dispose()


def test_an_exception_in_the_callers_block_rolls_the_job_back(app: Linger) -> None:
    engine = _engine(app)
    with pytest.raises(RuntimeError, match="order failed"):
        with engine.begin() as conn:
            app.enqueue("tx.record", 1, connection=conn)
            raise RuntimeError("order failed")
    assert app.testing.enqueued_jobs() == []
    engine.dispose()


def test_orm_session_commit_and_rollback(app: Linger, ran: list[int]) -> None:
    engine = _engine(app)
    with Session(engine) as session:
        app.enqueue("tx.record", 1, session=session)
        session.rollback()
        app.enqueue("tx.record", 2, session=session)
        app.enqueue_many("tx.record", [(3,)], session=session)
        session.commit()
    app.testing.run_pending()
    assert sorted(ran) == [2, 3]
    engine.dispose()


def test_uncommitted_job_is_invisible_to_workers(app: Linger, ran: list[int], db_name: str) -> None:
    if db_name == "sqlite":
        pytest.skip("SQLite has one writer: a worker's claim waits for the caller's commit")
    engine = _engine(app)
    with engine.connect() as conn:
        job_id = app.enqueue("tx.record", 7, connection=conn)
        assert app.testing.run_pending().jobs == []  # another connection: nothing to see yet
        conn.commit()
    assert [j.id for j in app.testing.run_pending().jobs] == [job_id]
    assert ran == [7]
    engine.dispose()


def test_unique_key_inside_the_callers_transaction(app: Linger) -> None:
    engine = _engine(app)
    with engine.connect() as conn:
        first = app.enqueue("tx.record", 1, unique_key="order-1", connection=conn)
        again = app.enqueue("tx.record", 2, unique_key="order-1", connection=conn)
        assert again == first  # the same transaction sees its own row
        conn.rollback()
    # rolled back: the key is free again, and the next holder is a new job
    with engine.connect() as conn:
        second = app.enqueue("tx.record", 3, unique_key="order-1", connection=conn)
        conn.commit()
    assert app.get_job(second).args == [3]  # (SQLite may reuse the rolled-back id)
    # committed: an enqueue outside the transaction, and one inside another, get that job
    assert app.enqueue("tx.record", 4, unique_key="order-1") == second
    with engine.connect() as conn:
        assert app.enqueue("tx.record", 5, unique_key="order-1", connection=conn) == second
        conn.commit()
    assert [j.id for j in app.testing.enqueued_jobs()] == [second]
    engine.dispose()


def test_a_connection_to_another_database_is_refused(app: Linger, db_name: str, tmp_path: Path) -> None:
    url = sa.make_url(app.settings.database_url)
    if db_name == "sqlite":
        other = url.set(database=str(tmp_path / "other.db"))
    else:
        other = url.set(database="postgres" if db_name == "postgresql" else "mysql")
    engine = sa.create_engine(other)
    with engine.connect() as conn:
        with pytest.raises(JobOptionError, match="another database") as info:
            app.enqueue("tx.record", 1, connection=conn)
        assert str(other.database) in str(info.value)
    engine.dispose()
    assert app.testing.enqueued_jobs() == []


def test_bad_connection_arguments_are_clear_errors(app: Linger) -> None:
    engine = _engine(app)
    with pytest.raises(JobOptionError, match="connection= must be a SQLAlchemy Connection"):
        app.enqueue("tx.record", 1, connection=engine)
    with pytest.raises(JobOptionError, match="session= must be a SQLAlchemy ORM Session"):
        app.enqueue("tx.record", 1, session=object())
    with engine.connect() as conn, Session(engine) as session:
        with pytest.raises(JobOptionError, match="connection= or session=, not both"):
            app.enqueue_many("tx.record", [(1,)], connection=conn, session=session)
    engine.dispose()


def test_a_task_parameter_named_connection_is_ambiguous(app: Linger) -> None:
    @app.task(name="tx.copy")
    def copy(connection: str) -> None: ...

    with pytest.raises(JobOptionError, match="connection"):
        copy.enqueue(connection="db1")
    job_id = app.with_options(copy).enqueue(connection="db1")  # the task's own argument
    assert app.get_job(job_id).kwargs == {"connection": "db1"}


def test_inline_mode_runs_a_session_job_after_the_commit(app: Linger, ran: list[int]) -> None:
    engine = _engine(app)
    with app.testing.inline():
        with Session(engine) as session:
            app.enqueue("tx.record", 1, session=session)
            assert ran == []
            session.rollback()
        assert ran == []
        with Session(engine) as session:
            app.enqueue("tx.record", 2, session=session)
            assert ran == []
            session.commit()
            assert ran == [2]  # SQLAlchemy's after_commit: the row is visible to the run
        # a Connection has no after-commit event: its jobs wait for run_pending()
        with engine.connect() as conn:
            app.enqueue("tx.record", 3, connection=conn)
            conn.commit()
        assert ran == [2]
        app.testing.run_pending()
        assert ran == [2, 3]
    engine.dispose()


def test_postgresql_notify_goes_out_with_the_commit(app: Linger, db_name: str) -> None:
    if db_name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    import psycopg

    url = sa.make_url(app.settings.database_url)
    listener = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True)
    listener.execute(f'LISTEN "{app.store.channel}"')
    heard = threading.Event()

    def notified(timeout: float) -> bool:
        if select.select([listener.fileno()], [], [], timeout)[0]:
            return any(True for _ in listener.notifies(timeout=0.1, stop_after=1))
        return False

    engine = _engine(app)
    with engine.connect() as conn:
        app.enqueue("tx.record", 1, connection=conn)
        if notified(0.3):
            heard.set()
        assert not heard.is_set(), "NOTIFY went out before the caller's commit"
        conn.commit()
    assert notified(5.0), "no NOTIFY after the commit"
    listener.close()
    engine.dispose()
