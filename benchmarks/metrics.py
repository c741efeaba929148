"""Metrics: the time of a Prometheus scrape (issue 14: with 1,000,000 job rows, the uncached
scrape well under 100 ms on each database).

Per database: a fresh table filled as benchmarks/history.py fills it (default 1,000,000 rows of
mixed history: 5 % queued over five queues, 0.05 % running, the rest finished), plus 200
schedules (one of them overdue), a leader lease and five nodes (one lost). Then, timed:

* **uncached scrape** (``LINGER_METRICS_TTL=0``: every scrape reads the database): a whole
  ``Metrics.render()``, the exposition text included;
* **cached scrape** (within the TTL): the same without the database reads;
* each database read of a scrape alone (the Store methods ``Metrics._read`` calls), to name
  the one to fix when the total is slow.

Each figure: one warm-up call, then 15 calls, the median of those; --runs rounds (default 3),
the table shows the median round with min and max. Tables are dropped afterwards.

    python benchmarks/metrics.py                          # every reachable database, 1,000,000 rows
    python benchmarks/metrics.py --rows 100000 --db sqlite
    python benchmarks/metrics.py --explain --db postgresql   # the plan of every read
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Ctx, Row, base_parser, ctx_from_args, drop_app, new_app, print_rows, retrying, say, url_for
from benchmarks.history import DEFAULT_ROWS, QUICK_ROWS, build, explain

REPEAT = 15
SCHEDULES = 200
TARGET_MS = 100.0


def furnish(app: Any) -> None:
    """200 schedules (one overdue: its next fire time an hour ago), a lease, five nodes."""
    from linger_sched.scheduler import LEADER

    @app.task(name="bench.metrics.noop")
    def noop() -> None:
        pass

    for k in range(SCHEDULES):
        app.schedule(f"bench-{k:03d}", noop, every="1h")
    app.sync_schedules()
    store = app.store
    now = store.db_now()
    s = store.t.schedules
    import sqlalchemy as sa

    with store.engine.begin() as c:
        c.execute(sa.update(s).where(s.c.name == "bench-000").values(next_run_at=now - timedelta(hours=1)))
    store.acquire_lease(LEADER, "bench-node-0", 30)
    for k in range(5):
        store.register_node(f"bench-node-{k}", host="bench", pid=k, roles="scheduler,worker", registry_hash=None,
                            version="bench", now=now - timedelta(minutes=10 if k == 4 else 0))


def reads(app: Any) -> list[tuple[str, Callable[[], Any]]]:
    """Each database read of an uncached scrape, as ``Metrics._read`` makes it."""
    from linger_sched.scheduler import LEADER, SchedulerSettings

    store = app.store
    waiting = [q for (q, state), n in store.count_by_queue_and_state().items() if state == "queued" and n]
    threshold = SchedulerSettings(lease_ttl=app.settings.lease_ttl).threshold
    return [
        ("read: jobs by queue and state (Store.count_by_queue_and_state)", store.count_by_queue_and_state),
        (f"read: oldest due job of {len(waiting)} queues (Store.earliest_queued)", lambda: store.earliest_queued(waiting)),
        ("read: overdue schedules (Store.overdue_schedules)", lambda: store.overdue_schedules(threshold, limit=1)),
        ("read: earliest next fire time (Store.schedule_horizon)", store.schedule_horizon),
        (f"read: {SCHEDULES} schedules by status (Store.schedule_counts)", store.schedule_counts),
        ("read: the leader lease (Store.get_lease)", lambda: store.get_lease(LEADER)),
        ("read: the nodes (Store.list_nodes)", store.list_nodes),
    ]


def timed(fn: Callable[[], Any]) -> float:
    """The median milliseconds of REPEAT calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(ctx: Ctx, db: str, n: int, *, show_plans: bool = False) -> tuple[float, dict[str, list[float]]]:
    from linger_sched.metrics import Metrics

    app = new_app(url_for(db, ctx, "metrics"), prefix=None)
    try:
        built = build(app, n)
        furnish(app)
        say(f"[metrics] {db}: built {n:,} rows in {built:.0f} s")
        cold = Metrics(app, ttl=0, multiprocess=False)
        warm = Metrics(app, ttl=3600, multiprocess=False)
        assert b"linger_scrape_error 0.0" in cold.render()[0], "the scrape read the database without an error"
        each = reads(app)
        if show_plans:
            for name, fn in each:
                print(f"== {db} / {name}\n   " + "\n   ".join(explain(app, fn)), flush=True)
        rounds: dict[str, list[float]] = {"uncached scrape (TTL 0: every scrape reads the database)": [],
                                          "cached scrape (within the TTL)": []}
        rounds.update({name: [] for name, _ in each})
        for r in range(ctx.runs):
            rounds["uncached scrape (TTL 0: every scrape reads the database)"].append(timed(cold.render))
            rounds["cached scrape (within the TTL)"].append(timed(warm.render))
            for name, fn in each:
                rounds[name].append(timed(fn))
            say(f"[metrics] {db} round {r + 1}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:.2f}" for k, v in rounds.items()))
        cold.close()
        warm.close()
        return built, rounds
    finally:
        drop_app(app)


def run(ctx: Ctx) -> list[Row]:
    n = ctx.extra.get("metrics_rows") or (QUICK_ROWS if ctx.quick else DEFAULT_ROWS)
    rows: list[Row] = []
    for db in ctx.dbs:
        built, rounds = retrying(f"metrics {db}", lambda db=db: measure(ctx, db, n, show_plans=ctx.extra.get("explain", False)),
                                 attempts=2)
        rows.append(Row("10 metrics", db, f"build {n:,} rows (bulk insert + analyze)", [built], "s"))
        for name, values in rounds.items():
            row = Row("10 metrics", db, f"{n:,} rows: {name}", values, "ms")
            if name.startswith("uncached"):
                row.judge("<=", TARGET_MS, shown=f"<= {TARGET_MS:g} ms")
            rows.append(row)
    return rows


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--rows", type=int, default=None, help=f"rows in the table (default {DEFAULT_ROWS:,}; --quick {QUICK_ROWS:,})")
    ap.add_argument("--explain", action="store_true", help="print the plan of every database read of a scrape")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra["metrics_rows"] = args.rows
    ctx.extra["explain"] = args.explain
    print_rows(ctx, run)


if __name__ == "__main__":
    main()
