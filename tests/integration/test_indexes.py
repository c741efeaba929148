"""Every query the project needs reads an index, on every database: the plan of each Store call
(claims, rescue, next_due, overlap, unique keys, last outcomes, the dashboard's listings and
counts, prune) names the intended index, and no plan scans the whole job table or sorts it.

The job table is filled with a realistic mix (most rows finished, a backlog in two queues, a few
running, scheduled rows, unique keys) and analyzed, so that PostgreSQL and MariaDB choose their
plans from statistics, as in production; SQLite's planner uses no statistics here (an install
never runs ANALYZE) and its plans are structural.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from linger_sched.errors import JobStateError
from linger_sched.store import Store, encode_args

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
TASKS = [f"app.tasks.t{i}" for i in range(20)]
QUEUES = ["default", "mail", "reports"]
SCHEDULES = [f"sched{i}" for i in range(10)]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(store: Store, n: int = 20_000) -> None:
    """``n`` job rows in the proportions of a long-running install (most rows succeeded, a
    backlog in three queues, a few running, rare failures; one in ten rows an occurrence of a
    schedule; a few unique keys), written directly (fast), then analyzed (and on PostgreSQL
    vacuumed, as autovacuum would)."""
    rows: list[dict[str, Any]] = []
    args = encode_args([1], {"x": "y"})
    for i in range(n):
        r = i % 1000
        row: dict[str, Any] = {
            "task": TASKS[i % len(TASKS)], "args": args, "queue": QUEUES[i % len(QUEUES)], "priority": i % 3,
            "attempts": 1, "max_attempts": 3, "run_at": at(-i), "created_at": at(-i), "occurrences": 1,
            "locked_by": None, "locked_until": None, "last_error": None, "schedule_name": None,
            "scheduled_for": None, "reason": None, "unique_key": None, "started_at": at(-i), "finished_at": at(-i + 1),
        }
        if r < 950:
            row["state"] = "succeeded"
        elif r < 980:
            row.update(state="queued", attempts=0, started_at=None, finished_at=None, run_at=at(i % 7200 - 3600))
        elif r < 983:
            row.update(state="running", locked_by="node-a", locked_until=at(30), finished_at=None)
        elif r < 990:
            row.update(state="failed", last_error="boom")
        elif r < 993:
            row["state"] = "cancelled"
        else:
            row["state"] = "skipped"
        if i % 10 == 0:  # scheduled rows: one occurrence per (schedule, instant)
            row.update(schedule_name=SCHEDULES[(i // 10) % len(SCHEDULES)], scheduled_for=at(-i))
        if r in (1, 960, 985):  # held by a finished job, by a queued one, and released by a failed one
            row["unique_key"] = f"key-{i - 25 if r == 985 else i}"
        rows.append(row)
    j = store.t.jobs
    with store.engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(sa.insert(j), rows[start:start + 2000])
    if store.dialect.is_postgres:
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f'VACUUM ANALYZE "{j.name}"')
    elif store.dialect.is_mysql:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE TABLE `{j.name}`")
    for name in SCHEDULES:
        store.save_schedules(inserts=[{
            "name": name, "task": TASKS[0], "spec": "every:1s", "tz": "UTC", "anchor": T0, "args": "{}",
            "options": "{}", "next_run_at": at(-5), "paused": False, "enabled": True, "spec_hash": "h",
        }], now=T0)
    store.recount()  # the rows were written directly: count their finished ones


@dataclass
class Captured:
    statements: list[tuple[str, Any]] = field(default_factory=list)


def capture(store: Store, call: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SQL statements (with their parameters) ``call`` runs, SELECT/UPDATE/DELETE only."""
    got = Captured()

    def listener(conn, cursor, statement, parameters, context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper()
        if head in ("SELECT", "UPDATE", "DELETE", "WITH") and not executemany:
            got.statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", listener)
    try:
        call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", listener)
    return got.statements


@dataclass
class Access:
    """One read of the job table in a plan: the index (None: the primary key or the table),
    whether it reads the whole table, whether it is a primary-key read in id order (not a
    lookup of given ids), and the plan line."""

    index: str | None
    full_table: bool
    pk_scan: bool
    line: str


@dataclass
class Explained:
    text: str
    accesses: list[Access]
    sorts: list[str]  # sort steps (SQLite: temp b-trees; PostgreSQL: Sort nodes; MariaDB: filesort)


def explain(store: Store, statement: str, parameters: Any, *, no_seqscan: bool = False) -> Explained:
    jobs = store.t.jobs.name
    with store.engine.connect() as conn:
        if no_seqscan and store.dialect.is_postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        if store.dialect.is_sqlite:
            lines = [str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            accesses = []
            for line in lines:
                m = re.match(rf"(SCAN|SEARCH) {jobs}\b(?: AS \w+)?(.*)", line)
                if m is None:
                    continue
                ix = re.search(r"USING (?:COVERING )?INDEX (\w+)", m.group(2))
                full = m.group(1) == "SCAN" and ix is None  # SQLite walks the table in rowid (id) order
                accesses.append(Access(ix.group(1) if ix else None, full, full, line))
            return Explained("\n".join(lines), accesses, [line for line in lines if "TEMP B-TREE" in line])
        if store.dialect.is_postgres:
            lines = [str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
            accesses = []
            for n, line in enumerate(lines):
                m = re.search(r"(Seq Scan|Index Only Scan(?: Backward)?|Index Scan(?: Backward)?) (?:using (\w+) )?on (\w+)", line)
                b = re.search(r"Bitmap Index Scan on (\w+)", line)
                if b is not None:
                    if b.group(1).startswith(jobs + "_"):
                        accesses.append(Access(b.group(1), False, False, line.strip()))
                    continue
                if m is None or m.group(3) != jobs:
                    continue
                kind, ix = m.group(1), m.group(2)
                if kind == "Seq Scan":
                    accesses.append(Access(None, True, False, line.strip()))
                elif ix == f"{jobs}_pkey":
                    detail = []
                    for following in lines[n + 1:]:
                        if "->" in following:
                            break
                        detail.append(following)
                    lookup = any(re.search(r"Index Cond: \(id = ", d) for d in detail)
                    accesses.append(Access(None, False, not lookup, line.strip()))
                else:
                    accesses.append(Access(ix, False, False, line.strip()))
            sorts = []
            for n, line in enumerate(lines):
                if re.search(r"(->\s+|^\s*)(Incremental )?Sort\s+\(", line):
                    key = next((k for k in lines[n + 1:n + 3] if "Sort Key:" in k), "")
                    if f"{store.prefix}schedules." not in key:  # not a sort of the due schedules
                        sorts.append(line.strip())
            return Explained("\n".join(lines), accesses, sorts)
        result = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        keys = list(result.keys())
        accesses, sorts, lines = [], [], []
        for r in (dict(zip(keys, row)) for row in result):
            lines.append(f"{r['table']}: type={r['type']} key={r['key']} rows={r['rows']} extra={r['Extra']}")
            if r["table"] != jobs:
                continue
            for key in (r["key"] or "").split(",") or [""]:
                pk = key in ("", "PRIMARY")
                accesses.append(Access(None if pk else key, r["type"] == "ALL", pk and r["type"] == "index", lines[-1]))
            if "filesort" in (r["Extra"] or ""):
                sorts.append(lines[-1])
        return Explained("\n".join(lines), accesses, sorts)


@dataclass
class Query:
    """A Store call and what its plan must be: every read of the job table goes through one
    of ``indexes`` (names after the prefix; ``mysql`` overrides them on MySQL/MariaDB) or
    looks rows up by id, at least one through ``indexes``; nothing scans the whole table;
    nothing is sorted unless ``sort`` says why a bounded set may be (the merge of per-queue
    picks, the few running jobs, the queued backlog of one query arm, a count's groups);
    ``pk_scan``: the databases that may walk the primary key in id order instead (PostgreSQL
    when its statistics say that the rows wanted are dense: the newest succeeded jobs, the
    finished jobs of a task or a queue; every database for the newest queued jobs, which are
    the newest rows while a backlog lasts);
    ``no_seqscan``: PostgreSQL's plan is read with enable_seqscan off, for a count of most of
    the table, where it may rightly prefer reading the table to reading the index."""

    call: Callable[[], object]
    indexes: set[str]
    mysql: set[str] | None = None
    sort: str = ""
    pk_scan: tuple[str, ...] = ()
    no_seqscan: bool = False
    by_id: bool = False  # reads the job table by primary key only: seeks, or a range of ids from a bound


# MySQL/MariaDB: every key led by ``state`` reads the rows of one active state (in id order when
# the rest of the key is constant: the running key's locked_until is NULL for queued rows)
BY_STATE = {"jobs_queued_ix", "jobs_next_ix", "jobs_running_ix"}


def queries(store: Store) -> dict[str, Query]:
    partial_history = not store.dialect.is_sqlite and not store.dialect.is_mysql  # PostgreSQL
    j = store.t.jobs
    with store.engine.connect() as conn:
        failed_with_held_key = conn.execute(
            sa.select(j.c.id).where(j.c.unique_key == "key-960", j.c.state == "failed")).scalar_one()

    def unique_key() -> None:
        # a failed job's key is held by a queued one: the retry looks the holder up
        with pytest.raises(JobStateError):
            store.retry_job(failed_with_held_key, now=T0)

    with store.engine.connect() as conn:
        top = conn.execute(sa.select(sa.func.max(j.c.id))).scalar_one()
    middle, recent = top // 2, top - top // 20  # a keyset bound; the newest 5 % of the rows

    def by(*extra: str) -> set[str]:
        return {*extra, "jobs_next_ix", "jobs_queued_ix", "jobs_running_ix"} if partial_history else set(extra)

    return {
        "claim, every queue": Query(lambda: store.claim("n", None, 100, 30, now=T0), {"jobs_next_ix"}),
        "claim, one queue": Query(lambda: store.claim("n", ["mail"], 100, 30, now=T0), {"jobs_queued_ix"}),
        "claim, two queues": Query(lambda: store.claim("n", ["mail", "reports"], 100, 30, now=T0), {"jobs_queued_ix"},
                                   sort="the merge of 100 picked rows per queue"),
        "rescue": Query(lambda: store.rescue(now=at(60), limit=10), {"jobs_running_ix"}, mysql=BY_STATE),
        "next_due, every queue": Query(lambda: store.next_due(None, now=T0), {"jobs_next_ix"}),
        "next_due, one queue": Query(lambda: store.next_due(["mail"], now=T0), {"jobs_queued_ix"}),
        "overlap (due_schedules)": Query(lambda: store.due_schedules(now=T0), {"jobs_active_schedule_ix"}),
        "unique key holder": Query(unique_key, {"jobs_unique_key_ux"}),
        "last_outcomes": Query(lambda: store.last_outcomes(SCHEDULES), {"jobs_schedule_ix"}),
        "newest failed": Query(lambda: store.list_jobs("failed", 50), {"jobs_done_ix"}),
        "newest succeeded": Query(lambda: store.list_jobs("succeeded", 50), {"jobs_done_ix"}, pk_scan=("postgresql",)),
        "newest running": Query(lambda: store.list_jobs("running", 50), {"jobs_running_ix"}, mysql=BY_STATE,
                                sort="the running jobs"),
        "newest queued": Query(lambda: store.list_jobs("queued", 50), {"jobs_next_ix", "jobs_queued_ix"},
                               mysql=BY_STATE, sort="the queued backlog",
                               pk_scan=("sqlite", "postgresql", "mysql", "mariadb")),
        "newest of a task": Query(lambda: store.list_jobs(task=TASKS[3], limit=50), by("jobs_task_ix"),
                                  sort="the queued and running arms" if partial_history else "", pk_scan=("postgresql",)),
        "newest failed of a task": Query(lambda: store.list_jobs("failed", 50, task=TASKS[3]),
                                         {"jobs_done_ix", "jobs_task_ix"}, sort="the failed jobs of the task"),
        "newest of a schedule": Query(lambda: store.list_jobs(schedule_name=SCHEDULES[2], limit=50), {"jobs_schedule_ix"}),
        "newest of a queue": Query(lambda: store.list_jobs(queue="mail", limit=50), by("jobs_queue_ix"),
                                   sort="the queued and running arms" if partial_history else "", pk_scan=("postgresql",)),
        # the finished jobs are counted from the counts table: the job table's plan reads the
        # queued and the running rows only
        "count by state": Query(store.count_by_state, {"jobs_queued_ix", "jobs_running_ix"},
                                sort="the groups of the running jobs", no_seqscan=True),
        "count by queue and state": Query(store.count_by_queue_and_state, {"jobs_queued_ix", "jobs_running_ix"},
                                          sort="the groups of the running jobs", no_seqscan=True),
        "prune": Query(lambda: store.prune(86400, now=T0, limit=1000), {"jobs_done_ix"}, pk_scan=("postgresql",)),
        # linger-sched prune: one batch, from an id on (its dry run reads the same)
        "prune, one batch": Query(lambda: store.prune_after(middle, 86400, now=T0, limit=1000, state="succeeded"),
                                  {"jobs_done_ix"}, pk_scan=("postgresql",)),
        # the dashboard (linger_sched.web): keyset pages, counts of a bulk action, the time range as
        # ids, the throughput chart and the rate in of the queues
        "keyset page, failed": Query(lambda: store.list_jobs("failed", 50, before_id=middle), {"jobs_done_ix"}),
        "keyset page, failed, newer": Query(lambda: store.list_jobs("failed", 50, after_id=middle, newest_first=False),
                                            {"jobs_done_ix"}),
        "keyset page of a task": Query(lambda: store.list_jobs(task=TASKS[3], limit=50, before_id=middle),
                                       by("jobs_task_ix"), sort="the queued and running arms" if partial_history else "",
                                       pk_scan=("postgresql",)),
        "keyset page of a schedule": Query(lambda: store.list_jobs(schedule_name=SCHEDULES[2], limit=50, before_id=middle),
                                           {"jobs_schedule_ix"}),
        "count failed of a task": Query(lambda: store.count_jobs("failed", task=TASKS[3]), {"jobs_done_ix", "jobs_task_ix"}),
        # SQLite, without statistics, counts a queue's queued jobs through its entries of
        # jobs_queue_ix (which holds every row there) rather than the claim index
        "count queued of a queue": Query(lambda: store.count_jobs("queued", queue="mail"),
                                         {"jobs_queued_ix", *(["jobs_queue_ix"] if store.dialect.is_sqlite else [])},
                                         mysql=BY_STATE),
        "count cancelled of a schedule": Query(lambda: store.count_jobs("cancelled", schedule_name=SCHEDULES[2]),
                                               {"jobs_done_ix", "jobs_schedule_ix", "jobs_occurrence_ux"}),
        # the ends of the primary key (LIMIT 1 each way), then seeks
        "first job id since": Query(lambda: store.first_job_id_since(at(-5000)), set(), by_id=True,
                                    pk_scan=("sqlite", "postgresql", "mysql", "mariadb")),
        # the finished jobs among the recent ones: the history index from a bound, or the range of ids
        "finished histogram": Query(lambda: store.finished_histogram([at(-7200), at(-3600), at(0)], min_id=recent),
                                    {"jobs_done_ix"}, by_id=True, sort="the groups of the recent finished jobs"),
        "created by queue": Query(lambda: store.created_by_queue(recent), set(), by_id=True,
                                  sort="the groups of the recent jobs"),
    }


def plans(store: Store) -> dict[str, tuple[Query, list[tuple[str, Explained]]]]:
    out = {}
    for name, q in queries(store).items():
        out[name] = (q, [(sql, explain(store, sql, params, no_seqscan=q.no_seqscan)) for sql, params in capture(store, q.call)])
    return out


def problems(store: Store, q: Query, got: list[tuple[str, Explained]]) -> list[str]:
    """What is wrong with the plans of one query (empty: nothing)."""
    p = store.prefix
    intended = {p + name for name in (q.mysql if q.mysql is not None and store.dialect.is_mysql else q.indexes)}
    out = []
    used: set[str] = set()
    pk_scanned = False
    for _, ex in got:
        for a in ex.accesses:
            if q.by_id and a.index is None and not a.full_table:
                pk_scanned = True  # a seek or a range of the primary key (every condition is on id)
            elif a.pk_scan and store.dialect.name in q.pk_scan:
                pk_scanned = True
            elif a.full_table:
                out.append(f"reads the whole table: {a.line}")
            elif a.index is not None:
                used.add(a.index)
                if a.index not in intended:
                    out.append(f"reads {a.index}, not one of {sorted(intended)}: {a.line}")
            elif a.pk_scan:
                out.append(f"walks the primary key: {a.line}")
        if ex.sorts and not q.sort:
            out.append(f"sorts: {ex.sorts}")
    if not used & intended and not pk_scanned:
        out.append(f"reads none of {sorted(intended)}")
    if not got:
        out.append("ran no statement")
    return out


@pytest.fixture(scope="module")
def planned(request: pytest.FixtureRequest) -> Iterator[Callable[[str], dict[str, Any]]]:
    """Per database: one filled install and the plans of every query (computed once)."""
    done: dict[str, Any] = {}
    stores: list[Store] = []

    def get(url: str) -> dict[str, Any]:
        key = url if not url.startswith("sqlite") else "sqlite"
        if key not in done:
            import secrets

            s = Store(url, table_prefix=f"t{secrets.token_hex(4)}_")
            stores.append(s)
            s.install_schema()
            fill(s)
            done[key] = {"store": s, "plans": plans(s)}
        return done[key]

    yield get
    for s in stores:
        s.drop_schema()
        s.dispose()


QUERY_NAMES = [
    "claim, every queue", "claim, one queue", "claim, two queues", "rescue", "next_due, every queue",
    "next_due, one queue", "overlap (due_schedules)", "unique key holder", "last_outcomes", "newest failed",
    "newest succeeded", "newest running", "newest queued", "newest of a task", "newest failed of a task",
    "newest of a schedule", "newest of a queue", "count by state", "count by queue and state", "prune",
    "prune, one batch",
    "keyset page, failed", "keyset page, failed, newer", "keyset page of a task", "keyset page of a schedule",
    "count failed of a task", "count queued of a queue", "count cancelled of a schedule", "first job id since",
    "finished histogram", "created by queue",
]


@pytest.mark.parametrize("query", QUERY_NAMES)
def test_the_plan_reads_the_intended_index_and_no_whole_table(
    db_url: str, query: str, planned: Callable[[str], dict[str, Any]]
) -> None:
    got = planned(db_url)
    store: Store = got["store"]
    q, explained = got["plans"][query]
    wrong = problems(store, q, explained)
    shown = "\n".join(f"{' '.join(sql.split())[:400]}\n  {ex.text.replace(chr(10), chr(10) + '  ')}" for sql, ex in explained)
    assert wrong == [], f"{query} on {store.dialect.name}:\n" + "\n".join(wrong) + "\n" + shown


def test_the_query_list_is_complete(tmp_path: Any) -> None:
    s = Store(f"sqlite:///{tmp_path / 'x.db'}", table_prefix="q_")
    s.install_schema()
    try:
        fill(s, 1000)
        assert sorted(queries(s)) == sorted(QUERY_NAMES)
    finally:
        s.dispose()


def test_the_index_shaped_queries_return_what_a_scan_of_every_row_would(store: Store) -> None:
    fill(store, 3000)
    j = store.t.jobs
    with store.engine.connect() as conn:
        rows = [r._mapping for r in conn.execute(sa.select(j.c.id, j.c.task, j.c.queue, j.c.state, j.c.priority, j.c.run_at,
                                                           j.c.schedule_name, j.c.scheduled_for, j.c.finished_at))]

    def newest(pred: Callable[[Any], bool], n: int = 50, newest_first: bool = True) -> list[int]:
        ids = sorted((r["id"] for r in rows if pred(r)), reverse=newest_first)
        return ids[:n] if n else ids

    for state in (None, "queued", "running", "succeeded", "failed", "cancelled", "skipped"):
        for task in (None, TASKS[3]):
            for queue in (None, "mail"):
                for sched in (None, SCHEDULES[1]):
                    for n, first in ((50, True), (7, False), (0, True)):
                        def pred(r: Any, state: Any = state, task: Any = task, queue: Any = queue, sched: Any = sched) -> bool:
                            return ((state is None or r["state"] == state) and (task is None or r["task"] == task)
                                    and (queue is None or r["queue"] == queue) and (sched is None or r["schedule_name"] == sched))
                        got = [x.id for x in store.list_jobs(state, n, task=task, queue=queue, schedule_name=sched,
                                                             newest_first=first)]
                        assert got == newest(pred, n, first), (state, task, queue, sched, n, first)
                    # the dashboard's count and keyset pages of the same filters
                    assert store.count_jobs(state, task=task, queue=queue, schedule_name=sched) == len(newest(pred, 0))
                    for before, after in ((1500, None), (None, 1500), (2000, 1000)):
                        def in_range(r: Any, before: Any = before, after: Any = after, pred: Any = pred) -> bool:
                            return pred(r) and (before is None or r["id"] < before) and (after is None or r["id"] > after)
                        got = [x.id for x in store.list_jobs(state, 20, task=task, queue=queue, schedule_name=sched,
                                                             before_id=before, after_id=after, newest_first=after is None)]
                        assert got == newest(in_range, 20, after is None), (state, task, queue, sched, before, after)
                        assert store.count_jobs(state, task=task, queue=queue, schedule_name=sched, before_id=before,
                                                after_id=after) == len(newest(in_range, 0))
    assert store.list_jobs("no such state") == []

    counts: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        pairs[(r["queue"], r["state"])] = pairs.get((r["queue"], r["state"]), 0) + 1
    assert store.count_by_state() == counts
    assert store.count_by_queue_and_state() == pairs

    last = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        if r["schedule_name"] is not None:
            last[r["schedule_name"]] = (r["scheduled_for"], r["state"])
    assert store.last_outcomes([*SCHEDULES, "not-a-schedule"]) == last

    for queues in (None, ["mail"], ["mail", "reports"], ["nothing"]):
        queued = [r["run_at"] for r in rows if r["state"] == "queued" and (queues is None or r["queue"] in queues)]
        assert store.next_due(queues, now=T0) == (min(queued) if queued else None, T0), queues

    due = sorted((r["priority"], r["run_at"], r["id"]) for r in rows
                 if r["state"] == "queued" and r["queue"] in ("mail", "reports") and r["run_at"] <= T0)
    claimed = store.claim("n", ["reports", "mail"], 40, 30, now=T0)
    assert [(c.priority, c.run_at, c.id) for c in claimed] == due[:40]

    old_ids = sorted(r["id"] for r in rows if r["state"] in ("succeeded", "cancelled") and r["finished_at"] < at(-1000))
    assert 1000 < len(old_ids) < len(rows) - 1000
    assert store.prune(1000, now=T0, limit=100_000) == len(old_ids)
    with store.engine.connect() as conn:
        left = {r[0] for r in conn.execute(sa.select(j.c.id))}
    assert left == {r["id"] for r in rows} - set(old_ids)


if __name__ == "__main__":  # print every plan: python tests/integration/test_indexes.py URL
    import secrets
    import sys

    s = Store(sys.argv[1], table_prefix=f"t{secrets.token_hex(4)}_")
    s.install_schema()
    try:
        fill(s)
        for qname, (q, got) in plans(s).items():
            print(f"=== {qname}: {problems(s, q, got) or 'ok'}")
            for sql, ex in got:
                print("  " + " ".join(sql.split())[:300])
                print("    " + ex.text.replace("\n", "\n    "))
    finally:
        s.drop_schema()
        s.dispose()
