"""History: the dashboard's queries on a large jobs table (issue 11: each <= 5 ms on 1,000,000 rows).

Per database: a fresh table (the schema the ``Store`` of the checked-out code installs), filled
in bulk with N rows (default 1,000,000) of mixed history, then each dashboard-shaped query
timed:

* newest 50 by state (each of the six states), newest 50 of every job;
* newest 50 by task (a common task and a rare one), by schedule, by queue (a busy queue and a
  rare one);
* counts by state, counts by queue.

``Store.list_jobs`` (newest first) and ``Store.count_by_state`` are used where they exist, as
the dashboard calls them (so the time includes building the 50 ``Job`` rows); counts by queue
has no Store method: it is ``SELECT queue, count(*) ... GROUP BY queue`` in SQLAlchemy Core
against ``store.t.jobs`` (where the Store has ``count_by_queue_and_state``, from schema 3 on,
that is timed as well). Each query runs once to warm up, then 15 times; a round's figure is
the median of those 15; there are --runs rounds (the queries interleaved), and the table shows
the median round with min and max. The table is built once per database per invocation.

The rows (seeded, so every run builds the same table): states 88.95 % succeeded, 3 % failed,
1 % cancelled, 2 % skipped, 5 % queued (a fifth of them due in the future), 0.05 % running
(500 in 1,000,000: the few nodes of a deployment at full prefetch hold no more); 40 tasks
with Zipf-like weights plus one rare task (1 row in 10,000); queues default 70 %, emails 15 %,
reports 10 %, webhooks 4.9 %, rare 0.1 %; 35 % of the rows are occurrences of 200 schedules;
2 % carry a unique key; created over 30 days, in id order. After the fill PostgreSQL gets
``VACUUM ANALYZE`` and MariaDB ``ANALYZE TABLE`` (what autovacuum / InnoDB's automatic
statistics do after such a load); SQLite gets nothing (linger-sched does not run ANALYZE).

Time (2 cores, nice 10, measured 2026-12-01): building 1,000,000 rows takes about 50 s on
SQLite, 65 s on PostgreSQL and 70 s on MariaDB; the queries about 15-40 s per database for 3
rounds (the slowest, a scan of the table, up to 0.7 s a call). The three databases: about 6
minutes.

    python benchmarks/history.py                         # every reachable database, 1,000,000 rows
    python benchmarks/history.py --rows 200000 --db sqlite,postgresql
    python benchmarks/history.py --rows 1000000 --explain --db postgresql   # plans too
"""

from __future__ import annotations

import inspect
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Ctx,
    Row,
    base_parser,
    ctx_from_args,
    drop_app,
    new_app,
    print_rows,
    retrying,
    say,
    url_for,
)

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 50_000
REPEAT = 15
LIMIT = 50
CHUNK = 10_000
# running: 0.05 % (500 of 1,000,000), what a few nodes hold at full prefetch; 1 % (10,000
# running jobs) made every query with a running branch read that many index entries
STATES = (("succeeded", 0.8895), ("failed", 0.03), ("cancelled", 0.01), ("skipped", 0.02), ("queued", 0.05), ("running", 0.0005))
QUEUES = (("default", 0.70), ("emails", 0.15), ("reports", 0.10), ("webhooks", 0.049), ("rare", 0.001))
TASKS = [f"app.tasks.task_{k:02d}" for k in range(40)]
TASK_WEIGHTS = [1.0 / (k + 1) for k in range(40)]
RARE_TASK = "app.tasks.rare_report"
SCHEDULES = [f"schedule-{k:03d}" for k in range(200)]
DAYS = 30


