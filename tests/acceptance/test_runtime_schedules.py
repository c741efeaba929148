"""A schedule created at runtime on a farm of three ``linger-sched run`` nodes (PostgreSQL and
MariaDB): added by one process, it fires exactly once per occurrence on the farm, survives a
node's restart (whose start-up sync declares nothing and must not disable it), and stops firing
once removed."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

import pytest

from .helpers import Cluster, Proc, audit_occurrences, task_module, utc, wait_for

EVERY = timedelta(seconds=1)


def stop(nodes: list[Proc], timeout: float = 20) -> None:
    for p in nodes:
        p.signal(signal.SIGTERM)
    codes = [p.wait(timeout) for p in nodes]
    assert codes == [0] * len(nodes), f"nodes exited {codes} after SIGTERM"


@pytest.mark.slow
def test_a_schedule_added_at_runtime_fires_once_per_occurrence_on_the_farm(server_db: str, cluster: Cluster) -> None:
    cluster.write("tasks.py", task_module())
    nodes = [cluster.cli("node", "run", "--import", "tasks") for _ in range(3)]
    pids = {p.pid for p in nodes}
    wait_for(lambda: cluster.leader_pid() in pids, 20, 0.1, "a leader among the nodes")

    # added by a process of its own (as a web request would), not by a node
    out = cluster.run_cli("schedules", "add", "tick", "--task", "tasks.mark", "--every", "1s", "--misfire", "all",
                          "--overlap", "allow", "--import", "tasks")
    assert "tick" in out.stdout
    added = time.monotonic()
    wait_for(lambda: len(cluster.result_lines()) >= 3, 20, 0.1, "the runtime schedule to fire")

    # a node restarts: its sync (no schedule declared) leaves the runtime schedule alone
    victim = nodes[0]
    stop([victim])
    nodes = [*nodes[1:], cluster.cli("node", "run", "--import", "tasks")]
    time.sleep(max(0.0, 15 - (time.monotonic() - added)))
    schedule = cluster.store.get_schedule("tick")
    assert (schedule.source, schedule.enabled, schedule.disabled_reason) == ("runtime", True, None)

    cluster.run_cli("schedules", "remove", "tick")
    removed_rows = len(cluster.all_jobs(schedule_name="tick"))
    time.sleep(3)
    after = cluster.all_jobs(schedule_name="tick")
    assert len(after) <= removed_rows + 1, "no occurrence after the removal (but one being written then)"
    stop(nodes)

    cluster.run_cli("worker", "--burst", "--import", "tasks", timeout=60)
    jobs = cluster.all_jobs(schedule_name="tick")
    anchor = min(utc(j.scheduled_for) for j in jobs)
    audit = audit_occurrences([j.scheduled_for for j in jobs], anchor, EVERY)
    runs = Counter(int(line[0]) for line in cluster.result_lines())
    per_pid = Counter(int(line[3]) for line in cluster.result_lines())
    print(f"\n[{cluster.label}] runtime schedule every 1s on 3 nodes for ~15s: {audit.line()}; "
          f"runs per pid {dict(per_pid)}")
    assert audit.expected >= 10, audit
    assert audit.missing == [] and audit.duplicated == 0 and audit.misaligned == [], audit
    assert {j.state for j in jobs} == {"succeeded"}
    assert all(runs[j.id] == 1 for j in jobs), "every occurrence ran exactly once"
    assert sum(runs.values()) == len(jobs)
