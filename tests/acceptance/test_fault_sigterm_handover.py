"""SIGTERM on the leader with a long lease (15 s): it releases the lease on its way out, so a peer
leads again within a tick or two, far sooner than the TTL."""

from __future__ import annotations

import signal
import time

import pytest

from .faults import (
    Cluster,
    audit_run,
    drain,
    holder_pid,
    setup_files,
    start_node,
    stop_all,
    wait_leader,
    wait_new_holder,
    wait_registered,
)

LEASE_TTL = 15.0


@pytest.mark.slow
def test_sigterm_of_the_leader_hands_over_long_before_the_ttl(server_db: str, cluster: Cluster) -> None:
    setup_files(cluster)
    env = {"LINGER_LEASE_TTL": f"{LEASE_TTL:g}s", "LINGER_RENEW_INTERVAL": "5s"}
    nodes = [start_node(cluster, **env) for _ in range(2)]
    handovers: list[float] = []
    for _ in range(2):
        leader = wait_leader(cluster, nodes)
        wait_registered(cluster, nodes)
        time.sleep(2)  # steady state: a few occurrences
        before = cluster.leader()
        assert before is not None and holder_pid(before.holder) == leader.pid
        sent = leader.signal(signal.SIGTERM)
        took_at, after = wait_new_holder(cluster, before.holder, LEASE_TTL + 5, interval=0.02)
        handovers.append(took_at - sent)
        assert leader.wait(20) == 0, "a SIGTERMed node exits 0"
        assert after.epoch == before.epoch + 1
        nodes.remove(leader)
        assert holder_pid(after.holder) in {p.pid for p in nodes}
        nodes.append(start_node(cluster, **env))
    wait_leader(cluster, nodes)
    wait_registered(cluster, nodes)
    time.sleep(1)
    codes = stop_all(nodes)
    assert codes == [0, 0], codes
    drain(cluster)
    audit = audit_run(cluster, [])
    print(f"\nFIGURES {cluster.label} (e) leader SIGTERM with a {LEASE_TTL:g}s lease: a peer held the lease "
          f"{', '.join(f'{h:.2f}' for h in handovers)}s later; {audit.tick_line()}; {audit.exec_line()}")
    assert max(handovers) < 3.0, handovers
    audit.assert_clean(min_ticks=3)
    assert not audit.rerun, "a clean hand-over re-runs nothing"
