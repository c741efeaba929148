"""The Store contract, checked on every database with explicit instants (no wall clock)."""

from __future__ import annotations

import inspect
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from linger_sched.errors import JobNotFoundError, JobStateError
from linger_sched.store import SCHEMA_VERSION, Claimed, Job, Lease, NodeRow, Occurrence, Plan, ScheduleRow, Store, encode_args

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(task: str = "t", **kw: object) -> dict:
    return {"task": task, "args": encode_args([1], {"a": "b"}), **kw}


def test_install_schema_is_idempotent_and_versioned(store: Store) -> None:
    store.install_schema()
    assert store.schema_version() == SCHEMA_VERSION
    store.check_schema()


def test_enqueue_returns_ids_in_order_and_roundtrips(store: Store) -> None:
    ids = store.enqueue([job("a"), job("b", priority=5, queue="q", max_attempts=7)], now=T0)
    assert len(ids) == 2 and ids[0] < ids[1]
    j = store.get_job(ids[1])
    assert (j.task, j.priority, j.queue, j.max_attempts, j.state, j.attempts) == ("b", 5, "q", 7, "queued", 0)
    assert j.args == [1] and j.kwargs == {"a": "b"}
    assert j.run_at == T0 and j.created_at == T0 and j.run_at.tzinfo is not None


def test_claim_orders_by_priority_then_run_at_then_id(store: Store) -> None:
    a, b, c, d = store.enqueue(
        [job("a", run_at=at(-5)), job("b", run_at=at(-10)), job("c", priority=-1, run_at=at(-1)), job("d", run_at=at(-10))],
        now=T0,
    )
    got = store.claim("n1", None, 2, 30, now=T0)
    assert [g.id for g in got] == [c, b]
    got = store.claim("n1", None, 10, 30, now=T0)
    assert [g.id for g in got] == [d, a]


def test_claim_marks_running_locked_and_counts_attempt(store: Store) -> None:
    (i,) = store.enqueue([job()], now=T0)
    (c,) = store.claim("node-a", None, 5, 30, now=T0)
    assert c.id == i and c.attempts == 1
    j = store.get_job(i)
    assert (j.state, j.locked_by, j.locked_until, j.started_at) == ("running", "node-a", at(30), T0)
    assert store.claim("node-b", None, 5, 30, now=T0) == []


def test_claim_skips_future_jobs_and_other_queues(store: Store) -> None:
    store.enqueue([job(run_at=at(10)), job(queue="other")], now=T0)
    assert store.claim("n", ["default"], 5, 30, now=T0) == []
    assert len(store.claim("n", ["default"], 5, 30, now=at(10))) == 1
    assert len(store.claim("n", None, 5, 30, now=at(10))) == 1


def test_next_due_reports_earliest_queued_run_at(store: Store) -> None:
    assert store.next_due(None, now=T0) == (None, T0)
    store.enqueue([job(run_at=at(7)), job(run_at=at(3), queue="q")], now=T0)
    assert store.next_due(None, now=T0) == (at(3), T0)
    assert store.next_due(["default"], now=T0) == (at(7), T0)


def test_finish_success_retry_and_terminal_failure(store: Store) -> None:
    a, b, c = store.enqueue([job(), job(), job()], now=T0)
    store.claim("n", None, 3, 30, now=T0)
    lost = store.finish("n", succeeded=[a], failed=[(b, "boom", 20.0), (c, "dead", None)], now=at(1))
    assert lost == ([], [])
    ja, jb, jc = store.get_job(a), store.get_job(b), store.get_job(c)
    assert (ja.state, ja.finished_at, ja.locked_by) == ("succeeded", at(1), None)
    assert (jb.state, jb.run_at, jb.last_error, jb.attempts) == ("queued", at(21), "boom", 1)
    assert (jc.state, jc.last_error, jc.finished_at) == ("failed", "dead", at(1))


def test_finish_ignores_jobs_another_node_holds(store: Store) -> None:
    (a,) = store.enqueue([job()], now=T0)
    store.claim("n1", None, 1, 30, now=T0)
    assert store.finish("n2", succeeded=[a], now=T0) == ([a], [])
    assert store.get_job(a).state == "running"


