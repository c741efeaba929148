"""Memory: worker RSS while it drains a table of 1,000,000 queued jobs (SQLite).

1,000,000 no-op jobs are enqueued (enqueue_many, 10,000 a call); then per run one
``linger-sched worker --burst`` process drains the first 200,000 of them (a full drain of a
million takes minutes per run; --drain changes it) and is stopped with SIGTERM. Its VmRSS is read
from /proc/<pid>/status every second; the run reports RSS at the first sample (about 1 s after
start, the worker already draining), the max, and the last sample before the stop, plus the
drain rate over the window. Before the next run the drained jobs are enqueued again, so every
run starts with 1,000,000 queued rows (the succeeded rows of earlier runs stay in the table).

    python benchmarks/memory.py [--runs 3] [--queued 1000000] [--drain 200000]
"""

from __future__ import annotations

import subprocess
import sys
import time
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
    rss_kib,
    say,
    stop_process,
    table,
    url_for,
)


def _succeeded(app) -> int:
    import sqlalchemy as sa

    j = app.store.t.jobs
    with app.store.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(j).where(j.c.state == "succeeded")).scalar_one())


def run(ctx: Ctx) -> list[Row]:
    queued = ctx.extra.get("queued") or ctx.scale(1_000_000, 100_000)
    drain = ctx.extra.get("drain") or ctx.scale(200_000, 20_000)
    app = new_app(url_for("sqlite", ctx, "memory"))
    runs = []
    try:
        t0 = time.perf_counter()
        fill_noop_jobs(app, queued)
        say(f"[memory] {queued:,} jobs enqueued in {time.perf_counter() - t0:.1f} s")
        env = child_env(LINGER_DATABASE_URL=app.settings.database_url, LINGER_TABLE_PREFIX=app.settings.table_prefix)
        cmd = linger_cmd("worker", "--burst", "--import", "benchmarks.noop_tasks", "--log-level", "warning")
        for r in range(ctx.runs):
            before = _succeeded(app)
            t0 = time.perf_counter()
            p = subprocess.Popen(nice_cmd(cmd), env=env, cwd=ctx.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            samples: list[int] = []
            done = 0
            try:
                while True:
                    time.sleep(1.0)
                    kib = rss_kib(p.pid)
                    if kib is None or p.poll() is not None:
                        break
                    samples.append(kib)
                    done = _succeeded(app) - before
                    if done >= drain:
                        break
            finally:
                rc = stop_process(p, timeout=60)
            window = time.perf_counter() - t0
            done = _succeeded(app) - before
            # -SIGTERM: the burst worker had drained everything and was exiting (its signal
            # handlers already restored) when the stop arrived
            exiting = rc == -15 and app.store.count_by_state().get("queued", 0) == 0
            if (rc != 0 and not exiting) or not samples:
                raise RuntimeError(f"memory run: worker exited {rc} after {len(samples)} samples: {p.stderr.read().decode()[-2000:]}")
            mib = [k / 1024 for k in samples]
            runs.append({"start": mib[0], "max": max(mib), "end": mib[-1], "rate": done / window, "done": done,
                         "samples": len(mib)})
            say(f"[memory] run {r + 1}: RSS start {mib[0]:.1f} MiB, max {max(mib):.1f}, end {mib[-1]:.1f} "
                f"({len(mib)} samples); drained {done:,} jobs at {done / window:,.0f} jobs/s")
            if r < ctx.runs - 1:
                fill_noop_jobs(app, done)  # back to `queued` queued rows for the next run
    finally:
        drop_app(app)
    label = f"worker RSS, {queued:,} queued, first ~{drain:,} drained"
    return [
        Row("7 memory", "sqlite", f"{label}: start", [r["start"] for r in runs], "MiB"),
        Row("7 memory", "sqlite", f"{label}: max", [r["max"] for r in runs], "MiB"),
        Row("7 memory", "sqlite", f"{label}: end", [r["end"] for r in runs], "MiB"),
        Row("7 memory", "sqlite", f"{label}: max - start", [r["max"] - r["start"] for r in runs], "MiB"),
        Row("7 memory", "sqlite", f"drain rate with {queued:,} queued (start-to-stop)", [r["rate"] for r in runs], "jobs/s"),
    ]


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(db="sqlite")
    ap.add_argument("--queued", type=int, help="queued rows (default 1,000,000; --quick 100,000)")
    ap.add_argument("--drain", type=int, help="jobs drained per run (default 200,000; --quick 20,000)")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra.update(queued=args.queued, drain=args.drain)
    print(table(run(ctx)))


if __name__ == "__main__":
    main()
