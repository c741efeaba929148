"""One-off jobs of a task on the default app (docs/tasks.md)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from linger_sched import task

outbox: list[tuple[str, str]] = []  # stands in for a mail server


@task(queue="mail", max_attempts=5, retry_backoff=30)
def send_email(to: str, subject: str) -> None:
    outbox.append((to, subject))


def queue_mail() -> list[int]:
    return [
        send_email.enqueue("ann@example.com", "Welcome"),  # due now
        send_email.enqueue("bob@example.com", "Reminder", delay=timedelta(hours=1)),
        send_email.enqueue("cy@example.com", "Report", run_at=datetime(2030, 12, 1, 18, tzinfo=timezone.utc)),
        send_email.enqueue("dee@example.com", "Digest", unique_key="digest:dee"),  # at most one active
    ]


def send_now() -> None:
    send_email("now@example.com", "Direct call")  # still a plain function: runs here, no job
