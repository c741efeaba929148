"""Latency: on an idle node, the delay between a job's due instant and its task's start.

Per run and database: a fresh table; one node process (``linger-sched run``: scheduler and
worker, default settings) is started and left idle; its CPU time over 5 s of idling is sampled
from /proc (utime + stime). Then, from a few seconds in the future:

* one-off jobs: 200 ``app.enqueue(due_probe, due, run_at=due)`` enqueued from this process
  (another process than the node) ahead of time, due every 50 ms;
* schedules: 20 interval schedules of 1 s (anchors 50 ms apart, so 20 fires a second); 200
  fires are sampled, each due at ``current_job().scheduled_for``.

The task records ``time.time()`` at its start; delay = start - due. Per run: p50 / p95 / p99 /
max over the 200 samples of each kind; the table shows the median over runs, with min and max.

    python benchmarks/latency.py [--db sqlite,postgresql,mariadb] [--runs 3]
"""

from __future__ import annotations

import statistics
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
    child_env,
    cpu_seconds,
    drop_app,
    linger_cmd,
    new_app,
    nice_cmd,
    retrying,
    run_standalone,
    say,
    stop_process,
    url_for,
)

SAMPLES = 200
SPACING = 0.05  # one-off due instants, seconds apart
SCHEDULES = 20  # 1 s schedules, together 20 fires a second
IDLE_WINDOW = 5.0


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def _wait_for_node(app, p: subprocess.Popen, timeout: float = 30.0) -> None:
    from linger_sched.scheduler import LEADER

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"node exited early ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
        try:
            if app.store.list_nodes() and app.store.get_lease(LEADER) is not None:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError("the node did not start within 30 s")


def measure_once(ctx: Ctx, db: str) -> dict[str, float]:
    samples = ctx.scale(SAMPLES, 60)
    app = new_app(url_for(db, ctx, "latency"))
    out_file = ctx.tmp / f"latency-{app.settings.table_prefix}.txt"
    out_file.write_text("")
    settle = 1.0
    idle = ctx.scale(int(IDLE_WINDOW), 2)
    anchor = time.time() + 3.0 + settle + idle + 2.0  # node start + settle + idle window + margin
    env = child_env(
        LINGER_DATABASE_URL=app.settings.database_url, LINGER_TABLE_PREFIX=app.settings.table_prefix,
        BENCH_LAT_OUT=str(out_file), BENCH_LAT_ANCHOR=repr(anchor), BENCH_LAT_SCHEDULES=str(SCHEDULES),
    )
    cmd = linger_cmd("run", "--import", "benchmarks.latency_tasks", "--log-level", "warning")
    p = subprocess.Popen(nice_cmd(cmd), env=env, cwd=ctx.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    result: dict[str, float] = {}
    try:
        _wait_for_node(app, p)
        time.sleep(settle)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(idle)
        c1, t1 = cpu_seconds(p.pid), time.monotonic()
        result["idle_cpu_pct"] = 100.0 * (c1 - c0) / (t1 - t0)
        if time.time() > anchor - 1.0:
            raise RuntimeError("node start took too long: the schedules fired before the one-offs were enqueued")
        # one-offs half-way between two schedule fires, so the two kinds do not collide
        dues = [anchor + SPACING / 2 + i * SPACING for i in range(samples)]
        for due in dues:
            app.enqueue("benchmarks.latency_tasks.due_probe", due, run_at=datetime.fromtimestamp(due, tz=timezone.utc))
        end = max(dues[-1], anchor + samples / SCHEDULES) + 15.0
        oneoff: list[float] = []
        sched: list[tuple[float, float]] = []
        while time.time() < end:
            time.sleep(0.25)
            oneoff, sched = [], []
            for line in out_file.read_text().splitlines():
                kind, due, started = line.split()
                if kind == "oneoff":
                    oneoff.append((float(started) - float(due)) * 1000)
                else:
                    sched.append((float(due), (float(started) - float(due)) * 1000))
            if len(oneoff) >= samples and len(sched) >= samples:
                break
            if p.poll() is not None:
                raise RuntimeError(f"node exited ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
        if len(oneoff) < samples or len(sched) < samples:
            raise RuntimeError(f"latency on {db}: only {len(oneoff)} one-off and {len(sched)} schedule samples arrived "
                               f"({app.store.count_by_state()})")
        for k, v in percentiles(oneoff[:samples]).items():
            result[f"oneoff_{k}"] = v
        for k, v in percentiles([d for _, d in sorted(sched)[:samples]]).items():
            result[f"schedule_{k}"] = v
    finally:
        rc = stop_process(p)
        err = p.stderr.read().decode() if p.stderr else ""
        if rc not in (0, None):
            say(f"[latency] node on {db} exited {rc}: {err[-1500:]}")
        drop_app(app)
        out_file.unlink(missing_ok=True)
    return result


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    samples = ctx.scale(SAMPLES, 60)
    for db in ctx.dbs:
        runs = []
        for r in range(ctx.runs):
            runs.append(retrying(f"latency {db} run {r + 1}", lambda: measure_once(ctx, db)))
            m = runs[-1]
            say(f"[latency] {db} run {r + 1}: one-off p50/p99/max {m['oneoff_p50']:.1f}/{m['oneoff_p99']:.1f}/"
                f"{m['oneoff_max']:.1f} ms, schedule {m['schedule_p50']:.1f}/{m['schedule_p99']:.1f}/"
                f"{m['schedule_max']:.1f} ms, idle CPU {m['idle_cpu_pct']:.2f} %")
        for kind, label in (("oneoff", "one-off run_at"), ("schedule", "1 s schedule")):
            for q in ("p50", "p95", "p99", "max"):
                row = Row("5 latency", db, f"{label}: due -> start {q} ({samples} samples)",
                          [m[f"{kind}_{q}"] for m in runs], "ms")
                if q == "p99":
                    row.judge("<=", 20.0, shown="<= 20 ms")
                rows.append(row)
        rows.append(Row("5 latency", db, f"idle node CPU ({ctx.scale(int(IDLE_WINDOW), 2)} s window)",
                        [m["idle_cpu_pct"] for m in runs], "%"))
    return rows


if __name__ == "__main__":
    run_standalone(__doc__, run)
