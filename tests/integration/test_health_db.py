"""Health on every database: the Store reads behind it (a released lease, overdue schedules,
expired locks), ``app.health()`` through a cluster's life with a fake clock, the nodes' watch
of the scheduler, ``status`` (lost nodes, a released lease) and ``healthz``."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from linger_sched import FakeClock, Linger
from linger_sched import health
from linger_sched.health import HEALTHY, SchedulerWatch, healthz
from linger_sched.scheduler import LEADER
from linger_sched.store import Store, encode_args

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(task: str = "t", **kw: object) -> dict:
    return {"task": task, "args": encode_args([], {}), **kw}


def statuses(app: Linger) -> dict[str, str]:
    return {c.name: c.status for c in app.health().checks}


# -- the store ------------------------------------------------------------------------------
def test_a_released_lease_is_told_apart_from_an_expired_one(store: Store) -> None:
    store.acquire_lease("leader", "a", 10, now=at(0))
    store.acquire_lease("leader", "a", 10, now=at(5))  # a renewal keeps acquired_at
    held = store.get_lease("leader")
    assert held is not None and (held.acquired_at, held.expires_at, held.released) == (at(0), at(15), False)
    assert store.release_lease("leader", "a", now=at(7))
    gone = store.get_lease("leader")
    assert gone is not None and (gone.holder, gone.epoch, gone.expires_at, gone.acquired_at) == ("a", 1, at(7), at(7))
    assert gone.released
    assert not store.release_lease("leader", "b", now=at(7))  # not b's to release
    took = store.acquire_lease("leader", "b", 10, now=at(8))  # a peer takes over at once
    assert took is not None and (took.epoch, took.released) == (2, False)
    lapsed = store.get_lease("leader")
    assert lapsed is not None and lapsed.expires_at < at(60) and not lapsed.released  # expired, not released
    # on the database's clock: the release is one instant, and a peer takes over at once
    assert store.acquire_lease("db", "c", 30) is not None
    assert store.release_lease("db", "c")
    released = store.get_lease("db")
    assert released is not None and released.released and released.expires_at == released.acquired_at
    assert released.expires_at <= store.db_now()
    assert store.acquire_lease("db", "d", 30) is not None


def test_overdue_schedules_are_the_enabled_unpaused_ones_past_the_threshold(app: Linger, clock: FakeClock) -> None:
    for name in ("late1", "late2", "paused", "off", "fine"):
        app.task(name=name, every="1h" if name == "fine" else "10s", enabled=name != "off")(lambda: None)
    app.sync_schedules()
    app.pause("paused")
    store = app.store
    # registered at T: each fires at T first (its anchor); "fine" too
    n, rows, now = store.overdue_schedules(32, now=clock.now())
    assert (n, rows, now) == (0, [], clock.now())
    clock.advance(40)
    n, rows, now = store.overdue_schedules(32, now=clock.now())
    assert (n, sorted(r.name for r in rows), now) == (3, ["fine", "late1", "late2"], clock.now())  # none ticked
    n, rows, _ = store.overdue_schedules(32, now=clock.now(), limit=1)
    assert n == 3 and len(rows) == 1
    assert store.overdue_schedules(45, now=clock.now())[0] == 0
    # on the database's clock (the rows are in 2030: nothing is overdue yet), with its now
    n, _, db_now = store.overdue_schedules(0)
    assert n == 0 and abs((db_now - datetime.now(timezone.utc)).total_seconds()) < 300


def test_expired_locks_are_the_running_jobs_no_one_rescued(store: Store) -> None:
    a, b, c = store.enqueue([job("a"), job("b", queue="q"), job("c")], now=T0)
    store.claim("n1", None, 2, 30, now=T0)  # a, b locked until T0 + 30
    store.claim("n2", None, 1, 100, now=T0)  # c until T0 + 100
    assert store.expired_locks(30, now=at(50)) == (0, [])
    n, first = store.expired_locks(30, now=at(61))
    assert n == 2 and [(j.id, j.task, j.locked_by, j.locked_until, j.attempts) for j in first] == [
        (a, "a", "n1", at(30), 1), (b, "b", "n1", at(30), 1)]
    assert first[1].queue == "q"
    assert store.expired_locks(30, now=at(500), limit=1)[0] == 3 and len(store.expired_locks(30, now=at(500), limit=1)[1]) == 1
    assert store.expired_locks(30, now=at(500), cap=2)[0] == 2  # counted up to the cap
    store.rescue(now=at(61))
    assert store.expired_locks(30, now=at(61)) == (0, [])


# -- app.health() -----------------------------------------------------------------------------
def test_health_follows_a_cluster_from_idle_to_stalled_to_recovered(app: Linger, peer: Linger, clock: FakeClock) -> None:
    for a in (app, peer):
        a.task(name="beat", every="10s", overlap="allow")(lambda: None)
    assert app.health().status == "degraded"  # no node, no schedule: nothing runs, nothing is due
    s = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    for a in (app, peer):
        a.store.register_node(a.node_id, host="h", pid=1, roles="scheduler,worker", registry_hash=a.registry.hash(),
                              version="1", now=clock.now())
    s.tick()  # leads and materializes the first occurrence
    report = app.health()
    assert report.status == HEALTHY and report.exit_code == 0, report.as_dict(details=True)
    assert report.checked_at == clock.now()
    assert app.node_id in report.check("leader").message

    # the leader's tick stops (its thread died) while its lease holds: overdue after 32 s
    clock.advance(25)
    s._lead()  # still renewing (a tick that dies after the renewal)
    app.store.heartbeat_node(app.node_id, now=clock.now())
    peer.store.heartbeat_node(peer.node_id, now=clock.now())
    assert statuses(app)["schedules_overdue"] == HEALTHY  # due 15 s ago: within the threshold
    clock.advance(20)
    app.store.heartbeat_node(app.node_id, now=clock.now())
    peer.store.heartbeat_node(peer.node_id, now=clock.now())
    report = app.health()
    check = report.check("schedules_overdue")
    assert report.status == "unhealthy" and report.exit_code == 2
    assert check.message.startswith("1 schedule overdue by more than 32s: beat (due 35s ago)"), check.message
    assert report.check("leader").status == HEALTHY  # the lease alone would not tell

    # a peer takes over once the lease expired and catches up: healthy again
    clock.advance(30)
    for a in (app, peer):
        a.store.heartbeat_node(a.node_id, now=clock.now())
    leaderless = app.health().check("leader")
    assert leaderless.status == "degraded" and "let it expire" in leaderless.message
    other = peer.new_scheduler()
    other.sync(list(peer.registry.schedules.values()))
    other.tick()
    report = app.health()
    assert report.status == HEALTHY, report.as_dict(details=True)
    assert peer.node_id in report.check("leader").message


def test_health_reports_lost_nodes_stuck_jobs_failures_and_old_queues(app: Linger, clock: FakeClock) -> None:
    store = app.store
    store.register_node("n1", host="h", pid=1, roles="worker", registry_hash="x", version="1", now=clock.now())
    store.register_node("n2", host="h", pid=2, roles="worker", registry_hash="x", version="1", now=clock.now())
    ids = store.enqueue([job("ok") for _ in range(5)] + [job("bad", queue="email") for _ in range(7)], now=clock.now())
    store.claim("n1", None, 12, 30, now=clock.now())
    store.finish("n1", succeeded=ids[:5], failed=[(i, "boom", None) for i in ids[5:]], now=clock.now())
    (stuck,) = store.enqueue([job("slow")], now=clock.now())
    store.claim("n2", None, 1, 30, now=clock.now())
    (waiting,) = store.enqueue([job("later", queue="backlog")], now=clock.now())
    clock.advance(61)
    store.heartbeat_node("n1", now=clock.now())
    report = app.health()
    by = {c.name: c for c in report.checks}
    assert by["nodes"].status == "degraded" and "n2 (last heartbeat 61s ago)" in by["nodes"].message
    assert by["stuck_jobs"].status == "degraded" and f"#{stuck} slow (locked by n2" in by["stuck_jobs"].message
    assert by["failure_rate"].status == "degraded", by["failure_rate"]
    assert by["failure_rate"].message == ("7 of 12 jobs finished in the last 15m failed (58%, over 50%); "
                                          "by queue: email (7 of 7)")
    assert by["queue_age"].status == HEALTHY  # 61 s
    assert app.status().is_lost(next(n for n in app.status().nodes if n.id == "n2"))
    clock.advance(300)
    store.heartbeat_node("n1", now=clock.now())
    q = app.health().check("queue_age")
    assert q.status == "degraded" and q.message.startswith("due jobs waited more than 5m in 1 queue: backlog (6m)"), q
    assert waiting


def test_the_failure_rate_and_queue_age_thresholds_are_settings(db_url: str, prefix: str, clock: FakeClock) -> None:
    app = Linger(db_url, table_prefix=prefix, clock=clock, health_max_failure_rate=0.1, health_max_queue_age=30,
                 health_window=60)
    app.install_schema()
    try:
        store = app.store
        ids = store.enqueue([job("t") for _ in range(10)], now=clock.now())
        store.claim("n", None, 10, 30, now=clock.now())
        store.finish("n", succeeded=ids[:8], failed=[(i, "x", None) for i in ids[8:]], now=clock.now())
        store.enqueue([job("w")], now=clock.now())
        clock.advance(31)
        by = {c.name: c for c in app.health().checks}
        assert by["failure_rate"].status == "degraded"
        assert by["failure_rate"].message == ("2 of 10 jobs finished in the last 60s failed (20%, over 10%); "
                                              "by queue: default (2 of 10)")
        assert by["queue_age"].status == "degraded" and "31s" in by["queue_age"].message
        clock.advance(60)  # the failures left the window
        assert app.health().check("failure_rate").status == HEALTHY
    finally:
        app.store.drop_schema()
        app.store.dispose()


def test_a_database_that_cannot_be_read_is_an_unhealthy_report_not_an_exception(tmp_path: object) -> None:
    for url in ("postgresql+psycopg://u:hunter2@127.0.0.1:1/x", f"sqlite:///{tmp_path}/no/such/dir/x.db"):
        report = Linger(url).health()
        (check,) = report.checks
        assert (report.status, report.exit_code, check.name) == ("unhealthy", 2, "database"), report.as_dict(details=True)
        assert check.message.startswith("cannot read the database (")
        assert "hunter2" not in json.dumps(report.as_dict(details=True))


def test_missing_tables_are_reported(db_url: str, prefix: str) -> None:
    app = Linger(db_url, table_prefix=prefix, auto_install=False)
    try:
        (check,) = app.health().checks
        assert check.name == "database" and "db init" in check.message
    finally:
        app.store.dispose()


def test_healthz_answers_200_or_503_with_messages_only(app: Linger, clock: FakeClock) -> None:
    app.store.register_node("n", host="h", pid=1, roles="worker", registry_hash="x", version="1", now=clock.now())
    code, body = healthz(app)
    doc = json.loads(body)
    assert code == 200 and doc["status"] == HEALTHY and all(set(c) == {"name", "status", "message"} for c in doc["checks"])
    app.task(name="beat", every="10s")(lambda: None)
    app.sync_schedules()
    clock.advance(2)  # past the cache (1 s)
    code, body = healthz(app)
    assert code == 503 and json.loads(body)["status"] == "unhealthy"  # no leader for a schedule


def _slow_health(monkeypatch: pytest.MonkeyPatch, app: Linger, seconds: float) -> list[float]:
    """Make ``app.health()`` take ``seconds`` (a slow database); returns when each call began."""
    calls: list[float] = []
    real = app.health

    def slow() -> Any:
        calls.append(time.monotonic())
        time.sleep(seconds)
        return real()

    monkeypatch.setattr(app, "health", slow)
    return calls


def test_concurrent_healthz_calls_share_one_slow_check(real_app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four probes arriving while a 1.2 s check runs all get its answer: one check, about
    1.2 s in all (they used to run one check each, in turn: 1.2, 2.4, 3.6, 4.8 s)."""
    app = real_app
    app.store.register_node("n", host="h", pid=1, roles="worker", registry_hash="x", version="1",
                            now=app.clock.store_now())
    calls = _slow_health(monkeypatch, app, 1.2)
    answers: list[tuple[int, bytes]] = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: answers.append(healthz(app))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    elapsed = time.monotonic() - started
    assert len(calls) == 1 and len(answers) == 4 and len({a for a in answers}) == 1
    assert answers[0][0] == 200 and elapsed < 2.2, elapsed
    healthz(app)  # fresh for a second after the check finished, not after it began
    assert len(calls) == 1


