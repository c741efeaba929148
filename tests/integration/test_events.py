"""Event hooks fired by real jobs, schedules and nodes on every database (issue 14): each event
once, where and when it happens, with its payload; a hook that raises (Exception or SystemExit)
is logged with action ``hook_error`` and changes nothing (the job's outcome, the tick, the other
hooks); inline mode emits the job events too."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

from linger_sched import FakeClock, Linger
from linger_sched.events import Event
from linger_sched.scheduler import Scheduler


def record(app: Linger, *names: str) -> list[Event]:
    seen: list[Event] = []
    app.on(*names)(seen.append)
    return seen


def by_name(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def scheduler(app: Linger) -> Scheduler:
    s = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    return s


def test_a_success_emits_started_then_succeeded_after_the_outcome_is_stored(app: Linger, clock: FakeClock) -> None:
    @app.task(name="billing.charge", queue="money")
    def charge(n: int) -> int:
        return n

    states_at_success: list[str] = []
    started_threads: list[str] = []
    seen = record(app, "job_started", "job_succeeded")
    app.on("job_succeeded")(lambda e: states_at_success.append(app.get_job(e.job_id).state))  # type: ignore[arg-type]
    app.on("job_started")(lambda e: started_threads.append(threading.current_thread().name))

    job_id = app.enqueue(charge, 7, run_at=clock.now() - timedelta(seconds=2))
    app.work()

    assert by_name(seen) == ["job_started", "job_succeeded"]
    started, succeeded = seen
    for e in seen:
        assert (e.job_id, e.task, e.queue, e.attempt, e.max_attempts, e.node_id) == (
            job_id, "billing.charge", "money", 1, 3, app.node_id)
        assert e.schedule is None and e.error is None
    assert started.at == clock.now() and started.delay == pytest.approx(2.0)
    assert succeeded.duration is not None and succeeded.duration >= 0
    assert states_at_success == ["succeeded"]  # emitted once the outcome is in the database
    assert started_threads and started_threads[0].startswith("linger-job")  # on the job's own thread


def test_failures_emit_retried_with_the_next_attempt_then_failed(app: Linger, clock: FakeClock) -> None:
    @app.task(name="flaky", max_attempts=2, retry_backoff=10)
    def flaky() -> None:
        raise RuntimeError("card declined")

    seen = record(app, "job_retried", "job_failed", "job_succeeded")
    job_id = flaky.enqueue()
    app.work()
    (retried,) = seen
    assert (retried.name, retried.job_id, retried.attempt) == ("job_retried", job_id, 1)
    assert retried.error is not None and "RuntimeError: card declined" in retried.error
    assert retried.retry_at is not None and retried.at is not None
    assert 7.5 <= (retried.retry_at - retried.at).total_seconds() <= 12.5
    assert abs((app.get_job(job_id).run_at - retried.retry_at).total_seconds()) < 0.001  # when it is due again
    clock.advance(13)
    app.work()
    assert by_name(seen) == ["job_retried", "job_failed"]
    failed = seen[1]
    assert (failed.job_id, failed.attempt, failed.max_attempts, failed.reason) == (job_id, 2, 2, "no attempt left")
    assert failed.error is not None and "card declined" in failed.error
    assert app.get_job(job_id).state == "failed"


def test_cancel_emits_job_cancelled_for_a_queued_and_a_running_job(app: Linger) -> None:
    from linger_sched import current_job

    seen = record(app, "job_cancelled")

    @app.task(name="later")
    def later() -> None: ...

    queued = later.enqueue()
    app.cancel(queued)
    assert [(e.job_id, e.reason) for e in seen] == [(queued, "cancelled while queued")]

    @app.task(name="polite")
    def polite() -> None:
        job = current_job()
        assert job is not None
        app.cancel(job.id)  # as if from elsewhere: the job is running, so it is asked
        job._control.request_cancel()  # type: ignore[union-attr]  # what the heartbeat does
        job.raise_if_cancelled()

    running = polite.enqueue()
    app.work()
    assert [e.job_id for e in seen] == [queued, running]
    assert seen[1].attempt == 1 and seen[1].reason is not None and "cancelled" in seen[1].reason
    assert app.get_job(running).state == "cancelled"


def test_a_job_whose_node_died_emits_job_rescued(app: Linger, clock: FakeClock) -> None:
    @app.task(name="sturdy")
    def sturdy() -> None: ...

    seen = record(app, "job_rescued", "job_started", "job_succeeded")
    job_id = sturdy.enqueue()
    (claimed,) = app.store.claim("dead-node", None, 1, 30, now=clock.now())
    clock.advance(31)
    app.work()
    assert by_name(seen) == ["job_rescued", "job_started", "job_succeeded"]
    rescued = seen[0]
    assert (rescued.job_id, rescued.task, rescued.queue, rescued.attempt, rescued.max_attempts) == (
        job_id, "sturdy", "default", 1, 3)
    assert dict(rescued.data) == {"node": "dead-node", "state": "queued"}
    assert rescued.reason is not None and "dead-node" in rescued.reason
    assert seen[1].attempt == 2


def test_occurrences_created_and_skipped_after_commit(app: Linger, clock: FakeClock) -> None:
    @app.task(name="report", every="1m")  # overlap: skip (default)
    def report() -> None: ...

    states: list[tuple[str, int]] = []
    seen = record(app, "occurrence_created", "occurrence_skipped")
    app.on("occurrence_created")(
        lambda e: states.append((e.schedule or "", len(app.store.list_jobs(schedule_name=e.schedule, limit=0)))))
    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(60)
    s.tick()  # the first occurrence is still queued: this one is skipped
    created, skipped = seen
    assert (created.name, created.schedule, created.task, created.queue, created.scheduled_for) == (
        "occurrence_created", "report", "report", "default", t0)
    assert created.node_id == app.node_id and dict(created.data) == {"occurrences": 1}
    assert (skipped.name, skipped.schedule, skipped.scheduled_for, skipped.reason) == (
        "occurrence_skipped", "report", t0 + timedelta(minutes=1), "overlap: previous occurrence still queued or running")
    assert states == [("report", 1)]  # the job row exists when the hook runs


def test_leader_acquired_and_lost(app: Linger, clock: FakeClock) -> None:
    seen = record(app, "leader_acquired", "leader_lost")
    a = app.new_scheduler()
    a.tick()
    assert [(e.name, e.epoch, e.node_id) for e in seen] == [("leader_acquired", 1, app.node_id)]
    a.resign()
    assert [(e.name, e.epoch, e.reason) for e in seen[1:]] == [("leader_lost", 1, "released")]
    a.tick()  # back (the lease was released): a new epoch
    clock.advance(app.settings.lease_ttl + 1)  # it expires: another node takes it
    peer = Scheduler(app.store, "peer-node", clock=clock, settings=app.new_scheduler_settings())
    peer.tick()
    a.tick()
    assert [e.name for e in seen] == ["leader_acquired", "leader_lost", "leader_acquired", "leader_lost"]
    assert (seen[3].epoch, seen[3].reason) == (seen[2].epoch, "another node holds it")


def test_node_started_and_stopped(app: Linger) -> None:
    seen = record(app, "node_started", "node_stopped")
    app.start(concurrency=1)
    assert [e.name for e in seen] == ["node_started"]
    assert seen[0].node_id == app.node_id and "worker" in seen[0].data["roles"]
    app.stop(grace=1)
    assert [e.name for e in seen] == ["node_started", "node_stopped"]
    assert seen[1].data == {"forced": False} and seen[1].reason is None


@pytest.mark.parametrize("raised", [RuntimeError("hook bug"), SystemExit(3)], ids=["exception", "systemexit"])
def test_a_raising_success_hook_is_logged_and_the_job_still_succeeded_exactly_once(
    app: Linger, raised: BaseException, caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    @app.task(name="once")
    def once() -> None:
        runs.append(1)

    def bad(_e: Event) -> None:
        raise raised

    app.on("job_succeeded")(bad)
    after = record(app, "job_succeeded")  # registered after the raising one: still called
    job_id = once.enqueue()
    with caplog.at_level(logging.ERROR, logger="linger_sched"):
        app.work()
        app.work()  # nothing left to run: not retried, not run again
    job = app.get_job(job_id)
    assert (job.state, job.attempts, runs) == ("succeeded", 1, [1])
    assert [e.job_id for e in after] == [job_id]
    errors = [r for r in caplog.records if getattr(r, "action", None) == "hook_error"]
    assert len(errors) == 1
    err: Any = errors[0]
    assert (err.event, err.job_id, err.task, err.attempt) == ("job_succeeded", job_id, "once", 1)


@pytest.mark.parametrize("raised", [ValueError("hook bug"), SystemExit(1)], ids=["exception", "systemexit"])
def test_a_raising_started_hook_does_not_keep_the_task_from_running(
    app: Linger, raised: BaseException, caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    @app.task(name="runs")
    def runs_task() -> None:
        runs.append(1)

    def bad(_e: Event) -> None:
        raise raised

    app.on("job_started")(bad)
    job_id = runs_task.enqueue()
    with caplog.at_level(logging.ERROR, logger="linger_sched"):
        app.work()
    assert runs == [1] and app.get_job(job_id).state == "succeeded"
    assert [r.event for r in caplog.records if getattr(r, "action", None) == "hook_error"] == ["job_started"]  # type: ignore[attr-defined]


def test_a_raising_occurrence_hook_does_not_change_the_tick(app: Linger, clock: FakeClock,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="tick", every="1m", overlap="allow")
    def tick() -> None: ...

    def bad(_e: Event) -> None:
        raise RuntimeError("hook bug")

    app.on("occurrence_created", "leader_acquired")(bad)
    t0 = clock.now()
    s = scheduler(app)
    with caplog.at_level(logging.ERROR, logger="linger_sched"):
        for _ in range(3):
            report = s.tick()
            assert report.leader
            clock.advance(60)
    rows = app.store.list_jobs(schedule_name="tick", limit=0, newest_first=False)
    assert sorted(j.scheduled_for for j in rows) == [t0 + timedelta(minutes=k) for k in range(3)]
    assert sorted(r.event for r in caplog.records if getattr(r, "action", None) == "hook_error") == (  # type: ignore[attr-defined]
        ["leader_acquired"] + ["occurrence_created"] * 3)


def test_inline_mode_emits_the_job_events(app: Linger) -> None:
    @app.task(name="inline.ok")
    def ok() -> None: ...

    @app.task(name="inline.bad", max_attempts=1)
    def bad() -> None:
        raise RuntimeError("nope")

    seen = record(app, "*")
    with app.testing.inline(raise_failures=False):
        a = ok.enqueue()
        b = bad.enqueue()
    assert [(e.name, e.job_id) for e in seen] == [
        ("job_started", a), ("job_succeeded", a), ("job_started", b), ("job_failed", b)]


def test_nobody_listening_builds_no_event(app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    import linger_sched.worker as worker_module

    built: list[str] = []
    real = worker_module.Event

    def counting(name: str, *a: Any, **kw: Any) -> Event:
        built.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(worker_module, "Event", counting)

    @app.task(name="quiet")
    def quiet() -> None: ...

    quiet.enqueue()
    app.work()
    assert built == []
    seen = record(app, "job_succeeded")
    quiet.enqueue()
    app.work()
    assert len(seen) == 1 and built == ["job_succeeded"]


def test_a_lease_that_cannot_be_renewed_in_time_is_lost(app: Linger, clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from linger_sched.errors import StoreError

    seen = record(app, "leader_acquired", "leader_lost")
    s = app.new_scheduler()
    s.tick()

    def down(*_a: Any, **_k: Any) -> None:
        raise StoreError("the database went away")

    monkeypatch.setattr(app.store, "acquire_lease", down)
    clock.advance(app.settings.renew_interval + 1)
    s.tick()  # still trusted: nothing lost yet
    assert [e.name for e in seen] == ["leader_acquired"] and s.is_leader()
    clock.advance(app.settings.lease_ttl)
    s.tick()
    assert [e.name for e in seen] == ["leader_acquired", "leader_lost"] and not s.is_leader()
    assert seen[1].epoch == 1 and seen[1].reason is not None and "could not be renewed in time" in seen[1].reason
    monkeypatch.undo()
    s.tick()  # the database is back: leader again
    assert [e.name for e in seen][-1] == "leader_acquired" and s.is_leader()


def test_a_shutdown_that_cancels_a_job_asked_to_cancel_emits_job_cancelled(
    real_app: Linger, caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose cancel was requested while it ran, still running when the grace period
    ends, becomes ``cancelled`` at the hand-back: hooks see ``job_cancelled`` and the log says
    so apart from the jobs handed back (it used to count it as handed back, with no event)."""
    import time

    app = real_app
    release = threading.Event()

    @app.task(name="stubborn", queue="slow")
    def stubborn() -> None:
        release.wait(30)  # never checks for a cancel

    @app.task(name="plain_long")
    def plain_long() -> None:
        release.wait(30)

    seen = record(app, "job_cancelled")
    caplog.set_level(logging.INFO, logger="linger_sched")
    asked, other = stubborn.enqueue(), plain_long.enqueue()
    app.start(concurrency=2, scheduler=False)
    try:
        deadline = time.monotonic() + 20
        while {app.get_job(asked).state, app.get_job(other).state} != {"running"}:
            assert time.monotonic() < deadline, "the jobs did not start"
            time.sleep(0.02)
        app.cancel(asked)  # running: only asked
        assert seen == []
        app.stop(grace=0.2, hand_back_running=True)
    finally:
        release.set()
    assert (app.get_job(asked).state, app.get_job(other).state) == ("cancelled", "queued")
    assert [(e.name, e.job_id, e.task, e.queue, e.attempt, e.node_id) for e in seen] == [
        ("job_cancelled", asked, "stubborn", "slow", 1, app.node_id)]
    assert seen[0].reason == "cancel requested; stopped at shutdown"
    by_action = {a: [r for r in caplog.records if getattr(r, "action", None) == a]
                 for a in ("hand_back", "cancelled_at_shutdown")}
    (handed,) = by_action["hand_back"]
    (cancelled,) = by_action["cancelled_at_shutdown"]
    assert handed.job_ids == [other] and "handed back 1 " in handed.getMessage()  # type: ignore[attr-defined]
    assert cancelled.job_ids == [asked]  # type: ignore[attr-defined]
