"""Small tasks for the example schedules.yaml: something visible every few seconds."""

from __future__ import annotations

import logging

from linger_sched import current_job, task

log = logging.getLogger("examples")


@task
def heartbeat(message: str = "still here") -> None:
    job = current_job()
    assert job is not None
    log.warning("heartbeat #%s: %s (scheduled for %s)", job.id, message, job.scheduled_for)


@task(max_attempts=3, retry_backoff=2)
def send_email(to: str, subject: str) -> None:
    log.warning("sending %r to %s", subject, to)


@task(cron="*/1 * * * *")
def minutely_report() -> None:
    job = current_job()
    assert job is not None
    log.warning("minutely report for %s", job.scheduled_for)
