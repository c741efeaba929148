"""Health sees a stalled scheduler from the other nodes (issue 14), with real node processes.

Two nodes, a schedule every second, a 12 s leader lease renewed every second and a 3 s misfire
threshold, so that a stall shows (schedules overdue) long before a peer can take over:

(a) the leader process is frozen (SIGSTOP): ``health``, run from the test process and as the
    CLI, turns unhealthy within the threshold while the frozen leader's lease still looks
    valid, and healthy again once a peer took the lease over and caught up;
(b) the leader's scheduler thread is killed (a test-only switch in the task module makes its
    tick raise a BaseException after renewing the lease, so the thread dies each time the
    supervisor restarts it, until the supervisor gives up and stops the node): the same, and
    the peer logs ``scheduler_stalled`` once and ``scheduler_recovered`` once.

Each test prints a FIGURES line: seconds from the fault to ``health`` unhealthy, to the peer's
take-over, and to healthy again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linger_sched import Linger
from linger_sched.health import HealthReport

from .faults import TASKS, Cluster, audit_run, drain, holder_pid, stop_all, wait_for, wait_leader, wait_registered
from .helpers import cli_cmd

LEASE_TTL = 12.0
THRESHOLD = 3.0  # LINGER_MISFIRE_THRESHOLD: health's overdue threshold and every node's watch
ENV = {
    "LINGER_LEASE_TTL": f"{LEASE_TTL:g}s",
    "LINGER_RENEW_INTERVAL": "1s",
    "LINGER_MISFIRE_THRESHOLD": f"{THRESHOLD:g}s",
    # a frozen node must not turn the nodes check degraded while we wait for "healthy"
    "LINGER_NODE_LOST_AFTER": "60s",
}

# The task module of faults.py, plus: every log record with an ``action`` appended to
# actions.jsonl (whatever the log format), and the switch that kills the scheduler thread of
# the process whose pid names a file kill-scheduler-<pid>.
HEALTH_TASKS = TASKS + '''

import json
import logging

from linger_sched.scheduler import Scheduler

HERE = os.path.dirname(os.path.abspath(__file__))
ACTIONS = os.path.join(HERE, "actions.jsonl")


class ActionFile(logging.Handler):
    def emit(self, record):
        action = getattr(record, "action", None)
        if not action:
            return
        line = json.dumps({"pid": os.getpid(), "action": action, "level": record.levelname, "t": record.created,
                           "leader": getattr(record, "leader", None), "schedules": getattr(record, "schedules", None)})
        fd = os.open(ACTIONS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


logging.getLogger("linger_sched").addHandler(ActionFile())


class SchedulerKilled(BaseException):
    """Not an Exception: the scheduler loop lets it through, and its thread dies."""


_tick = Scheduler.tick


def tick(self):
    if os.path.exists(os.path.join(HERE, f"kill-scheduler-{os.getpid()}")):
        self._lead()  # the lease is still renewed: only the materializing stops
        raise SchedulerKilled("the scheduler thread was killed by the fault test")
    return _tick(self)


Scheduler.tick = tick
'''

SCHEDULES = """
imports: [tasks]
schedules:
  tick:
    task: tasks.tick
    every: 1s
    misfire: all
    overlap: allow
"""


@dataclass
class Timeline:
    """What ``health`` said, polled from the test process (another node's point of view)."""

    fault_at: float
    unhealthy_at: float | None = None
    leader_check_at_unhealthy: str | None = None
    took_over_at: float | None = None
    healthy_at: float | None = None
    reports: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)

    def seconds(self, t: float | None) -> str:
        return "never" if t is None else f"{t - self.fault_at:.1f}"


def health_app(cluster: Cluster) -> Linger:
    return Linger(cluster.db_url, table_prefix=cluster.prefix, lease_ttl=LEASE_TTL, renew_interval=1.0,
                  misfire_threshold=THRESHOLD, node_lost_after=60.0)


def wait_healthy(app: Linger, timeout: float) -> HealthReport:
    deadline = time.monotonic() + timeout
    while True:
        report = app.health()
        if report.status == "healthy":
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout:g}s: {report.as_dict(details=True)}")
        time.sleep(0.25)


