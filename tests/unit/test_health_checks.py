"""Health checks as pure functions of what the store said, and every node's watch on the
scheduler (no database; times from a FakeClock). The store's side is in
tests/integration/test_health_db.py."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from linger_sched import FakeClock
from linger_sched.config import ENV_VARS, Settings, resolve
from linger_sched.errors import ConfigError
from linger_sched.health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Check,
    HealthReport,
    SchedulerWatch,
    Thresholds,
    age,
    failure_check,
    leader_check,
    nodes_check,
    queue_check,
    schedules_check,
    stuck_check,
)
from linger_sched.scheduler import LEADER
from linger_sched.store import Lease, NodeRow, ScheduleRow
from linger_sched.store.rows import LockedJob

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
T = Thresholds(overdue_after=32, node_lost_after=30, failure_window=900, max_failure_rate=0.25, min_finished=10,
               max_queue_age=300)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lease(holder: str = "n1", expires: float = 20, acquired: float = -100, epoch: int = 3) -> Lease:
    return Lease("leader", holder, epoch, at(expires), at(acquired))


def schedule(name: str, next_run: float | None = -60, **kw: object) -> ScheduleRow:
    values: dict[str, object] = dict(name=name, task="t", spec="* * * * *", tz="UTC", anchor=None, args="{}", options="{}",
                                     next_run_at=None if next_run is None else at(next_run), last_run_at=None, paused=False,
                                     enabled=True, spec_hash="h", updated_at=T0)
    values.update(kw)
    return ScheduleRow(**values)  # type: ignore[arg-type]


def node(node_id: str, heartbeat: float = -5, roles: str = "scheduler,worker", registry: str = "aaaa") -> NodeRow:
    return NodeRow(node_id, "host", 1, roles, registry, "1", at(-1000), at(heartbeat))


# -- leader ---------------------------------------------------------------------------------
def test_a_valid_lease_is_healthy_and_named() -> None:
    c = leader_check(lease(expires=20), T0, True, T)
    assert c.status == HEALTHY and "n1 leads (epoch 3" in c.message and "20s" in c.message


def test_no_leader_is_fine_without_schedules_and_unhealthy_with_them() -> None:
    assert leader_check(None, T0, False, T).status == HEALTHY
    c = leader_check(None, T0, True, T)
    assert c.status == UNHEALTHY and "no node has ever held the leader lease" in c.message
    assert leader_check(lease(expires=-3600), T0, False, T).status == HEALTHY  # nothing to schedule


def test_a_lease_released_at_shutdown_is_degraded_until_the_threshold_then_unhealthy() -> None:
    released = Lease("leader", "n1", 3, at(-2), at(-2))  # acquired_at == expires_at: given back
    assert released.released
    c = leader_check(released, T0, True, T)
    assert c.status == DEGRADED and "released it at shutdown" in c.message and "2s" in c.message
    assert c.details["released"] is True
    late = Lease("leader", "n1", 3, at(-40), at(-40))
    c = leader_check(late, T0, True, T)
    assert c.status == UNHEALTHY and "released" in c.message and "40s" in c.message


def test_an_expired_lease_says_its_holder_stopped_renewing() -> None:
    expired = lease(expires=-5)
    assert not expired.released
    c = leader_check(expired, T0, True, T)
    assert c.status == DEGRADED and "let it expire" in c.message
    assert leader_check(lease(expires=-33), T0, True, T).status == UNHEALTHY


# -- schedules ------------------------------------------------------------------------------
def test_overdue_schedules_are_unhealthy_and_named_with_their_lateness() -> None:
    rows = [schedule(f"s{i}", -100 + i) for i in range(7)]
    c = schedules_check(9, rows, [], T0, T)
    assert c.status == UNHEALTHY
    assert c.message.startswith("9 schedules overdue by more than 32s: s0 (due 100s ago), s1 (due 99s ago)")
    assert c.message.endswith("and 4 more")  # 5 named of 9
    assert c.details["overdue"] == 9 and [s["name"] for s in c.details["schedules"]] == [f"s{i}" for i in range(7)]


def test_a_schedule_in_error_counts_once_its_first_missed_fire_is_past_the_threshold() -> None:
    bad = schedule("bad", 3000, error="boom: secret text", error_since=at(-50), retry_from=at(-50))
    fresh = schedule("fresh", 3000, error="boom", error_since=at(-5), retry_from=at(-5))
    paused = schedule("paused", 3000, error="boom", error_since=at(-500), retry_from=at(-500), paused=True)
    disabled = schedule("off", 3000, error="boom", error_since=at(-500), retry_from=at(-500), enabled=False)
    c = schedules_check(0, [], [bad, fresh, paused, disabled], T0, T)
    assert c.status == UNHEALTHY and c.message == "1 schedule in error: bad (since 50s ago)"
    assert "secret" not in c.message and c.details["errors"][0]["error"] == "boom: secret text"  # details only
    ok = schedules_check(0, [], [fresh, paused, disabled], T0, T)
    assert ok.status == HEALTHY and "32s" in ok.message


# -- nodes ----------------------------------------------------------------------------------
def test_nodes_that_stopped_heartbeating_are_lost() -> None:
    c = nodes_check([node("a"), node("b", heartbeat=-45)], T0, T)
    assert c.status == DEGRADED
    assert c.message == "1 node lost (no heartbeat for more than 30s): b (last heartbeat 45s ago)"
    assert c.details["live"] == ["a"] and c.details["lost"][0]["id"] == "b"
    assert nodes_check([node("a"), node("b", heartbeat=-29)], T0, T).status == HEALTHY


def test_scheduler_nodes_with_different_registries_are_reported() -> None:
    c = nodes_check([node("a", registry="aaaa1111"), node("b", registry="bbbb2222"), node("c", registry="aaaa1111"),
                     node("w", roles="worker", registry="cccc")], T0, T)
    assert c.status == DEGRADED and "2 different registries" in c.message
    assert "aaaa1111: a, c" in c.message and "bbbb2222: b" in c.message and "w" not in c.details["registries"].get("cccc", [])
    # a lost node's old registry is not drift
    assert nodes_check([node("a"), node("old", heartbeat=-600, registry="old")], T0, T).message.startswith("1 node lost")


def test_no_live_node_is_degraded() -> None:
    c = nodes_check([], T0, T)
    assert c.status == DEGRADED and c.message == "no live node: nothing runs jobs or schedules"
    c = nodes_check([node("a", heartbeat=-31)], T0, T)
    assert c.message.startswith("no live node") and "a (last heartbeat 31s ago)" in c.message


# -- jobs -----------------------------------------------------------------------------------
def test_running_jobs_past_their_lock_are_named() -> None:
    jobs = [LockedJob(7, "billing.charge", "default", 1, "n1", at(-90)), LockedJob(9, "mail", "email", 2, "n2", at(-40))]
    c = stuck_check(2, jobs, T0, T)
    assert c.status == DEGRADED
    assert "2 running jobs past its lock by more than 30s" in c.message
    assert "#7 billing.charge (locked by n1, lock expired 90s ago)" in c.message
    assert stuck_check(0, [], T0, T).status == HEALTHY


def test_the_failure_rate_needs_enough_jobs_and_names_the_worst_queues() -> None:
    assert failure_check({"q": (0, 9)}, T).status == HEALTHY  # 9 < min_finished: too few to judge
    c = failure_check({"default": (30, 5), "email": (5, 10)}, T)
    assert c.status == DEGRADED
    assert c.message == ("15 of 50 jobs finished in the last 15m failed (30%, over 25%); by queue: email (10 of 15), "
                         "default (5 of 35)")
    assert c.details["rate"] == 0.3
    assert failure_check({"default": (38, 12)}, T).status == HEALTHY  # 24%


def test_the_queue_age_names_the_late_queues() -> None:
    c = queue_check({"default": at(-10), "email": at(-360), "later": at(60)}, T0, T)
    assert c.status == DEGRADED and c.message.startswith("due jobs waited more than 5m in 1 queue: email (6m)")
    assert queue_check({"": at(-360)}, T0, T).message.startswith("the oldest due job waited 6m (over 5m)")
    ok = queue_check({"default": at(-10), "later": at(60)}, T0, T)
    assert ok.status == HEALTHY and ok.message == "the oldest due job waited 10s"
    assert queue_check({}, T0, T).message == "no due job is waiting"


# -- the report -----------------------------------------------------------------------------
def test_the_report_is_the_worst_check_with_monitoring_plugin_exit_codes() -> None:
    ok, warn, bad = (Check("a", HEALTHY, "m"), Check("b", DEGRADED, "m", {"x": 1}), Check("c", UNHEALTHY, "m"))
    assert (HealthReport([ok]).status, HealthReport([ok]).exit_code) == ("healthy", 0)
    assert (HealthReport([ok, warn]).status, HealthReport([ok, warn]).exit_code) == ("degraded", 1)
    assert (HealthReport([bad, warn, ok]).status, HealthReport([bad, ok]).exit_code) == ("unhealthy", 2)
    assert HealthReport([]).status == UNHEALTHY  # nothing checked is nothing known
    report = HealthReport([ok, warn], T0)
    plain = report.as_dict()
    assert plain == {"status": "degraded", "exit_code": 1, "checked_at": "2030-01-01T00:00:00+00:00",
                     "checks": [{"name": "a", "status": "healthy", "message": "m"},
                                {"name": "b", "status": "degraded", "message": "m"}]}
    assert report.as_dict(details=True)["checks"][1]["details"] == {"x": 1}
    json.dumps(report.as_dict(details=True))
    assert report.check("b") is warn
    with pytest.raises(ValueError, match="status must be one of"):
        Check("x", "fine", "m")


def test_ages_read_well() -> None:
    assert [age(s) for s in (0.4, 45, 119, 720, 7200 * 1.75, 86400 * 3)] == ["0s", "45s", "119s", "12m", "3.5h", "3.0d"]


# -- the watch ------------------------------------------------------------------------------
def watch_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "action", "") for r in caplog.records if getattr(r, "action", "").startswith("scheduler_")]


def test_the_watch_logs_a_stall_once_per_incident_and_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    watch = SchedulerWatch("me", threshold=3)
    assert watch.interval == 1.0 and SchedulerWatch("me", 24).interval == 8 and SchedulerWatch("me", 300).interval == 10
    held = Lease(LEADER, "leader-node", 4, T0 + timedelta(seconds=30), T0)
    overdue = [schedule("every2s", -5), schedule("nightly", -4)]
    caplog.set_level(logging.INFO, logger="linger_sched.health")
    assert watch.observe(clock.now(), 0, [], held) is None  # all well
    clock.advance(5)
    assert watch.observe(clock.now(), 2, overdue, held) == "stalled"
    for _ in range(20):  # the stall goes on: logged once, not at every poll
        clock.advance(1)
        assert watch.observe(clock.now(), 2, overdue, held) is None
    (stalled,) = [r for r in caplog.records if getattr(r, "action", "") == "scheduler_stalled"]
    assert stalled.levelno == logging.ERROR
    assert (stalled.schedules, stalled.leader, stalled.epoch, stalled.overdue) == (  # type: ignore[attr-defined]
        ["every2s", "nightly"], "leader-node", 4, 2)
    assert "every2s" in stalled.getMessage() and "leader-node" in stalled.getMessage()
    clock.advance(1)
    took_over = Lease(LEADER, "peer", 5, clock.now() + timedelta(seconds=30), clock.now())
    assert watch.observe(clock.now(), 0, [], took_over) == "recovered"
    (recovered,) = [r for r in caplog.records if getattr(r, "action", "") == "scheduler_recovered"]
    assert recovered.leader == "peer" and recovered.stalled_for == 21.0  # type: ignore[attr-defined]
    assert watch.observe(clock.now(), 0, [], took_over) is None
    # a new incident is a new log line
    clock.advance(10)
    assert watch.observe(clock.now(), 1, overdue[:1], took_over) == "stalled"
    assert watch_records(caplog) == ["scheduler_stalled", "scheduler_recovered", "scheduler_stalled"]


def test_the_watch_leaves_overdue_schedules_without_a_valid_lease_to_the_leader_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    watch = SchedulerWatch("me", threshold=3)
    expired = Lease(LEADER, "dead", 4, T0 - timedelta(seconds=1), T0 - timedelta(seconds=60))
    assert watch.observe(clock.now(), 3, [schedule("a")], None) is None
    assert watch.observe(clock.now(), 3, [schedule("a")], expired) is None
    assert watch_records(caplog) == []


# -- settings ---------------------------------------------------------------------------------
def test_the_health_settings_come_from_the_environment_and_are_checked() -> None:
    s = resolve(env={"LINGER_NODE_LOST_AFTER": "45s", "LINGER_HEALTH_WINDOW": "1h", "LINGER_HEALTH_MAX_FAILURE_RATE": "25%",
                     "LINGER_HEALTH_MAX_QUEUE_AGE": "10m"})
    assert (s.node_lost_after, s.health_window, s.health_max_failure_rate, s.health_max_queue_age) == (45, 3600, 0.25, 600)
    assert resolve(env={"LINGER_HEALTH_MAX_FAILURE_RATE": "0.1"}).health_max_failure_rate == 0.1
    d = Settings()
    assert (d.node_lost_after, d.health_window, d.health_max_failure_rate, d.health_max_queue_age) == (30, 900, 0.5, 300)
    for var, value in (("LINGER_HEALTH_MAX_FAILURE_RATE", "150%"), ("LINGER_HEALTH_MAX_FAILURE_RATE", "lots"),
                       ("LINGER_HEALTH_MAX_FAILURE_RATE", "nan"), ("LINGER_NODE_LOST_AFTER", "0s"),
                       ("LINGER_HEALTH_MAX_QUEUE_AGE", "-5")):
        with pytest.raises(ConfigError) as err:
            resolve(env={var: value})
        assert var in str(err.value), (var, value, str(err.value))
    assert {"LINGER_NODE_LOST_AFTER", "LINGER_HEALTH_WINDOW", "LINGER_HEALTH_MAX_FAILURE_RATE",
            "LINGER_HEALTH_MAX_QUEUE_AGE"} <= set(ENV_VARS)
