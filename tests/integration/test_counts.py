"""Job counts by queue and state stay exact through every transition, and read in O(groups).

The finished states (succeeded, failed, cancelled, skipped) are counted from a small table of
per-(queue, state) deltas that each transition writes in its own transaction; queued and running
are counted live through their partial indexes. Every test compares the Store's counts with a
plain ``GROUP BY`` over every row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from linger_sched.store import Occurrence, Plan, Store, encode_args

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(queue: str = "default", **kw: object) -> dict:
    return {"task": "t", "args": encode_args([], {}), "queue": queue, **kw}


def truth(store: Store) -> dict[tuple[str, str], int]:
    j = store.t.jobs
    with store.engine.connect() as c:
        return {(q, s): n for q, s, n in c.execute(sa.select(j.c.queue, j.c.state, sa.func.count()).group_by(j.c.queue, j.c.state))}


def by_state(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, state), n in counts.items():
        out[state] = out.get(state, 0) + n
    return {s: n for s, n in out.items() if n}


def check(store: Store) -> None:
    want = truth(store)
    assert store.count_by_queue_and_state() == want
    assert store.count_by_state() == by_state(want)


def test_counts_follow_every_transition(store: Store) -> None:
    store.enqueue([job("a") for _ in range(6)] + [job("b", max_attempts=1) for _ in range(4)], now=T0)
    check(store)
    got = store.claim("n1", None, 10, 30, now=T0)
    check(store)
    a = [c.id for c in got if c.queue == "a"]
    b = [c.id for c in got if c.queue == "b"]
    # successes across two queues in one call; a terminal failure; a retry back to queued
    store.finish("n1", [a[0], a[1], b[0]], [(b[1], "boom", None), (a[2], "again", 5.0)], now=at(1),
                 queues={c.id: c.queue for c in got})
    check(store)
    # an outcome for a job this node no longer holds changes nothing
    store.finish("other-node", [a[3]], [], now=at(1), queues={a[3]: "a"})
    check(store)
    # a successful finish without the queue map still counts right
    store.finish("n1", [a[3]], [], now=at(1))
    check(store)
    # rescue: b[2] and b[3] had max_attempts=1, so an expired lease fails them for good
    rescued = store.rescue(now=at(60))
    assert {state for _, _, state in rescued} == {"failed", "queued"}
    check(store)
    (queued_id, *_) = [j.id for j in store.list_jobs("queued", 0)]
    store.cancel_job(queued_id, now=at(61))
    check(store)
    store.retry_job(queued_id, now=at(62))  # cancelled -> queued
    check(store)
    failed = [j.id for j in store.list_jobs("failed", 0)]
    store.retry_job(failed[0], now=at(63))
    check(store)
    # a node shutting down hands its jobs back: running -> queued
    store.claim("n2", ["a"], 10, 30, now=at(64))
    store.hand_back("n2", now=at(65))
    check(store)
    assert store.prune(0, now=at(10_000)) > 0
    check(store)


def test_skipped_occurrences_are_counted_once(store: Store) -> None:
    store.install_schema()
    store.save_schedules(inserts=[{
        "name": "s", "task": "t", "spec": "every:60s", "tz": "UTC", "anchor": T0, "args": "{}", "options": "{}",
        "next_run_at": T0, "paused": False, "enabled": True, "spec_hash": "h",
    }])
    lease = store.acquire_lease("scheduler", "n1", 300, now=T0)
    assert lease is not None
    plan = Plan(name="s", expected=T0, next_run_at=at(180), task="t", args="{}", queue="reports", occurrences=[
        Occurrence(T0, state="skipped", reason="misfire"), Occurrence(at(60), state="skipped", reason="misfire"),
        Occurrence(at(120)),
    ])
    assert store.materialize([plan], lease="scheduler", holder="n1", epoch=lease.epoch, now=at(121)) == ["s"]
    check(store)
    assert store.count_by_queue_and_state()[("reports", "skipped")] == 2
    # the same occurrences again (a stale plan): the compare-and-set writes nothing, counts stay
    assert store.materialize([plan], lease="scheduler", holder="n1", epoch=lease.epoch, now=at(122)) == []
    check(store)


def test_fold_keeps_counts_and_shrinks_the_delta_table(store: Store) -> None:
    for i in range(30):  # thirty small batches: thirty delta rows
        store.enqueue([job("q")], now=at(i))
        (c,) = store.claim("n", None, 1, 30, now=at(i))
        store.finish("n", [c.id], [], now=at(i), queues={c.id: c.queue})
    check(store)
    with store.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(store.t.counts)).scalar_one()
    assert before >= 30
    store.fold_counts()
    check(store)
    with store.engine.connect() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(store.t.counts)).scalar_one()
    assert after == 1


def test_recount_rebuilds_counts_of_rows_written_by_hand(store: Store) -> None:
    store.install_schema()
    j = store.t.jobs
    with store.engine.begin() as conn:  # rows an operator wrote with SQL: no deltas
        conn.execute(sa.insert(j), [
            {**job("x"), "state": state, "run_at": T0, "created_at": T0, "finished_at": T0, "attempts": 1, "max_attempts": 3}
            for state in ("succeeded", "succeeded", "failed", "cancelled")
        ])
    assert store.count_by_queue_and_state() != truth(store)
    store.recount()
    check(store)
