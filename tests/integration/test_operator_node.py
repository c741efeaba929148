"""What a node tells its operator (issue 14), in-process on every database: the burst summary
and a shutdown that waits for running jobs (which jobs, how long at most, that a second
signal forces), as log records with an ``action`` and through ``Linger.run(announce=...)``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from linger_sched import Linger


def records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def test_burst_ends_with_a_summary_of_what_it_ran(app: Linger, caplog: pytest.LogCaptureFixture) -> None:
    app.task(name="ok")(lambda: None)

    @app.task(name="bad", max_attempts=1)
    def bad() -> None:
        raise ValueError("no")

    @app.task(name="flaky", max_attempts=3, retry_backoff=3600)
    def flaky() -> None:
        raise ValueError("later")

    for name in ("ok", "ok", "ok", "bad", "flaky"):
        app.enqueue(name)
    told: list[tuple[str, dict[str, Any]]] = []
    caplog.set_level(logging.INFO)
    assert app.run(worker=True, scheduler=False, burst=True, handle_signals=False,
                   announce=lambda action, details: told.append((action, details))) == 0
    (rec,) = records(caplog, "burst_summary")
    counts = {k: getattr(rec, k) for k in ("ran", "succeeded", "failed", "retried", "cancelled")}
    assert counts == {"ran": 5, "succeeded": 3, "failed": 1, "retried": 1, "cancelled": 0}
    assert rec.levelno == logging.INFO and rec.elapsed >= 0
    assert told == [("burst_summary", {**counts, "elapsed": rec.elapsed})]


def test_a_stop_with_running_jobs_says_which_how_long_and_that_a_second_signal_forces(
    real_app: Linger, caplog: pytest.LogCaptureFixture,
) -> None:
    app = real_app
    release = threading.Event()

    @app.task(name="reports.long_running_export")
    def export() -> None:
        release.wait(30)

    job_id = app.enqueue("reports.long_running_export")
    told: list[tuple[str, dict[str, Any]]] = []

    def announce(action: str, details: dict[str, Any]) -> None:
        told.append((action, details))
        raise RuntimeError("a broken callback")  # logged; the stop goes on

    caplog.set_level(logging.INFO)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run(worker=True, scheduler=False, handle_signals=False,
                                                                  announce=announce)))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while app.get_job(job_id).state != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        time.sleep(0.3)
        node = app._node
        assert node is not None
        node.stopping.set()  # what the first SIGTERM/SIGINT does
        while not told:
            assert time.monotonic() < deadline, "no shutdown notice"
            time.sleep(0.05)
        action, details = told[0]
        assert action == "shutdown_wait"
        assert details["grace"] == app.settings.shutdown_grace and details["hand_back"] is True
        (job,) = details["jobs"]
        assert (job["id"], job["task"]) == (job_id, "reports.long_running_export") and job["running_for"] >= 0.2  # slept 0.3 s after the claim; the thread starts a moment later
        (rec,) = records(caplog, "shutdown_wait")
        assert rec.levelno == logging.WARNING and rec.job_ids == [job_id] and rec.jobs == details["jobs"]
        assert records(caplog, "announce_error")
        time.sleep(0.3)
        assert runner.is_alive(), "the first signal waits for the running job"
        node.force.set()  # the second signal
        runner.join(10)
        assert not runner.is_alive() and codes == [1]
        assert [a for a, _ in told] == ["shutdown_wait", "shutdown_forced"]
        assert records(caplog, "shutdown_forced")
        assert app.get_job(job_id).state == "queued"  # handed back
    finally:
        release.set()
        runner.join(10)


def test_a_stop_with_nothing_running_says_nothing(real_app: Linger, caplog: pytest.LogCaptureFixture) -> None:
    told: list[str] = []
    runner = threading.Thread(target=lambda: real_app.run(worker=True, scheduler=False, handle_signals=False,
                                                          announce=lambda action, _d: told.append(action)))
    runner.start()
    deadline = time.monotonic() + 20
    while real_app._node is None or not real_app._node.loops:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    real_app._node.stopping.set()
    runner.join(20)
    assert not runner.is_alive() and told == [] and not records(caplog, "shutdown_wait")


def test_a_second_signal_forces_a_node_whose_worker_is_held_up_by_a_slow_hook(
    real_app: Linger, caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's loop thread runs the outcome hooks: one that sleeps must not keep a forced
    stop waiting (it used to wait until grace + 30 s)."""
    app = real_app
    release = threading.Event()
    in_hook = threading.Event()

    @app.task(name="quick")
    def quick() -> None:
        pass

    @app.task(name="slow")
    def slow() -> None:
        release.wait(30)

    @app.on("job_succeeded")
    def stuck(_event: Any) -> None:
        in_hook.set()
        release.wait(25)  # a hook that blocks the worker's loop thread

    slow_id = app.enqueue("slow")
    told: list[str] = []
    caplog.set_level(logging.INFO)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(app.run(
        worker=True, scheduler=False, handle_signals=False, announce=lambda action, _d: told.append(action))))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while app.get_job(slow_id).state != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        app.enqueue("quick")
        assert in_hook.wait(20), "the hook was not called"
        node = app._node
        assert node is not None
        node.stopping.set()  # the first signal
        time.sleep(0.5)
        assert runner.is_alive(), "the first signal waits"
        started = time.monotonic()
        node.force.set()  # the second signal
        runner.join(10)
        assert not runner.is_alive() and codes == [1]
        assert time.monotonic() - started < 5
        assert "shutdown_forced" in told
        assert app.get_job(slow_id).state == "queued"  # handed back, as a forced stop does
    finally:
        release.set()
        runner.join(10)


def test_a_job_still_running_after_stop_keeps_its_lock_and_runs_once(db_url: str, prefix: str) -> None:
    """``app.stop(grace)`` in a process that lives on (a web process at reload): a job whose
    thread outlives the grace keeps its lock while the thread runs, so a peer never starts a
    second copy beside it, and its outcome is written when it returns. (The heartbeat used to stop
    with the node: the lock expired one job lease later and a peer ran the job again while the
    first thread still ran; found while documenting nodes, issue 15.)"""
    release = threading.Event()
    starts: list[str] = []

    def make(name: str) -> Linger:
        a = Linger(db_url, table_prefix=prefix, poll_interval=0.05, job_lease_ttl=2, rescue_interval=0.3)

        @a.task(name="slow_report")
        def slow_report() -> str:
            starts.append(name)
            release.wait(30)
            return f"done by {name}"

        return a

    first, peer = make("first"), make("peer")
    first.install_schema()
    try:
        job_id = first.enqueue("slow_report")
        first.start(concurrency=1, scheduler=False)
        deadline = time.monotonic() + 20
        while first.get_job(job_id).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.stop(grace=0.2)  # the job's thread goes on
        peer.start(concurrency=1, scheduler=False)
        time.sleep(5)  # 2.5 job leases: the lock must still be held, the job not rescued
        job = first.get_job(job_id)
        assert (job.state, job.attempts, starts) == ("running", 1, ["first"]), (job, starts)
        release.set()
        deadline = time.monotonic() + 20
        while first.get_job(job_id).state == "running":
            assert time.monotonic() < deadline, "the outcome of the job that outlived stop() was never written"
            time.sleep(0.05)
        job = first.get_job(job_id)
        assert (job.state, job.result, job.attempts, starts) == ("succeeded", "done by first", 1, ["first"])
    finally:
        release.set()
        peer.stop(grace=1)
        first.stop(grace=1)
        first.store.drop_schema()
        first.store.dispose()
        peer.store.dispose()
