"""Prometheus metrics under gunicorn with several worker processes (examples/metrics_webapp):
the job counters and histograms of every worker are summed (prometheus-client's multiprocess
mode), whichever worker answers the scrape, and stay summed after a worker is replaced; the
database-wide gauges are computed once per scrape, so they equal the database's numbers (not
twice them); one live worker leads."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import Cluster, wait_for

REPO = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
WORKERS = 2
ORDERS = 24
REFUNDS = 4  # each fails (max_attempts=1)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read())["job"])


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples that carry ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def answering(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.mark.slow
def test_gunicorn_workers_metrics_are_summed_and_gauges_read_once(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: emptied at start
    results = cluster.workdir / "ran.txt"
    env = {
        "PYTHONPATH": str(REPO), "WEBAPP_BIND": f"127.0.0.1:{port}", "WEBAPP_WORKERS": str(WORKERS),
        "WEBAPP_CONCURRENCY": "1", "WEBAPP_JOB_SECONDS": "0.2", "WEBAPP_RESULTS": str(results),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "LINGER_METRICS_TTL": "0",
    }
    master = cluster.start("gunicorn", [GUNICORN, "-c", str(REPO / "examples/metrics_webapp/gunicorn.conf.py"),
                                        "examples.metrics_webapp.app:web"], **env)
    wait_for(lambda: answering(f"{base}/metrics") or not master.alive(), 30, 0.2, "gunicorn to answer")
    assert master.alive(), master.log()
    wait_for(lambda: len(cluster.store.list_nodes()) == WORKERS, 30, 0.1, "a node in each worker")
    ids = [post(f"{base}/orders/{i}") for i in range(ORDERS)] + [post(f"{base}/refunds/{i}") for i in range(REFUNDS)]
    assert len(set(ids)) == ORDERS + REFUNDS

    def finished() -> bool:
        return cluster.query("SELECT count(*) FROM {p}jobs WHERE state IN ('succeeded', 'failed')")[0][0] == len(ids)

    wait_for(finished, 60, 0.1, "every job to finish")
    ran_in = Counter(line.split()[1] for line in results.read_text().splitlines())
    assert sum(ran_in.values()) == ORDERS and len(ran_in) == WORKERS, ran_in  # both workers ran jobs

    def database() -> dict[tuple[str, str], int]:
        return {(q, s): n for q, s, n in cluster.query("SELECT queue, state, count(*) FROM {p}jobs GROUP BY queue, state")}

    def check(samples: Samples) -> bool:
        """The samples say what happened, summed over the workers, and what the table holds."""
        return (
            total(samples, "linger_jobs_finished_total", task="shop.process_order", outcome="succeeded") == ORDERS
            and total(samples, "linger_jobs_finished_total", task="shop.refund", outcome="failed") == REFUNDS
            and total(samples, "linger_jobs_finished_total") == ORDERS + REFUNDS
            and total(samples, "linger_jobs_started_total") == ORDERS + REFUNDS
            and total(samples, "linger_job_duration_seconds_count", task="shop.process_order") == ORDERS
            and total(samples, "linger_job_duration_seconds_sum", task="shop.process_order") >= 0.19 * ORDERS
            and total(samples, "linger_job_delay_seconds_count") == ORDERS + REFUNDS
            and {(dict(ls)["queue"], dict(ls)["state"]): v for (n, ls), v in samples.items()
                 if n == "linger_queue_jobs" and v} == database()
            and total(samples, "linger_leader") == 1 and total(samples, "linger_node_leader") == 1
            and total(samples, "linger_nodes", status="alive") == WORKERS
            and total(samples, "linger_scrape_error") == 0
        )

    # the counters reach the totals (a hook runs just after its outcome is stored), then every
    # scrape, whichever worker answers it, shows the same sums
    wait_for(lambda: check(scrape(f"{base}/metrics")), 30, 0.2, "the metrics to show every job")
    for _ in range(10):
        samples = scrape(f"{base}/metrics")
        assert check(samples), sorted((k, v) for k, v in samples.items() if k[0].startswith(("linger_jobs", "linger_queue")))
    pids = {p.name.rsplit("_", 1)[1].removesuffix(".db") for p in multiproc.glob("counter_*.db")}
    assert {str(pid) for pid in ran_in} <= pids and "999999" not in pids  # a file per worker; the stale one gone

    # a worker replaced by gunicorn: its counts stay (its files remain), its "live" gauge goes
    victim = next(n.pid for n in cluster.store.list_nodes())
    os.kill(victim, signal.SIGTERM)
    wait_for(lambda: victim not in {n.pid for n in cluster.store.list_nodes()}
             and len(cluster.store.list_nodes()) == WORKERS, 60, 0.2, "gunicorn to replace the worker")
    assert not list(multiproc.glob(f"gauge_livesum_{victim}.db"))  # child_exit: mark_process_dead
    wait_for(lambda: check(scrape(f"{base}/metrics")), 30, 0.2, "the sums after the replacement")
    master.signal(signal.SIGTERM)
    assert master.wait(60) == 0, master.log()
    assert "Traceback" not in master.log(), master.log()
