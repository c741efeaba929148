"""Web stacks (issue 12, "Framework integration"): ``aenqueue`` that never blocks the event loop,
the ASGI lifespan of ``linger_sched.contrib.asgi``, and the Flask extension of
``linger_sched.contrib.flask`` (settings from ``app.config``, ``flask linger ...``, a node in each
web process and after a fork). On SQLite, PostgreSQL and MariaDB. The example apps, started for
real, are in tests/acceptance/test_example_apps.py; the docs' code is checked here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from linger_sched import JobArgumentsError, JobOptionError, Linger, NaiveDatetimeError

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def work(app: Linger) -> Any:
    @app.task(name="web.work")
    def work(n: int) -> None:
        pass

    return work


@contextlib.contextmanager
def job_table_locked(app: Linger, db_name: str) -> Iterator[threading.Event]:
    """Another connection holds a lock that makes every insert into the job table wait until
    the yielded event is set (SQLite: the write lock; PostgreSQL: LOCK TABLE; MariaDB: LOCK TABLES)."""
    locked, release = threading.Event(), threading.Event()
    table = f"{app.settings.table_prefix}jobs"
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            engine = app.store.engine
            if db_name == "sqlite":
                with engine.begin():  # BEGIN IMMEDIATE: the database's write lock
                    locked.set()
                    release.wait(30)
            elif db_name == "postgresql":
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
                    locked.set()
                    release.wait(30)
            else:
                with engine.connect() as conn:
                    conn.exec_driver_sql(f"LOCK TABLES `{table}` WRITE")
                    locked.set()
                    release.wait(30)
                    conn.exec_driver_sql("UNLOCK TABLES")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            locked.set()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert locked.wait(10)
    assert not errors, errors
    try:
        yield release
    finally:
        release.set()
        t.join(10)


async def ticks_while(coro: Any, release: threading.Event, after: float = 0.5) -> tuple[Any, int, float]:
    """Run ``coro`` while a ticker counts 10 ms sleeps on the same loop; ``release`` is set
    ``after`` seconds in. Returns (result, ticks, seconds)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    timer = threading.Timer(after, release.set)  # not on the loop: a blocked loop must not hold the lock forever
    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.monotonic()
    timer.start()
    try:
        result = await coro
    finally:
        t.cancel()
        timer.cancel()
    return result, ticks, time.monotonic() - start


# -- aenqueue -------------------------------------------------------------------------------------
def test_aenqueue_waits_on_a_locked_table_without_blocking_the_loop(app: Linger, work: Any, db_name: str) -> None:
    async def sync_enqueue() -> int:
        return int(work.enqueue(1))  # the blocking call, for comparison

    with job_table_locked(app, db_name) as release:
        blocking_id, blocking_ticks, blocking_took = asyncio.run(ticks_while(sync_enqueue(), release))
    with job_table_locked(app, db_name) as release:
        job_id, ticks, took = asyncio.run(ticks_while(work.aenqueue(2), release))
    assert blocking_took >= 0.4 and blocking_ticks <= 2, (blocking_took, blocking_ticks)  # the loop stood still
    assert took >= 0.4, took  # it did wait for the lock ...
    assert ticks >= 15, ticks  # ... while the loop went on
    assert [(j.id, j.args) for j in app.testing.enqueued_jobs("web.work")] == [(blocking_id, [1]), (job_id, [2])]


