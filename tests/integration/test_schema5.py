"""Schema 5 on every database: a task's result, its progress, waiting for a job, cancelling a
running job, and schedules created at runtime (issue 12).

Each test needs the feature it is about to pass: the columns (``result``, ``progress``,
``progress_message``, ``cancel_requested``, ``schedules.source``), the finish batch that writes
results, the throttled progress writes, the cancel request read with the lease extension, and the
runtime schedule API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from linger_sched import (
    ConfigError,
    FakeClock,
    JobCancelled,
    JobNotFoundError,
    JobStateError,
    Linger,
    LingerError,
    ScheduleNotFoundError,
    ScheduleStateError,
    WaitTimeout,
    current_job,
)
from linger_sched.store import Store
from linger_sched.store.rows import PROGRESS_MESSAGE_CAP
from linger_sched.worker import Worker

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def truth(store: Store) -> dict[tuple[str, str], int]:
    j = store.t.jobs
    with store.engine.connect() as c:
        return {(q, s): n for q, s, n in c.execute(sa.select(j.c.queue, j.c.state, sa.func.count()).group_by(j.c.queue, j.c.state))}


def check_counts(store: Store) -> None:
    assert store.count_by_queue_and_state() == truth(store)


class Statements:
    """The SQL statements and transactions an engine runs while the block is open."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sql: list[str] = []
        self.begins = 0

    def _on_sql(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sql.append(statement)

    def _on_begin(self, conn: Any) -> None:
        self.begins += 1

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_sql)
        sa.event.listen(self.engine, "begin", self._on_begin)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_sql)
        sa.event.remove(self.engine, "begin", self._on_begin)

    def updates_of(self, column: str) -> list[str]:
        return [s for s in self.sql if s.lstrip().upper().startswith("UPDATE") and column in s]


def start_one(app: Linger, worker: Worker) -> None:
    """Claim and start due jobs on the worker's threads (no loop, no heartbeat thread)."""
    report = worker.run_once()
    assert report.claimed >= 1, report


def finish_all(worker: Worker, timeout: float = 10.0) -> None:
    """Write the outcomes of every job the worker holds, once they have ended."""
    wait_until(lambda: worker.flush() >= 0 and worker.busy == 0, timeout, "the worker's jobs to end")


@pytest.fixture
def worker(app: Linger) -> Iterator[Worker]:
    w = app.new_worker(concurrency=4)
    yield w
    w.drain(grace=5)


# -- results --------------------------------------------------------------------------------------
def test_a_json_return_value_is_stored_and_false_still_fails(app: Linger) -> None:
    @app.task(name="report")
    def report(n: int) -> Any:
        return {"n": n, "items": [1, 2.5, "x", None], "ok": True}

    @app.task(name="nothing")
    def nothing() -> None:
        return None

    @app.task(name="scalar")
    def scalar() -> Any:
        return "done"

    @app.task(name="nope", max_attempts=1)
    def nope() -> bool:
        return False

    ids = [report.enqueue(3), nothing.enqueue(), scalar.enqueue(), nope.enqueue()]
    app.work()
    r, n, s, f = (app.get_job(i) for i in ids)
    assert (r.state, r.result) == ("succeeded", {"n": 3, "items": [1, 2.5, "x", None], "ok": True})
    assert (n.state, n.result) == ("succeeded", None)
    assert (s.state, s.result) == ("succeeded", "done")
    assert (f.state, f.result, f.last_error) == ("failed", None, "task returned False")


def test_results_are_written_in_the_finish_batch_of_the_jobs(app: Linger, worker: Worker) -> None:
    """One transaction records a whole batch of outcomes, results included: no extra
    transaction per job."""
    gate = threading.Event()

    @app.task(name="square")
    def square(x: int) -> int:
        gate.wait(10)
        return x * x

    @app.task(name="plain")
    def plain() -> None:
        gate.wait(10)

    ids = [square.enqueue(i) for i in range(3)] + [plain.enqueue()]
    start_one(app, worker)
    assert worker.busy == 4
    gate.set()
    wait_until(lambda: worker._results.qsize() == 4, what="four outcomes")
    with Statements(app.store.engine) as seen:
        assert worker.flush() == 4
    assert seen.begins == 1, seen.sql
    assert [app.get_job(i).result for i in ids] == [0, 1, 4, None]
    assert all(app.get_job(i).state == "succeeded" for i in ids)
    check_counts(app.store)