def test_extend_pushes_the_lease_of_own_running_jobs_only(store: Store) -> None:
    a, b = store.enqueue([job(), job()], now=T0)
    store.claim("n1", None, 1, 30, now=T0)
    store.claim("n2", None, 1, 30, now=T0)
    assert store.extend("n1", 30, now=at(20)) == 1
    assert store.get_job(a).locked_until == at(50)
    assert store.get_job(b).locked_until == at(30)


def test_rescue_requeues_expired_and_fails_last_attempt(store: Store) -> None:
    a, b = store.enqueue([job(max_attempts=3), job(max_attempts=1)], now=T0)
    store.claim("dead", None, 2, 30, now=T0)
    assert store.rescue(now=at(29)) == []
    rescued = sorted(store.rescue(now=at(31)))
    assert rescued == [(a, "dead", "queued"), (b, "dead", "failed")]
    ja = store.get_job(a)
    assert (ja.state, ja.attempts, ja.locked_by, ja.run_at) == ("queued", 1, None, at(31))
    assert "lease expired" in (ja.last_error or "")
    assert store.get_job(b).state == "failed"


def test_hand_back_requeues_without_counting_the_attempt(store: Store) -> None:
    (a,) = store.enqueue([job()], now=T0)
    store.claim("n", None, 1, 30, now=T0)
    assert store.hand_back("n", [a], now=at(1)) == 1
    j = store.get_job(a)
    assert (j.state, j.attempts, j.locked_by, j.run_at) == ("queued", 0, None, at(1))


def test_unique_key_returns_existing_active_job(store: Store) -> None:
    (a,) = store.enqueue([job(unique_key="k")], now=T0)
    (b,) = store.enqueue([job(unique_key="k")], now=T0)
    assert a == b
    store.claim("n", None, 1, 30, now=T0)
    assert store.enqueue([job(unique_key="k")], now=T0) == [a]  # running still holds the key
    store.finish("n", succeeded=[a], now=T0)
    (c,) = store.enqueue([job(unique_key="k")], now=T0)
    assert c != a


def test_retry_and_cancel_check_state(store: Store) -> None:
    a, b = store.enqueue([job(), job()], now=T0)
    assert store.cancel_job(a, now=T0).state == "cancelled"
    with pytest.raises(JobStateError):
        store.cancel_job(a, now=T0)
    with pytest.raises(JobStateError):
        store.retry_job(b, now=T0)
    r = store.retry_job(a, now=at(5))
    assert (r.state, r.attempts, r.run_at) == ("queued", 0, at(5))
    with pytest.raises(JobNotFoundError):
        store.get_job(999999)


def test_lease_acquire_renew_takeover_and_release(store: Store) -> None:
    l1 = store.acquire_lease("leader", "a", 10, now=T0)
    assert l1 is not None and (l1.holder, l1.epoch, l1.expires_at) == ("a", 1, at(10))
    assert store.acquire_lease("leader", "b", 10, now=at(5)) is None
    l2 = store.acquire_lease("leader", "a", 10, now=at(5))
    assert l2 is not None and (l2.epoch, l2.expires_at) == (1, at(15))
    l3 = store.acquire_lease("leader", "b", 10, now=at(15))
    assert l3 is not None and (l3.holder, l3.epoch) == ("b", 2)
    assert store.acquire_lease("leader", "a", 10, now=at(16)) is None
    assert store.release_lease("leader", "b", now=at(17))
    l4 = store.acquire_lease("leader", "a", 10, now=at(17))
    assert l4 is not None and (l4.holder, l4.epoch) == ("a", 3)


def _schedule(store: Store, name: str = "s", next_run_at: datetime = T0) -> None:
    store.save_schedules(inserts=[{
        "name": name, "task": "t", "spec": "every:1s", "tz": "UTC", "anchor": T0, "args": "{}",
        "options": "{}", "next_run_at": next_run_at, "paused": False, "enabled": True, "spec_hash": "h",
    }], now=T0)


