"""The log records of real jobs on every database (issue 14): each has an ``action``; each about a
job carries ``job_id``, ``task`` and ``attempt``; a success is one INFO line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from linger_sched import FakeClock, Linger


def package_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("linger_sched")]


def test_job_records_carry_their_action_id_task_and_attempt(app: Linger, clock: FakeClock,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="ok")
    def ok() -> object:
        return object()  # not JSON: a WARNING about the result, the job still succeeds

    @app.task(name="flaky", max_attempts=2, retry_backoff=1)
    def flaky() -> None:
        raise RuntimeError("down")

    ids = [ok.enqueue(), flaky.enqueue(), app.enqueue("no.such.task")]
    rescued = ok.enqueue()
    app.store.claim("dead-node", None, 1, 30, now=clock.now())  # the oldest queued job: ids[0]
    clock.advance(31)
    with caplog.at_level(logging.DEBUG, logger="linger_sched"):
        app.work()
        clock.advance(5)
        app.work()
    records = package_records(caplog)
    assert records
    no_action = [r.getMessage() for r in records if not isinstance(getattr(r, "action", None), str)]
    assert not no_action
    about_jobs = [r for r in records if getattr(r, "job_id", None) is not None]
    incomplete = [(r.getMessage(), getattr(r, "task", None), getattr(r, "attempt", None))
                  for r in about_jobs if getattr(r, "task", None) is None or getattr(r, "attempt", None) is None]
    assert not incomplete
    actions: dict[str, list[Any]] = {}
    for r in about_jobs:
        actions.setdefault(r.action, []).append((r.job_id, r.attempt))  # type: ignore[attr-defined]
    assert actions["rescue"] == [(ids[0], 1)]
    assert sorted(actions["succeeded"]) == [(ids[0], 2), (rescued, 1)]
    assert actions["retry"] == [(ids[1], 1)] and sorted(actions["failed"]) == sorted([(ids[2], 1), (ids[1], 2)])
    assert sorted(actions["result_not_stored"]) == [(ids[0], 2), (rescued, 1)]
    assert {a for a in actions} >= {"started"}  # DEBUG: each attempt's start


def test_a_success_is_one_compact_info_line(app: Linger, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="billing.charge")
    def charge() -> None: ...

    job_id = charge.enqueue()
    with caplog.at_level(logging.INFO, logger="linger_sched"):
        app.work()
    (line,) = [r for r in package_records(caplog) if getattr(r, "job_id", None) == job_id]
    assert (line.levelno, line.action, line.task, line.attempt, line.queue) == (  # type: ignore[attr-defined]
        logging.INFO, "succeeded", "billing.charge", 1, "default")
    assert line.getMessage().startswith(f"job {job_id} billing.charge succeeded in ")
    assert line.getMessage().endswith("s (attempt 1)")