def test_an_async_tasks_result_is_stored(app: Linger) -> None:
    @app.task(name="fetch")
    async def fetch(url: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"url": url, "status": 200}

    job_id = fetch.enqueue("https://example.org")
    w = app.new_worker(concurrency=2)
    start_one(app, w)
    finish_all(w)
    w.drain(grace=1)
    job = app.get_job(job_id)
    assert (job.state, job.result) == ("succeeded", {"url": "https://example.org", "status": 200})


def test_an_unstorable_result_succeeds_with_a_warning(app: Linger, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="odd")
    def odd() -> Any:
        return {"when": datetime(2030, 1, 1)}

    @app.task(name="nan")
    def nan() -> float:
        return math.nan

    @app.task(name="big")
    def big() -> str:
        return "x" * 200

    app.configure(result_max_bytes=100)
    ids = [odd.enqueue(), nan.enqueue(), big.enqueue()]
    with caplog.at_level(logging.WARNING, logger="linger_sched.worker"):
        app.work()
    for job_id, task in zip(ids, ("odd", "nan", "big")):
        job = app.get_job(job_id)
        assert (job.state, job.result, job.last_error) == ("succeeded", None, None), job
        said = [r.getMessage() for r in caplog.records if getattr(r, "job_id", None) == job_id]
        assert said and f"job {job_id}" in said[0] and task in said[0], said
    assert "not JSON-serializable" in [r.getMessage() for r in caplog.records if r.job_id == ids[0]][0]  # type: ignore[attr-defined]
    assert "result_max_bytes" in [r.getMessage() for r in caplog.records if r.job_id == ids[2]][0]  # type: ignore[attr-defined]


def test_the_result_cap_is_a_checked_setting(db_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (0, -1, "big", 1.5, True, 2**40):
        with pytest.raises(ConfigError) as info:
            Linger(db_url, table_prefix=prefix, result_max_bytes=bad)
        assert "result_max_bytes" in str(info.value)
    monkeypatch.setenv("LINGER_RESULT_MAX_BYTES", "2048")
    assert Linger(db_url, table_prefix=prefix).settings.result_max_bytes == 2048
    assert Linger(db_url, table_prefix=prefix).new_worker().settings.result_max_bytes == 2048


def test_store_finish_writes_results_only_for_the_attempts_it_holds(store: Store) -> None:
    a, b, c = store.enqueue([{"task": "t", "args": "{}"} for _ in range(3)], now=T0)
    store.claim("n1", None, 3, 30, now=T0)
    lost_ok, lost_failed = store.finish("n1", [a, b], [], now=at(1), results={a: '{"v":1}'}, attempts={b: 1})
    assert (lost_ok, lost_failed) == ([], [])
    assert (store.get_job(a).result, store.get_job(b).result) == ({"v": 1}, None)
    # a job another node holds, or at another attempt, is left alone, result and all
    lost_ok, _ = store.finish("n2", [c], [], now=at(1), results={c: "[1]"})
    assert lost_ok == [c] and (store.get_job(c).state, store.get_job(c).result) == ("running", None)
    lost_ok, _ = store.finish("n1", [c], [], now=at(1), results={c: "[1]"}, attempts={c: 7})
    assert lost_ok == [c] and store.get_job(c).result is None
    assert store.finish("n1", [c], [], now=at(1), results={c: "[1]"}, attempts={c: 1}) == ([], [])
    assert store.get_job(c).result == [1]
    check_counts(store)


# -- progress -------------------------------------------------------------------------------------
def test_progress_is_validated_and_its_message_capped(app: Linger) -> None:
    errors: list[BaseException] = []

    @app.task(name="reporter")
    def reporter() -> None:
        job = current_job()
        assert job is not None
        for bad in (1.5, -0.1, math.nan, math.inf, "half", True, None):
            try:
                job.set_progress(bad)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        try:
            job.set_progress(0.5, message=42)  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)
        job.set_progress(1, message="\x00é" + "m" * (PROGRESS_MESSAGE_CAP + 500))

    job_id = reporter.enqueue()
    app.work()
    assert len(errors) == 8, errors
    assert all("fraction" in str(e) for e in errors[:7]), errors
    assert "message" in str(errors[7])
    job = app.get_job(job_id)
    assert job.state == "succeeded" and job.progress == 1.0
    assert job.progress_message is not None and len(job.progress_message) <= PROGRESS_MESSAGE_CAP
    assert job.progress_message.startswith("émmm") and "\x00" not in job.progress_message


