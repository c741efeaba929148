"""Dashboard: the server time of each page on a large install (issue 13: median < 100 ms per page
with 1,000,000 job rows and 10,000 schedules, on SQLite and PostgreSQL).

Per database: the job table of ``history.py`` (the same seeded 1,000,000 rows: mixed states,
40 tasks plus a rare one, five queues, 35 % occurrences of 200 schedules, created over 30 days),
10,000 schedules (the 200 the rows name plus 9,800 more: cron and interval specs in a dozen
zones), then every page requested through the dashboard's WSGI app (Flask's test client: the
server's own time, templates and queries included, no network). Each page once to warm up, then
10 times; a round's figure is the median of those; --runs rounds; the table shows the median
round with min and max. That each page's queries use an index is checked by the plan tests
(tests/integration/test_indexes.py), not here.

    python benchmarks/dashboard.py                       # SQLite and PostgreSQL, 1,000,000 rows
    python benchmarks/dashboard.py --db sqlite --quick   # 50,000 rows, a quick look
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import history
from benchmarks.common import Ctx, Row, base_parser, ctx_from_args, drop_app, new_app, print_rows, retrying, say, url_for

N_SCHEDULES = 10_000
REPEAT = 10
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Europe/London",
         "America/Los_Angeles", "Asia/Kolkata", "Africa/Cairo", "America/Sao_Paulo", "Pacific/Auckland", "Asia/Dubai"]
CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 0 1 * *", "15 9 * * MON-FRI", "0 */6 * * *"]


def add_schedules(app: Any, n: int) -> float:
    """``n`` schedules (the 200 names the job rows use first), inserted in chunks."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    names = history.SCHEDULES + [f"extra-{k:05d}" for k in range(n - len(history.SCHEDULES))]
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        rows = []
        for k, name in enumerate(names[start:start + 1000], start):
            every = k % 4 == 3
            rows.append({
                "name": name, "task": history.TASKS[k % len(history.TASKS)],
                "spec": f"every {60 * (1 + k % 30)}s" if every else CRONS[k % len(CRONS)],
                "tz": ZONES[k % len(ZONES)], "anchor": now if every else None, "args": "{}", "options": "{}",
                "next_run_at": now + timedelta(seconds=k % 3600 + 60), "paused": k % 50 == 0, "enabled": k % 97 != 0,
                "spec_hash": f"h{k}",
            })
        app.store.save_schedules(inserts=rows)
    return time.perf_counter() - t0


def pages(app: Any) -> list[tuple[str, str]]:
    """(label, path) of every page, with ids and names that exist in the built table."""
    newest = app.store.list_jobs(None, 1)[0].id
    failed = app.store.list_jobs("failed", 1)[0].id
    succeeded_page = app.store.list_jobs("succeeded", 50)
    return [
        ("overview", "/"),
        ("schedules (first page of 10,000)", "/schedules"),
        ("schedules (a later page)", "/schedules?after=extra-05000"),
        ("schedule schedule-007 (ledger + fire times)", "/schedule?name=schedule-007"),
        ("jobs (newest)", "/jobs"),
        ("jobs state=failed", "/jobs?state=failed"),
        ("jobs state=succeeded, next page (keyset)", f"/jobs?state=succeeded&before={succeeded_page[-1].id}"),
        ("jobs task=rare_report", f"/jobs?task={history.RARE_TASK}"),
        ("jobs queue=emails", "/jobs?queue=emails"),
        ("jobs schedule=schedule-007", "/jobs?schedule=schedule-007"),
        ("jobs created in the last day", "/jobs?from=" + (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")),
        (f"job #{failed} (failed, traceback)", f"/jobs/{failed}"),
        (f"job #{newest}", f"/jobs/{newest}"),
        ("queues", "/queues"),
        ("bulk retry confirmation (count of failed)", "/jobs/bulk?action=retry&state=failed"),
    ]


def measure(ctx: Ctx, db: str, n: int) -> tuple[float, float, dict[str, list[float]]]:
    from linger_sched.web import make_app

    app = new_app(url_for(db, ctx, "dashboard"))
    try:
        built = history.build(app, n)
        say(f"[dashboard] {db}: {n:,} job rows in {built:.0f} s")
        sched = add_schedules(app, N_SCHEDULES)
        say(f"[dashboard] {db}: {N_SCHEDULES:,} schedules in {sched:.1f} s")
        client = make_app(app).test_client()
        targets = pages(app)
        for label, path in targets:
            r = client.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"{label}: {path} answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
        rounds: dict[str, list[float]] = {label: [] for label, _ in targets}
        for r in range(ctx.runs):
            for label, path in targets:
                times = []
                for _ in range(REPEAT):
                    t0 = time.perf_counter()
                    client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                rounds[label].append(statistics.median(times))
            say(f"[dashboard] {db} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rounds.items()))
        return built, sched, rounds
    finally:
        drop_app(app)


def run(ctx: Ctx) -> list[Row]:
    n = ctx.extra.get("dashboard_rows") or (history.QUICK_ROWS if ctx.quick else history.DEFAULT_ROWS)
    rows: list[Row] = []
    for db in [d for d in ctx.dbs if d in ("sqlite", "postgresql")]:
        built, sched, rounds = retrying(f"dashboard {db}", lambda db=db: measure(ctx, db, n), attempts=2)
        rows.append(Row("9 dashboard", db, f"build {n:,} job rows + {N_SCHEDULES:,} schedules", [built + sched], "s"))
        for label, values in rounds.items():
            rows.append(Row("9 dashboard", db, f"page: {label}", values, "ms").judge("<=", 100.0, shown="< 100 ms"))
    return rows


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--rows", type=int, default=None, help="job rows (default 1,000,000; --quick 50,000)")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra["dashboard_rows"] = args.rows
    print_rows(ctx, run)


if __name__ == "__main__":
    main()
