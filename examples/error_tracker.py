"""Send every job that failed for good to an error tracker, from a ``job_failed`` hook.

    ERROR_TRACKER_URL=https://errors.example.com/api/events linger-sched --app examples.error_tracker:app run

Hooks run on the worker's thread, so this one only puts the event on a queue; a thread of its
own posts it (JSON, Sentry-like) to the URL in ERROR_TRACKER_URL. A tracker that is slow or
down never holds a job up: the queue is bounded and a failed post is logged, not retried.
Run by tests/integration/test_error_tracker_example.py against a local HTTP server.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import urllib.request
import uuid

from linger_sched import Event, Linger

log = logging.getLogger(__name__)
app = Linger()  # LINGER_DATABASE_URL, ...; the tests point it at a test database


class ErrorTracker:
    """Posts failed jobs to ``url`` on a daemon thread."""

    def __init__(self, url: str, *, timeout: float = 5.0, max_pending: int = 1000) -> None:
        self.url, self.timeout = url, timeout
        self.pending: queue.Queue[Event | None] = queue.Queue(maxsize=max_pending)
        self.dropped = 0
        threading.Thread(target=self._send_all, name="error-tracker", daemon=True).start()

    def __call__(self, event: Event) -> None:  # the hook: quick, never blocks the worker
        try:
            self.pending.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the events queued so far were posted (at exit, in tests)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self.pending.join(), done.set()), daemon=True).start()
        done.wait(timeout)

    def _send_all(self) -> None:
        while True:
            event = self.pending.get()
            try:
                if event is not None:
                    self._send(event)
            except Exception as exc:  # noqa: BLE001 - a tracker that is down is not our failure
                log.warning("could not report job %s to the error tracker: %s", event and event.job_id, exc,
                            extra={"action": "error_tracker_failed"})
            finally:
                self.pending.task_done()

    def _send(self, event: Event) -> None:
        error = event.error or ""
        last_line = error.strip().splitlines()[-1] if error.strip() else "failed"
        body = {
            "event_id": uuid.uuid4().hex,
            "timestamp": event.at.isoformat() if event.at else None,
            "level": "error",
            "logger": "linger_sched",
            "message": f"job {event.job_id} ({event.task}) failed: {last_line}",
            "fingerprint": [event.task or "", last_line.split(":")[0]],  # one issue per task and error type
            "tags": {"task": event.task, "queue": event.queue, "schedule": event.schedule, "node": event.node_id},
            "extra": {"job_id": event.job_id, "attempt": event.attempt, "max_attempts": event.max_attempts,
                      "reason": event.reason, "traceback": error},
        }
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()


def report_failures(linger: Linger, url: str | None = None) -> ErrorTracker | None:
    """Report ``linger``'s failed jobs to ``url`` (default: ERROR_TRACKER_URL; none: nothing)."""
    url = url or os.environ.get("ERROR_TRACKER_URL")
    if not url:
        return None
    tracker = ErrorTracker(url)
    linger.on("job_failed")(tracker)
    atexit.register(tracker.flush)  # a process that exits (worker --burst) sends what it queued first
    return tracker


tracker = report_failures(app)


@app.task(name="billing.charge", max_attempts=1)
def charge(customer_id: int, cents: int) -> None:
    raise RuntimeError(f"card of customer {customer_id} declined ({cents} cents)")