def test_progress_writes_are_throttled_and_the_last_value_is_kept(app: Linger, clock: FakeClock, worker: Worker) -> None:
    step = threading.Event()
    resume = threading.Event()

    @app.task(name="loop")
    def loop() -> str:
        job = current_job()
        assert job is not None
        for i in range(1, 1001):  # a tight loop: at most one write per second of it
            job.set_progress(i / 4000, message=f"row {i}")
        step.set()
        resume.wait(10)
        job.set_progress(0.5, message="half")  # a second later: written at once
        step.set()
        resume.wait(10)
        job.set_progress(0.75, message="three quarters")  # throttled: written at the finish
        return "ok"

    job_id = loop.enqueue()
    with Statements(app.store.engine) as seen:
        start_one(app, worker)
        wait_until(step.is_set)
    assert len(seen.updates_of("progress")) == 1, seen.updates_of("progress")
    job = app.get_job(job_id)
    assert (job.state, job.progress, job.progress_message) == ("running", 1 / 4000, "row 1")

    step.clear()
    clock.advance(1.0)
    resume.set()
    wait_until(step.is_set)
    resume.clear()
    assert (app.get_job(job_id).progress, app.get_job(job_id).progress_message) == (0.5, "half")
    resume.set()
    finish_all(worker)
    job = app.get_job(job_id)
    assert (job.state, job.result, job.progress, job.progress_message) == ("succeeded", "ok", 0.75, "three quarters")


def test_the_heartbeat_writes_a_pending_progress_value(app: Linger, clock: FakeClock, worker: Worker) -> None:
    release = threading.Event()
    reported = threading.Event()

    @app.task(name="long")
    def long() -> None:
        job = current_job()
        assert job is not None
        job.set_progress(0.1)
        job.set_progress(0.2, message="pending")  # within the second: not written yet
        reported.set()
        release.wait(10)

    job_id = long.enqueue()
    start_one(app, worker)
    wait_until(reported.is_set)
    assert app.get_job(job_id).progress == 0.1
    clock.advance(1.0)
    worker.heartbeat()
    assert (app.get_job(job_id).progress, app.get_job(job_id).progress_message) == (0.2, "pending")
    release.set()
    finish_all(worker)
    assert app.get_job(job_id).state == "succeeded"


def test_progress_under_the_testing_helpers(app: Linger) -> None:
    """run_pending() (the testing helpers) runs tasks through the same worker: progress is kept."""
    @app.task(name="p")
    def p() -> None:
        job = current_job()
        assert job is not None
        job.set_progress(0.3, "x")

    job_id = p.enqueue()
    app.testing.run_pending()
    assert (app.get_job(job_id).progress, app.get_job(job_id).progress_message) == (0.3, "x")


# -- waiting --------------------------------------------------------------------------------------
def test_wait_returns_the_finished_job(app: Linger) -> None:
    @app.task(name="slowly")
    def slowly(x: int) -> int:
        return x + 1

    job_id = slowly.enqueue(41)
    runner = threading.Timer(0.3, app.work)
    runner.start()
    try:
        job = app.wait(job_id, timeout=30)
    finally:
        runner.join()
    assert (job.id, job.state, job.result) == (job_id, "succeeded", 42)
    assert app.wait(job_id, timeout=0).state == "succeeded"  # finished already: at once


