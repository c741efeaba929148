"""The one back-off (clock.backoff) and a job's retry delay, table-driven (issue: the store)."""

from __future__ import annotations

import random

import pytest

from linger_sched.clock import backoff
from linger_sched.registry import Registry, TaskDef
from linger_sched.store import Claimed
from linger_sched.worker import Worker


@pytest.mark.parametrize(
    ("failures", "base", "cap", "jitter", "expected"),
    [
        (1, 1.0, 60.0, 1.0, 1.0),
        (2, 1.0, 60.0, 1.0, 2.0),
        (3, 0.5, 10.0, 1.0, 2.0),
        (5, 0.5, 10.0, 1.0, 8.0),
        (6, 0.5, 10.0, 1.0, 10.0),  # capped
        (0, 1.0, 60.0, 1.0, 1.0),  # no failure yet counts as the first
        (-3, 1.0, 60.0, 1.0, 1.0),
        (10**9, 1.0, 86400.0, 1.0, 86400.0),  # any count: no overflow, no huge power
        (3, 10.0, 86400.0, 0.75, 30.0),
        (3, 10.0, 86400.0, 1.25, 50.0),
    ],
)
def test_backoff(failures: int, base: float, cap: float, jitter: float, expected: float) -> None:
    assert backoff(failures, base=base, cap=cap, jitter=jitter) == pytest.approx(expected)


def _job(attempts: int, task: str = "t") -> Claimed:
    from datetime import datetime, timezone

    return Claimed(1, task, "{}", "default", 0, attempts, 5, None, None, datetime(2030, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    ("retry_backoff", "attempts", "low", "high"),
    [
        (10.0, 1, 7.5, 12.5),
        (10.0, 2, 15.0, 25.0),
        (10.0, 3, 30.0, 50.0),
        (30.0, 1, 22.5, 37.5),
        (0.0, 4, 0.0, 0.0),  # 0 retries at once
        (10.0, 40, 86400.0, 86400.0),  # capped at a day
        (10.0, 2**31 - 1, 86400.0, 86400.0),
    ],
)
def test_retry_delay(retry_backoff: float, attempts: int, low: float, high: float) -> None:
    registry = Registry()
    registry.add_task(TaskDef("t", lambda: None, retry_backoff=retry_backoff))
    for seed in range(20):
        worker = Worker(None, registry, "n", rng=random.Random(seed))  # type: ignore[arg-type]
        assert low <= worker.retry_delay(_job(attempts)) <= high


def test_retry_delay_of_an_unknown_task_uses_the_default_base() -> None:
    worker = Worker(None, Registry(), "n", rng=random.Random(1))  # type: ignore[arg-type]
    assert 7.5 <= worker.retry_delay(_job(1, "gone")) <= 12.5
