"""Two nodes whose wall clocks are 5 minutes off, one each way (LINGER_CLOCK_OFFSET=-300/+300):
leases, due checks and lock expiry use the database clock, so nothing runs early, nothing late,
and no occurrence is duplicated, whichever of them leads."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest

from linger_sched import Linger
from linger_sched.scheduler import SchedulerSettings

from .faults import (
    Cluster,
    audit_run,
    drain,
    holder_pid,
    seconds_between,
    setup_files,
    start_node,
    stop_all,
    utc,
    wait_leader,
    wait_new_holder,
)

OFFSETS = ("-300", "300")
DELAY = 5.0
MAX_START_DELAY = 1.5


@pytest.mark.slow
def test_skewed_node_clocks_change_nothing(server_db: str, cluster: Cluster) -> None:
    setup_files(cluster)
    offset_of: dict[int, str] = {}

    def node(offset: str):  # type: ignore[no-untyped-def]
        p = start_node(cluster, LINGER_CLOCK_OFFSET=offset)
        offset_of[p.pid] = offset
        return p

    nodes = [node(o) for o in OFFSETS]
    leader = wait_leader(cluster, nodes)
    leaders = [offset_of[leader.pid]]

    plain = Linger(server_db, table_prefix=cluster.prefix)
    skewed = {o: Linger(server_db, table_prefix=cluster.prefix, clock_offset=float(o)) for o in OFFSETS}
    one_offs: list[int] = []

    def enqueue_round(base: int) -> None:
        # run_at computed from the database clock by the caller ...
        for i in range(3):
            run_at = plain.store.db_now() + timedelta(seconds=DELAY)
            one_offs.append(plain.enqueue("tasks.order", base + i, run_at=run_at))
        # ... and delay= from callers whose own clocks are skewed (the store adds it to the db clock)
        for k, (_o, app) in enumerate(skewed.items()):
            one_offs.append(app.enqueue("tasks.order", base + 10 + k, delay=DELAY))

    try:
        enqueue_round(100)
        time.sleep(8)
        # hand over to the node skewed the other way, restart the old leader with its offset
        before = cluster.leader()
        assert before is not None
        old = cluster.by_pid(holder_pid(before.holder))
        old.signal(signal.SIGTERM)
        _, after = wait_new_holder(cluster, before.holder, 10)
        assert old.wait(20) == 0
        nodes.remove(old)
        nodes.append(node(offset_of[old.pid]))
        leaders.append(offset_of[holder_pid(after.holder)])
        enqueue_round(200)
        time.sleep(8)
    finally:
        plain.store.dispose()
        for app in skewed.values():
            app.store.dispose()
    codes = stop_all(nodes)
    assert codes == [0, 0], codes
    drain(cluster)

    audit = audit_run(cluster, one_offs)
    jobs = {j.id: j for j in cluster.all_jobs()}
    oneoff_jobs = [jobs[i] for i in one_offs]
    every = list(jobs.values())
    early = [j for j in every if j.started_at is None or utc(j.started_at) < utc(j.run_at)]
    # an occurrence is written up to the scheduler's lead time ahead (run_at = its fire time),
    # on the database clock: a node's own skew must not make it any earlier
    ahead = timedelta(seconds=SchedulerSettings().lead_time)
    early_ticks = [j for j in audit.tick_jobs if utc(j.started_at) < utc(j.scheduled_for)
                   or utc(j.created_at) < utc(j.scheduled_for) - ahead]
    delays = [seconds_between(j.run_at, j.started_at) for j in oneoff_jobs]
    lead = [seconds_between(j.created_at, j.run_at) for j in oneoff_jobs]
    tick_delays = [seconds_between(j.scheduled_for, j.started_at) for j in audit.tick_jobs]
    print(f"\nFIGURES {cluster.label} (d) clock skew {OFFSETS[0]}s/+{OFFSETS[1]}s, leaders in turn (offsets) {leaders}: "
          f"early starts {len(early)} (occurrences started, or written more than the lead time, before their time {len(early_ticks)}), "
          f"duplicated occurrences {audit.ticks.duplicated}, missing {len(audit.ticks.missing)}, of {audit.ticks.expected}; "
          f"one-off jobs {len(oneoff_jobs)}: run_at - created_at {min(lead):.3f}..{max(lead):.3f}s (asked {DELAY:g}s), "
          f"start delays after run_at (s) {', '.join(f'{d:.3f}' for d in delays)}; "
          f"occurrence start delays min {min(tick_delays):.3f} mean {sum(tick_delays) / len(tick_delays):.3f} "
          f"max {max(tick_delays):.3f}s; {audit.order_line()}")

    assert set(leaders) == set(OFFSETS), f"both skewed nodes should have led: {leaders}"
    assert early == [] and early_ticks == [], [(j.id, j.run_at, j.started_at) for j in early + early_ticks]
    assert all(abs(x - DELAY) < 0.5 for x in lead), lead  # delay= uses the database clock, not the caller's
    assert max(delays) <= MAX_START_DELAY, delays
    assert max(tick_delays) <= 3.0, tick_delays
    audit.assert_clean(min_ticks=15)