def test_materialize_is_fenced_by_the_lease_and_compare_and_set(store: Store) -> None:
    _schedule(store)
    lease = store.acquire_lease("leader", "a", 10, now=T0)
    assert lease is not None
    plan = Plan("s", T0, at(1), [Occurrence(T0)], "t", "{}")
    assert store.materialize([plan], lease="leader", holder="b", epoch=1, now=T0) == []  # not the holder
    assert store.materialize([plan], lease="leader", holder="a", epoch=2, now=T0) == []  # stale epoch
    assert store.materialize([plan], lease="leader", holder="a", epoch=1, now=at(11)) == []  # expired
    assert store.materialize([plan], lease="leader", holder="a", epoch=1, now=T0) == ["s"]
    assert store.materialize([plan], lease="leader", holder="a", epoch=1, now=T0) == []  # CAS: already moved
    rows = store.list_jobs(schedule_name="s")
    assert [(j.scheduled_for, j.state) for j in rows] == [(T0, "queued")]
    assert store.get_schedule("s").next_run_at == at(1)


def test_occurrence_key_is_unique_even_without_the_cas(store: Store) -> None:
    _schedule(store)
    store.acquire_lease("leader", "a", 10, now=T0)
    store.materialize([Plan("s", T0, at(1), [Occurrence(T0)], "t", "{}")], lease="leader", holder="a", epoch=1, now=T0)
    # a second plan that (wrongly) re-creates the same occurrence while advancing the schedule
    store.materialize([Plan("s", at(1), at(2), [Occurrence(T0), Occurrence(at(1))], "t", "{}")],
                      lease="leader", holder="a", epoch=1, now=T0)
    assert sorted(j.scheduled_for for j in store.list_jobs(schedule_name="s")) == [T0, at(1)]


def test_a_large_materialize_writes_every_field_exactly_and_orders_with_enqueued_jobs(store: Store) -> None:
    # the bulk path (one driver executemany / one unnest INSERT) must store the same values,
    # in the same format, as a plain enqueue: claim order mixes both kinds of rows
    names = [f"s{i:04d}" for i in range(300)]
    east = timezone(timedelta(hours=5))  # aware but not UTC: stored as UTC all the same
    for name in names:
        _schedule(store, name, T0)
    store.acquire_lease("leader", "a", 10, now=T0)
    plans = [
        Plan(name, T0, at(60 + i), [Occurrence(at(-2 + i % 2).astimezone(east)), Occurrence(at(0.25 * (i % 3)), "skipped", 2, "overlap")],
             "t", encode_args([i], {}), queue="q", priority=i % 5, max_attempts=4)
        for i, name in enumerate(names)
    ]
    assert sorted(store.materialize(plans, lease="leader", holder="a", epoch=1, now=T0)) == names
    assert store.materialize(plans, lease="leader", holder="a", epoch=1, now=T0) == []  # CAS
    jobs = store.list_jobs(limit=10_000)
    assert len(jobs) == 600
    by = {(j.schedule_name, j.state): j for j in jobs}
    for i, name in enumerate(names):
        q, s = by[(name, "queued")], by[(name, "skipped")]
        assert (q.scheduled_for, q.run_at, q.queue, q.priority, q.max_attempts, q.args) == (
            at(-2 + i % 2), at(-2 + i % 2), "q", i % 5, 4, [i])
        assert (s.scheduled_for, s.occurrences, s.reason, s.finished_at) == (at(0.25 * (i % 3)), 2, "overlap", T0)
        assert store.get_schedule(name).next_run_at == at(60 + i)
        assert store.get_schedule(name).last_run_at == max(at(-2 + i % 2), at(0.25 * (i % 3)))
    (mid,) = store.enqueue([job("x", queue="q", priority=0, run_at=at(-1.5))], now=T0)
    got = store.claim("n", ["q"], 1000, 30, now=T0)
    zero = [g for g in got if g.priority == 0]
    assert [g.run_at for g in zero] == sorted(g.run_at for g in zero)
    assert [g.id for g in zero].index(mid) == sum(1 for g in zero if g.run_at == at(-2))


def test_skipped_occurrences_are_recorded_with_reason_and_count(store: Store) -> None:
    _schedule(store)
    store.acquire_lease("leader", "a", 10, now=T0)
    plan = Plan("s", T0, at(5), [Occurrence(T0, "skipped", 4, "overlap"), Occurrence(at(4))], "t", "{}")
    store.materialize([plan], lease="leader", holder="a", epoch=1, now=at(4))
    rows = {j.scheduled_for: j for j in store.list_jobs(schedule_name="s")}
    assert (rows[T0].state, rows[T0].occurrences, rows[T0].reason) == ("skipped", 4, "overlap")
    assert rows[at(4)].state == "queued"
    store.save_schedules(updates=[{"name": "s", "next_run_at": at(5)}], now=at(4))
    _schedule(store, "x", at(5))
    assert {r.name: r.active for r in store.due_schedules(now=at(5))} == {"s": True, "x": False}


