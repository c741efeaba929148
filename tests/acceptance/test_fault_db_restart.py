"""The database server restarts under two running nodes and a producer: the nodes ride it out,
work resumes, and every job that was enqueued (before, during or after) runs; occurrences stay
exactly once.

This test stops the local server for a few seconds: anything else using it at that moment
(another test run) sees the outage too. The server is always started again (finally block)."""

from __future__ import annotations

import time

import pytest

from .faults import (
    Cluster,
    Producer,
    audit_run,
    db_time,
    drain,
    server,
    setup_files,
    start_node,
    stop_all,
    wait_for,
    wait_leader,
)

PAUSE = 3.0  # seconds the server stays down


@pytest.mark.slow
def test_nodes_survive_a_database_restart(server_db: str, db_name: str, cluster: Cluster) -> None:
    srv = server(db_name, server_db)
    srv.require_control()
    setup_files(cluster)
    nodes = [start_node(cluster) for _ in range(2)]
    wait_leader(cluster, nodes)
    producer = Producer(server_db, cluster.prefix, interval=0.1)
    producer.start()
    try:
        time.sleep(5)
        before_ticks = len(cluster.all_jobs(schedule_name="tick"))
        down_at = time.monotonic()
        try:
            srv.stop()
            stopped_at = time.monotonic()
            alive_while_down = [p.alive() for p in nodes]
            time.sleep(PAUSE)
            alive_while_down += [p.alive() for p in nodes]
            srv.start()
            up_at = srv.wait_up()
        finally:
            srv.ensure_up()
        outage = up_at - down_at
        up_db = db_time(cluster)

        # work resumed: a job finished, a new occurrence materialized, the producer got an id
        def finished_after_up() -> bool:
            return bool(cluster.query("SELECT count(*) FROM {p}jobs WHERE state = 'succeeded' AND finished_at > :t", t=up_db)[0][0])

        def materialized_after_up() -> bool:
            return bool(cluster.query("SELECT count(*) FROM {p}jobs WHERE schedule_name = 'tick' AND created_at > :t", t=up_db)[0][0])

        wait_for(finished_after_up, 30, 0.05, "a job to finish after the restart")
        jobs_resumed = time.monotonic() - up_at
        wait_for(materialized_after_up, 30, 0.05, "an occurrence materialized after the restart")
        ticks_resumed = time.monotonic() - up_at
        first_after = wait_for(lambda: next((e for e in producer.enqueued if e.at > up_at), None), 30, 0.05,
                               "the producer to enqueue after the restart")
        done = wait_for(lambda: (j := cluster.job(first_after.job_id)).state == "succeeded" and j, 30, 0.05,
                        "a job enqueued after the restart to run")
        new_job_ran = time.monotonic() - up_at
        time.sleep(6)
    finally:
        producer.stop()
    alive_after = [p.alive() for p in nodes]
    codes = stop_all(nodes)
    drain(cluster)

    audit = audit_run(cluster, producer.ids())
    during = [e for e in producer.enqueued if down_at <= e.at <= up_at]
    after = [e for e in producer.enqueued if e.at > up_at]
    rescued = [j for j in cluster.all_jobs() if j.attempts > 1]
    logs = cluster.logs()
    print(f"\nFIGURES {cluster.label} (c) database restart: outage {outage:.2f}s (stop took {stopped_at - down_at:.2f}s, "
          f"down {PAUSE:g}s, start {up_at - stopped_at - PAUSE:.2f}s); after the server answered: first job finished "
          f"{jobs_resumed:.2f}s, first new occurrence materialized {ticks_resumed:.2f}s, first job enqueued after the "
          f"restart (id {first_after.job_id}) had run {new_job_ran:.2f}s after the server answered; producer enqueue errors during the outage "
          f"{len(producer.errors)}, enqueued before/during/after {len(producer.enqueued) - len(during) - len(after)}/"
          f"{len(during)}/{len(after)}; occurrences before the outage {before_ticks}\n"
          f"FIGURES {cluster.label} (c) {audit.tick_line()}; {audit.order_line()}; {audit.exec_line()}; "
          f"jobs with attempts>1 {len(rescued)}; node exit codes after SIGTERM {codes}; "
          f"'worker iteration failed' log lines {logs.count('worker iteration failed')}, "
          f"'scheduler tick failed' {logs.count('scheduler tick failed')}")

    assert all(alive_while_down), "a node exited while the database was down"
    assert all(alive_after), "a node exited after the database restart"
    assert codes == [0, 0], codes
    assert after and done.state == "succeeded"
    assert jobs_resumed < 20 and ticks_resumed < 20, (jobs_resumed, ticks_resumed)
    audit.assert_clean(min_ticks=10)