def test_wait_times_out_naming_the_job_and_its_state(app: Linger) -> None:
    @app.task(name="never_run")
    def never_run() -> None: ...

    job_id = never_run.enqueue()
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        app.wait(job_id, timeout=0.3)
    took = time.monotonic() - began
    assert 0.25 <= took < 5, took
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, LingerError)
    assert (err.job_id, err.state) == (job_id, "queued")
    assert f"job {job_id}" in str(err) and "queued" in str(err) and "0.3" in str(err)
    with pytest.raises(JobNotFoundError):
        app.wait(987654321, timeout=1)
    for bad in (-1, math.nan, "soon", True):
        with pytest.raises((TypeError, ValueError)) as bad_info:
            app.wait(job_id, timeout=bad)  # type: ignore[arg-type]
        assert "timeout" in str(bad_info.value)


def test_wait_wakes_on_the_finish(real_app: Linger) -> None:
    """PostgreSQL: NOTIFY at the finish wakes the waiter at once; SQLite: the file's change
    counter; MariaDB: polling, backing off to at most a second."""
    app = real_app

    @app.task(name="later_done")
    def later_done() -> str:
        return "yes"

    job_id = later_done.enqueue(delay=3.5)  # long enough for the polls to have backed off
    finished: list[float] = []

    def work() -> None:
        time.sleep(3.6)
        app.work()
        finished.append(time.monotonic())

    t = threading.Thread(target=work)
    t.start()
    try:
        job = app.wait(job_id, timeout=30)
        woke = time.monotonic()
    finally:
        t.join()
    assert job.result == "yes"
    late = woke - finished[0] if finished else 0.0
    limit = 1.2 if app.store.dialect.is_mysql else 0.5
    assert late < limit, f"woke {late:.2f}s after the job finished"


def test_finish_batches_notify_waiters_at_most_ten_times_a_second(store: Store) -> None:
    """A NOTIFY takes a lock at commit that every notifying transaction shares: a fast drain's
    finish batches send at most one per 0.1 s, and the one held back is sent later."""
    a, b, c = store.enqueue([{"task": "t", "args": "{}"} for _ in range(3)], now=T0)
    store.claim("n", None, 3, 30, now=T0)
    with Statements(store.engine) as seen:
        for job_id in (a, b, c):
            store.finish("n", [job_id], [], now=at(1))
    notes = [sql for sql in seen.sql if "pg_notify" in sql]
    if store.dialect.sends_notify:
        assert len(notes) == 1 and store.owes_notify
        assert not store.send_owed_notify()  # too soon
        time.sleep(0.11)
        assert store.send_owed_notify() and not store.owes_notify
    else:  # SQLite's waiters watch the file, MariaDB's poll
        assert notes == [] and not store.owes_notify


# -- cancelling a running job ---------------------------------------------------------------------
def test_cancel_of_a_running_sync_job_ends_it_cancelled_without_retry(app: Linger, worker: Worker) -> None:
    started = threading.Event()
    saw: list[bool] = []

    @app.task(name="cooperative", max_attempts=3)
    def cooperative() -> None:
        job = current_job()
        assert job is not None
        started.set()
        saw.append(job.cancel_requested)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if job.cancel_requested:
                saw.append(True)
                raise JobCancelled("stopping as asked")
            time.sleep(0.01)

    job_id = cooperative.enqueue()
    start_one(app, worker)
    wait_until(started.is_set)
    requested = app.cancel(job_id)
    assert (requested.state, requested.cancel_requested) == ("running", True)
    assert app.cancel(job_id).cancel_requested  # idempotent
    worker.heartbeat()  # the worker learns it with the lease extension
    finish_all(worker)
    job = app.get_job(job_id)
    assert saw == [False, True]
    assert (job.state, job.attempts, job.locked_by, job.cancel_requested) == ("cancelled", 1, None, True)
    assert job.finished_at is not None and "cancel" in (job.last_error or "")
    check_counts(app.store)
    assert app.store.count_by_queue_and_state()[("default", "cancelled")] == 1
    with pytest.raises(JobStateError) as info:
        app.cancel(job_id)
    assert "cancelled" in str(info.value)
    # retried: a fresh start, the request forgotten
    again = app.retry(job_id)
    assert (again.state, again.cancel_requested) == ("queued", False)
    check_counts(app.store)


