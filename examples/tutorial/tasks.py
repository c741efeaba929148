"""The tutorial's tasks (docs/tutorial.md): save as ``tasks.py`` in an empty directory."""

from __future__ import annotations

import logging

from linger_sched import current_job, task

log = logging.getLogger("tutorial")


@task(name="tasks.tick", every="5s")
def tick() -> None:
    """A recurring job: every 5 seconds, for as long as a node runs."""
    job = current_job()
    assert job is not None
    log.warning("tick scheduled for %s", job.scheduled_for.isoformat())


@task(name="tasks.send_welcome")
def send_welcome(email: str) -> str:
    """A one-off job: runs once, when it is enqueued."""
    log.warning("welcome mail to %s", email)
    return f"sent to {email}"


@task(name="tasks.flaky_sync", max_attempts=3, retry_backoff=1)
def flaky_sync() -> None:
    """Fails its first attempt and succeeds on the retry."""
    job = current_job()
    assert job is not None
    if job.attempt == 1:
        raise ConnectionError("the partner API is down (attempt 1)")
    log.warning("synced on attempt %s", job.attempt)
