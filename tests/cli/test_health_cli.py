"""``linger-sched health`` (exit status 0/1/2, a table or JSON, an unreachable database) and
``status`` (lost nodes, a released lease, ``--json``) on every database."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import sqlalchemy as sa

from cli_support import Cli, parse_table
from linger_sched import Linger
from linger_sched.scheduler import LEADER
from linger_sched.store import Store

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def live_cluster(store: Store) -> str:
    """A live node holding the leader lease (on the database's clock)."""
    store.register_node("host:1:aaa", host="host", pid=1, roles="scheduler,worker", registry_hash="r1", version="1")
    assert store.acquire_lease(LEADER, "host:1:aaa", 60) is not None
    return "host:1:aaa"


def overdue_schedule(db_url: str, prefix: str, store: Store) -> None:
    app = Linger(db_url, table_prefix=prefix)
    try:
        app.add_schedule("nightly-report", "add", every="1m", args=[1, 2])
    finally:
        app.store.dispose()
    an_hour_ago = store.db_now() - timedelta(hours=1)
    s = store.t.schedules
    store._tx(lambda c: c.execute(sa.update(s).where(s.c.name == "nightly-report").values(next_run_at=an_hour_ago)))


def test_health_exits_0_when_healthy_1_when_degraded_2_when_unhealthy(cli: Cli, store: Store, db_url: str, prefix: str) -> None:
    leader = live_cluster(store)
    r = cli.invoke("health")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].startswith("HEALTHY at ")
    rows = {row["CHECK"]: row for row in parse_table("\n".join(lines[1:]))}
    assert list(rows) == ["leader", "schedules_overdue", "nodes", "stuck_jobs", "failure_rate", "queue_age"]
    assert rows["leader"]["STATUS"] == "healthy" and leader in rows["leader"]["MESSAGE"]

    store.register_node("host:2:bbb", host="host", pid=2, roles="worker", registry_hash="r1", version="1",
                        now=store.db_now() - timedelta(seconds=90))
    r = cli.invoke("health")
    assert r.code == 1, r
    assert r.out.startswith("DEGRADED")
    rows = {row["CHECK"]: row for row in parse_table("\n".join(r.out.splitlines()[1:]))}
    assert rows["nodes"]["STATUS"] == "DEGRADED" and "host:2:bbb (last heartbeat 90s ago)" in rows["nodes"]["MESSAGE"]

    overdue_schedule(db_url, prefix, store)
    r = cli.invoke("health")
    assert r.code == 2 and r.out.startswith("UNHEALTHY"), r
    assert "1 schedule overdue by more than 32s: nightly-report (due 60m ago)" in r.out

    r = cli.invoke("health", "--json")
    assert r.code == 2, r
    doc = json.loads(r.out)
    assert (doc["status"], doc["exit_code"]) == ("unhealthy", 2) and ISO_WITH_OFFSET.match(doc["checked_at"])
    checks = {c["name"]: c for c in doc["checks"]}
    assert set(checks["schedules_overdue"]) == {"name", "status", "message", "details"}
    assert checks["schedules_overdue"]["details"]["schedules"][0]["name"] == "nightly-report"
    assert checks["nodes"]["details"]["lost"][0]["id"] == "host:2:bbb"


def test_the_health_thresholds_come_from_the_environment(cli: Cli, store: Store) -> None:
    live_cluster(store)
    store.register_node("host:2:bbb", host="host", pid=2, roles="worker", registry_hash="r1", version="1",
                        now=store.db_now() - timedelta(seconds=90))
    slow = Cli(cli.cwd, {**cli.linger_env, "LINGER_NODE_LOST_AFTER": "2m"})
    assert slow.invoke("health").code == 0
    bad = Cli(cli.cwd, {**cli.linger_env, "LINGER_HEALTH_MAX_FAILURE_RATE": "lots"})
    r = bad.invoke("health")
    assert r.code == 3 and "UNKNOWN" in r.err and "LINGER_HEALTH_MAX_FAILURE_RATE" in r.err, r  # the check could not run


def test_health_of_a_database_that_cannot_be_reached_is_unhealthy_with_a_message(nodb_cli: Cli, workdir: object) -> None:
    r = nodb_cli.invoke("health", "--database", "postgresql+psycopg://ops:hunter2@127.0.0.1:1/x")
    assert r.code == 2, r
    assert r.out.startswith("UNHEALTHY") and "cannot read the database (" in r.out
    assert "Traceback" not in r.out + r.err and "hunter2" not in r.out + r.err
    assert "database:" in r.err  # the driver's words, on stderr
    r = nodb_cli.invoke("health", "--json", "--database", f"sqlite:///{workdir}/no/such/dir/x.db")
    assert r.code == 2 and json.loads(r.out)["checks"][0]["name"] == "database", r
    r = nodb_cli.run("health", "--database", "postgresql+psycopg://ops:hunter2@127.0.0.1:1/x")
    assert r.code == 2 and "Traceback" not in r.err and "hunter2" not in r.out + r.err, r  # the console script


def test_status_marks_lost_nodes_and_a_released_lease(cli: Cli, store: Store) -> None:
    leader = live_cluster(store)
    store.register_node("host:2:bbb", host="host", pid=2, roles="worker", registry_hash="r1", version="1",
                        now=store.db_now() - timedelta(seconds=45))
    r = cli.invoke("status")
    assert r.code == 0, r
    assert re.search(rf"leader: {re.escape(leader)} \(epoch 1, lease valid until", r.out), r
    assert "nodes: 2 (1 lost: no heartbeat for more than 30s)" in r.out
    table_lines = r.out.split("\n", 2)[2].split("\njobs:")[0]
    rows = {row["NODE"]: row for row in parse_table(table_lines)}
    assert (rows[leader]["STATE"], rows["host:2:bbb"]["STATE"]) == ("live", "LOST")
    assert rows["host:2:bbb"]["HEARTBEAT"] == "45s ago"

    assert store.release_lease(LEADER, leader)
    r = cli.invoke("status")
    assert "leader: none (last was host:1:aaa, epoch 1; it released the lease at" in r.out and "EXPIRED" not in r.out, r

    r = cli.invoke("status", "--json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert list(doc) == ["db_now", "leader", "nodes", "node_lost_after", "jobs", "registries_differ", "schedule_errors"]
    assert doc["leader"] == {"node": leader, "epoch": 1, "state": "released", "expires_at": doc["leader"]["expires_at"],
                             "valid": False}
    assert list(doc["nodes"][0]) == ["id", "host", "pid", "roles", "registry", "version", "started_at", "heartbeat_at",
                                     "heartbeat_age", "lost"]
    assert {n["id"]: n["lost"] for n in doc["nodes"]} == {leader: False, "host:2:bbb": True}
    assert doc["jobs"] == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 0}
    for value in (doc["db_now"], doc["leader"]["expires_at"], *(n["heartbeat_at"] for n in doc["nodes"])):
        assert ISO_WITH_OFFSET.match(value), value
    assert datetime.fromisoformat(doc["db_now"]).utcoffset() == timedelta(0)

    # expired, not released: the node died
    store.acquire_lease(LEADER, "host:3:ccc", 0.001)
    r = cli.invoke("status")
    assert "leader: none (last was host:3:ccc, epoch 2; its lease expired at" in r.out, r
    assert json.loads(cli.invoke("status", "--json").out)["leader"]["state"] == "expired"