def test_cancel_of_a_running_async_task_cancels_it_at_once(app: Linger, worker: Worker) -> None:
    began = threading.Event()
    cleaned = threading.Event()

    @app.task(name="waiter", max_attempts=3)
    async def waiter() -> None:
        began.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.set()

    job_id = waiter.enqueue()
    start_one(app, worker)
    wait_until(began.is_set)
    app.cancel(job_id)
    t0 = time.monotonic()
    worker.heartbeat()
    finish_all(worker)
    assert time.monotonic() - t0 < 5
    assert cleaned.is_set(), "the coroutine's finally ran before the outcome was written"
    job = app.get_job(job_id)
    assert (job.state, job.attempts) == ("cancelled", 1)
    check_counts(app.store)


def test_a_job_that_ignores_the_request_records_its_real_outcome(app: Linger, worker: Worker) -> None:
    started = threading.Event()
    go_on = threading.Event()

    @app.task(name="stubborn")
    def stubborn() -> int:
        started.set()
        go_on.wait(10)
        return 7

    @app.task(name="stubborn_failure", max_attempts=3)
    def stubborn_failure() -> None:
        started.set()
        go_on.wait(10)
        raise RuntimeError("failed anyway")

    ok_id, bad_id = stubborn.enqueue(), stubborn_failure.enqueue()
    start_one(app, worker)
    wait_until(lambda: worker.busy == 2 and started.is_set())
    app.cancel(ok_id)
    app.cancel(bad_id)
    worker.heartbeat()
    go_on.set()
    finish_all(worker)
    ok, bad = app.get_job(ok_id), app.get_job(bad_id)
    assert (ok.state, ok.result, ok.cancel_requested) == ("succeeded", 7, True)
    # a failure after a cancel request is not retried
    assert (bad.state, bad.attempts) == ("failed", 1) and "failed anyway" in (bad.last_error or "")
    check_counts(app.store)


def test_a_cancel_learned_before_the_job_started_never_runs_it(app: Linger) -> None:
    ran: list[int] = []
    gate = threading.Event()

    @app.task(name="blocker")
    def blocker() -> None:
        gate.wait(10)

    @app.task(name="victim")
    def victim() -> None:
        ran.append(1)

    w = app.new_worker(concurrency=1)
    try:
        blocker.enqueue(priority=-1)
        victim_id = victim.enqueue()
        start_one(app, w)  # both claimed; the victim waits for the only thread
        assert app.get_job(victim_id).state == "running"
        app.cancel(victim_id)
        w.heartbeat()
        gate.set()
        finish_all(w)
    finally:
        w.drain(grace=2)
    assert ran == []
    assert app.get_job(victim_id).state == "cancelled"
    check_counts(app.store)


def test_store_cancel_request_heartbeat_hand_back_and_rescue(store: Store) -> None:
    a, b, c, d = store.enqueue([{"task": "t", "args": "{}", "queue": q} for q in ("x", "x", "y", "y")], now=T0)
    store.claim("n1", None, 4, 30, now=T0)
    assert store.cancel_job(a, now=at(1)).cancel_requested
    assert store.cancel_job(c, now=at(1)).state == "running"
    assert store.extend_and_check("n1", 30, now=at(2), ids=[a, b, c, d]) == (4, [a, c])
    assert store.extend_and_check("n2", 30, now=at(2), ids=[a, b]) == (0, [])  # not n2's
    # handed back at shutdown: a cancel request makes it cancelled, not queued
    assert store.hand_back("n1", [a, b], now=at(3)) == 2
    assert (store.get_job(a).state, store.get_job(b).state) == ("cancelled", "queued")
    # rescued after the lease expired: likewise
    rescued = sorted(store.rescue(now=at(100)))
    assert rescued == [(c, "n1", "cancelled"), (d, "n1", "queued")]
    check_counts(store)
    assert store.count_by_queue_and_state()[("x", "cancelled")] == 1
    assert store.count_by_queue_and_state()[("y", "cancelled")] == 1


