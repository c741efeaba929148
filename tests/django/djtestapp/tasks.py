"""Found by autodiscovery (``autodiscover_modules("tasks")`` in the app's ready())."""

from __future__ import annotations

from linger_sched.contrib.django import app

CALLS: list[str] = []  # what record() was called with, in this process


@app.task
def record(text: str) -> None:
    CALLS.append(text)
