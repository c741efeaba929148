"""Enqueue: jobs/s of single ``app.enqueue()`` calls and of ``app.enqueue_many()``, per database.

In this process, on a fresh table per run: ``single`` is N1 calls of ``app.enqueue(task, i)``
(one transaction each; default 2,000), ``enqueue_many`` inserts N2 jobs (default 20,000) in
calls of 1,000 and of 10,000 items.

    python benchmarks/enqueue.py [--db sqlite] [--runs 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Ctx,
    Row,
    drop_app,
    new_app,
    retrying,
    run_standalone,
    say,
    url_for,
)

TASK = "benchmarks.noop_tasks.noop"


def measure_once(ctx: Ctx, db: str) -> dict[str, float]:
    n_single = ctx.scale(2_000, 300)
    n_many = ctx.scale(20_000, 4_000)
    out: dict[str, float] = {}
    app = new_app(url_for(db, ctx, "enqueue"))
    try:
        app.enqueue(TASK, 0)  # connect, warm the statement cache
        t0 = time.perf_counter()
        for i in range(n_single):
            app.enqueue(TASK, i)
        out["single"] = n_single / (time.perf_counter() - t0)
        for chunk in (1_000, 10_000):
            t0 = time.perf_counter()
            for start in range(0, n_many, chunk):
                ids = app.enqueue_many(TASK, [(i,) for i in range(start, min(n_many, start + chunk))])
            out[f"many{chunk}"] = n_many / (time.perf_counter() - t0)
            assert len(ids) == min(chunk, n_many)
    finally:
        drop_app(app)
    return out


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    n_single, n_many = ctx.scale(2_000, 300), ctx.scale(20_000, 4_000)
    for db in ctx.dbs:
        runs = []
        for r in range(ctx.runs):
            runs.append(retrying(f"enqueue {db} run {r + 1}", lambda: measure_once(ctx, db)))
            say(f"[enqueue] {db} run {r + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in runs[-1].items()))
        rows.append(Row("4 enqueue", db, f"enqueue() x {n_single:,}, jobs/s", [r["single"] for r in runs], "jobs/s"))
        for chunk in (1_000, 10_000):
            row = Row("4 enqueue", db, f"enqueue_many() {n_many:,} in calls of {chunk:,}, jobs/s",
                      [r[f"many{chunk}"] for r in runs], "jobs/s")
            if db == "sqlite":
                row.judge(">=", 60_000, shown=">= 60,000 (issue 11)")
            rows.append(row)
    return rows


if __name__ == "__main__":
    run_standalone(__doc__, run)
