"""``examples/error_tracker.py`` (docs/operations.md, "Event hooks") on every database, against
a local HTTP server standing in for the error tracker: a job that failed for good arrives as one
JSON event with its id, task and error; a success or a failure that will be retried sends
nothing; a tracker that is down changes nothing for the job. Also run as a real
``linger-sched --app examples.error_tracker:app worker --burst`` with ERROR_TRACKER_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from examples import error_tracker as example
from linger_sched import Linger

ROOT = Path(__file__).resolve().parents[2]


class Tracker:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "content_type": self.headers["Content-Type"], **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def tracker() -> Iterator[Tracker]:
    t = Tracker()
    yield t
    t.server.shutdown()


@pytest.fixture
def app(db_url: str, prefix: str) -> Iterator[Linger]:
    """The example's own app, on the test database and a table prefix of the test's own."""
    a = example.app
    settings, clock = a.settings, a.clock
    a.configure(database_url=db_url, table_prefix=prefix)
    a.install_schema()
    try:
        yield a
    finally:
        a.store.drop_schema()
        a.store.dispose()
        a._store = None
        a.settings, a.clock = settings, clock


def test_a_failed_job_arrives_at_the_tracker_with_its_id_task_and_error(app: Linger, tracker: Tracker) -> None:
    sender = example.report_failures(app, tracker.url)
    assert sender is not None
    try:
        @app.task(name="example.flaky", max_attempts=2, retry_backoff=3600)
        def flaky() -> None:
            raise ValueError("not yet")

        @app.task(name="example.fine")
        def fine() -> None: ...

        failed = example.charge.enqueue(42, 1999)
        retried, ok = flaky.enqueue(), fine.enqueue()
        app.work()
        sender.flush()
        (event,) = tracker.wait_for(1)
        assert (event["path"], event["content_type"], event["level"]) == ("/api/events", "application/json", "error")
        assert event["extra"]["job_id"] == failed and event["tags"]["task"] == "billing.charge"
        assert (event["extra"]["attempt"], event["extra"]["max_attempts"], event["extra"]["reason"]) == (1, 1, "no attempt left")
        assert "RuntimeError: card of customer 42 declined (1999 cents)" in event["extra"]["traceback"]
        assert event["message"] == f"job {failed} (billing.charge) failed: RuntimeError: card of customer 42 declined (1999 cents)"
        assert event["tags"]["node"] == app.node_id and event["timestamp"]
        assert [app.get_job(i).state for i in (failed, retried, ok)] == ["failed", "queued", "succeeded"]
    finally:
        app.hooks.off("job_failed", sender)


def test_a_tracker_that_is_down_changes_nothing_for_the_job(app: Linger) -> None:
    sender = example.report_failures(app, "http://127.0.0.1:9/nobody-listens")
    assert sender is not None
    try:
        failed = example.charge.enqueue(1, 100)
        app.work()
        sender.flush()
        job = app.get_job(failed)
        assert (job.state, job.attempts) == ("failed", 1)
    finally:
        app.hooks.off("job_failed", sender)


def test_the_example_in_a_real_worker_process(db_url: str, prefix: str, tracker: Tracker, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    env.update(LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix, ERROR_TRACKER_URL=tracker.url,
               PYTHONPATH=str(ROOT))
    linger = Path(sys.executable).with_name("linger-sched")
    cmd = [str(linger)] if linger.exists() else [sys.executable, "-m", "linger_sched.cli"]
    base = [*cmd, "--app", "examples.error_tracker:app"]
    try:
        subprocess.run([*base, "db", "init"], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=60)
        enq = subprocess.run([*base, "enqueue", "billing.charge", "--args", "[7, 500]"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert enq.returncode == 0, enq.stderr
        job_id = int(enq.stdout.split()[-1])
        run = subprocess.run([*base, "worker", "--burst"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        (event,) = tracker.wait_for(1)
        assert (event["extra"]["job_id"], event["tags"]["task"]) == (job_id, "billing.charge")
        assert "card of customer 7 declined" in event["extra"]["traceback"]
    finally:
        from linger_sched.store import Store

        s = Store(db_url, table_prefix=prefix)
        s.drop_schema()
        s.dispose()
