"""The web-farm shape of docs/web-farm.md: examples/webapp under gunicorn with 4 workers, each
worker running a node (post_worker_init / worker_exit), real HTTP requests enqueueing jobs.
Exactly one node leads, every order runs exactly once, every tick occurrence exists once."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from .faults import Cluster, audit_run, drain, holder_pid, parent_pid, utc, wait_for

REPO = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
WORKERS = 4
ORDERS = 200
SEND_SECONDS = 10.0


@pytest.fixture
def postgres_only(db_name: str) -> None:
    if db_name != "postgresql":
        pytest.skip("the gunicorn web-farm test runs on PostgreSQL only")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


@pytest.mark.slow
def test_gunicorn_workers_run_every_order_exactly_once(postgres_only: None, server_db: str, cluster: Cluster) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results = cluster.workdir / "web-results.txt"
    env = {
        "PYTHONPATH": str(REPO), "WEBAPP_BIND": f"127.0.0.1:{port}", "WEBAPP_WORKERS": str(WORKERS),
        "WEBAPP_RESULTS": str(results), "WEBAPP_EVERY": "1s", "WEBAPP_CONCURRENCY": "4",
        "LINGER_LEASE_TTL": "5s", "LINGER_RENEW_INTERVAL": "1s",
    }
    master = cluster.start("gunicorn", [GUNICORN, "-c", str(REPO / "examples/webapp/gunicorn.conf.py"),
                                        "examples.webapp.app:web"], **env)

    def healthy() -> bool:
        try:
            return http("GET", f"{base}/health", timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(healthy, 60, 0.2, "gunicorn to answer /health")
    wait_for(lambda: len(cluster.store.list_nodes()) == WORKERS, 30, 0.1, f"{WORKERS} nodes to register")

    sent: list[tuple[str, int, dict]] = []
    errors: list[str] = []

    def sender() -> None:
        start = time.monotonic()
        for n in range(1, ORDERS + 1):
            time.sleep(max(0.0, start + n * SEND_SECONDS / ORDERS - time.monotonic()))
            try:
                status, body = http("POST", f"{base}/orders/{n}")
                sent.append((str(n), status, body))
            except OSError as exc:
                errors.append(f"{n}: {exc}")

    t = threading.Thread(target=sender, name="http-sender", daemon=True)
    send_started = time.monotonic()
    t.start()
    samples: list[tuple[int, int, bool]] = []  # (nodes, their pids that are gunicorn workers, one valid leader)
    leaders: set[int] = set()
    worker_pids: set[int] = set()
    while t.is_alive():
        nodes = cluster.store.list_nodes()
        pids = {n.pid for n in nodes}
        workers = {p for p in pids if parent_pid(p) == master.pid}
        worker_pids |= workers
        lease = cluster.leader()
        valid = lease is not None and utc(lease.expires_at) > utc(cluster.store.db_now()) and holder_pid(lease.holder) in workers
        if lease is not None:
            leaders.add(holder_pid(lease.holder))
        samples.append((len(nodes), len(workers), valid))
        t.join(0.5)
    send_time = time.monotonic() - send_started
    status_code, job_view = http("GET", f"{base}/jobs/{sent[0][2].get('job', 0)}") if sent else (0, {})

    stop_sent = master.signal(signal.SIGTERM)
    code = master.wait(60)
    stop_time = time.monotonic() - stop_sent
    left_after_stop = cluster.query("SELECT count(*) FROM {p}jobs WHERE state IN ('queued', 'running')")[0][0]
    nodes_after_stop = len(cluster.store.list_nodes())
    drain(cluster, args=("--app", "examples.webapp.app:linger"), **env)

    lines = [ln.split() for ln in results.read_text().splitlines() if ln.strip()] if results.exists() else []
    order_ids = [body["job"] for _n, status, body in sent if status == 202]
    audit = audit_run(cluster, order_ids, schedule="webapp.tick", lines=lines)
    per_pid = Counter(int(ln[3]) for ln in lines)
    order_runs = Counter(ln[1] for ln in lines if ln[0] == "order")
    tick_runs = Counter(ln[1] for ln in lines if ln[0] == "tick")
    jobs = {j.id: j for j in cluster.all_jobs()}
    print(f"\nFIGURES {cluster.label} (f) gunicorn {WORKERS} workers: {len(sent)} POSTs in {send_time:.1f}s, "
          f"statuses {dict(Counter(s for _n, s, _b in sent))}, HTTP errors {len(errors)}; {len(samples)} samples during "
          f"the requests: nodes {sorted(Counter(s[0] for s in samples).items())}, nodes that are gunicorn workers "
          f"{sorted(Counter(s[1] for s in samples).items())}, exactly one valid leader among them {sum(s[2] for s in samples)}/"
          f"{len(samples)}, leader pids seen {len(leaders)}; GET /jobs/<id> {status_code} {job_view}; master SIGTERM -> "
          f"exit {code} in {stop_time:.2f}s, jobs queued/running after the stop {left_after_stop}, nodes left {nodes_after_stop}\n"
          f"FIGURES {cluster.label} (f) orders: {audit.order_line()}, ran exactly once {sum(1 for i in order_ids if audit.runs[i] == 1)}"
          f"/{len(order_ids)}; ticks: {audit.tick_line()}; {audit.exec_line()}; executions per pid {dict(per_pid)} "
          f"(gunicorn master {master.pid}, workers {sorted(worker_pids)}); 'became leader' in the log "
          f"{master.log().count('became leader')}x")

    assert code == 0, f"gunicorn exited {code}"
    assert errors == [], errors[:5]
    assert len(sent) == ORDERS and all(s == 202 for _n, s, _b in sent), Counter(s for _n, s, _b in sent)
    assert samples and all(s[0] == WORKERS and s[1] == WORKERS and s[2] for s in samples), samples
    assert status_code == 200 and job_view.get("id") == sent[0][2]["job"], job_view
    assert len(leaders) == 1, f"the leader changed while every worker was up: {leaders}"
    if left_after_stop == 0:  # the drain found nothing left: every job ran in a gunicorn worker
        assert set(per_pid) <= worker_pids, (per_pid, worker_pids)
    assert len(set(order_ids)) == ORDERS
    assert all(audit.runs[i] == 1 for i in order_ids), [i for i in order_ids if audit.runs[i] != 1]
    assert sorted(order_runs) == sorted(str(n) for n in range(1, ORDERS + 1)) and set(order_runs.values()) == {1}
    assert all(jobs[i].attempts == 1 for i in order_ids)
    assert set(tick_runs.values()) <= {1} and len(tick_runs) == len(audit.tick_jobs)
    audit.assert_clean(min_ticks=10)
    assert not audit.rerun
    assert nodes_after_stop == 0, "every worker's node removed itself at shutdown"
