"""The shop's background work, registered on the shop's own linger-sched app."""

from __future__ import annotations

import logging
import os

from linger_sched import Linger, current_job

jobs = Linger()  # its settings come from the Flask app's config (app.py)
log = logging.getLogger("shop")


@jobs.task(name="shop.send_welcome", max_attempts=5, retry_backoff=30)
def send_welcome(user_id: int) -> None:
    job = current_job()
    assert job is not None
    log.warning("welcome mail to user %s sent (job %s, process %s)", user_id, job.id, os.getpid())


@jobs.task(name="shop.nightly_report", cron="0 3 * * *", tz="Europe/Berlin")
def nightly_report() -> None:
    job = current_job()
    assert job is not None
    log.warning("report for the night before %s", job.scheduled_for)