def make_rows(n: int, seed: int = 11) -> Callable[[int, int], list[dict[str, Any]]]:
    """A function (start, stop) -> the rows start..stop-1 of the table; rows depend only on
    their index and the seed, so chunks can be made one at a time."""
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    span = DAYS * 86400.0
    state_names = [s for s, _ in STATES]
    state_cum = _cumulative([w for _, w in STATES])
    queue_names = [q for q, _ in QUEUES]
    queue_cum = _cumulative([w for _, w in QUEUES])
    task_cum = _cumulative(TASK_WEIGHTS)

    def rows(start: int, stop: int) -> list[dict[str, Any]]:
        out = []
        for i in range(start, stop):
            rnd = random.Random(seed * 1_000_003 + i)
            created = base + timedelta(seconds=span * i / n)
            state = state_names[_pick(state_cum, rnd.random())]
            if i % 10_000 == 5_000:
                task = RARE_TASK
            else:
                task = TASKS[_pick(task_cum, rnd.random())]
            queue = queue_names[_pick(queue_cum, rnd.random())]
            row: dict[str, Any] = {
                "task": task, "args": f'{{"args":[{i}]}}', "queue": queue, "priority": rnd.choice((0, 0, 0, 5, 10)),
                "state": state, "run_at": created, "attempts": 0 if state == "queued" else 1, "max_attempts": 3,
                "locked_by": None, "locked_until": None, "last_error": None, "schedule_name": None,
                "scheduled_for": None, "occurrences": 1, "reason": None, "unique_key": None, "created_at": created,
                "started_at": None, "finished_at": None,
            }
            if rnd.random() < 0.35:
                # occurrence k of schedule s: (schedule_name, scheduled_for) unique by construction
                s = i % len(SCHEDULES)
                row["schedule_name"] = SCHEDULES[s]
                row["scheduled_for"] = base + timedelta(seconds=i)  # i is unique: so is the pair
            if rnd.random() < 0.02:
                row["unique_key"] = f"uk-{i}"
            if state == "queued" and rnd.random() < 0.2:
                row["run_at"] = created + timedelta(days=DAYS + 1)
            if state in ("succeeded", "failed", "running"):
                row["started_at"] = created + timedelta(milliseconds=5)
            if state in ("succeeded", "failed", "cancelled", "skipped"):
                row["finished_at"] = created + timedelta(milliseconds=50)
            if state == "failed":
                row["attempts"] = 3
                row["last_error"] = "Traceback (most recent call last):\n  ...\nValueError: benchmark failure"
            elif state == "skipped":
                row["reason"] = "overlap"
                row["attempts"] = 0
            elif state == "running":
                row["locked_by"] = "node-bench"
                row["locked_until"] = created + timedelta(seconds=30)
            out.append(row)
        return out

    return rows


def _cumulative(weights: list[float]) -> list[float]:
    total, acc, out = sum(weights), 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _pick(cum: list[float], x: float) -> int:
    for k, c in enumerate(cum):
        if x < c:
            return k
    return len(cum) - 1


def build(app: Any, n: int) -> float:
    """Fill ``app``'s jobs table with ``n`` rows; returns the seconds it took (fill + analyze)."""
    import sqlalchemy as sa

    j = app.store.t.jobs
    cols = set(j.c.keys())
    rows_of = make_rows(n)
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        rows = [{k: v for k, v in r.items() if k in cols} for r in rows_of(start, min(n, start + CHUNK))]
        with app.store.engine.begin() as conn:
            conn.execute(sa.insert(j), rows)
        if start and start % 200_000 == 0:
            say(f"[history] {app.store.dialect.name}: {start:,} rows in {time.perf_counter() - t0:.0f} s")
    name = app.store.dialect.name
    if name == "postgresql":
        with app.store.engine.connect() as c:
            c = c.execution_options(isolation_level="AUTOCOMMIT")
            c.exec_driver_sql(f"VACUUM ANALYZE {j.name}")
    elif name in ("mysql", "mariadb"):
        with app.store.engine.connect() as c:
            c.exec_driver_sql(f"ANALYZE TABLE {j.name}").fetchall()
    if hasattr(app.store, "recount"):  # schema 4 on: the rows were written directly, count them
        t1 = time.perf_counter()
        app.store.recount()
        say(f"[history] {name}: Store.recount() of {n:,} rows in {time.perf_counter() - t1:.1f} s")
    return time.perf_counter() - t0


def queries(app: Any) -> list[tuple[str, Callable[[], Any], Any]]:
    """(name, call, the equivalent Core statement) of every dashboard query."""
    import sqlalchemy as sa

    store = app.store
    j = store.t.jobs
    params = inspect.signature(store.list_jobs).parameters

    def newest(**where: str) -> tuple[Callable[[], Any], Any]:
        stmt = sa.select(j)
        for k, v in where.items():
            stmt = stmt.where(j.c[{"schedule": "schedule_name"}.get(k, k)] == v)
        stmt = stmt.order_by(j.c.id.desc()).limit(LIMIT)
        keys = {"schedule": "schedule_name"}
        kwargs = {keys.get(k, k): v for k, v in where.items()}
        if all(k in params for k in kwargs):
            return (lambda: store.list_jobs(limit=LIMIT, **kwargs)), stmt

        def run() -> list[Any]:  # the Store has no such filter: the same query in Core
            with store.engine.connect() as c:
                return list(c.execute(stmt))

        return run, stmt

    out: list[tuple[str, Callable[[], Any], Any]] = []
    for state, _ in STATES:
        out.append((f"newest {LIMIT} {state}", *newest(state=state)))
    out.append((f"newest {LIMIT} of all jobs", *newest()))
    out.append((f"newest {LIMIT} of task {TASKS[0]} (~23 %)", *newest(task=TASKS[0])))
    out.append((f"newest {LIMIT} of task {RARE_TASK} (0.01 %)", *newest(task=RARE_TASK)))
    out.append((f"newest {LIMIT} of schedule {SCHEDULES[7]} (0.18 %)", *newest(schedule=SCHEDULES[7])))
    out.append((f"newest {LIMIT} of queue emails (15 %)", *newest(queue="emails")))
    out.append((f"newest {LIMIT} of queue rare (0.1 %)", *newest(queue="rare")))
    count_state = sa.select(j.c.state, sa.func.count()).group_by(j.c.state)
    out.append(("counts by state", store.count_by_state, count_state))
    count_queue = sa.select(j.c.queue, sa.func.count()).group_by(j.c.queue)

    def by_queue() -> dict[str, int]:
        with store.engine.connect() as c:
            return {q: n for q, n in c.execute(count_queue)}

    if hasattr(store, "fold_counts"):  # schema 4 on: counts by queue are the Store's, summed
        def by_queue_from_store() -> dict[str, int]:
            out: dict[str, int] = {}
            for (q, _), n in store.count_by_queue_and_state().items():
                out[q] = out.get(q, 0) + n
            return out

        out.append(("counts by queue", by_queue_from_store, None))
    else:  # before: no Store method, the dashboard would GROUP BY the table
        out.append(("counts by queue", by_queue, count_queue))
    if hasattr(store, "count_by_queue_and_state"):  # the Store's own count (schema 3 on)
        out.append(("counts by queue and state (Store.count_by_queue_and_state)", store.count_by_queue_and_state, None))
    return out