def test_due_schedules_excludes_paused_disabled_and_future(store: Store) -> None:
    _schedule(store, "due", T0)
    _schedule(store, "later", at(60))
    _schedule(store, "paused", T0)
    _schedule(store, "gone", T0)
    store.set_paused("paused", True, now=T0)
    store.save_schedules(disable=["gone"], now=T0)
    assert [r.name for r in store.due_schedules(now=T0)] == ["due"]
    assert store.next_schedule_at() == T0


def test_nodes_register_heartbeat_prune(store: Store) -> None:
    store.register_node("n1", host="h", pid=1, roles="worker", registry_hash="x", version="1", now=T0)
    store.heartbeat_node("n1", now=at(5))
    (n,) = store.list_nodes()
    assert (n.id, n.heartbeat_at) == ("n1", at(5))
    assert store.prune_nodes(60, now=at(30)) == 0
    assert store.prune_nodes(60, now=at(70)) == 1


def test_prune_deletes_old_finished_jobs_only(store: Store) -> None:
    a, b, c = store.enqueue([job(), job(), job()], now=T0)
    store.claim("n", None, 3, 30, now=T0)
    store.finish("n", succeeded=[a], failed=[(b, "x", None)], now=T0)
    assert store.prune(60, now=at(30)) == 0
    assert store.prune(60, now=at(61)) == 1
    assert {j.id for j in store.list_jobs()} == {b, c}


def test_database_clock_is_used_when_now_is_none(store: Store) -> None:
    db_now = store.db_now()
    assert db_now.tzinfo is not None
    assert abs((db_now - datetime.now(timezone.utc)).total_seconds()) < 5
    (a,) = store.enqueue([job()])
    assert len(store.claim("n", None, 1, 30)) == 1
    j = store.get_job(a)
    assert j.locked_until is not None and 25 < (j.locked_until - j.started_at).total_seconds() < 35


def test_extend_only_the_given_ids(store: Store) -> None:
    a, b = store.enqueue([job(), job()], now=T0)
    store.claim("n1", None, 2, 30, now=T0)
    assert store.extend("n1", 30, now=at(20), ids=[b]) == 1
    assert store.get_job(a).locked_until == at(30) and store.get_job(b).locked_until == at(50)
    assert store.extend("n1", 30, now=at(20), ids=[]) == 0


def test_bulk_enqueue_ids_match_their_rows_across_chunks(store: Store) -> None:
    rows = [job("bulk", args=encode_args([i]), priority=i % 7) for i in range(2500)]
    ids = store.enqueue(rows, now=T0)
    assert len(set(ids)) == 2500
    for i in (0, 999, 1000, 1001, 2499):
        j = store.get_job(ids[i])
        assert (j.args, j.priority) == ([i], i % 7)


@pytest.mark.parametrize("queues", [None, ["default"]])
def test_a_claim_reads_an_index_in_claim_order_and_sorts_nothing(store: Store, queues: list[str] | None) -> None:
    # a worker of every queue (the default) and one of a named queue both claim in
    # O(batch): with a million queued rows, a sort of them all per claim is what made a
    # drain ten times slower (SQLite's plan is deterministic enough to check; every query on
    # every database: test_indexes.py)
    if not store.dialect.is_sqlite:
        pytest.skip("query plans are checked on SQLite")
    import sqlalchemy as sa

    store.enqueue([job(run_at=at(-i)) for i in range(50)], now=T0)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE"):
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        assert len(store.claim("n", queues, 10, 30, now=T0)) == 10
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    (statement, parameters), = seen
    with store.engine.connect() as conn:
        plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
    assert not any("TEMP B-TREE" in step for step in plan), plan
    # the partial claim index of the queued rows (SQLite 3.40 does not see that it
    # covers the claim's "state = 'queued'", so it is not reported as COVERING)
    index = store.prefix + ("jobs_next_ix" if queues is None else "jobs_queued_ix")
    assert any(f"USING INDEX {index}" in step or f"USING COVERING INDEX {index}" in step for step in plan), plan