def follow(app: Linger, cluster: Cluster, old_holder: str, fault_at: float, timeout: float,
           on_unhealthy: Any = None) -> Timeline:
    """Poll health every 0.25 s until it was unhealthy and is healthy again after a take-over."""
    tl = Timeline(fault_at)
    deadline = fault_at + timeout
    while time.monotonic() < deadline:
        report = app.health()
        now = time.monotonic()
        tl.reports.append((now - fault_at, report.status, {c.name: c.status for c in report.checks}))
        lease = cluster.leader()
        if tl.took_over_at is None and lease is not None and lease.holder != old_holder:
            tl.took_over_at = now
        if tl.unhealthy_at is None and report.status == "unhealthy":
            assert report.check("schedules_overdue").status == "unhealthy", report.as_dict(details=True)
            tl.unhealthy_at = now
            tl.leader_check_at_unhealthy = report.check("leader").status
            if on_unhealthy is not None:
                on_unhealthy()
        elif tl.unhealthy_at is not None and tl.took_over_at is not None and report.status == "healthy":
            tl.healthy_at = now
            return tl
        time.sleep(0.25)
    raise AssertionError(f"health did not go unhealthy and back within {timeout:g}s: {tl.reports[-20:]}")


def health_cli(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    """``linger-sched health --json`` as another process would run it."""
    out = subprocess.run(cli_cmd("health", "--json"), cwd=cluster.workdir, env=dict(cluster.env, **ENV),
                         capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


def actions(cluster: Cluster, pid: int, *names: str) -> list[dict[str, Any]]:
    path = Path(cluster.workdir) / "actions.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["pid"] == pid and r["action"] in names]


def start(cluster: Cluster) -> tuple[list[Any], Any, Any, Linger]:
    cluster.write("tasks.py", HEALTH_TASKS)
    cluster.write("schedules.yaml", SCHEDULES)
    nodes = [cluster.cli("node", "run", "--config", "schedules.yaml", **ENV) for _ in range(2)]
    leader = wait_leader(cluster, nodes)
    wait_registered(cluster, nodes)
    (peer,) = [p for p in nodes if p is not leader]
    app = health_app(cluster)
    wait_healthy(app, 30)
    time.sleep(2)  # a few occurrences in steady state
    wait_healthy(app, 10)
    return nodes, leader, peer, app


@pytest.mark.slow
def test_a_frozen_leader_is_unhealthy_within_the_threshold_and_healthy_after_take_over(
    server_db: str, cluster: Cluster,
) -> None:
    nodes, leader, peer, app = start(cluster)
    try:
        before = cluster.leader()
        assert before is not None and holder_pid(before.holder) == leader.pid
        cli_codes: list[int] = []

        def run_the_cli() -> None:
            code, doc = health_cli(cluster)
            cli_codes.append(code)
            assert doc["status"] in ("unhealthy", "healthy"), doc

        frozen_at = leader.signal(signal.SIGSTOP)
        tl = follow(app, cluster, before.holder, frozen_at, LEASE_TTL + 30, on_unhealthy=run_the_cli)
        code, doc = health_cli(cluster)
        assert code == 0, doc
    finally:
        leader.signal(signal.SIGCONT)
        app.store.dispose()
    wait_leader(cluster, nodes)
    wait_for(lambda: actions(cluster, peer.pid, "scheduler_recovered"), 10, 0.1, "the peer's watch to see the recovery")
    codes = stop_all(nodes)
    drain(cluster)
    audit = audit_run(cluster, [])
    stalled = actions(cluster, peer.pid, "scheduler_stalled")
    recovered = actions(cluster, peer.pid, "scheduler_recovered")
    print(f"\nFIGURES {cluster.label} health (a) leader SIGSTOPped, lease {LEASE_TTL:g}s, threshold {THRESHOLD:g}s: "
          f"unhealthy after {tl.seconds(tl.unhealthy_at)}s (leader check then {tl.leader_check_at_unhealthy}), "
          f"peer took over after {tl.seconds(tl.took_over_at)}s, healthy after {tl.seconds(tl.healthy_at)}s; "
          f"CLI exit {cli_codes}; peer logged scheduler_stalled {len(stalled)}x, scheduler_recovered {len(recovered)}x; "
          f"{audit.tick_line()}")
    assert tl.unhealthy_at is not None and tl.unhealthy_at - frozen_at <= THRESHOLD + 4.0, tl.reports
    assert tl.leader_check_at_unhealthy == "healthy"  # the frozen leader's lease still looked valid
    assert tl.took_over_at is not None and tl.healthy_at is not None
    assert tl.healthy_at - frozen_at <= LEASE_TTL + 8.0, tl.reports
    assert cli_codes == [2], cli_codes  # run by another process while the leader was frozen
    assert (len(stalled), len(recovered)) == (1, 1), (stalled, recovered)
    assert stalled[0]["leader"] == before.holder and stalled[0]["schedules"] == ["tick"] and stalled[0]["level"] == "ERROR"
    assert codes == [0, 0], codes
    audit.assert_clean(min_ticks=10)


@pytest.mark.slow
def test_a_dead_scheduler_thread_is_unhealthy_and_logged_by_the_peer_until_a_peer_takes_over(
    db_url: str, cluster: Cluster,
) -> None:
    nodes, leader, peer, app = start(cluster)
    try:
        before = cluster.leader()
        assert before is not None and holder_pid(before.holder) == leader.pid
        cli_codes: list[int] = []
        killed_at = time.monotonic()
        (cluster.workdir / f"kill-scheduler-{leader.pid}").write_text("")
        tl = follow(app, cluster, before.holder, killed_at, 60,
                    on_unhealthy=lambda: cli_codes.append(health_cli(cluster)[0]))
    finally:
        app.store.dispose()
    exit_code = leader.wait(60)  # the supervisor gave up on its scheduler thread: it stopped the node
    wait_for(lambda: actions(cluster, peer.pid, "scheduler_recovered"), 10, 0.1, "the peer's watch to see the recovery")
    stalled = actions(cluster, peer.pid, "scheduler_stalled")
    recovered = actions(cluster, peer.pid, "scheduler_recovered")
    own = actions(cluster, leader.pid, "scheduler_stalled")
    deaths = actions(cluster, leader.pid, "thread_died")
    codes = stop_all([peer])
    drain(cluster)
    audit = audit_run(cluster, [])
    print(f"\nFIGURES {cluster.label} health (b) leader's scheduler thread killed, lease {LEASE_TTL:g}s, threshold "
          f"{THRESHOLD:g}s: unhealthy after {tl.seconds(tl.unhealthy_at)}s (leader check then "
          f"{tl.leader_check_at_unhealthy}), peer took over after {tl.seconds(tl.took_over_at)}s (the node gave up "
          f"after {len(deaths)} thread deaths, exit {exit_code}), healthy after {tl.seconds(tl.healthy_at)}s; CLI exit "
          f"{cli_codes}; peer logged scheduler_stalled {len(stalled)}x, scheduler_recovered {len(recovered)}x; "
          f"{audit.tick_line()}")
    assert tl.unhealthy_at is not None and tl.unhealthy_at - killed_at <= THRESHOLD + 4.0, tl.reports
    assert tl.leader_check_at_unhealthy == "healthy"  # the lease is renewed: only the overdue check tells
    assert tl.healthy_at is not None and tl.healthy_at - killed_at <= 40, tl.reports
    assert cli_codes == [2], cli_codes
    assert (len(stalled), len(recovered)) == (1, 1), (stalled, recovered)
    assert stalled[0]["leader"] == before.holder and stalled[0]["schedules"] == ["tick"] and stalled[0]["level"] == "ERROR"
    assert len(own) == 1  # the stalled leader's own watch noticed too
    assert exit_code == 1 and len(deaths) >= 6, (exit_code, deaths)
    assert codes == [0], codes
    audit.assert_clean(min_ticks=10)