def test_every_aenqueue_form_writes_what_its_sync_twin_writes(app: Linger, work: Any) -> None:
    at = app.clock.now() + timedelta(hours=1)

    async def scenario() -> list[int]:
        return [
            await work.aenqueue(1),
            await work.options(queue="mail", priority=5).aenqueue(2),
            await app.aenqueue(work, 3, run_at=at, unique_key="k3"),
            await app.aenqueue("web.work", n=4),
            await app.aenqueue(work, 3, unique_key="k3"),  # the key is held: the same job
            *await app.aenqueue_many(work, [(5,), {"n": 6}], queue="bulk"),
            *await work.aenqueue_many([(7,)]),
            *await work.options(priority=-1).aenqueue_many([(8,)]),
        ]

    ids = asyncio.run(scenario())
    assert ids[4] == ids[2] and len(set(ids)) == len(ids) - 1
    jobs = {j.id: j for j in app.jobs(limit=100)}
    assert len(jobs) == 8
    got = [(jobs[i].args, jobs[i].kwargs, jobs[i].queue, jobs[i].priority) for i in ids]
    assert got == [
        ([1], {}, "default", 0), ([2], {}, "mail", 5), ([3], {}, "default", 0), ([], {"n": 4}, "default", 0),
        ([3], {}, "default", 0), ([5], {}, "bulk", 0), ([], {"n": 6}, "bulk", 0), ([7], {}, "default", 0),
        ([8], {}, "default", -1),
    ]
    assert jobs[ids[2]].run_at == at and jobs[ids[2]].unique_key == "k3"