# -- schedules created at runtime -----------------------------------------------------------------
def test_add_schedule_validates_like_a_declared_schedule_and_stores_nothing_bad(app: Linger) -> None:
    @app.task(name="billing.report")
    def report(customer_id: int, fmt: str = "pdf") -> None: ...

    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 9 * * *", "tz": "Europe/Berln"}, "tz"),
        ({"cron": "0 9 * * *", "every": "1h"}, "every"),
        ({}, "cron"),
        ({"every": "soon"}, "every"),
        ({"every": "1h", "args": [1, 2, 3]}, "args"),
        ({"every": "1h", "args": [1], "kwargs": {"colour": "red"}}, "kwargs"),
        ({"every": "1h", "args": [{1, 2}]}, "args"),
        ({"every": "1h", "priority": 2**31}, "priority"),
        ({"every": "1h", "queue": ""}, "queue"),
        ({"every": "1h", "misfire": "sometimes"}, "misfire"),
        ({"every": "1h", "overlap": "maybe"}, "overlap"),
        ({"every": "1h", "max_catch_up": 0}, "max_catch_up"),
        ({"every": "1h", "misfire_grace": "x"}, "misfire_grace"),
        ({"every": "1h", "anchor": datetime(2030, 1, 1)}, "anchor"),
    ]
    for options, field in cases:
        with pytest.raises(ConfigError) as info:
            app.add_schedule("report-42", "billing.report", **{"args": [42], **options})
        assert f"{field}:" in str(info.value) and "report-42" in str(info.value), (options, str(info.value))
    with pytest.raises(ConfigError) as info:
        app.add_schedule("x" * 192, report, every="1h", args=[1])
    assert "name" in str(info.value)
    assert app.store.load_schedules() == []


def test_runtime_schedules_fire_survive_syncs_and_show_their_source(app: Linger, clock: FakeClock) -> None:
    ran: list[tuple[int, datetime | None]] = []

    @app.task(name="report")
    def report(customer_id: int) -> None:
        job = current_job()
        assert job is not None
        ran.append((customer_id, job.scheduled_for))

    @app.task(name="cleanup", every="1h")
    def cleanup() -> None: ...

    info = app.add_schedule("report-7", report, every="10m", args=[7], queue="reports", priority=-2)
    assert (info.name, info.task, info.source, info.next_runs) == ("report-7", "report", "runtime", [clock.now()])
    # a start-up sync declares only cleanup: the runtime schedule is neither disabled nor changed
    assert app.sync_schedules()["disabled"] == []
    other = Linger(app.settings.database_url, table_prefix=app.settings.table_prefix, clock=clock)
    try:
        assert other.new_scheduler().sync([])["disabled"] == ["cleanup"]  # a node that declares nothing at all
    finally:
        other.store.dispose()
    by_name = {s.name: s for s in app.schedules()}
    assert (by_name["report-7"].source, by_name["report-7"].enabled) == ("runtime", True)
    assert (by_name["cleanup"].source, by_name["cleanup"].enabled) == ("declared", False)  # declared, not any more

    app.testing.advance("25m", run=True)
    assert ran == [(7, clock.now() - timedelta(minutes=25)), (7, clock.now() - timedelta(minutes=15)),
                   (7, clock.now() - timedelta(minutes=5))]
    job = app.jobs(schedule_name="report-7", limit=1)[0]
    assert (job.queue, job.priority) == ("reports", -2)