def test_a_healthz_call_that_waits_too_long_for_a_running_check_gets_503(
    real_app: Linger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = real_app
    monkeypatch.setattr(health, "HEALTHZ_WAIT", 0.3)
    _slow_health(monkeypatch, app, 1.5)
    first = threading.Thread(target=healthz, args=(app,))
    first.start()
    time.sleep(0.2)  # the first call runs its check
    started = time.monotonic()
    code, body = healthz(app)
    assert code == 503 and time.monotonic() - started < 1.0
    doc = json.loads(body)
    assert doc["status"] == "unhealthy" and "in progress" in doc["checks"][0]["message"]
    first.join(10)


# -- the watch --------------------------------------------------------------------------------
def test_every_node_notices_a_stalled_leader_once(app: Linger, peer: Linger, clock: FakeClock,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="linger_sched.health")
    app.task(name="beat", every="2s", overlap="allow")(lambda: None)
    leader = app.new_scheduler()
    leader.sync(list(app.registry.schedules.values()))
    leader.tick()
    watch = SchedulerWatch(peer.node_id, threshold=3, lease=LEADER)
    for _ in range(3):
        clock.advance(1)
        leader.tick()
        assert watch.poll(peer.store, now=clock.now()) is None
    outcomes = []
    for _ in range(8):  # the leader renews but does not materialize (its tick dies after the renewal)
        clock.advance(1)
        leader._lead()
        outcomes.append(watch.poll(peer.store, now=clock.now()))
    assert outcomes.count("stalled") == 1 and outcomes[:3] == [None, None, None], outcomes
    leader.tick()  # it materializes again
    assert watch.poll(peer.store, now=clock.now()) == "recovered"
    actions = [r.action for r in caplog.records if getattr(r, "action", "").startswith("scheduler_")]  # type: ignore[attr-defined]
    assert actions == ["scheduler_stalled", "scheduler_recovered"]
    stalled = next(r for r in caplog.records if getattr(r, "action", "") == "scheduler_stalled")
    assert stalled.schedules == ["beat"] and stalled.leader == app.node_id  # type: ignore[attr-defined]


# -- status -----------------------------------------------------------------------------------
def test_status_tells_a_released_lease_and_lost_nodes(app: Linger, clock: FakeClock) -> None:
    app.task(name="beat", every="10s")(lambda: None)
    s = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    s.tick()
    assert app.status().leader_state == "held"
    s.resign()
    st = app.status()
    assert st.leader_state == "released" and st.leader.holder == app.node_id
    app.store.acquire_lease(LEADER, "other", 30, now=clock.now())
    clock.advance(31)
    assert app.status().leader_state == "expired"
    app.store.register_node("gone", host="h", pid=1, roles="worker", registry_hash="x", version="1", now=clock.now())
    clock.advance(31)
    app.store.register_node("here", host="h", pid=2, roles="worker", registry_hash="x", version="1", now=clock.now())
    st = app.status()
    assert {n.id: st.is_lost(n) for n in st.nodes} == {"gone": True, "here": False}
    assert st.node_lost_after == 30


@pytest.fixture
def peer(app: Linger) -> Linger:
    """A second app (node) on the same tables and fake clock."""
    other = Linger(app.settings.database_url, table_prefix=app.settings.table_prefix, clock=app.clock)
    yield other  # type: ignore[misc]
    other.store.dispose()


def test_every_node_runs_the_watch_as_a_supervised_loop(app: Linger) -> None:
    app.start(worker=True, scheduler=False)  # a worker-only node watches too
    node = app._node
    assert node is not None and "linger-watch" in node.loops
    assert node.loops["linger-watch"].thread is not None and node.loops["linger-watch"].thread.is_alive()
    app.stop(grace=1)
