"""Worker behaviour on every database: outcomes, retries, order, timing, class jobs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from linger_sched import FakeClock, JobArgumentsError, Linger, NaiveDatetimeError, current_job


def test_success_records_the_outcome(app: Linger) -> None:
    seen = []

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        seen.append(a + b)
        return a + b

    job_id = add.enqueue(2, b=3)
    app.work()
    job = app.get_job(job_id)
    assert seen == [5]
    assert (job.state, job.attempts, job.locked_by, job.last_error) == ("succeeded", 1, None, None)
    assert add(1, 1) == 2  # still a plain function


def test_returning_false_is_a_failed_attempt_with_backoff(app: Linger, clock: FakeClock) -> None:
    @app.task(name="nope", retry_backoff=10, max_attempts=3)
    def nope() -> bool:
        return False

    job_id = nope.enqueue()
    start = clock.now()
    app.work()
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.last_error) == ("queued", 1, "task returned False")
    assert start + timedelta(seconds=7.5) <= job.run_at <= start + timedelta(seconds=12.5)


def test_exception_is_recorded_with_traceback(app: Linger) -> None:
    @app.task(name="boom", max_attempts=1)
    def boom() -> None:
        raise ValueError("bad input 42")

    job_id = boom.enqueue()
    app.work()
    job = app.get_job(job_id)
    assert job.state == "failed"
    assert "ValueError: bad input 42" in (job.last_error or "")
    assert "Traceback" in (job.last_error or "")


def test_retries_back_off_exponentially_until_max_attempts(app: Linger, clock: FakeClock) -> None:
    calls = []

    @app.task(name="flaky", retry_backoff=10, max_attempts=3)
    def flaky() -> None:
        calls.append(clock.now())
        raise RuntimeError("down")

    job_id = flaky.enqueue()
    app.work()
    first = app.get_job(job_id)
    delay1 = (first.run_at - calls[0]).total_seconds()
    assert 7.5 <= delay1 <= 12.5
    clock.advance(delay1 - 0.5)
    app.work()
    assert len(calls) == 1  # not due yet: not run early
    clock.advance(0.5)
    app.work()
    second = app.get_job(job_id)
    delay2 = (second.run_at - calls[1]).total_seconds()
    assert (second.state, second.attempts) == ("queued", 2)
    assert 15 <= delay2 <= 25  # base * 2 ** (attempt - 1), with jitter
    clock.advance(delay2)
    app.work()
    final = app.get_job(job_id)
    assert (final.state, final.attempts, len(calls)) == ("failed", 3, 3)
    assert final.finished_at == clock.now()


def test_zero_backoff_retries_at_once(app: Linger) -> None:
    attempts = []

    @app.task(name="twice", retry_backoff=0, max_attempts=2)
    def twice() -> None:
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            raise RuntimeError("first")

    job_id = twice.enqueue()
    app.work()
    assert attempts == [1, 2]
    assert app.get_job(job_id).state == "succeeded"


def test_priority_order_lower_first(app: Linger) -> None:
    order = []

    @app.task(name="rec")
    def rec(tag: str) -> None:
        order.append(tag)

    rec.enqueue("p5", priority=5)
    rec.enqueue("p0-a")
    rec.enqueue("p-3", priority=-3)
    rec.enqueue("p0-b")
    app.work(concurrency=1)
    assert order == ["p-3", "p0-a", "p0-b", "p5"]


def test_future_run_at_is_not_run_early(app: Linger, clock: FakeClock) -> None:
    ran = []

    @app.task(name="later")
    def later() -> None:
        ran.append(clock.now())

    due = clock.now() + timedelta(minutes=10)
    job_id = later.enqueue(run_at=due)
    app.work()
    assert ran == [] and app.get_job(job_id).state == "queued"
    clock.advance(timedelta(minutes=10))
    app.work()
    assert ran == [due]


def test_delay_and_run_at_conflict(app: Linger, clock: FakeClock) -> None:
    @app.task(name="x")
    def x() -> None: ...

    job_id = x.enqueue(delay=30)
    assert app.get_job(job_id).run_at == clock.now() + timedelta(seconds=30)
    with pytest.raises(JobArgumentsError):
        x.enqueue(delay=1, run_at=clock.now())


def test_naive_datetime_is_rejected_and_nothing_is_written(app: Linger) -> None:
    @app.task(name="x")
    def x() -> None: ...

    with pytest.raises(NaiveDatetimeError, match="run_at must be a timezone-aware"):
        x.enqueue(run_at=datetime(2030, 1, 1, 12, 0))
    assert app.jobs() == []


def test_arguments_must_be_json(app: Linger) -> None:
    @app.task(name="x")
    def x(value: object) -> None: ...

    with pytest.raises(JobArgumentsError, match="JSON"):
        x.enqueue(object())
    with pytest.raises(JobArgumentsError):
        x.enqueue(float("nan"))
    assert app.jobs() == []


def test_enqueue_many_inserts_all_and_runs_them(app: Linger) -> None:
    got = []

    @app.task(name="sq")
    def sq(n: int, *, mult: int = 1) -> None:
        got.append(n * mult)

    ids = app.enqueue_many(sq, [(i,) for i in range(50)] + [{"n": 1, "mult": 100}, ([2], {"mult": 10})])
    assert len(ids) == 52 and len(set(ids)) == 52
    assert sq.enqueue_many([[7]]) and True
    app.work()
    assert sorted(got) == sorted(list(range(50)) + [100, 20, 7])


@dataclass
class SendInvoice:
    invoice_id: int
    note: str = ""

    def perform(self) -> None:
        SENT.append((self.invoice_id, self.note, current_job().task))


SENT: list[tuple[int, str, str]] = []


def test_class_jobs_store_their_fields_as_json(app: Linger) -> None:
    SENT.clear()
    app.task(name="send_invoice")(SendInvoice)
    a = app.enqueue(SendInvoice(42, note="hi"))
    b = SendInvoice.enqueue(43)  # type: ignore[attr-defined]
    app.enqueue_many([SendInvoice(44), SendInvoice(45)])
    assert app.get_job(a).kwargs == {"invoice_id": 42, "note": "hi"}
    assert app.get_job(b).kwargs == {"invoice_id": 43, "note": ""}
    app.work()
    assert sorted(SENT) == [(42, "hi", "send_invoice"), (43, "", "send_invoice"), (44, "", "send_invoice"), (45, "", "send_invoice")]


def test_unknown_task_fails_clearly_and_the_worker_goes_on(app: Linger) -> None:
    ran = []

    @app.task(name="known")
    def known() -> None:
        ran.append(1)

    bad = app.enqueue("not.registered", 1)
    good = known.enqueue()
    app.work()
    job = app.get_job(bad)
    assert job.state == "failed"
    assert "unknown task 'not.registered'" in (job.last_error or "")
    assert app.get_job(good).state == "succeeded" and ran == [1]


def test_unique_key_dedupes_while_active(app: Linger) -> None:
    @app.task(name="u")
    def u() -> None: ...

    a = u.enqueue(unique_key="report:7")
    assert u.enqueue(unique_key="report:7") == a
    app.work()
    assert u.enqueue(unique_key="report:7") != a


def test_current_job_inside_a_task(app: Linger) -> None:
    seen = []

    @app.task(name="who", queue="mail", priority=3)
    def who() -> None:
        seen.append(current_job())

    job_id = who.enqueue()
    app.work()
    (ctx,) = seen
    assert (ctx.id, ctx.task, ctx.attempt, ctx.queue, ctx.priority, ctx.schedule_name) == (job_id, "who", 1, "mail", 3, None)
    assert current_job() is None


def test_queues_filter_what_a_worker_claims(app: Linger) -> None:
    @app.task(name="q")
    def q() -> None: ...

    a = q.enqueue(queue="mail")
    b = q.enqueue(queue="reports")
    app.work(queues=["mail"])
    assert app.get_job(a).state == "succeeded" and app.get_job(b).state == "queued"


def test_jobs_run_in_parallel_up_to_concurrency(app: Linger) -> None:
    barrier = threading.Barrier(4, timeout=10)

    @app.task(name="meet")
    def meet() -> None:
        barrier.wait()  # only passes if 4 run at the same time

    ids = app.enqueue_many(meet, [() for _ in range(4)])
    app.work(concurrency=4)
    assert {app.get_job(i).state for i in ids} == {"succeeded"}


# -- real time: start(), wake-ups and due-time precision ---------------------------------
def test_start_runs_jobs_in_the_background_and_wakes_on_enqueue(real_app: Linger) -> None:
    started = threading.Event()
    halted = []

    @real_app.task(name="bg")
    def bg() -> None:
        started.set()

    real_app.on_halt(lambda: halted.append(True))
    real_app.configure(poll_interval=5.0)
    real_app.start(concurrency=2)
    time.sleep(0.3)
    t0 = time.monotonic()
    bg.enqueue()
    assert started.wait(3), "job did not start"
    assert time.monotonic() - t0 < 1.0  # woken at once, not after the 5 s poll
    real_app.stop(grace=5)
    assert halted == [True]


def test_is_leader_reports_the_started_nodes_lease(real_app: Linger) -> None:
    assert real_app.is_leader() is False  # no node running
    real_app.start(concurrency=1)
    try:
        deadline = time.monotonic() + 5
        while not real_app.is_leader() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert real_app.is_leader() is True
        lease = real_app.store.get_lease("leader")
        assert lease is not None and lease.holder == real_app.node_id
    finally:
        real_app.stop(grace=5)
    assert real_app.is_leader() is False


def test_future_run_at_starts_on_time(real_app: Linger) -> None:
    starts = []

    @real_app.task(name="timed")
    def timed() -> None:
        starts.append(datetime.now(timezone.utc))

    real_app.configure(poll_interval=5.0)
    real_app.start(concurrency=2)
    time.sleep(0.3)
    due = real_app.store.db_now() + timedelta(seconds=1.0)
    timed.enqueue(run_at=due)
    deadline = time.monotonic() + 5
    while not starts and time.monotonic() < deadline:
        time.sleep(0.02)
    real_app.stop(grace=5)
    assert starts, "job never started"
    late = (starts[0] - due).total_seconds()
    assert -0.05 <= late < 0.5, late


def test_jobs_are_claimed_ahead_and_started_at_their_run_at_never_before(real_app: Linger) -> None:
    # lead_time: the claim's round trip happens before run_at, a local timer starts the job
    starts: dict[int, datetime] = {}

    @real_app.task(name="timed")
    def timed(i: int) -> None:
        starts[i] = datetime.now(timezone.utc)

    real_app.configure(poll_interval=5.0)
    real_app.start(concurrency=4)
    time.sleep(0.3)
    base = real_app.store.db_now() + timedelta(seconds=0.5)
    dues = {i: base + timedelta(seconds=0.15 * i) for i in range(6)}
    ids = {i: timed.enqueue(i, run_at=due) for i, due in dues.items()}
    deadline = time.monotonic() + 5
    while len(starts) < len(dues) and time.monotonic() < deadline:
        time.sleep(0.02)
    real_app.stop(grace=5)
    assert sorted(starts) == sorted(dues), "not every job started"
    early = {i: (dues[i] - starts[i]).total_seconds() for i in dues if starts[i] < dues[i]}
    assert all(e < 0.002 for e in early.values()), f"started before run_at: {early}"
    # claimed before run_at: then started_at is run_at itself (the start, not the claim);
    # a job claimed after its run_at has a later started_at
    at_run_at = [i for i in dues if real_app.store.get_job(ids[i]).started_at == dues[i]]
    assert len(at_run_at) >= len(dues) // 2, f"claimed ahead of run_at: {at_run_at} of {sorted(dues)}"


def test_schedule_occurrences_are_written_ahead_and_start_at_their_fire_time(real_app: Linger) -> None:
    starts: list[tuple[datetime, datetime | None]] = []

    @real_app.task(name="tick", every="1s")
    def tick() -> None:
        job = current_job()
        starts.append((datetime.now(timezone.utc), job.scheduled_for if job else None))

    real_app.start(concurrency=2)
    deadline = time.monotonic() + 10
    while len(starts) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    real_app.stop(grace=5)
    assert len(starts) >= 4, starts
    runs = starts[1:]  # the first may be the catch-up occurrence of the start-up tick
    assert all(fire is not None and started >= fire - timedelta(milliseconds=2) for started, fire in runs), runs
    jobs = {j.scheduled_for: j for j in real_app.store.list_jobs(schedule_name="tick", limit=100)}
    written_ahead = [fire for _, fire in runs if fire is not None and jobs[fire].created_at < fire]
    assert len(written_ahead) >= len(runs) // 2, (written_ahead, runs)


def test_enqueue_from_another_process_wakes_an_idle_postgres_node(real_app: Linger, db_name: str) -> None:
    if db_name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; other databases poll")
    started = threading.Event()

    @real_app.task(name="ping")
    def ping() -> None:
        started.set()

    real_app.configure(poll_interval=10.0)
    real_app.start(concurrency=1)
    time.sleep(1.0)  # idle: the worker sleeps on its 10 s poll
    producer = Linger(real_app.settings.database_url, table_prefix=real_app.settings.table_prefix)
    t0 = time.monotonic()
    producer.enqueue("ping")
    try:
        assert started.wait(5), "not woken"
        assert time.monotonic() - t0 < 0.5
    finally:
        producer.store.dispose()
        real_app.stop(grace=5)


def test_timeout_keeps_the_lock_until_the_thread_ends_then_fails_the_attempt(real_app: Linger) -> None:
    release = threading.Event()

    @real_app.task(name="slow", timeout=0.5, max_attempts=1)
    def slow() -> None:
        release.wait(10)

    job_id = slow.enqueue()
    real_app.start(concurrency=2)
    try:
        time.sleep(1.2)  # well past the timeout: the thread still runs, so the job stays held
        job = real_app.get_job(job_id)
        assert (job.state, job.locked_by) == ("running", real_app.node_id)
        release.set()
        deadline = time.monotonic() + 5
        while real_app.get_job(job_id).state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        job = real_app.get_job(job_id)
        assert job.state == "failed" and job.last_error == "timed out after 0.5s"
    finally:
        release.set()
        real_app.stop(grace=5)


def test_stored_traceback_starts_at_the_task(app: Linger) -> None:
    @app.task(name="tb", max_attempts=1)
    def tb() -> None:
        raise KeyError("missing")

    job_id = tb.enqueue()
    app.work()
    error = app.get_job(job_id).last_error or ""
    assert "linger_sched" not in error and "in tb" in error and "KeyError: 'missing'" in error


def test_stop_in_a_host_process_never_hands_back_a_job_whose_thread_still_runs(real_app: Linger) -> None:
    release, running = threading.Event(), threading.Event()

    @real_app.task(name="stuck")
    def stuck() -> None:
        running.set()
        release.wait(10)

    job_id = stuck.enqueue()
    waiting = [stuck.enqueue() for _ in range(3)]  # claimed by prefetch, never started
    real_app.start(concurrency=1)
    try:
        assert running.wait(5)
        node = real_app.node_id
        real_app.stop(grace=0.2)
        job = real_app.get_job(job_id)
        assert (job.state, job.locked_by) == ("running", node)  # left to expire, not re-run alongside
        assert {real_app.get_job(i).state for i in waiting} == {"queued"}
        assert {real_app.get_job(i).attempts for i in waiting} == {0}
    finally:
        release.set()


def test_enqueue_from_another_process_wakes_an_idle_sqlite_node(real_app: Linger, db_name: str) -> None:
    if db_name != "sqlite":
        pytest.skip("PRAGMA data_version is SQLite's")
    import subprocess
    import sys

    started = threading.Event()

    @real_app.task(name="ping")
    def ping() -> None:
        started.set()

    real_app.configure(poll_interval=10.0)
    real_app.start(concurrency=1)
    time.sleep(0.5)
    code = (
        "from linger_sched import Linger; import sys; "
        "Linger(sys.argv[1], table_prefix=sys.argv[2]).enqueue('ping')"
    )
    subprocess.run([sys.executable, "-c", code, real_app.settings.database_url, real_app.settings.table_prefix], check=True)
    t0 = time.monotonic()  # the producer has committed
    try:
        assert started.wait(5), "not woken"
        assert time.monotonic() - t0 < 0.5
    finally:
        real_app.stop(grace=5)
