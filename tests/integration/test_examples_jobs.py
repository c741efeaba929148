"""``examples/jobs.py``, the code docs/jobs.md shows, run on every database (that the page's
blocks are copies of it, verbatim: tests/acceptance/test_docs_examples.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from examples import jobs as example
from linger_sched import FakeClock, Linger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(db_url: str, prefix: str) -> Iterator[Linger]:
    """The example's own app, on the test database and a table prefix of the test's own."""
    a = example.app
    settings, clock = a.settings, a.clock
    a.configure(database_url=db_url, table_prefix=prefix, poll_interval=0.05, job_lease_ttl=3.0)
    a.install_schema()
    try:
        yield a
    finally:
        a.stop(grace=5)
        a.store.drop_schema()
        a.store.dispose()
        a._store = None
        a.settings, a.clock = settings, clock


def wait_running(app: Linger, job_id: int) -> None:
    deadline = time.monotonic() + 20
    while app.get_job(job_id).state != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)


@pytest.mark.slow
def test_import_and_wait_returns_the_result_with_the_progress_stored(app: Linger) -> None:
    app.start(concurrency=2, scheduler=False)
    assert example.import_and_wait("customers.csv") == {"imported": 5000}
    (job,) = app.jobs(task=example.import_rows.name)
    assert (job.progress, job.progress_message) == (1.0, "5000 of 5000 rows")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_cancelling_a_running_job(app: Linger, kind: str) -> None:
    app.start(concurrency=2, scheduler=False)
    job_id = example.rebuild_search_index.enqueue() if kind == "sync" else example.crawl.enqueue("https://example.org")
    wait_running(app, job_id)
    asked = time.monotonic()
    assert app.cancel(job_id).cancel_requested
    job = app.wait(job_id, timeout=20)
    took = time.monotonic() - asked
    assert (job.state, job.attempts, job.result) == ("cancelled", 1, None), job
    assert took < 2.0, f"cancelled {took:.2f}s after the request (the node that runs it is in this process)"


def test_schedules_per_customer(app: Linger) -> None:
    app.clock = FakeClock(datetime(2030, 1, 1, tzinfo=timezone.utc))  # a Tuesday
    example.reports_sent.clear()
    example.schedule_reports_for(7)
    app.testing.advance("6d7h", run=True)  # past Monday 2030-01-07, 07:00 in Berlin
    assert example.reports_sent == [(7, "pdf")]
    example.customer_changed_plan(7)
    app.testing.advance("1d", run=True)
    assert example.reports_sent == [(7, "pdf"), (7, "html")]
    example.customer_left(7)
    assert app.schedules() == []
    app.testing.advance("7d", run=True)
    assert len(example.reports_sent) == 2
