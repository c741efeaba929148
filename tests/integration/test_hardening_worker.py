"""Hardening of the worker and the node: no outcome, task body or broken row may stall a node,
lose an outcome or run a job twice (issue: hardening, points 1-4 and 8)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from linger_sched import Linger, current_job
from linger_sched.errors import StoreError
from linger_sched.store.store import TEXT_CAP, clean_text


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- 1. outcomes the database cannot store ---------------------------------------------------
def test_clean_text_strips_nul_caps_and_keeps_valid_utf8() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\x00b") == "ab"
    assert clean_text("lone \udc80 surrogate") == "lone ? surrogate"
    huge = "head " + "é" * 100_000 + " tail: ValueError: the message"
    out = clean_text(huge)
    assert len(out.encode("utf-8")) <= TEXT_CAP
    assert out.startswith("head ") and out.endswith("ValueError: the message")
    assert "bytes truncated" in out
    out.encode("utf-8")  # valid UTF-8


def test_an_unstorable_error_neither_stalls_nor_rolls_back_the_batch(app: Linger) -> None:
    """NUL bytes (PostgreSQL refuses them) and 200 KB (over MariaDB's TEXT) in an exception's
    message: every outcome of the batch is written, each with its own result."""
    ran: list[str] = []

    @app.task(name="nul", max_attempts=1)
    def nul() -> None:
        ran.append("nul")
        raise ValueError("bad \x00 byte \udc80 and more")

    @app.task(name="huge", max_attempts=1)
    def huge() -> None:
        ran.append("huge")
        raise RuntimeError("x" * 200_000 + " the end")

    @app.task(name="fine")
    def fine() -> None:
        ran.append("fine")

    ids = [nul.enqueue(), fine.enqueue(), huge.enqueue(), fine.enqueue()]
    t0 = time.monotonic()
    app.work(concurrency=4)
    assert time.monotonic() - t0 < 5, "the worker stalled on the outcome write"
    jobs = {i: app.get_job(i) for i in ids}
    assert sorted(ran) == ["fine", "fine", "huge", "nul"]  # each ran exactly once
    assert jobs[ids[1]].state == jobs[ids[3]].state == "succeeded"
    assert jobs[ids[0]].state == "failed" and "\x00" not in (jobs[ids[0]].last_error or "")
    assert "bad  byte ? and more" in (jobs[ids[0]].last_error or "")
    err = jobs[ids[2]].last_error or ""
    assert jobs[ids[2]].state == "failed" and err.endswith("the end") and "bytes truncated" in err
    assert len(err.encode()) <= TEXT_CAP


def test_one_outcome_that_cannot_be_written_is_isolated_from_the_batch(app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row the database refuses whatever we write (here: every write that names it) leaves
    the other outcomes of its batch written, and the worker goes on."""
    @app.task(name="ok")
    def ok(i: int) -> None:
        pass

    ids = [ok.enqueue(i) for i in range(5)]
    poisoned = ids[2]
    real_finish = app.store.finish

    def finish(node, succeeded=(), failed=(), now=None, **kw):  # type: ignore[no-untyped-def]
        if poisoned in list(succeeded) + [f[0] for f in failed]:
            raise StoreError("refused") from ValueError("value out of range")
        return real_finish(node, succeeded, failed, now, **kw)

    monkeypatch.setattr(app.store, "finish", finish)
    app.work(concurrency=5)
    states = {i: app.get_job(i).state for i in ids}
    assert [states[i] for i in ids if i != poisoned] == ["succeeded"] * 4
    assert states[poisoned] == "running"  # left to expire and be rescued, never blocking others


def test_heartbeats_do_not_wait_behind_a_slow_outcome_write(real_app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the loop is stuck in an outcome write for longer than a job lease, the running
    job's lock is still extended: a peer never sees it expire and never runs it again."""
    real_app.configure(job_lease_ttl=1.0, rescue_interval=0.2)
    release = threading.Event()
    runs: list[int] = []

    @real_app.task(name="long")
    def long() -> None:
        runs.append(1)
        release.wait(10)

    @real_app.task(name="quick")
    def quick() -> None:
        pass

    real_finish = real_app.store.finish
    slow_once = threading.Event()

    def finish(*a, **kw):  # type: ignore[no-untyped-def]
        if not slow_once.is_set():
            slow_once.set()
            time.sleep(2.5)  # 2.5 job leases
        return real_finish(*a, **kw)

    monkeypatch.setattr(real_app.store, "finish", finish)
    long_id = long.enqueue()
    real_app.start(concurrency=2)
    peer = Linger(real_app.settings.database_url, table_prefix=real_app.settings.table_prefix)
    try:
        wait_until(lambda: runs, 5, "the long job to start")
        quick.enqueue()
        wait_until(slow_once.is_set, 5, "the slow write")
        rescued = []
        t_end = time.monotonic() + 2.4
        while time.monotonic() < t_end:
            rescued += peer.store.rescue()
            time.sleep(0.1)
        assert rescued == []
        job = real_app.get_job(long_id)
        assert (job.state, job.locked_by) == ("running", real_app.node_id)
        release.set()
        wait_until(lambda: real_app.get_job(long_id).state == "succeeded", 10, "the long job to finish")
        assert len(runs) == 1
    finally:
        release.set()
        real_app.stop(grace=5)
        peer.store.dispose()


# -- 2. timeouts: never two attempts at once ---------------------------------------------------
def test_a_timed_out_attempt_keeps_its_lock_so_the_retry_never_overlaps(real_app: Linger) -> None:
    real_app.configure(job_lease_ttl=1.0, rescue_interval=0.2)
    active, most, lock = [0], [0], threading.Lock()
    release = threading.Event()

    @real_app.task(name="stuck", timeout=0.3, max_attempts=2, retry_backoff=0)
    def stuck() -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            release.wait(3)
        finally:
            with lock:
                active[0] -= 1

    job_id = stuck.enqueue()
    real_app.start(concurrency=4)
    try:
        time.sleep(2.0)  # the timeout, then two job leases: no retry, no rescue of our own job
        job = real_app.get_job(job_id)
        assert (job.state, job.attempts, job.locked_by) == ("running", 1, real_app.node_id)
        release.set()
        # the first attempt fails when its thread returns; the retry then runs (and succeeds)
        wait_until(lambda: real_app.get_job(job_id).state == "succeeded", 10, "the retry to finish")
        job = real_app.get_job(job_id)
        assert job.attempts == 2 and job.last_error == "timed out after 0.3s"
        assert most[0] == 1, "two attempts of one job ran at once"
    finally:
        release.set()
        real_app.stop(grace=5)


def test_finish_ignores_an_outcome_of_an_older_attempt(store) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = store.enqueue([{"task": "t", "args": "{}", "queue": "default", "priority": 0, "max_attempts": 3}])
    (claimed,) = store.claim("n", None, 1, 30)
    assert claimed.attempts == 1
    lost = store.finish("n", [job_id], [], attempts={job_id: 0})
    assert lost == ([job_id], [])
    assert store.get_job(job_id).state == "running"
    assert store.finish("n", [], [(job_id, "late", None)], attempts={job_id: 0}) == ([], [job_id])
    assert store.finish("n", [job_id], [], attempts={job_id: 1}) == ([], [])
    assert store.get_job(job_id).state == "succeeded"


# -- 3. async def tasks ----------------------------------------------------------------------
def test_async_tasks_really_run_mixed_with_sync_ones(app: Linger) -> None:
    seen: list[tuple[str, int | None]] = []

    @app.task(name="co")
    async def co(x: int) -> int:
        await asyncio.sleep(0.01)
        job = current_job()
        seen.append(("async", job.id if job else None))
        return x * 2

    @app.task(name="plain")
    def plain() -> None:
        job = current_job()
        seen.append(("sync", job.id if job else None))

    @app.task(name="co_false", max_attempts=1)
    async def co_false() -> bool:
        return False

    @app.task(name="co_raise", max_attempts=1)
    async def co_raise() -> None:
        await asyncio.sleep(0)
        raise KeyError("inside the coroutine")

    a, b = co.enqueue(21), plain.enqueue()
    f, r = co_false.enqueue(), co_raise.enqueue()
    app.work(concurrency=2)
    assert sorted(seen) == sorted([("async", a), ("sync", b)])
    assert app.get_job(a).state == "succeeded"
    assert (app.get_job(f).state, app.get_job(f).last_error) == ("failed", "task returned False")
    err = app.get_job(r).last_error or ""
    assert app.get_job(r).state == "failed" and "KeyError: 'inside the coroutine'" in err


def test_async_timeout_cancels_the_coroutine(real_app: Linger) -> None:
    cancelled = threading.Event()

    @real_app.task(name="sleepy", timeout=0.2, max_attempts=1)
    async def sleepy() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = sleepy.enqueue()
    real_app.start(concurrency=1)
    try:
        wait_until(lambda: real_app.get_job(job_id).state == "failed", 5, "the timeout")
        assert cancelled.is_set()
        assert real_app.get_job(job_id).last_error == "timed out after 0.2s"
    finally:
        real_app.stop(grace=2)


def test_async_class_task(app: Linger) -> None:
    seen = []

    @app.task(name="AsyncJob")
    class AsyncJob:
        def __init__(self, n: int) -> None:
            self.n = n

        async def perform(self) -> None:
            await asyncio.sleep(0)
            seen.append(self.n)

    AsyncJob.enqueue(7)  # type: ignore[attr-defined]
    app.work()
    assert seen == [7]


# -- 4. every loop survives every exception ------------------------------------------------------
def _raw_insert(app: Linger, **values: object) -> int:
    j = app.store.t.jobs
    row = {"task": "ok", "args": "{}", "queue": "default", "priority": 0, "state": "queued", "attempts": 0,
           "max_attempts": 3, "occurrences": 1, "run_at": app.clock.now(), "created_at": app.clock.now()}
    row.update(values)
    with app.store.engine.begin() as conn:
        return int(conn.execute(sa.insert(j).values(**row)).inserted_primary_key[0])  # type: ignore[index]


def test_malformed_rows_are_failed_clearly_and_never_kill_the_worker(app: Linger, db_name: str) -> None:
    """Rows written by hand or an old client: each is failed with a last_error that says what is
    wrong; the worker goes on and runs the good jobs of the same batch."""
    ran = []

    @app.task(name="ok")
    def ok() -> None:
        ran.append(1)

    bad = {_raw_insert(app, args="not json"): "stored arguments", _raw_insert(app, args='{"args": 5}'): "stored arguments",
           _raw_insert(app, task="no.such.task"): "unknown task"}
    if db_name == "sqlite":  # only SQLite stores a text in an INTEGER column
        bad[_raw_insert(app, priority="high")] = "priority is 'high'"
        bad[_raw_insert(app, max_attempts="x")] = "max_attempts is 'x'"
    good = [ok.enqueue() for _ in range(3)]
    app.work(concurrency=2)
    assert len(ran) == 3 and {app.get_job(i).state for i in good} == {"succeeded"}
    for job_id, words in bad.items():
        job = app.get_job(job_id)
        assert job.state == "failed", (job_id, job.state, job.last_error)
        assert words in (job.last_error or ""), job.last_error


def test_the_worker_loop_survives_any_exception(app: Linger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    worker = app.new_worker(concurrency=1)
    calls = [0]
    real = worker.store.next_due

    def flaky(*a, **kw):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] <= 2:
            raise OverflowError("date value out of range")
        return real(*a, **kw)

    monkeypatch.setattr(worker.store, "next_due", flaky)
    monkeypatch.setattr("linger_sched.worker.backoff", lambda *a, **k: 0.0)
    stop = threading.Event()
    with caplog.at_level(logging.ERROR, logger="linger_sched.worker"):
        worker.run(stop, burst=True)
    assert calls[0] >= 3
    assert "worker iteration failed: date value out of range" in caplog.text


def test_a_dead_node_thread_is_restarted(real_app: Linger, caplog: pytest.LogCaptureFixture) -> None:
    real_app.start(concurrency=1)
    node = real_app._node
    assert node is not None
    loop = node.loops["linger-housekeeping"]
    calls = []

    def dies(stop: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("a bug")  # what no loop catches
        stop.wait()

    loop.target = dies
    with caplog.at_level(logging.ERROR):
        loop.start()
        wait_until(lambda: len(calls) >= 2, 10, "the supervisor to restart the thread")
    assert "restarting thread linger-housekeeping" in caplog.text
    real_app.stop(grace=1)


def test_a_thread_that_keeps_dying_stops_the_node_with_a_failure(app: Linger) -> None:
    from linger_sched.node import MAX_RESTARTS, Node

    node = Node(app, concurrency=1, queues=None, worker=False, scheduler=False)
    node.start()
    loop = node.loops["linger-housekeeping"]

    def dies(stop: threading.Event) -> None:
        raise SystemExit("always")

    loop.target = dies
    loop.start()
    ok = True
    for _ in range(MAX_RESTARTS + 2):
        loop.thread.join(2)  # type: ignore[union-attr]
        loop.restart_at = 0.0
        ok = node.supervise()
        if not ok:
            break
    assert not ok and node.failed and "died" in node.failed
    assert node.stop(None) is True  # a failed node reports it: run() exits non-zero


def test_stop_drains_only_after_the_worker_loop_left(real_app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outcome of a job that ends during shutdown is written once, by the worker's thread."""
    writers: list[str] = []
    real_finish = real_app.store.finish

    def finish(*a, **kw):  # type: ignore[no-untyped-def]
        writers.append(threading.current_thread().name)
        return real_finish(*a, **kw)

    monkeypatch.setattr(real_app.store, "finish", finish)
    started = threading.Event()

    @real_app.task(name="short")
    def short() -> None:
        started.set()
        time.sleep(0.5)

    job_id = short.enqueue()
    real_app.start(concurrency=1)
    assert started.wait(5)
    real_app.stop(grace=5)
    assert real_app.get_job(job_id).state == "succeeded"
    assert set(writers) == {"linger-worker"}


# -- 8. enqueue options are checked before anything is written -----------------------------------
BAD_OPTIONS = [
    {"priority": "high"}, {"priority": 2**31}, {"priority": -(2**31) - 1}, {"priority": 2**63}, {"priority": 1.5},
    {"priority": True}, {"max_attempts": "x"}, {"max_attempts": 0}, {"max_attempts": 2**31},
    {"delay": float("nan")}, {"delay": float("inf")}, {"delay": -5}, {"delay": [1]}, {"delay": "soon"},
    {"delay": 1e300}, {"delay": timedelta(days=-1)}, {"unique_key": ""}, {"unique_key": "k" * 500},
    {"unique_key": ["k"]}, {"queue": ""}, {"queue": "q" * 65}, {"queue": 5}, {"queue": "a\x00b"},
    {"run_at": "2030-01-01"}, {"run_at": 5},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=[repr(o)[:40] for o in BAD_OPTIONS])
def test_bad_enqueue_options_raise_a_clear_error_and_store_nothing(app: Linger, options: dict) -> None:  # type: ignore[type-arg]
    @app.task(name="t")
    def t() -> None: ...

    with pytest.raises((TypeError, ValueError)) as info:
        app.enqueue("t", **options)
    (name,) = options
    assert name in str(info.value)
    assert app.store.count_by_state() == {}


def test_bad_task_values_are_clear_errors(app: Linger) -> None:
    for bad in (None, 42, "", "x" * 300):
        with pytest.raises((TypeError, ValueError)) as info:
            app.enqueue(bad)
        assert "task" in str(info.value)
    deep: list = []  # type: ignore[type-arg]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="nested too deeply"):
        app.enqueue("anything", deep)
    assert app.store.count_by_state() == {}


def test_unique_key_accepts_ints_and_stays_unique(app: Linger) -> None:
    a = app.enqueue("t", unique_key=7)
    assert app.enqueue("t", unique_key="7") == a


def test_a_year_9999_run_at_in_a_negative_offset_is_refused_not_overflowed(app: Linger) -> None:
    from datetime import datetime, timezone

    with pytest.raises(ValueError, match="run_at"):
        app.enqueue("t", run_at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))
