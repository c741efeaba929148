"""Scheduler hardening, on every database with a fake clock: the loop survives every exception,
a broken schedule does not stop the others, huge catch-up gaps are counted exactly, no due
occurrence vanishes (resume, spec change, re-enable), and a node never disables what another
live node declares."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import linger_sched.app as app_module
from linger_sched import FakeClock, Linger
from linger_sched.cli import main
from linger_sched.errors import StoreError
from linger_sched.scheduler import Scheduler, TickReport


def occurrences(app: Linger, name: str) -> list[tuple[datetime, str, int, str | None]]:
    rows = app.store.list_jobs(schedule_name=name, limit=0, newest_first=False)
    return sorted((j.scheduled_for, j.state, j.occurrences, j.reason) for j in rows)


def scheduler(app: Linger) -> Scheduler:
    s = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    return s


def set_row(app: Linger, name: str, **values: Any) -> None:
    """Write schedule columns directly, as an older version or an operator might have."""
    t = app.store.t.schedules
    with app.store.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.name == name).values(**values))


def info(app: Linger, name: str) -> Any:
    return {i.name: i for i in app.schedules()}[name]


@pytest.fixture
def peer(db_url: str, prefix: str, clock: FakeClock, app: Linger) -> Iterator[Linger]:
    """A second app (its own registry) on the same database and tables as ``app``."""
    b = Linger(db_url, table_prefix=prefix, clock=clock)
    yield b
    b.store.dispose()


def run_cli(db_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app_module, "_default", None)
    for k in [k for k in __import__("os").environ if k.startswith("LINGER_")]:
        monkeypatch.delenv(k)
    result = CliRunner().invoke(main, [*args, "--database", db_url], env={"LINGER_TABLE_PREFIX": prefix})
    default = app_module._default
    if default is not None and default._store is not None:
        default._store.dispose()
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


# -- 4. the loop survives every exception -------------------------------------------------
def test_run_survives_any_exception_logs_it_with_traceback_and_backs_off(
    app: Linger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = app.new_scheduler()
    stop = threading.Event()
    calls = 0

    def tick() -> TickReport:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise [OverflowError("date value out of range"), ValueError("bad JSON"), KeyError("x"), ZeroDivisionError()][calls - 1]
        stop.set()
        return TickReport()

    waits: list[float] = []
    real_wait = clock.wait

    def wait(seconds: float, ev: threading.Event | None = None) -> bool:
        waits.append(seconds)
        return real_wait(seconds, ev)

    s.tick = tick  # type: ignore[method-assign]
    clock.wait = wait  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="linger_sched.scheduler"):
        s.run(stop)  # returns once the fifth tick sets stop: the first four did not kill it
    assert calls == 5
    tick_s = app.settings.tick_interval
    assert waits[:4] == [tick_s, 2 * tick_s, 4 * tick_s, min(10.0, 8 * tick_s)]  # doubling, capped
    errors = [r for r in caplog.records if getattr(r, "action", None) == "tick_error"]
    assert len(errors) == 4
    assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in errors)
    assert "OverflowError" in errors[0].getMessage() and "date value out of range" in errors[0].getMessage()


def test_a_failing_tick_says_what_it_was_doing_and_the_next_one_works(
    app: Linger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="beat", every="10s")
    def beat() -> None: ...

    s = scheduler(app)
    real = app.store.due_schedules
    failed = []

    def due_schedules(*a: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(1)
            raise RuntimeError("driver bug")
        return real(*a, **kw)

    app.store.due_schedules = due_schedules  # type: ignore[method-assign]
    stop = threading.Event()
    real_wait = clock.wait
    waits = []

    def wait(seconds: float, ev: threading.Event | None = None) -> bool:
        waits.append(seconds)
        if len(waits) == 2:
            stop.set()
        return real_wait(seconds, ev)

    clock.wait = wait  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="linger_sched.scheduler"):
        s.run(stop)
    (error,) = [r for r in caplog.records if getattr(r, "action", None) == "tick_error"]
    assert "reading due schedules" in error.getMessage() and "driver bug" in error.getMessage()
    assert len(occurrences(app, "beat")) == 1  # the tick after the failure fired it


# -- 5. one bad schedule does not stop the others -------------------------------------------
BROKEN_ROWS = {
    "corrupt options": ({"options": "{not json"}, "options"),
    "options not an object": ({"options": "[1, 2]"}, "options"),
    "priority beyond 32 bits": ({"options": json.dumps({"priority": 2**31})}, "priority"),
    "queue longer than the column": ({"options": json.dumps({"queue": "q" * 65})}, "queue"),
    "spec that no longer parses": ({"spec": "61 * * * *"}, "61"),
    # (specs raises OverflowError, or a SpecError naming the year range)
    "next fire time past year 9999": ({"spec": "every:252460800000s"}, ("OverflowError", "9999")),
}


@pytest.mark.parametrize("kind", list(BROKEN_ROWS))
def test_a_broken_schedule_row_is_marked_and_the_others_keep_firing(
    app: Linger, clock: FakeClock, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="good", every="10s", overlap="allow")
    def good() -> None: ...

    @app.task(name="bad", every="10s", overlap="allow")
    def bad() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()  # both fire at their anchor
    values, message = BROKEN_ROWS[kind]
    set_row(app, "bad", **values)
    with caplog.at_level(logging.ERROR, logger="linger_sched.scheduler"):
        for k in range(1, 6):  # 50 s: inside the first backoff (60 s)
            clock.advance(10)
            s.tick()
    assert [o[0] for o in occurrences(app, "good")] == [t0 + timedelta(seconds=10 * k) for k in range(6)]
    assert [o[0] for o in occurrences(app, "bad")] == [t0]
    row = app.store.get_schedule("bad")
    assert row.error is not None and any(m in row.error for m in ((message,) if isinstance(message, str) else message)), row.error
    assert row.retry_from == t0 + timedelta(seconds=10)  # its first fire time not accounted for
    schedule_errors = [r for r in caplog.records if getattr(r, "action", None) == "schedule_error"]
    assert len(schedule_errors) == 1, "retried in a hot loop"  # once, not once per tick
    i = info(app, "bad")
    assert i.error == row.error and i.error_since == t0 + timedelta(seconds=10)
    assert info(app, "good").error is None
    st = app.status()
    assert [(e.name, e.error) for e in st.schedule_errors] == [("bad", row.error)]


def test_a_marked_schedule_is_retried_with_a_doubling_backoff_and_recovers_on_a_new_definition(
    app: Linger, peer: Linger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="bad", every="10s", overlap="allow")
    def bad() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    set_row(app, "bad", options="{not json")
    with caplog.at_level(logging.ERROR, logger="linger_sched.scheduler"):
        for _ in range(60 * 8):  # 8 minutes, one tick a second
            clock.advance(1)
            s.tick()
    tries = [r.created for r in caplog.records if getattr(r, "action", None) == "schedule_error"]
    # first failure at t0+10 s, retries 60 s, 60 s, 120 s, 240 s later
    assert len(tries) == 4, len(tries)
    row = app.store.get_schedule("bad")
    assert row.error is not None and row.next_run_at is not None
    assert row.next_run_at == t0 + timedelta(seconds=10 + 60 + 60 + 120 + 240)
    # a new deployment declares it (the stored options differ from the corrupt row): cleared,
    # and the fire times missed meanwhile are accounted for by the misfire policy (coalesce)
    peer.task(name="bad", every="10s", overlap="allow")(lambda: None)
    report = peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    assert report["changed"] == []
    row = app.store.get_schedule("bad")
    assert (row.error, row.error_since, row.retry_from) == (None, None, None)
    assert row.next_run_at == t0 + timedelta(seconds=10)
    clock.advance(0.5)
    s.tick()
    occ = occurrences(app, "bad")
    assert [o[:3] for o in occ] == [(t0, "queued", 1), (t0 + timedelta(seconds=480), "queued", 48)]


def _reject_inserts_of(store: Any, schedule: str) -> list[str]:
    """A trigger on this test's own job table: the database rejects occurrences of ``schedule``
    (as PostgreSQL and MariaDB reject a value too long or out of range). Returns cleanup SQL."""
    jobs = store.t.jobs.name
    name = f"{store.prefix}reject"
    dialect = store.engine.dialect.name
    with store.engine.begin() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {jobs} WHEN NEW.schedule_name = '{schedule}' "
                "BEGIN SELECT RAISE(ABORT, 'value too long for type character varying(64)'); END"
            )
            return []
        if dialect == "postgresql":
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.schedule_name = '{schedule}' THEN "
                "RAISE EXCEPTION 'value too long for type character varying(64)' USING ERRCODE = '22001'; "
                "END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(f"CREATE TRIGGER {name} BEFORE INSERT ON {jobs} FOR EACH ROW EXECUTE FUNCTION {name}()")
            return [f"DROP TRIGGER IF EXISTS {name} ON {jobs}", f"DROP FUNCTION IF EXISTS {name}()"]
        conn.exec_driver_sql(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {jobs} FOR EACH ROW BEGIN "
            f"IF NEW.schedule_name = '{schedule}' THEN "
            "SIGNAL SQLSTATE '22001' SET MESSAGE_TEXT = 'Data too long for column queue', MYSQL_ERRNO = 1406; "
            "END IF; END"
        )
        return []


def test_a_schedule_the_database_rejects_is_isolated_from_its_batch(app: Linger, clock: FakeClock) -> None:
    """materialize() of the batch fails on one schedule's values: the batch is retried in parts,
    the good schedules commit, the rejected one is identified and marked."""
    for n in ("a", "b", "bad", "c", "d"):
        app.task(name=n, every="10s", overlap="allow")(lambda: None)
    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    cleanup = _reject_inserts_of(app.store, "bad")
    try:
        calls = []
        real = app.store.materialize

        def materialize(plans: Any, **kw: Any) -> Any:
            calls.append([p.name for p in plans])
            return real(plans, **kw)

        app.store.materialize = materialize  # type: ignore[method-assign]
        clock.advance(10)
        report = s.tick()
        assert report.jobs == 4
        for n in ("a", "b", "c", "d"):
            assert [o[0] for o in occurrences(app, n)] == [t0, t0 + timedelta(seconds=10)], n
        assert [o[0] for o in occurrences(app, "bad")] == [t0]
        assert "too long" in (app.store.get_schedule("bad").error or "").lower()
        assert sorted(calls[0]) == ["a", "b", "bad", "c", "d"] and len(calls) <= 1 + 2 * 3  # a bisection, not one by one
        calls.clear()
        clock.advance(10)
        assert s.tick().jobs == 4 and len(calls) == 1  # the marked one waits for its backoff
    finally:
        with app.store.engine.begin() as conn:
            for sql in cleanup:
                conn.exec_driver_sql(sql)


def test_a_lost_connection_during_materialize_marks_nothing(app: Linger, clock: FakeClock) -> None:
    app.task(name="a", every="10s")(lambda: None)
    s = scheduler(app)
    s.tick()

    def materialize(plans: Any, **kw: Any) -> Any:
        orig = sa.exc.OperationalError("INSERT ...", None, Exception("server closed the connection unexpectedly"))
        orig.connection_invalidated = True
        raise StoreError("connection lost") from orig

    app.store.materialize = materialize  # type: ignore[method-assign]
    clock.advance(10)
    with pytest.raises(StoreError):
        s.tick()  # left to the run loop's backoff
    assert app.store.get_schedule("a").error is None


# -- 6. huge catch-up gaps are counted exactly ------------------------------------------------
@pytest.mark.parametrize("misfire", ["coalesce", "all"])
def test_every_second_schedule_three_days_down(app: Linger, clock: FakeClock, misfire: str) -> None:
    @app.task(name="sec", every="1s", misfire=misfire, max_catch_up=5, overlap="allow")
    def sec() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(days=3, seconds=0.5))
    s.tick()
    n = 3 * 86400  # fire times t0+1s ... t0+259200s
    at = lambda k: t0 + timedelta(seconds=k)
    occ = [o[:3] for o in occurrences(app, "sec")]
    if misfire == "coalesce":
        assert occ == [(t0, "queued", 1), (at(n), "queued", n)]
    else:
        assert occ == [(t0, "queued", 1), (at(1), "skipped", n - 5)] + [(at(n - 4 + k), "queued", 1) for k in range(5)]
    assert app.store.get_schedule("sec").next_run_at == at(n + 1)


# -- 7. occurrences that vanish -----------------------------------------------------------------
def test_resume_of_a_schedule_that_is_not_paused_changes_nothing(app: Linger, clock: FakeClock) -> None:
    @app.task(name="p", every="1m", overlap="allow")
    def p() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(minutes=5, seconds=30))  # the leader was down: 5 occurrences due
    before = app.store.get_schedule("p")
    assert app.resume("p") is False
    assert app.store.get_schedule("p") == before
    s.tick()
    assert [o[:3] for o in occurrences(app, "p")] == [(t0, "queued", 1), (t0 + timedelta(minutes=5), "queued", 5)]


def test_resume_records_the_paused_period_as_one_skipped_row(app: Linger, clock: FakeClock) -> None:
    @app.task(name="p", every="1m", overlap="allow")
    def p() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    app.pause("p")
    clock.advance(timedelta(minutes=5, seconds=1))
    s.tick()
    assert app.resume("p") is True
    occ = occurrences(app, "p")
    assert [o[:3] for o in occ] == [(t0, "queued", 1), (t0 + timedelta(minutes=1), "skipped", 5)]
    assert "paused" in (occ[1][3] or "")
    row = app.store.get_schedule("p")
    assert (row.paused, row.next_run_at) == (False, t0 + timedelta(minutes=6))
    clock.advance(59)
    s.tick()
    assert occurrences(app, "p")[-1][:3] == (t0 + timedelta(minutes=6), "queued", 1)


def test_a_short_pause_keeps_the_cadence_and_records_nothing(app: Linger, clock: FakeClock) -> None:
    @app.task(name="p", every="1m", overlap="allow")
    def p() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    app.pause("p")
    clock.advance(30)
    assert app.resume("p") is True
    assert app.store.get_schedule("p").next_run_at == t0 + timedelta(minutes=1)
    assert len(occurrences(app, "p")) == 1


def test_spec_change_after_downtime_records_the_old_specs_due_occurrences(
    app: Linger, peer: Linger, clock: FakeClock
) -> None:
    @app.task(name="r", cron="0 * * * *")
    def r() -> None: ...

    t0 = clock.now()
    scheduler(app).tick()
    clock.advance(timedelta(hours=3, minutes=20))  # down: 01:00, 02:00, 03:00 of the old spec are due
    peer.task(name="r", cron="*/15 * * * *")(lambda: None)
    report = peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    assert report["changed"] == ["r"]
    occ = occurrences(app, "r")
    assert [o[:3] for o in occ] == [(t0 + timedelta(hours=1), "skipped", 3)]
    assert "spec changed" in (occ[0][3] or "")
    assert app.store.get_schedule("r").next_run_at == t0 + timedelta(hours=3, minutes=30)


def test_spec_change_without_due_occurrences_records_nothing(app: Linger, peer: Linger, clock: FakeClock) -> None:
    @app.task(name="r", cron="0 * * * *")
    def r() -> None: ...

    scheduler(app).tick()
    clock.advance(timedelta(minutes=20))
    peer.task(name="r", cron="*/15 * * * *")(lambda: None)
    peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    assert occurrences(app, "r") == []


def test_spec_change_racing_a_leader_accounts_each_occurrence_once(
    app: Linger, peer: Linger, clock: FakeClock
) -> None:
    """The leader (old code) materializes the old spec's due occurrences between the syncing
    node's read and its write: the sync's compare-and-set fails, it re-reads, and nothing is
    counted twice."""
    @app.task(name="r", every="1m", overlap="allow")
    def r() -> None: ...

    t0 = clock.now()
    leader = scheduler(app)
    leader.tick()
    clock.advance(timedelta(minutes=3, seconds=10))
    peer.task(name="r", every="2m", overlap="allow")(lambda: None)
    syncing = peer.new_scheduler()
    real = peer.store.load_schedules
    raced = []

    def load_schedules(*a: Any, **kw: Any) -> Any:
        rows = real(*a, **kw)
        if not raced:
            raced.append(1)
            leader.tick()  # after the read, before the write
        return rows

    peer.store.load_schedules = load_schedules  # type: ignore[method-assign]
    syncing.sync(list(peer.registry.schedules.values()))
    occ = [o[:3] for o in occurrences(app, "r")]
    assert occ == [(t0, "queued", 1), (t0 + timedelta(minutes=3), "queued", 3)]


def test_reenabling_a_disabled_schedule_records_the_disabled_period(
    app: Linger, peer: Linger, clock: FakeClock, db_url: str, prefix: str
) -> None:
    @app.task(name="s", every="1m", overlap="allow")
    def s_() -> None: ...

    t0 = clock.now()
    scheduler(app).tick()
    report = peer.new_scheduler().sync([])  # a deployment without it, no other node alive
    assert report["disabled"] == ["s"]
    clock.advance(timedelta(minutes=10, seconds=5))
    again = Linger(db_url, table_prefix=prefix, clock=clock)
    try:
        again.task(name="s", every="1m", overlap="allow")(lambda: None)
        report = again.new_scheduler().sync(list(again.registry.schedules.values()))
        assert report["enabled"] == ["s"]
    finally:
        again.store.dispose()
    occ = occurrences(app, "s")
    assert [o[:3] for o in occ] == [(t0, "queued", 1), (t0 + timedelta(minutes=1), "skipped", 10)]
    assert "disabled" in (occ[1][3] or "")
    assert app.store.get_schedule("s").next_run_at == t0 + timedelta(minutes=11)


# -- 17. a node never disables what another live node declares ---------------------------------
def _register(app: Linger, node: str, clock: FakeClock) -> None:
    app.store.register_node(
        node, host="h", pid=1, roles="scheduler,worker", registry_hash=app.registry.hash(), version="t",
        now=clock.now(), schedules=sorted(app.registry.schedules),
    )


def test_a_node_does_not_disable_what_a_live_node_declares(
    app: Linger, peer: Linger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    for n in ("s1", "s2"):
        app.task(name=n, every="1m")(lambda: None)
    peer.task(name="s1", every="1m")(lambda: None)
    _register(app, "node-a", clock)
    assert scheduler(app) is not None
    _register(peer, "node-b", clock)
    report = peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    assert report["disabled"] == []
    assert app.store.get_schedule("s2").enabled is True
    # node A stops heartbeating; B keeps going
    for _ in range(12):
        clock.advance(10)
        peer.store.heartbeat_node("node-b", now=clock.now())
    with caplog.at_level(logging.WARNING, logger="linger_sched.scheduler"):
        report = peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    assert report["disabled"] == ["s2"]
    assert app.store.get_schedule("s2").enabled is False
    assert app.store.get_schedule("s1").enabled is True
    (warning,) = [r for r in caplog.records if getattr(r, "action", None) == "schedule_disabled"]
    assert warning.levelno == logging.WARNING and "s2" in warning.getMessage()
    i = info(app, "s2")
    assert (i.enabled, i.disabled_reason) == (False, "not declared")


def test_the_leader_disables_a_schedule_once_the_last_node_declaring_it_is_gone(
    app: Linger, peer: Linger, clock: FakeClock
) -> None:
    for n in ("s1", "s2"):
        app.task(name=n, every="1m", overlap="allow")(lambda: None)
    peer.task(name="s1", every="1m", overlap="allow")(lambda: None)
    _register(app, "node-a", clock)
    scheduler(app)
    _register(peer, "node-b", clock)
    b = scheduler(peer)
    assert b.tick().leader
    for _ in range(6):  # both nodes alive: s2 keeps firing
        clock.advance(10)
        for node, a in (("node-a", app), ("node-b", peer)):
            a.store.heartbeat_node(node, now=clock.now())
        b.tick()
    assert app.store.get_schedule("s2").enabled is True
    app.store.remove_node("node-a")  # node A stopped
    for _ in range(30):
        clock.advance(10)
        peer.store.heartbeat_node("node-b", now=clock.now())
        b.tick()
    row = app.store.get_schedule("s2")
    assert row.enabled is False and row.disabled_reason == "not declared"
    assert app.store.get_schedule("s1").enabled is True


def test_a_declared_disabled_schedule_is_not_reported_as_undeclared(app: Linger, clock: FakeClock) -> None:
    app.task(name="off", every="1m", enabled=False)(lambda: None)
    scheduler(app)
    i = info(app, "off")
    assert (i.enabled, i.disabled_reason) == (False, "enabled: false")


# -- the CLI shows it ------------------------------------------------------------------------------
def test_cli_schedules_and_status_show_errors_and_undeclared(
    app: Linger, peer: Linger, clock: FakeClock, db_url: str, prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in ("good", "bad", "gone"):
        app.task(name=n, every="10s", overlap="allow")(lambda: None)
    s = scheduler(app)
    s.tick()
    peer.task(name="good", every="10s", overlap="allow")(lambda: None)
    peer.task(name="bad", every="10s", overlap="allow")(lambda: None)
    peer.new_scheduler().sync(list(peer.registry.schedules.values()))
    set_row(app, "bad", spec="61 * * * *")
    clock.advance(10)
    s.tick()
    out = run_cli(db_url, prefix, tmp_path, monkeypatch, "schedules")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip() and not line.startswith(" ")}
    assert rows["good"][1] == "active" and rows["bad"][1] == "error" and rows["gone"][1] == "disabled"
    assert "no live node declares it" in out
    assert "61" in out  # the error message is shown
    data = {s["name"]: s for s in json.loads(run_cli(db_url, prefix, tmp_path, monkeypatch, "schedules", "--json"))}
    assert (data["good"]["state"], data["bad"]["state"], data["gone"]["state"]) == ("active", "error", "disabled")
    assert data["gone"]["disabled_reason"] == "not declared" and "61" in data["bad"]["error"]
    out = run_cli(db_url, prefix, tmp_path, monkeypatch, "status")
    assert "bad" in out and "error" in out
