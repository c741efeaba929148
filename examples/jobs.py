"""Results, progress, waiting, cancelling a running job, and schedules created at runtime
(docs/jobs.md). Run by tests/integration/test_examples_jobs.py on every database."""

from __future__ import annotations

import asyncio
import time

from linger_sched import Linger, current_job

app = Linger()  # LINGER_DATABASE_URL in production; the tests point it at a test database

reports_sent: list[tuple[int, str]] = []  # stands in for a mail server


@app.task
def import_rows(path: str, rows: int = 5_000) -> dict[str, int]:
    job = current_job()
    assert job is not None
    for i in range(1, rows + 1):
        ...  # import row i of path
        job.set_progress(i / rows, f"{i} of {rows} rows")  # stored at most about once a second
    return {"imported": rows}  # stored as the job's result (JSON)


def import_and_wait(path: str) -> dict[str, int]:
    job_id = import_rows.enqueue(path)
    job = app.wait(job_id, timeout=60)  # WaitTimeout (a TimeoutError) if it has not finished by then
    if job.state != "succeeded":
        raise RuntimeError(f"import {job_id} ended {job.state}: {job.last_error}")
    return job.result


@app.task
def rebuild_search_index(batches: int = 600) -> int:
    job = current_job()
    assert job is not None
    done = 0
    for _ in range(batches):
        job.raise_if_cancelled()  # raises JobCancelled once app.cancel(id) reached this worker
        time.sleep(0.05)  # rebuild one batch
        done += 1
    return done


@app.task
async def crawl(url: str) -> int:
    await asyncio.sleep(30)  # an async task is cancelled where it awaits
    return 200


@app.task(name="reports.send")
def send_report(customer_id: int, fmt: str = "pdf") -> None:
    reports_sent.append((customer_id, fmt))


def schedule_reports_for(customer_id: int) -> None:
    app.add_schedule(f"report-{customer_id}", "reports.send", cron="0 7 * * MON", tz="Europe/Berlin",
                     args=[customer_id])


def customer_changed_plan(customer_id: int) -> None:
    app.update_schedule(f"report-{customer_id}", cron="0 7 * * *", kwargs={"fmt": "html"})  # the rest stays


def customer_left(customer_id: int) -> None:
    app.remove_schedule(f"report-{customer_id}")
