"""gunicorn settings: one linger-sched node per web worker, started after the fork."""

import os

bind = os.environ.get("WEBAPP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEBAPP_WORKERS", "4"))
graceful_timeout = 30


def on_starting(server):  # in the master, once: create the tables before workers start
    from examples.webapp.app import linger

    linger.install_schema()


def post_worker_init(worker):
    # Threads do not survive fork(): each worker starts its own node here, after forking.
    from examples.webapp.app import linger

    linger.start(concurrency=int(os.environ.get("WEBAPP_CONCURRENCY", "4")))


def worker_exit(server, worker):
    from examples.webapp.app import linger

    linger.stop()  # on_halt hooks, wait for running jobs, hand back the rest, release the lease
