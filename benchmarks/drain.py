"""Drain: N no-op jobs (default 20,000) enqueued in bulk, then one `linger-sched worker --burst`
process with the default concurrency, on each database.

Figures: jobs/s from worker start to exit (the process's wall time, measured by the parent) and
from the first job start to the last job finish (``min(started_at)``/``max(finished_at)`` of the
table), median / min / max over --runs runs.

    python benchmarks/drain.py                                # every reachable database, 3 runs
    python benchmarks/drain.py --db sqlite -n 10000 --runs 5
    python benchmarks/drain.py --concurrency 4
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Ctx,
    Row,
    base_parser,
    child_env,
    ctx_from_args,
    drop_app,
    fill_noop_jobs,
    linger_cmd,
    new_app,
    nice_cmd,
    retrying,
    say,
    table,
    url_for,
)


def _aware(v: object) -> datetime:
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    assert isinstance(v, datetime), v
    return v if v.tzinfo is not None else v.replace(tzinfo=timezone.utc)


def span_seconds(app) -> float:
    """Seconds from the first job start to the last job finish, from the table."""
    import sqlalchemy as sa

    j = app.store.t.jobs
    with app.store.engine.connect() as c:
        first, last = c.execute(sa.select(sa.func.min(j.c.started_at), sa.func.max(j.c.finished_at))).one()
    return (_aware(last) - _aware(first)).total_seconds()


def measure_once(ctx: Ctx, db: str, concurrency: int | None = None) -> dict[str, float]:
    """One drain on ``db``: {"start_to_exit": jobs/s, "first_to_last": jobs/s}."""
    app = new_app(url_for(db, ctx, "drain"))
    try:
        fill_noop_jobs(app, ctx.jobs)
        env = child_env(LINGER_DATABASE_URL=app.settings.database_url, LINGER_TABLE_PREFIX=app.settings.table_prefix)
        cmd = linger_cmd("worker", "--burst", "--import", "benchmarks.noop_tasks", "--log-level", "warning")
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        t0 = time.perf_counter()
        proc = subprocess.run(nice_cmd(cmd), env=env, cwd=ctx.tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"linger-sched worker --burst on {db} exited {proc.returncode}: {proc.stderr[-2000:]}")
        counts = app.store.count_by_state()
        if counts.get("succeeded") != ctx.jobs:
            raise RuntimeError(f"drain on {db}: expected {ctx.jobs} succeeded jobs, table says {counts}; stderr: {proc.stderr[-2000:]}")
        return {"start_to_exit": ctx.jobs / wall, "first_to_last": ctx.jobs / span_seconds(app)}
    finally:
        drop_app(app)


def rows_from(ctx: Ctx, db: str, runs: list[dict[str, float]]) -> list[Row]:
    n = f"{ctx.jobs:,}"
    return [
        Row("2 drain", db, f"{n} jobs/s start-to-exit", [r["start_to_exit"] for r in runs], "jobs/s"),
        Row("2 drain", db, f"{n} jobs/s first-to-last job", [r["first_to_last"] for r in runs], "jobs/s"),
    ]


def run(ctx: Ctx) -> list[Row]:
    out: list[Row] = []
    for db in ctx.dbs:
        runs = []
        for r in range(ctx.runs):
            runs.append(retrying(f"drain {db} run {r + 1}", lambda: measure_once(ctx, db, ctx.extra.get("concurrency"))))
            say(f"[drain] {db} run {r + 1}: {runs[-1]['start_to_exit']:,.0f} jobs/s start-to-exit, "
                f"{runs[-1]['first_to_last']:,.0f} first-to-last")
        out += rows_from(ctx, db, runs)
    return out


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--concurrency", type=int, help="worker threads (default: the worker's default, 8)")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra["concurrency"] = args.concurrency
    print(table(run(ctx)))


if __name__ == "__main__":
    main()
