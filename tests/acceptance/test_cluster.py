"""Two ``linger-sched run`` nodes on one database: exactly-once occurrences, leader fail-over."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

import pytest

from .helpers import Cluster, Proc, OccurrenceAudit, audit_occurrences, holder_pid, task_module, utc, wait_for

EVERY = timedelta(seconds=1)
SCHEDULES_YAML = """
imports: [tasks]
schedules:
  tick:
    task: tasks.mark
    every: 1s
    misfire: all
    overlap: allow
"""


def start_nodes(cluster: Cluster, n: int = 2, **env: str) -> list[Proc]:
    cluster.write("tasks.py", task_module())
    cluster.write("schedules.yaml", SCHEDULES_YAML)
    return [cluster.cli("node", "run", "--config", "schedules.yaml", **env) for _ in range(n)]


def wait_leader(cluster: Cluster, nodes: list[Proc], timeout: float = 20) -> Proc:
    pids = {p.pid for p in nodes}
    pid = wait_for(lambda: (p := cluster.leader_pid()) in pids and p, timeout, 0.1, "a leader among the nodes")
    return cluster.by_pid(pid)


def wait_new_holder(cluster: Cluster, old_holder: str, timeout: float) -> tuple[float, object]:
    """Poll the lease row until someone other than ``old_holder`` holds it; (monotonic time, lease)."""
    def changed() -> object:
        lease = cluster.leader()
        return lease is not None and lease.holder != old_holder and lease
    lease = wait_for(changed, timeout, 0.02, "another node to take the leader lease")
    return time.monotonic(), lease


def stop(nodes: list[Proc], timeout: float = 20) -> None:
    for p in nodes:
        p.signal(signal.SIGTERM)
    codes = [p.wait(timeout) for p in nodes]
    assert codes == [0] * len(nodes), f"nodes exited {codes} after SIGTERM"


def drain_and_audit(cluster: Cluster) -> tuple[OccurrenceAudit, list, Counter[int]]:
    """Run every occurrence left queued (a burst worker), then compare the schedule's rows with
    anchor + k·1s and count the runs per job in results.txt."""
    cluster.run_cli("worker", "--burst", "--import", "tasks", timeout=60)
    anchor = cluster.store.get_schedule("tick").anchor
    jobs = cluster.all_jobs(schedule_name="tick")
    audit = audit_occurrences([j.scheduled_for for j in jobs], utc(anchor), EVERY)
    runs = Counter(int(line[0]) for line in cluster.result_lines())
    # a results line names the occurrence it ran: it must be that job's scheduled_for
    by_id = {j.id: j for j in jobs}
    for line in cluster.result_lines():
        job = by_id[int(line[0])]
        assert line[1] == job.scheduled_for.isoformat(), (line, job)
    assert audit.first == utc(anchor), "the anchor itself is the first fire time"
    return audit, jobs, runs


@pytest.mark.slow
def test_two_nodes_materialize_and_run_every_occurrence_exactly_once(cluster: Cluster) -> None:
    nodes = start_nodes(cluster)
    started = time.monotonic()
    wait_leader(cluster, nodes)
    time.sleep(max(0.0, 25 - (time.monotonic() - started)))
    stop(nodes)

    audit, jobs, runs = drain_and_audit(cluster)
    ran_once = sum(1 for j in jobs if runs[j.id] == 1)
    ran_twice = sum(1 for j in jobs if runs[j.id] > 1)
    per_node = Counter(int(line[3]) for line in cluster.result_lines())
    print(f"\n[{cluster.label}] two nodes, every 1s for 25s: {audit.line()}; ran exactly once {ran_once}/{len(jobs)}, "
          f"more than once {ran_twice}, never {sum(1 for j in jobs if runs[j.id] == 0)}; "
          f"runs per pid {dict(per_node)} (pids other than the nodes' {[p.pid for p in nodes]}: the burst worker "
          f"that ran what was still queued at shutdown)")

    assert audit.expected >= 20, audit
    assert audit.missing == [] and audit.duplicated == 0 and audit.misaligned == [], audit
    assert audit.seen == audit.expected == len(jobs)
    assert Counter(j.state for j in jobs) == {"succeeded": len(jobs)}
    assert all(j.attempts == 1 and j.occurrences == 1 for j in jobs)
    assert ran_once == len(jobs), "every occurrence ran exactly once"
    assert sum(runs.values()) == len(jobs)


@pytest.mark.slow
def test_sigkill_of_the_leader_fails_over_within_the_lease_ttl(cluster: Cluster) -> None:
    ttl = 3.0
    nodes = start_nodes(cluster)
    leader = wait_leader(cluster, nodes)
    time.sleep(4)  # steady state: a few occurrences
    before = cluster.leader()
    assert before is not None and holder_pid(before.holder) == leader.pid
    follower = next(p for p in nodes if p is not leader)

    killed_at = leader.signal(signal.SIGKILL)
    assert leader.wait(5) == -signal.SIGKILL
    took_at, after = wait_new_holder(cluster, before.holder, ttl + 10)
    takeover = took_at - killed_at
    print(f"\n[{cluster.label}] leader SIGKILL: follower took the lease {takeover:.2f}s later (lease TTL {ttl:g}s, "
          f"epoch {before.epoch} -> {after.epoch})")
    assert holder_pid(after.holder) == follower.pid
    assert after.epoch == before.epoch + 1
    assert takeover <= ttl + 2.0, f"takeover took {takeover:.2f}s"

    time.sleep(4)
    stop([follower])
    audit, jobs, runs = drain_and_audit(cluster)
    late = [j for j in jobs if (j.created_at - j.scheduled_for).total_seconds() > 0.5]
    rescued = [j for j in jobs if j.attempts > 1]
    print(f"  occurrences: {audit.line()}; materialized late (caught up after the gap): {len(late)}; "
          f"rescued from the dead leader: {len(rescued)}; states {dict(Counter(j.state for j in jobs))}")

    assert audit.missing == [] and audit.duplicated == 0 and audit.misaligned == [], audit
    assert audit.seen == len(jobs)
    # misfire: all -> every missed fire time of the gap became its own job (none coalesced or skipped)
    assert Counter(j.state for j in jobs) == {"succeeded": len(jobs)}
    assert all(j.occurrences == 1 for j in jobs)
    if takeover > 2.0:  # the first fire after the kill was then created > 1s late
        assert late, "the gap's fire times were caught up by the new leader"
    for j in jobs:
        assert runs[j.id] >= 1, f"occurrence {j.scheduled_for} never ran"
        if runs[j.id] > 1:  # at-least-once: only a job rescued from the killed node may run twice
            assert j.attempts > 1 and "lease expired" in (j.last_error or ""), j


def test_sigterm_of_the_leader_hands_over_at_once(cluster: Cluster) -> None:
    ttl = 10.0
    nodes = start_nodes(cluster, LINGER_LEASE_TTL="10s", LINGER_RENEW_INTERVAL="2s")
    leader = wait_leader(cluster, nodes)
    time.sleep(2)
    before = cluster.leader()
    assert before is not None and holder_pid(before.holder) == leader.pid
    follower = next(p for p in nodes if p is not leader)

    sent = leader.signal(signal.SIGTERM)
    took_at, after = wait_new_holder(cluster, before.holder, ttl + 5)
    handover = took_at - sent
    print(f"\n[{cluster.label}] leader SIGTERM: follower took the lease {handover:.2f}s later (lease TTL {ttl:g}s)")
    assert leader.wait(10) == 0
    assert holder_pid(after.holder) == follower.pid
    assert after.epoch == before.epoch + 1
    assert handover < 3.0, f"handover took {handover:.2f}s with a {ttl:g}s lease: the lease was not released"

    time.sleep(2)
    stop([follower])
    audit, jobs, runs = drain_and_audit(cluster)
    print(f"  occurrences: {audit.line()}")
    assert audit.missing == [] and audit.duplicated == 0 and audit.misaligned == [], audit
    assert Counter(j.state for j in jobs) == {"succeeded": len(jobs)}
    assert all(runs[j.id] == 1 for j in jobs), "a clean hand-over re-runs nothing"
