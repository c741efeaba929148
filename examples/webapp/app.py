"""A web app that enqueues a job per request and runs a linger-sched node in each web worker.

    LINGER_DATABASE_URL=postgresql://postgres@127.0.0.1/test \\
        gunicorn -c examples/webapp/gunicorn.conf.py examples.webapp.app:web

Every gunicorn worker starts a node after it forks (``gunicorn.conf.py``): all of them run jobs,
exactly one holds the leader lease and materializes the schedule, and each stops gracefully
(hands back unfinished jobs, releases the lease) when gunicorn stops it.
"""

from __future__ import annotations

import logging
import os

from flask import Flask, jsonify

from linger_sched import Linger, current_job

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("webapp")

linger = Linger()  # LINGER_DATABASE_URL, LINGER_TABLE_PREFIX, ... from the environment
web = Flask(__name__)
RESULTS = os.environ.get("WEBAPP_RESULTS")  # optional file: one line per executed job


def _record(kind: str, key: str) -> None:
    job = current_job()
    if RESULTS and job is not None:
        with open(RESULTS, "a", encoding="utf-8") as fh:  # O_APPEND: one whole line per write
            fh.write(f"{kind} {key} {job.id} {os.getpid()}\n")


@linger.task(name="webapp.process_order")
def process_order(order_id: str) -> None:
    _record("order", order_id)


@linger.task(name="webapp.tick", every=os.environ.get("WEBAPP_EVERY", "1s"), misfire="all", overlap="allow")
def tick() -> None:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    _record("tick", job.scheduled_for.isoformat())


@linger.on_halt
def halted() -> None:
    log.info("node in worker %s is stopping", os.getpid())


@web.post("/orders/<order_id>")
def create_order(order_id: str):  # type: ignore[no-untyped-def]
    job_id = process_order.enqueue(order_id)
    return jsonify(order=order_id, job=job_id), 202


@web.get("/jobs/<int:job_id>")
def job_status(job_id: int):  # type: ignore[no-untyped-def]
    job = linger.get_job(job_id)
    return jsonify(id=job.id, state=job.state, attempts=job.attempts)


@web.get("/health")
def health():  # type: ignore[no-untyped-def]
    return jsonify(ok=True, pid=os.getpid(), node=linger.node_id, leader=linger.is_leader())