def executed(app: Any, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The SELECT statements (with their parameters) that one call of ``fn`` sends: the plan
    of a Store method is the plan of the SQL it really runs, not of an equivalent."""
    import sqlalchemy as sa

    seen: list[tuple[str, Any]] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "(SELECT")):
            seen.append((statement, parameters))

    sa.event.listen(app.store.engine, "before_cursor_execute", before)
    try:
        fn()
    finally:
        sa.event.remove(app.store.engine, "before_cursor_execute", before)
    return seen


def explain(app: Any, fn: Callable[[], Any]) -> list[str]:
    """The plan of every SELECT one call of ``fn`` runs, on the app's database (PostgreSQL:
    EXPLAIN ANALYZE, so with the real row counts and buffers)."""
    name = app.store.dialect.name
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN (ANALYZE, BUFFERS) "}.get(name, "EXPLAIN ")
    out: list[str] = []
    for statement, parameters in executed(app, fn):
        out.append("-- " + " ".join(statement.split())[:400])
        with app.store.engine.connect() as c:
            rows = list(c.exec_driver_sql(prefix + statement, parameters))
        if name == "sqlite":
            out += [r[-1] for r in rows]
        elif name == "postgresql":
            out += [r[0] for r in rows]
        else:
            out += [" | ".join(str(x) for x in r) for r in rows]
    return out


def measure(ctx: Ctx, db: str, n: int, *, show_plans: bool = False) -> tuple[float, dict[str, list[float]]]:
    """Build the table on ``db`` and time every query for ``ctx.runs`` rounds: (build seconds,
    {query: [median ms of each round]})."""
    app = new_app(url_for(db, ctx, "history"))
    try:
        built = build(app, n)
        say(f"[history] {db}: built {n:,} rows in {built:.0f} s")
        qs = queries(app)
        if show_plans:
            for name, fn, _ in qs:
                print(f"== {db} / {name}\n   " + "\n   ".join(explain(app, fn)), flush=True)
        for _, fn, _ in qs:
            fn()  # warm up: caches, the first compile of each statement
        rounds: dict[str, list[float]] = {name: [] for name, _, _ in qs}
        for r in range(ctx.runs):
            for name, fn, _ in qs:
                times = []
                for _ in range(REPEAT):
                    t0 = time.perf_counter()
                    fn()
                    times.append((time.perf_counter() - t0) * 1000)
                rounds[name].append(statistics.median(times))
            say(f"[history] {db} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rounds.items()))
        return built, rounds
    finally:
        drop_app(app)


def run(ctx: Ctx) -> list[Row]:
    n = ctx.extra.get("history_rows") or (QUICK_ROWS if ctx.quick else DEFAULT_ROWS)
    rows: list[Row] = []
    for db in ctx.dbs:
        built, rounds = retrying(f"history {db}", lambda db=db: measure(ctx, db, n, show_plans=ctx.extra.get("explain", False)),
                                 attempts=2)
        rows.append(Row("8 history", db, f"build {n:,} rows (bulk insert + analyze)", [built], "s"))
        for name, values in rounds.items():
            rows.append(Row("8 history", db, f"{n:,} rows: {name}", values, "ms").judge("<=", 5.0, shown="<= 5 ms"))
    return rows


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--rows", type=int, default=None, help=f"rows in the table (default {DEFAULT_ROWS:,}; --quick {QUICK_ROWS:,})")
    ap.add_argument("--explain", action="store_true", help="print the plan of the SQL each query really runs "
                    "(PostgreSQL: EXPLAIN ANALYZE)")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra["history_rows"] = args.rows
    ctx.extra["explain"] = args.explain
    print_rows(ctx, run)


if __name__ == "__main__":
    main()
