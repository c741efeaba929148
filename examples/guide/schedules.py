"""Schedules declared in code: on the decorator and with app.schedule() (docs/schedules.md)."""

from __future__ import annotations

from linger_sched import Linger, current_job

app = Linger()
billed: list[str] = []
cleaned: list[str] = []


@app.task(cron="0 0 1 * *", tz="Europe/Berlin")  # 00:00 on the 1st, Berlin time
def bill_customers() -> None:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    billed.append(job.scheduled_for.isoformat())  # bill the period of this occurrence, idempotently


@app.task
def cleanup(older_than: str = "7d") -> None:
    cleaned.append(older_than)


app.schedule("nightly-cleanup", cleanup, cron="0 3 * * *", kwargs={"older_than": "30d"})