def test_aenqueue_checks_everything_in_the_caller_before_any_thread(app: Linger, work: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hops: list[Any] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)

    async def bad_calls() -> list[str]:
        errors = []
        for call in (
            lambda: work.aenqueue(1, priority="high"),
            lambda: work.aenqueue(),
            lambda: work.aenqueue(object()),
            lambda: app.aenqueue(work, 1, run_at=datetime(2030, 1, 1)),
            lambda: app.aenqueue(work, 1, delay=-5),
            lambda: work.options(queue="").aenqueue(1),
            lambda: app.aenqueue_many(work, [(1,), (object(),)]),
            lambda: app.aenqueue(work, 1, connection="not a connection"),
        ):
            try:
                await call()
            except (JobOptionError, JobArgumentsError, NaiveDatetimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        return errors

    errors = asyncio.run(bad_calls())
    assert len(errors) == 8, errors
    for expected, error in zip(["priority", "n", "JSON", "run_at", "delay", "queue", "JSON", "connection"], errors):
        assert expected in error, (expected, error)
    assert hops == [], "a bad call reached a thread"
    assert app.jobs() == []
    asyncio.run(work.aenqueue(1))
    assert len(hops) == 1 and len(app.jobs()) == 1


def test_aenqueue_writes_in_the_callers_transaction(app: Linger, work: Any) -> None:
    """``connection=`` passes through: rolled back, no job; committed, the job."""
    engine = sa.create_engine(app.settings.database_url)

    async def scenario(commit: bool) -> int:
        with engine.connect() as conn:
            job_id = await work.aenqueue(1, connection=conn)
            conn.commit() if commit else conn.rollback()
        return int(job_id)

    try:
        asyncio.run(scenario(False))
        assert app.jobs() == []
        kept = asyncio.run(scenario(True))
        assert [j.id for j in app.jobs()] == [kept]
    finally:
        engine.dispose()


# -- the ASGI lifespan (FastAPI / Starlette) --------------------------------------------------------
def test_the_lifespan_runs_a_node_with_the_app_and_stops_it(app: Linger) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from linger_sched.contrib.asgi import lifespan

    ran: list[int] = []
    halted: list[str] = []

    @app.task(name="web.async_work")
    async def async_work(n: int) -> None:
        await asyncio.sleep(0)
        ran.append(n)

    app.on_halt(lambda: halted.append("halt"))
    api = FastAPI(lifespan=lifespan(app, concurrency=2))

    @api.post("/work/{n}")
    async def post_work(n: int) -> dict[str, int]:
        return {"job": await async_work.aenqueue(n)}

    assert app.store.list_nodes() == []
    with TestClient(api) as client:
        nodes = app.store.list_nodes()
        assert [(n.id, n.pid) for n in nodes] == [(app.node_id, os.getpid())]
        job_id = client.post("/work/7").json()["job"]
        wait_for(lambda: app.get_job(job_id).state == "succeeded", what="the job to run on the lifespan's node")
        assert ran == [7] and halted == []
    assert halted == ["halt"]  # stopped gracefully with the app
    assert app.store.list_nodes() == [] and app._node is None


def test_the_lifespan_wraps_the_users_own_and_keeps_its_state(app: Linger) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from linger_sched.contrib.asgi import lifespan

    events: list[str] = []
    app.on_halt(lambda: events.append("node stopping"))

    @contextlib.asynccontextmanager
    async def mine(_app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append("my startup")
        yield {"pool": "my pool"}
        events.append("my shutdown")

    async def home(request: Request) -> JSONResponse:
        events.append(f"request: node running {app._node is not None}")
        return JSONResponse({"pool": request.state.pool})

    web = Starlette(routes=[Route("/", home)], lifespan=lifespan(app, wraps=mine))
    with TestClient(web) as client:
        events.append(f"started: {len(app.store.list_nodes())} node")
        assert client.get("/").json() == {"pool": "my pool"}
    # the node starts after the user's startup and stops before the user's shutdown, so tasks
    # may use what the user's lifespan made
    assert events == ["my startup", "started: 1 node", "request: node running True", "node stopping", "my shutdown"]


def test_the_lifespan_starts_and_stops_the_node_on_a_thread(app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    from linger_sched.contrib.asgi import running

    threads: dict[str, int] = {}
    real_start, real_stop = app.start, app.stop

    def start(*args: Any, **kwargs: Any) -> None:
        threads["start"] = threading.get_ident()
        time.sleep(0.3)  # a slow database: the loop must go on meanwhile
        real_start(*args, **kwargs)

    def stop(*args: Any, **kwargs: Any) -> None:
        threads["stop"] = threading.get_ident()
        time.sleep(0.3)
        real_stop(*args, **kwargs)

    monkeypatch.setattr(app, "start", start)
    monkeypatch.setattr(app, "stop", stop)

    async def scenario() -> tuple[int, int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async with running(app, grace=5) as running_app:
            assert running_app is app and app._node is not None
            during_start = ticks
        t.cancel()
        return threading.get_ident(), during_start, ticks - during_start

    loop_thread, during_start, during_stop = asyncio.run(scenario())
    assert threads["start"] != loop_thread and threads["stop"] != loop_thread
    assert during_start >= 10 and during_stop >= 10, (during_start, during_stop)
    assert app._node is None and app.store.list_nodes() == []


def test_a_node_that_cannot_start_fails_the_startup_with_its_error(tmp_path: Path, db_name: str) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from linger_sched.contrib.asgi import lifespan
    from linger_sched.errors import SchemaError

    if db_name != "sqlite":
        pytest.skip("the same on every database: no tables")
    jobs = Linger(f"sqlite:///{tmp_path / 'empty.db'}", auto_install=False)
    web = Starlette(lifespan=lifespan(jobs))
    with pytest.raises(SchemaError, match="db init"):
        with TestClient(web):
            pass
    assert jobs._node is None


# -- Flask: settings from app.config --------------------------------------------------------------
@pytest.fixture
def flask_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LINGER_* variable from the environment, not under the ``flask`` command, and a working
    directory of the test's own (no ./schedules.yaml of the repository, no ./linger.db)."""
    for k in list(os.environ):
        if k.startswith("LINGER_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "")  # put back after a test that runs FlaskGroup
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def flask_app(tmp_path: Path, **config: Any) -> Any:
    from flask import Flask, jsonify

    web = Flask("webtest", instance_path=str(tmp_path / "instance"))
    web.config.update(config)

    @web.get("/")
    def home() -> Any:
        return jsonify(pid=os.getpid())

    return web


def test_app_config_gives_every_setting(store: Any, db_url: str, prefix: str, flask_env: Path) -> None:
    from linger_sched.contrib.flask import LingerFlask, linger_for

    jobs = Linger()  # its own default is ./linger.db: the Flask config says otherwise
    web = flask_app(
        flask_env, LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix, LINGER_CONCURRENCY="3",
        LINGER_QUEUES=["mail", "sms"], LINGER_SHUTDOWN_GRACE=timedelta(seconds=5), LINGER_POLL_INTERVAL="0.5",
        LINGER_LEASE_TTL=20, LINGER_RENEW_INTERVAL="5s", LINGER_JOB_LEASE_TTL="1m", LINGER_KEEP_FINISHED=None,
        LINGER_MISFIRE_THRESHOLD="2m", LINGER_AUTO_INSTALL="false", LINGER_RUN_NODE=False,
    )
    LingerFlask(web, jobs)
    s = jobs.settings
    assert (s.database_url, s.table_prefix, s.concurrency, s.queues, s.shutdown_grace, s.poll_interval) == (
        db_url, prefix, 3, ("mail", "sms"), 5.0, 0.5)
    assert (s.lease_ttl, s.renew_interval, s.job_lease_ttl, s.keep_finished, s.misfire_threshold, s.auto_install) == (
        20.0, 5.0, 60.0, None, 120.0, False)
    assert linger_for(web) is jobs and web.extensions["linger_sched"].linger is jobs
    job_id = jobs.enqueue("web.anything", 1)
    assert store.get_job(job_id).task == "web.anything"  # in the database the Flask config names
    assert not (flask_env / "linger.db").exists()
    jobs.store.dispose()


@pytest.mark.parametrize("rate", ["25%", "0.25", 0.25, " 25% "])
def test_app_config_takes_the_environments_forms_of_a_rate_and_a_size(flask_env: Path, rate: Any) -> None:
    """The documented "25%" / "0.25" of LINGER_HEALTH_MAX_FAILURE_RATE, and a size as a string,
    go through the environment's parsers (they used to be refused)."""
    from linger_sched.contrib.flask import LingerFlask

    jobs = Linger()
    LingerFlask(flask_app(flask_env, LINGER_HEALTH_MAX_FAILURE_RATE=rate, LINGER_RESULT_MAX_BYTES="4096",
                          LINGER_RUN_NODE=False), jobs)
    assert (jobs.settings.health_max_failure_rate, jobs.settings.result_max_bytes) == (0.25, 4096)


def test_sqlalchemy_database_uri_is_the_database_when_no_linger_url_is_set(
        store: Any, db_url: str, db_name: str, prefix: str, flask_env: Path, tmp_path: Path) -> None:
    from linger_sched.contrib.flask import LingerFlask

    jobs = Linger(table_prefix=prefix)
    # Flask-SQLAlchemy puts a relative SQLite file in the instance folder: the same file here
    uri = "sqlite:///linger.db" if db_name == "sqlite" else db_url
    web = flask_app(flask_env, SQLALCHEMY_DATABASE_URI=uri)
    web.instance_path = str(tmp_path)  # the store fixture's file is tmp_path/linger.db
    LingerFlask(web, jobs)
    assert jobs.settings.database_url == (f"sqlite:///{tmp_path / 'linger.db'}" if db_name == "sqlite" else db_url)
    job_id = jobs.enqueue("web.anything", 1)
    assert store.get_job(job_id).task == "web.anything"
    jobs.store.dispose()


def test_a_linger_url_beats_sqlalchemy_database_uri(flask_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from linger_sched.contrib.flask import LingerFlask

    other = "postgresql://app@db.example/app"  # never connected to
    mine = f"sqlite:///{flask_env / 'jobs.db'}"
    cases = []
    web = flask_app(flask_env, SQLALCHEMY_DATABASE_URI=other, LINGER_DATABASE_URL=mine)
    cases.append(LingerFlask(web, Linger()).linger.settings.database_url)  # in app.config
    cases.append(LingerFlask(flask_app(flask_env, SQLALCHEMY_DATABASE_URI=other), Linger(mine)).linger.settings.database_url)
    monkeypatch.setenv("LINGER_DATABASE_URL", mine)
    cases.append(LingerFlask(flask_app(flask_env, SQLALCHEMY_DATABASE_URI=other), Linger()).linger.settings.database_url)
    assert cases == [mine, mine, mine]
    monkeypatch.delenv("LINGER_DATABASE_URL")
    # one Linger app, two Flask apps (an app factory in tests): each app's own URI, in turn
    jobs = Linger()
    LingerFlask(flask_app(flask_env, SQLALCHEMY_DATABASE_URI=other), jobs)
    assert jobs.settings.database_url == other
    LingerFlask(flask_app(flask_env, SQLALCHEMY_DATABASE_URI=mine), jobs)
    assert jobs.settings.database_url == mine


@pytest.mark.parametrize(("config", "key", "message"), [
    ({"LINGER_CONCURENCY": 4}, "LINGER_CONCURENCY", "unknown linger-sched setting (known: LINGER_DATABASE_URL"),
    ({"LINGER_CONCURRENCY": 0}, "LINGER_CONCURRENCY", "must be an integer from 1 to"),
    ({"LINGER_CONCURRENCY": "many"}, "LINGER_CONCURRENCY", "must be an integer from 1 to"),
    ({"LINGER_POLL_INTERVAL": "soon"}, "LINGER_POLL_INTERVAL", "'soon'"),
    ({"LINGER_POLL_INTERVAL": -1}, "LINGER_POLL_INTERVAL", "must be > 0"),
    ({"LINGER_HEALTH_MAX_FAILURE_RATE": "lots"}, "LINGER_HEALTH_MAX_FAILURE_RATE", "must be a share from 0 to 1"),
    ({"LINGER_HEALTH_MAX_FAILURE_RATE": "150%"}, "LINGER_HEALTH_MAX_FAILURE_RATE", "got '150%'"),
    ({"LINGER_HEALTH_MAX_FAILURE_RATE": True}, "LINGER_HEALTH_MAX_FAILURE_RATE", "got True"),
    ({"LINGER_TABLE_PREFIX": "1bad"}, "LINGER_TABLE_PREFIX", "1bad"),
    ({"LINGER_QUEUES": []}, "LINGER_QUEUES", "at least one queue"),
    ({"LINGER_RENEW_INTERVAL": 60}, "LINGER_RENEW_INTERVAL", "must be shorter than lease_ttl"),
    ({"LINGER_RUN_NODE": "maybe"}, "LINGER_RUN_NODE", "must be True or False, got 'maybe'"),
    ({"LINGER_AUTO_INSTALL": 2}, "LINGER_AUTO_INSTALL", "must be True or False"),
    ({"LINGER_DATABASE_URL": None}, "LINGER_DATABASE_URL", "must not be None"),
    ({"LINGER_DATABASE_URL": "oracle://scott:tiger@db/orcl"}, "LINGER_DATABASE_URL", "unsupported database 'oracle'"),
    ({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, "SQLALCHEMY_DATABASE_URI", "in-memory SQLite"),
])
def test_a_bad_setting_is_an_error_naming_its_key(flask_env: Path, config: dict[str, Any], key: str, message: str) -> None:
    from linger_sched.contrib.flask import LingerFlask
    from linger_sched.errors import ConfigError

    jobs = Linger()
    before = jobs.settings
    web = flask_app(flask_env, **config)
    with pytest.raises(ConfigError) as info:
        LingerFlask(web, jobs)
    text = str(info.value)
    assert text.startswith(f"app.config[{key!r}]: ") and message in text, text
    assert "tiger" not in text  # a password is masked
    assert jobs.settings == before and "linger_sched" not in web.extensions


def test_init_app_twice_on_one_flask_app_is_refused(flask_env: Path) -> None:
    from linger_sched.contrib.flask import LingerFlask
    from linger_sched.errors import LingerError

    web = flask_app(flask_env)
    ext = LingerFlask(web, Linger())
    with pytest.raises(LingerError, match="already initialized on Flask app 'webtest'"):
        ext.init_app(web)


# -- Flask: flask linger ... ----------------------------------------------------------------------
def test_flask_linger_runs_the_cli_on_the_flask_apps_jobs(store: Any, db_url: str, prefix: str, flask_env: Path) -> None:
    from linger_sched.contrib.flask import LingerFlask

    jobs = Linger()

    @jobs.task(name="web.cli_work")
    def cli_work(n: int) -> None:
        pass

    web = flask_app(flask_env, LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix)
    LingerFlask(web, jobs)
    job_id = cli_work.enqueue(5)
    runner = web.test_cli_runner()
    listed = runner.invoke(args=["linger", "jobs"])
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"^{job_id}\s+web\.cli_work\s+queued\s", listed.output, re.M), listed.output
    status = runner.invoke(args=["linger", "status"])
    assert status.exit_code == 0 and "jobs: queued 1," in status.output, status.output
    shown = runner.invoke(args=["linger", "jobs", "show", str(job_id), "--json"])
    assert shown.exit_code == 0 and '"args": [\n    5\n  ]' in shown.output, shown.output
    queued = runner.invoke(args=["linger", "enqueue", "web.cli_work", "--args", "[6]"])
    assert queued.exit_code == 0, queued.output
    assert [j.args for j in jobs.jobs()] == [[6], [5]]
    bad = runner.invoke(args=["linger", "enqueue", "web.nope"])
    assert bad.exit_code == 2 and "web.nope" in bad.output
    helped = runner.invoke(args=["linger", "--help"])
    assert all(c in helped.output for c in ("db", "jobs", "run", "schedules", "status", "worker"))
    assert not (flask_env / "linger.db").exists()
    jobs.store.dispose()


def test_flask_linger_suggests_flask_linger_with_the_same_database(flask_env: Path, tmp_path: Path) -> None:
    """Missing tables under ``flask linger --database URL``: the suggested command is the one to
    type there (``flask linger --database URL db init``), not a bare ``linger-sched db init``."""
    from linger_sched.contrib.flask import LingerFlask

    other = tmp_path / "other.db"
    web = flask_app(flask_env, LINGER_DATABASE_URL=f"sqlite:///{tmp_path / 'web.db'}")
    LingerFlask(web, Linger())
    result = web.test_cli_runner().invoke(args=["linger", "--database", f"sqlite:///{other}", "jobs"])
    assert result.exit_code == 1, result.output
    assert re.search(rf"run `\S+ linger --database sqlite:///{re.escape(str(other))} db init`", result.output), \
        result.output
    assert not other.exists()


def test_flask_linger_db_init_creates_the_tables_the_config_names(db_url: str, flask_env: Path) -> None:
    from linger_sched.contrib.flask import LingerFlask
    from linger_sched.store import Store

    prefix = f"tf{os.urandom(4).hex()}_"
    web = flask_app(flask_env, LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix)
    LingerFlask(web, Linger())
    check = Store(db_url, table_prefix=prefix)
    try:
        result = web.test_cli_runner().invoke(args=["linger", "db", "init"])
        assert result.exit_code == 0 and f"(prefix {prefix})" in result.output, result.output
        check.check_schema()  # raises when a table is missing
    finally:
        check.drop_schema()
        check.dispose()


def test_the_flask_command_loads_the_app_without_starting_its_node(store: Any, db_url: str, prefix: str,
                                                                    flask_env: Path) -> None:
    """``flask linger ...`` through Flask's own command group: the app (LINGER_RUN_NODE on) is
    loaded for a command, not served, so no node starts."""
    from click.testing import CliRunner
    from flask.cli import FlaskGroup

    from linger_sched.contrib.flask import LingerFlask

    jobs = Linger()
    made: list[Any] = []

    def create_app() -> Any:
        web = flask_app(flask_env, LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix, LINGER_RUN_NODE=True)
        LingerFlask(web, jobs)
        made.append(web)
        return web

    result = CliRunner().invoke(FlaskGroup(create_app=create_app), ["linger", "status"])
    assert result.exit_code == 0, result.output
    assert "nodes: 0" in result.output and made and jobs._node is None
    assert store.list_nodes() == []
    jobs.store.dispose()


# -- Flask: a node in each web process ----------------------------------------------------------
def web_with_node(app: Linger, tmp_path: Path, **config: Any) -> Any:
    from flask import jsonify

    from linger_sched.contrib.flask import LingerFlask

    web = flask_app(tmp_path, LINGER_DATABASE_URL=app.settings.database_url,
                    LINGER_TABLE_PREFIX=app.settings.table_prefix, LINGER_RUN_NODE=True, **config)

    @web.post("/work/<int:n>")
    def post_work(n: int) -> Any:
        return jsonify(job=app.enqueue("web.work", n))

    LingerFlask(web, app)
    return web


def test_run_node_starts_a_node_in_the_serving_process_and_stops_it_at_exit(app: Linger, work: Any,
                                                                             flask_env: Path) -> None:
    from linger_sched.contrib.flask import web_node

    web = web_with_node(app, flask_env)
    assert app._node is not None  # started by init_app: this process serves
    assert [(n.id, n.pid) for n in app.store.list_nodes()] == [(app.node_id, os.getpid())]
    client = web.test_client()
    job_id = client.post("/work/1").json["job"]
    wait_for(lambda: app.get_job(job_id).state == "succeeded", what="the web node to run the job")
    assert len(app.store.list_nodes()) == 1  # a request does not start another
    web_node(app).stop()  # what runs at interpreter exit
    assert app._node is None and app.store.list_nodes() == []


def test_a_process_that_only_loaded_the_app_starts_its_node_at_the_first_request(
        app: Linger, work: Any, flask_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")  # loaded by `flask ...` outside `flask run`
    web = web_with_node(app, flask_env)
    assert app._node is None and app.store.list_nodes() == []
    assert web.test_client().get("/").status_code == 200
    assert [(n.id, n.pid) for n in app.store.list_nodes()] == [(app.node_id, os.getpid())]


def test_a_node_that_cannot_start_at_a_request_is_logged_and_the_request_served(
        tmp_path: Path, flask_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, db_name: str) -> None:
    from linger_sched.contrib.flask import LingerFlask

    if db_name != "sqlite":
        pytest.skip("the same on every database: no tables")
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    jobs = Linger(f"sqlite:///{tmp_path / 'empty.db'}", auto_install=False)
    web = flask_app(flask_env, LINGER_RUN_NODE=True)
    LingerFlask(web, jobs)
    client = web.test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    failures = [r for r in caplog.records if getattr(r, "action", None) == "web_node_error"]
    assert len(failures) == 1 and "db init" in failures[0].getMessage()  # tried again later, not at every request
    assert jobs._node is None
    jobs.store.dispose()


def in_forked_child(fn: Any, timeout: float = 20.0) -> dict[str, Any] | None:
    """Run ``fn`` (returning a JSON-able dict) in a forked child that leaves at once after
    (``os._exit``, never the parent's test teardown); its dict, or None when it did not report
    within ``timeout`` (then it is killed)."""
    import json
    import select

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        out: dict[str, Any] = {}
        try:
            os.close(read_end)
            out = fn()
        except BaseException as exc:  # noqa: BLE001
            out = {"error": repr(exc)}
        finally:
            os.write(write_end, json.dumps(out).encode())
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        return json.loads(os.read(read_end, 1 << 20) or b"{}") if ready else None
    finally:
        os.close(read_end)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def test_after_a_fork_the_child_never_uses_its_parents_node_and_starts_its_own(app: Linger, work: Any,
                                                                               flask_env: Path, db_name: str) -> None:
    """A process with a running node forks (a server forking workers after loading the app):
    the child forgets the parent's node and connections, starts a node of its own at its first
    request, and at exit stops that one only; the parent's node, row and lease stay.

    A fork while another thread is inside C code that holds a lock (OpenSSL making a context
    for a new connection, SQLite's own lock table) leaves that lock taken in the child forever:
    the platform's rule for fork() in a process with threads, not linger-sched's. So a child that
    does not report in 20 s is killed and the fork tried again (three times at most). Not on
    SQLite at all: there any transaction in flight at the fork leaves its lock in SQLite's lock
    table of the child (no connection may cross a fork). The fork that matters there, a gunicorn
    master that preloads the app, runs no node in the master (test_example_apps.py)."""
    from linger_sched.contrib.flask import web_node

    if db_name == "sqlite":
        pytest.skip("SQLite's locks do not survive a fork with transactions in flight (see the docstring)")
    web = web_with_node(app, flask_env)
    parent_node = app.node_id
    wait_for(lambda: app.is_leader(), what="the parent's node to lead")

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {"inherited_node": app._node is not None}
        job_id = web.test_client().post("/work/2").json["job"]
        out["node"], out["pid"] = app.node_id, os.getpid()
        out["nodes"] = sorted(n.id for n in app.store.list_nodes())
        wait_for(lambda: app.get_job(job_id).state == "succeeded", what="the child's job")
        web_node(app).stop()  # what runs at the child's exit
        out["nodes_after_stop"] = sorted(n.id for n in app.store.list_nodes())
        return out

    for _attempt in range(3):
        data = in_forked_child(child)
        if data is not None:
            break
        for n in app.store.list_nodes():  # a stuck child's node row
            if n.id != parent_node:
                app.store.remove_node(n.id)
    assert data is not None, "the forked child was stuck three times"
    assert "error" not in data, data
    assert data["inherited_node"] is False
    assert data["node"] != parent_node and f":{data['pid']}:" in data["node"]
    assert data["nodes"] == sorted([parent_node, data["node"]])
    assert data["nodes_after_stop"] == [parent_node]
    # the parent's node goes on: its row, its leadership, its threads
    assert app.node_id == parent_node and app._node is not None
    assert [n.id for n in app.store.list_nodes()] == [parent_node] and app.is_leader()
    job_id = web.test_client().post("/work/3").json["job"]
    wait_for(lambda: app.get_job(job_id).state == "succeeded", what="the parent's job")


def test_a_node_that_cannot_start_in_a_serving_process_fails_init_app(tmp_path: Path, flask_env: Path, db_name: str) -> None:
    """A worker whose node cannot start (here: no tables) does not boot: the misconfiguration is
    seen at once, with its error (gunicorn then reports the worker failed to boot)."""
    from linger_sched.contrib.flask import LingerFlask
    from linger_sched.errors import SchemaError

    if db_name != "sqlite":
        pytest.skip("the same on every database: no tables")
    jobs = Linger(f"sqlite:///{tmp_path / 'empty.db'}", auto_install=False)
    with pytest.raises(SchemaError, match="db init"):
        LingerFlask(flask_app(flask_env, LINGER_RUN_NODE=True), jobs)
    assert jobs._node is None
    jobs.store.dispose()


# -- every file of the examples is on its page (the copies are checked verbatim, with every other
# example of every page, by tests/acceptance/test_docs_examples.py) ---------------------------------
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n")


@pytest.mark.parametrize(("doc", "example_dir"), [("docs/flask.md", "examples/flask_app"),
                                                  ("docs/fastapi.md", "examples/fastapi_app")])
def test_the_docs_show_every_file_of_the_example(doc: str, example_dir: str) -> None:
    shown = {spec.partition("::")[0] for spec in EXAMPLE.findall((ROOT / doc).read_text(encoding="utf-8"))}
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / example_dir).glob("*.py") if p.name != "__init__.py"}
    assert files and files <= shown, f"not on {doc}: {sorted(files - shown)}"
