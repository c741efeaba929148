"""A web app with a linger-sched node in each gunicorn worker, and Prometheus metrics at /metrics.

    gunicorn -c examples/metrics_webapp/gunicorn.conf.py examples.metrics_webapp.app:web

The job counters and histograms are summed over the workers (prometheus-client's multiprocess
mode, set up in gunicorn.conf.py); the database-wide gauges (queue depth, oldest due job,
overdue schedules, leader) are read once per scrape by the worker that answers it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, jsonify, request

from linger_sched import Linger, current_job
from linger_sched.metrics import instrument

linger = Linger()  # LINGER_DATABASE_URL, LINGER_TABLE_PREFIX, ... from the environment
metrics = instrument(linger)  # at import, before the node runs jobs: every job is counted
web = Flask(__name__)
RESULTS = os.environ.get("WEBAPP_RESULTS")  # optional file: one line per job run


@linger.task(name="shop.process_order")
def process_order(order_id: int) -> None:
    time.sleep(float(os.environ.get("WEBAPP_JOB_SECONDS", "0")))
    job = current_job()
    if RESULTS and job is not None:
        with open(RESULTS, "a", encoding="utf-8") as fh:  # O_APPEND: one whole line per write
            fh.write(f"{job.id} {os.getpid()}\n")


@linger.task(name="shop.refund", max_attempts=1)
def refund(order_id: int) -> None:
    raise RuntimeError(f"the payment provider refused the refund of order {order_id}")


@web.post("/orders/<int:order_id>")
def create_order(order_id: int):  # type: ignore[no-untyped-def]
    return jsonify(job=process_order.enqueue(order_id)), 202


@web.post("/refunds/<int:order_id>")
def create_refund(order_id: int):  # type: ignore[no-untyped-def]
    return jsonify(job=refund.enqueue(order_id)), 202


@web.get("/metrics")
def prometheus_metrics():  # type: ignore[no-untyped-def]
    body, content_type = metrics.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
