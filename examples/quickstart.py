"""The README's two examples: a one-off job and a recurring one, on the default app.
Run by tests/unit/test_readme.py; a node runs them with `linger-sched run --import examples.quickstart`."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from linger_sched import current_job, task

BERLIN = ZoneInfo("Europe/Berlin")


@task(max_attempts=5, retry_backoff=30)  # a failure is retried after ~30 s, ~60 s, ~120 s, ~240 s
def send_welcome(email: str) -> str:
    ...  # call your mail service; raising fails this attempt
    return f"welcome mail sent to {email}"


def sign_up(email: str) -> int:
    ...  # create the account, then send the mail ten minutes later, outside the request:
    return send_welcome.enqueue(email, delay=timedelta(minutes=10))


@task(cron="0 0 1 * *", tz="Europe/Berlin")  # 00:00 on the 1st of each month, Berlin time
def bill_customers() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    # the fire time (stored in UTC), not the clock: a late run or a retry bills the same month
    month = job.scheduled_for.astimezone(BERLIN).strftime("%Y-%m")
    ...  # bill every customer for `month`, keyed on it so that nobody is billed twice
    return f"billed {month}"