def test_update_and_remove_runtime_schedules(app: Linger, clock: FakeClock) -> None:
    @app.task(name="digest")
    def digest(user: str, fmt: str = "html") -> None: ...

    with pytest.raises(ScheduleNotFoundError):
        app.update_schedule("digest-ann", cron="0 8 * * *")
    app.add_schedule("digest-ann", digest, cron="0 7 * * *", tz="Europe/Berlin", kwargs={"user": "ann"})
    with pytest.raises(ScheduleStateError) as info:
        app.add_schedule("digest-ann", digest, cron="0 9 * * *", kwargs={"user": "ann"})
    assert "digest-ann" in str(info.value) and "update_schedule" in str(info.value)

    updated = app.update_schedule("digest-ann", cron="30 8 * * MON-FRI")  # the rest as it was
    assert (updated.spec, updated.tz, updated.task) == ("30 8 * * MON-FRI", "Europe/Berlin", "digest")
    row = app.store.get_schedule("digest-ann")
    assert json.loads(row.args) == {"kwargs": {"user": "ann"}}
    assert row.next_run_at == datetime(2030, 1, 1, 7, 30, tzinfo=timezone.utc)  # 08:30 in Berlin, a Tuesday
    app.update_schedule("digest-ann", kwargs={"user": "ann", "fmt": "text"}, queue="mail")
    row = app.store.get_schedule("digest-ann")
    assert (json.loads(row.args), json.loads(row.options)["queue"]) == ({"kwargs": {"fmt": "text", "user": "ann"}}, "mail")
    with pytest.raises(ConfigError) as bad:
        app.update_schedule("digest-ann", kwargs={"colour": "red"})
    assert "kwargs" in str(bad.value)
    assert json.loads(app.store.get_schedule("digest-ann").args) == {"kwargs": {"fmt": "text", "user": "ann"}}

    app.testing.advance("8h")
    assert len(app.jobs(schedule_name="digest-ann")) == 1
    app.remove_schedule("digest-ann")
    assert [s.name for s in app.schedules()] == []
    assert len(app.jobs(schedule_name="digest-ann")) == 1  # its history stays
    with pytest.raises(ScheduleNotFoundError):
        app.remove_schedule("digest-ann")


def test_declared_schedules_cannot_be_changed_at_runtime_and_a_declaration_takes_a_runtime_one_over(
    app: Linger, caplog: pytest.LogCaptureFixture,
) -> None:
    @app.task(name="nightly", cron="0 3 * * *")
    def nightly() -> None: ...

    app.sync_schedules()
    for action in (lambda: app.update_schedule("nightly", cron="0 4 * * *"), lambda: app.remove_schedule("nightly")):
        with pytest.raises(ScheduleStateError) as info:
            action()
        assert "nightly" in str(info.value) and "declared" in str(info.value)
    with pytest.raises(ScheduleStateError):
        app.add_schedule("nightly", nightly, cron="0 5 * * *")

    app.add_schedule("weekly", "nightly", cron="0 6 * * SUN")
    app.schedule("weekly", nightly, cron="0 7 * * SAT")  # a later deploy declares the same name
    with caplog.at_level(logging.WARNING, logger="linger_sched.scheduler"):
        app.sync_schedules()
    row = app.store.get_schedule("weekly")
    assert (row.source, row.spec) == ("declared", "0 7 * * SAT")
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "weekly" in r.getMessage()]
    assert said and "runtime" in said[0] and "0 6 * * SUN" in said[0], said


def test_a_runtime_schedule_of_a_task_no_node_knows_fails_visibly(app: Linger, clock: FakeClock) -> None:
    app.add_schedule("elsewhere", "other_service.tasks.sync", every="1h", args=[1, "two"])
    app.testing.advance("1m")
    (job,) = app.jobs(schedule_name="elsewhere")
    assert (job.task, job.args) == ("other_service.tasks.sync", [1, "two"])
    app.testing.run_pending()
    job = app.get_job(job.id)
    assert job.state == "failed" and "unknown task 'other_service.tasks.sync'" in (job.last_error or "")


def test_store_never_disables_a_runtime_schedule(store: Store) -> None:
    row = {"task": "t", "spec": "every:60s", "tz": "UTC", "anchor": T0, "args": "{}", "options": "{}",
           "next_run_at": T0, "paused": False, "enabled": True, "spec_hash": "h"}
    store.save_schedules(inserts=[{**row, "name": "declared"}, {**row, "name": "runtime", "source": "runtime"}])
    assert store.disable_schedules(["declared", "runtime"], now=T0) == ["declared"]
    store.save_schedules(disable=["runtime"], now=T0)
    got = {s.name: (s.source, s.enabled) for s in store.load_schedules()}
    assert got == {"declared": ("declared", False), "runtime": ("runtime", True)}
