"""Retention on demand: ``Store.prune`` with states, ``Store.prune_after`` (a complete prune a
batch at a time, and its dry run), and ``linger-sched prune`` (dry run, states, batches,
counts). On every database."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from linger_sched.store import Store, encode_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_support import Cli

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
DAY = 86400


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(queue: str = "default") -> dict:
    return {"task": "t", "args": encode_args([], {}), "queue": queue, "max_attempts": 1}


def truth(store: Store) -> dict[tuple[str, str], int]:
    j = store.t.jobs
    with store.engine.connect() as c:
        return {(q, s): n for q, s, n in c.execute(sa.select(j.c.queue, j.c.state, sa.func.count()).group_by(j.c.queue, j.c.state))}


def states_of(store: Store) -> dict[int, str]:
    return {j.id: j.state for j in store.list_jobs(None, 0)}


def finish(store: Store, when: datetime, *, ok: int = 0, failed: int = 0, cancelled: int = 0, queue: str = "default") -> dict[str, list[int]]:
    """Jobs that end in each state at ``when`` (through the store's own transitions, so the
    counts table is written as in production)."""
    ids = store.enqueue([job(queue) for _ in range(ok + failed + cancelled)], now=when)
    out = {"succeeded": ids[:ok], "failed": ids[ok:ok + failed], "cancelled": ids[ok + failed:]}
    for job_id in out["cancelled"]:
        store.cancel_job(job_id, now=when)
    claimed = store.claim("n", [queue], ok + failed, 30, now=when)
    assert len(claimed) == ok + failed
    store.finish("n", out["succeeded"], [(i, "boom\nmore", None) for i in out["failed"]], now=when,
                 queues={c.id: c.queue for c in claimed})
    return out


def skipped(store: Store, n: int, when: datetime) -> list[int]:
    """``n`` skipped occurrence rows, written as the scheduler writes them (counted)."""
    from linger_sched.store import Occurrence, Plan

    store.save_schedules(inserts=[{
        "name": f"s{when.timestamp():.0f}", "task": "t", "spec": "every:60s", "tz": "UTC", "anchor": when, "args": "{}",
        "options": "{}", "next_run_at": when, "paused": False, "enabled": True, "spec_hash": "h",
    }])
    lease = store.acquire_lease("leader", "n1", 300, now=when)
    assert lease is not None
    name = f"s{when.timestamp():.0f}"
    plan = Plan(name=name, expected=when, next_run_at=when + timedelta(seconds=60 * n), task="t", args="{}", queue="default",
                occurrences=[Occurrence(when + timedelta(seconds=60 * k), state="skipped", reason="overlap") for k in range(n)])
    assert store.materialize([plan], lease="leader", holder="n1", epoch=lease.epoch, now=when) == [name]
    return [j.id for j in store.list_jobs("skipped", 0, schedule_name=name)]


def prune_all(store: Store, older_than: float, now: datetime, state: str, limit: int = 1000,
              dry_run: bool = False) -> tuple[int, int]:
    """(how many, how many batches) of a complete prune of ``state``, as the command runs it."""
    total, batches, after = 0, 0, 0
    while True:
        n, last = store.prune_after(after, older_than, now=now, limit=limit, state=state, dry_run=dry_run)
        total, batches = total + n, batches + 1
        if last is None:
            return total, batches
        assert last > after
        after = last


def test_prune_takes_the_states_and_keeps_counts_right(store: Store) -> None:
    old = finish(store, T0, ok=3, failed=2, cancelled=2)
    old_skipped = skipped(store, 2, T0)
    new = finish(store, at(9 * DAY), ok=1, failed=1, cancelled=1)
    queued = store.enqueue([job() for _ in range(2)], now=T0)
    (running,) = [c.id for c in store.claim("n", None, 1, 30, now=at(10 * DAY))]
    assert running in queued
    now = at(10 * DAY)

    # the default: the automatic prune's states (LINGER_KEEP_FINISHED)
    assert store.prune(7 * DAY, now=now) == 5
    left = states_of(store)
    assert not set(old["succeeded"] + old["cancelled"]) & set(left)
    assert set(old["failed"] + old_skipped) <= set(left)
    assert store.count_by_queue_and_state() == truth(store)

    assert store.prune(7 * DAY, now=now, states=["failed", "skipped"]) == 4
    left = states_of(store)
    assert set(left) == {*new["succeeded"], *new["failed"], *new["cancelled"], *queued}
    assert left[running] == "running"
    assert store.count_by_queue_and_state() == truth(store)
    assert store.count_by_state() == {"succeeded": 1, "failed": 1, "cancelled": 1, "queued": 1, "running": 1}

    # everything finished: still never a queued or running row
    for state in ("succeeded", "failed", "cancelled", "skipped"):
        prune_all(store, 1, at(11 * DAY), state)
    assert set(states_of(store)) == set(queued)
    assert store.count_by_queue_and_state() == truth(store)


@pytest.mark.parametrize("states", [["queued"], ["running"], ["succeeded", "bogus"], []])
def test_prune_refuses_states_that_are_not_finished(store: Store, states: list[str]) -> None:
    ids = store.enqueue([job()], now=T0)
    with pytest.raises(ValueError, match="succeeded, failed, cancelled, skipped"):
        store.prune(0, now=at(DAY), states=states)
    for state in states:
        if state != "succeeded":
            with pytest.raises(ValueError):
                store.prune_after(0, 0, now=at(DAY), state=state)
    assert set(states_of(store)) == set(ids)


def test_a_complete_prune_reaches_old_rows_behind_newer_ones(store: Store) -> None:
    # ids 1..4 finish late (they ran long after they were queued), 5..10 finished long ago
    late = store.enqueue([job("late") for _ in range(4)], now=T0)
    old = finish(store, at(DAY), ok=6)["succeeded"]
    claimed = store.claim("n", ["late"], 4, 30, now=at(9 * DAY))
    store.finish("n", late, [], now=at(9 * DAY), queues={c.id: c.queue for c in claimed})
    now = at(10 * DAY)
    # the bounded pick (housekeeping) reads the 4 oldest ids only: nothing old among them
    assert store.prune(7 * DAY, now=now, limit=4) == 0
    # batch by batch from the first id: the dry run counts them, the run deletes them
    assert prune_all(store, 7 * DAY, now, "succeeded", limit=4, dry_run=True) == (6, 4)
    assert len(states_of(store)) == 10
    assert store.prune_after(0, 7 * DAY, now=now, limit=4, state="succeeded") == (0, max(late))
    assert store.prune_after(max(late), 7 * DAY, now=now, limit=4, state="succeeded") == (4, sorted(old)[3])
    assert prune_all(store, 7 * DAY, now, "succeeded", limit=4) == (2, 3)
    assert set(states_of(store)) == set(late)
    assert store.count_by_queue_and_state() == truth(store)
    assert prune_all(store, 7 * DAY, now, "succeeded", limit=4) == (0, 2)


# -- the command ------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, db_url: str, prefix: str) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(work, {"LINGER_DATABASE_URL": db_url, "LINGER_TABLE_PREFIX": prefix})


def test_prune_command_dry_run_states_batches(cli: Cli, store: Store) -> None:
    now = store.db_now()
    old = finish(store, now - timedelta(days=9), ok=5, failed=3, cancelled=2, queue="mail")
    new = finish(store, now - timedelta(hours=1), ok=2, failed=1)
    queued = store.enqueue([job()], now=now - timedelta(days=30))

    r = cli.invoke("prune", "--dry-run")
    assert r.code == 0 and re.search(r"\b7 jobs\b", r.out) and "would" in r.out, r
    assert "succeeded" in r.out and "cancelled" in r.out
    assert len(states_of(store)) == 14

    r = cli.invoke("prune", "--batch-size", "2")  # default: succeeded and cancelled, finished 7 days ago or more
    assert r.code == 0 and re.search(r"deleted 7 jobs\b", r.out), r
    assert store.count_by_queue_and_state() == truth(store)
    assert set(old["failed"]) <= set(states_of(store))

    r = cli.invoke("prune", "--state", "failed", "--older-than", "2h")
    assert r.code == 0 and re.search(r"deleted 3 jobs\b", r.out), r
    r = cli.invoke("prune", "--state", "failed", "--state", "succeeded", "--older-than", "1m", "--dry-run")
    assert r.code == 0 and re.search(r"\b3 jobs\b", r.out), r
    r = cli.invoke("prune", "--state", "failed", "--state", "succeeded", "--older-than", "1m")
    assert r.code == 0 and re.search(r"deleted 3 jobs\b", r.out), r
    assert set(states_of(store)) == set(queued) | set(new["cancelled"])
    assert store.count_by_queue_and_state() == truth(store)

    r = cli.invoke("prune")
    assert r.code == 0 and "deleted 0 jobs" in r.out, r


@pytest.mark.parametrize("args, named", [
    (["--state", "queued"], "--state"), (["--state", "running"], "--state"), (["--older-than", "soon"], "--older-than"),
    (["--older-than", "-1d"], "--older-than"), (["--batch-size", "0"], "--batch-size"),
])
def test_prune_command_refuses_bad_input(cli: Cli, store: Store, args: list[str], named: str) -> None:
    (job_id,) = store.enqueue([job()], now=T0)
    r = cli.invoke("prune", *args)
    assert r.code == 2 and named in r.err and "Traceback" not in r.err, r
    assert set(states_of(store)) == {job_id}
