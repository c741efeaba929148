"""Tasks of the latency benchmark, imported by the node it starts (`linger-sched run`).

Each probe appends ``kind due started job_id`` (epoch seconds) to ``$BENCH_LAT_OUT`` as it
starts; ``background`` (the load of ``latency.py --background-rate``) does nothing.
``$BENCH_LAT_SCHEDULES`` one-second interval schedules are declared, their anchors
``$BENCH_LAT_ANCHOR + k * 1s / n`` (so together they fire n times a second).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

from linger_sched import current_job, default_app, task

_lock = threading.Lock()
_out = open(os.environ["BENCH_LAT_OUT"], "a", buffering=1) if os.environ.get("BENCH_LAT_OUT") else None


def _record(kind: str, due: float, started: float) -> None:
    if _out is not None:
        job = current_job()
        with _lock:
            _out.write(f"{kind} {due!r} {started!r} {job.id if job is not None else -1}\n")


@task
def background(i: int = 0) -> None:
    """The background load: a no-op on the same queue and priority as the probes."""
    return None


@task
def due_probe(due: float) -> None:
    """A one-off job: ``due`` is the instant it was enqueued to run at."""
    started = time.time()
    _record("oneoff", due, started)


@task
def tick_probe() -> None:
    """Run by the one-second schedules: due at ``current_job().scheduled_for``."""
    started = time.time()
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    _record("schedule", job.scheduled_for.timestamp(), started)


_n = int(os.environ.get("BENCH_LAT_SCHEDULES", "0"))
if _n:
    _anchor = float(os.environ["BENCH_LAT_ANCHOR"])
    for _k in range(_n):
        default_app().schedule(
            f"bench-1s-{_k}", tick_probe, every="1s",
            anchor=datetime.fromtimestamp(_anchor + _k / _n, tz=timezone.utc),
        )
