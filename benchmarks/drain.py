"""Drain benchmark: N no-op jobs enqueued in bulk, then one `linger-sched worker --burst` process.

Prints jobs/s from worker start to exit (process wall time) and from the first job start to the
last job finish (from the table), median / min / max over --runs runs.

    python benchmarks/drain.py                       # SQLite, 10,000 jobs, 3 runs
    python benchmarks/drain.py --database postgresql+psycopg://postgres@127.0.0.1/test -n 20000
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from linger_sched import Linger  # noqa: E402


def one_run(url: str | None, n: int, concurrency: int | None) -> tuple[float, float]:
    tmp = tempfile.mkdtemp(prefix="linger-bench-")
    url = url or f"sqlite:///{tmp}/bench.db"
    prefix = f"b{secrets.token_hex(3)}_"
    app = Linger(url, table_prefix=prefix)
    app.install_schema()
    try:
        for start in range(0, n, 5000):
            app.enqueue_many("benchmarks.noop_tasks.noop", [(i,) for i in range(start, min(n, start + 5000))])
        env = dict(os.environ, LINGER_DATABASE_URL=url, LINGER_TABLE_PREFIX=prefix, PYTHONPATH=str(HERE.parent))
        cmd = [sys.executable, "-m", "linger_sched.cli", "worker", "--burst", "--import", "benchmarks.noop_tasks", "--log-level", "warning"]
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=HERE.parent, check=True)
        wall = time.perf_counter() - t0
        counts = app.store.count_by_state()
        assert counts.get("succeeded") == n, counts
        import sqlalchemy as sa

        j = app.store.t.jobs
        with app.store.engine.connect() as c:
            first, last = c.execute(sa.select(sa.func.min(j.c.started_at), sa.func.max(j.c.finished_at))).one()
        if isinstance(first, str):
            from datetime import datetime

            first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
        span = (last - first).total_seconds()
        return n / wall, n / span
    finally:
        app.store.drop_schema()
        app.store.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", help="database URL (default: a fresh SQLite file per run)")
    ap.add_argument("-n", type=int, default=10_000, help="jobs per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, help="worker threads (default: the worker's default)")
    args = ap.parse_args()
    walls, spans = [], []
    for r in range(args.runs):
        wall, span = one_run(args.database, args.n, args.concurrency)
        walls.append(wall)
        spans.append(span)
        print(f"run {r + 1}: {wall:,.0f} jobs/s (worker start to exit), {span:,.0f} jobs/s (first to last job)", flush=True)
    db = args.database.split(":")[0] if args.database else "sqlite"
    print(f"drain {args.n:,} no-op jobs on {db}, 1 worker process, median of {args.runs}: "
          f"{statistics.median(walls):,.0f} jobs/s start-to-exit (min {min(walls):,.0f}, max {max(walls):,.0f}); "
          f"{statistics.median(spans):,.0f} jobs/s first-to-last (min {min(spans):,.0f}, max {max(spans):,.0f})")


if __name__ == "__main__":
    main()
