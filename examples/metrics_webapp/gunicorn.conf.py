"""gunicorn settings: a linger-sched node in each worker, Prometheus metrics summed over them."""

import glob
import os
import tempfile

bind = os.environ.get("WEBAPP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEBAPP_WORKERS", "2"))
graceful_timeout = 30

# Prometheus multiprocess mode: every worker writes its counters and histograms to files in
# this directory and a scrape sums them. It must be set before prometheus_client is first
# imported (this file is read by the master before the app), and emptied at each start.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "linger-metrics"))


def on_starting(server):  # in the master, once
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):  # the files of a previous run
        os.remove(stale)
    from examples.metrics_webapp.app import linger

    linger.install_schema()


def post_worker_init(worker):  # threads do not survive fork(): a node per worker, started here
    from examples.metrics_webapp.app import linger

    linger.start(concurrency=int(os.environ.get("WEBAPP_CONCURRENCY", "2")))


def worker_exit(server, worker):
    from examples.metrics_webapp.app import linger

    linger.stop()  # wait for running jobs, hand back the rest, release the lease


def child_exit(server, worker):  # in the master: forget a dead worker's "live" gauges
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
