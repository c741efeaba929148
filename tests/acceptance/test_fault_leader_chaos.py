"""Three nodes, a 1 s schedule and a stream of one-off jobs while the leader is SIGKILLed every
~5 s (and a fresh node started in its place): nothing is lost and no occurrence is duplicated."""

from __future__ import annotations

import signal
import time

import pytest

from .faults import (
    Cluster,
    Producer,
    audit_run,
    db_time,
    drain,
    holder_pid,
    setup_files,
    start_node,
    stop_all,
    wait_leader,
    wait_new_holder,
)

RUN_SECONDS = 60.0
KILL_EVERY = 5.0
LEASE_TTL = 3.0  # FAST_ENV: LINGER_LEASE_TTL=3s, RENEW 1s, JOB_LEASE_TTL 3s, RESCUE 0.5s


@pytest.mark.slow
def test_leader_sigkilled_every_5s_loses_and_duplicates_nothing(server_db: str, cluster: Cluster) -> None:
    setup_files(cluster)
    nodes = [start_node(cluster) for _ in range(3)]
    wait_leader(cluster, nodes)
    producer = Producer(server_db, cluster.prefix, interval=0.1)
    producer.start()
    started = time.monotonic()
    takeovers: list[float] = []
    epochs: list[int] = []
    killed: list[int] = []
    try:
        next_kill = started + KILL_EVERY
        while True:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            if time.monotonic() - started >= RUN_SECONDS:
                break
            leader = wait_leader(cluster, nodes, timeout=15)
            before = cluster.leader()
            assert before is not None and holder_pid(before.holder) == leader.pid
            killed_at = leader.signal(signal.SIGKILL)
            assert leader.wait(5) == -signal.SIGKILL
            killed.append(leader.pid)
            nodes.remove(leader)
            nodes.append(start_node(cluster))  # a replacement, as a supervisor would
            took_at, after = wait_new_holder(cluster, before.holder, LEASE_TTL + 12)
            takeovers.append(took_at - killed_at)
            epochs.append(after.epoch)
            assert holder_pid(after.holder) in {p.pid for p in nodes}, after
            assert after.epoch == before.epoch + 1, (before, after)
            next_kill = max(killed_at + KILL_EVERY, took_at + 1.5)
        wait_leader(cluster, nodes, timeout=15)
        time.sleep(1.5)
    finally:
        producer.stop()
    chaos = time.monotonic() - started
    stop_at_db = db_time(cluster)
    assert all(p.alive() for p in nodes), cluster.logs()[-5000:]
    codes = stop_all(nodes)
    assert codes == [0] * len(nodes), f"nodes exited {codes} after SIGTERM"
    bursts = drain(cluster)

    audit = audit_run(cluster, producer.ids())
    rescued = [j for j in audit.tick_jobs + cluster.all_jobs(task="tasks.order") if j.attempts > 1]
    last_gap = (stop_at_db - audit.ticks.last).total_seconds() if audit.ticks.last else None
    print(f"\nFIGURES {cluster.label} (a) leader chaos: {chaos:.0f}s, 3 nodes, {len(killed)} leader SIGKILLs; "
          f"{audit.tick_line()}; {audit.order_line()} (producer errors {len(producer.errors)}); {audit.exec_line()}; "
          f"jobs with attempts>1 {len(rescued)}; drained in {bursts} burst(s); last occurrence {last_gap:.1f}s before stop\n"
          f"FIGURES {cluster.label} (a) takeover after SIGKILL (s): {', '.join(f'{t:.2f}' for t in takeovers)}; "
          f"min {min(takeovers):.2f} max {max(takeovers):.2f} mean {sum(takeovers) / len(takeovers):.2f} "
          f"(lease TTL {LEASE_TTL:g}s); epochs {epochs}")

    assert len(killed) >= 9, f"only {len(killed)} kills in {chaos:.0f}s"
    audit.assert_clean(min_ticks=int(RUN_SECONDS))
    assert producer.errors == [], producer.errors[:5]
    assert audit.orders_enqueued >= 400, audit.orders_enqueued
    assert last_gap is not None and last_gap < LEASE_TTL + 3, "occurrences kept coming until the end"
    assert max(takeovers) <= LEASE_TTL + 3.0, takeovers