# -- the contract is written down, and rows are read by column name -------------------------
# public members that run no SQL of their own: a docstring is enough
NO_SQL = {"auto_install_default", "can_listen", "display_url", "dispose", "is_same_database", "is_transient", "rejects_values"}
CONTRACT = ("Reads:", "Writes:", "Locks:", "Clock:")


def test_every_public_store_method_states_what_it_reads_writes_locks_and_its_clock() -> None:
    assert Store.__mro__ == (Store, object), "one Store class, not a split across base classes"
    doc = inspect.getdoc(Store) or ""
    for topic in ("now=None", "clock", "Transactions", "retr", "transient", "Locks:", "SKIP LOCKED",
                  "compare-and-set", "lease fencing"):
        assert topic in doc, f"the Store docstring does not explain {topic!r}"
    assert NO_SQL <= set(vars(Store)), sorted(NO_SQL - set(vars(Store)))
    public = {name: m for name, m in vars(Store).items() if not name.startswith("_")}
    assert len(public) > 40
    missing = []
    for name, member in sorted(public.items()):
        fn = member.fget if isinstance(member, property) else member
        fn = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        text = inspect.getdoc(fn) or ""
        if not text.strip():
            missing.append(f"{name}: no docstring")
        elif name not in NO_SQL:
            lacking = [h for h in CONTRACT if h not in text]
            if lacking:
                missing.append(f"{name}: says nothing of {lacking}")
    assert not missing, missing


def _reversed(store: Store, table: sa.Table, *extra: sa.ColumnElement[object]) -> list[sa.Row]:
    """Every row of ``table``, its columns selected last to first (and ``extra`` after them)."""
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(*list(table.c)[::-1], *extra)))


def test_rows_are_built_by_column_name_not_position(store: Store) -> None:
    # a query may list the columns in any order, and more of them than the row type has: each
    # field is read from the column of its name (with rows built by position, the schedule's
    # name would be its disabled_reason, the lease's holder its acquired_at, ...)
    _schedule(store, "s")
    store.register_node("n1", host="h", pid=7, roles="worker", registry_hash="x", version="1", now=T0, schedules=["s"])
    store.acquire_lease("leader", "a", 10, now=T0)
    (i,) = store.enqueue([job("t", queue="q", priority=3, unique_key="k")], now=T0)
    (claimed,) = store.claim("n", None, 1, 30, now=T0)
    s, n, ls, j = store.t.schedules, store.t.nodes, store.t.leases, store.t.jobs

    (row,) = _reversed(store, s, sa.true().label("active"))
    expected = replace(store.get_schedule("s"), active=True)
    assert ScheduleRow.from_row(row) == expected and ScheduleRow.from_rows([row]) == [expected]
    assert (expected.name, expected.spec_hash, expected.next_run_at) == ("s", "h", T0)
    (row,) = _reversed(store, n)
    assert NodeRow.from_row(row) == NodeRow.from_rows([row])[0] == store.list_nodes()[0]
    assert (NodeRow.from_row(row).id, NodeRow.from_row(row).pid, NodeRow.from_row(row).declared()) == ("n1", 7, ["s"])
    (row,) = _reversed(store, ls)
    lease = store.get_lease("leader")
    assert Lease.from_row(row) == lease and lease is not None and (lease.holder, lease.epoch) == ("a", 1)
    (row,) = _reversed(store, j)
    assert Job.from_row(row) == store.get_job(i)
    assert (Job.from_row(row).task, Job.from_row(row).queue, Job.from_row(row).args) == ("t", "q", [1])
    # what a claim returns: its columns (any order) and the claim's now, labelled claimed_at
    columns = [j.c[f.name] for f in fields(Claimed) if f.name != "claimed_at"][::-1]
    with store.engine.connect() as conn:
        rows = list(conn.execute(sa.select(j.c.started_at.label("claimed_at"), *columns)))
    assert Claimed.from_rows(rows) == [claimed] and Claimed.from_row(rows[0]) == claimed
    assert (claimed.id, claimed.priority, claimed.attempts, claimed.claimed_at) == (i, 3, 1, T0)
    # a column the row type needs is missing: an error, not a row with shifted fields
    with store.engine.connect() as conn:
        partial = list(conn.execute(sa.select(n.c.id, n.c.host)))
    with pytest.raises(KeyError, match="pid"):
        NodeRow.from_rows(partial)
