"""Peers, side by side: the same drain with huey (SqliteHuey) and procrastinate (PostgreSQL).

Needs benchmarks/.venv (``bash benchmarks/setup.sh``): huey and procrastinate are installed only
there. Each run enqueues N no-op jobs (default 20,000), then times one consumer process from
start to exit:

* huey: SqliteHuey (WAL, synchronous=NORMAL like linger-sched), the jobs inserted in one
  transaction, then ``huey_consumer benchmarks.peer_apps.huey -k thread -w 8`` (thread workers,
  8 of them = linger-sched's default concurrency; huey's own default is 1 thread, see
  ``--huey-workers``). huey_consumer never exits by itself: the harness polls the queue size
  every 10 ms and sends SIGINT (graceful: running tasks finish) once it is empty; start-to-exit
  includes that.
* procrastinate: its psycopg 3 connector (``PsycopgConnector``), its schema applied in a fresh
  PostgreSQL schema, the jobs deferred with ``batch_defer`` in chunks of 1,000, then
  ``procrastinate --app=benchmarks.peer_apps.app worker --one-shot`` (= ``--wait=false``: exit
  when the queue is empty) with ``--concurrency 8`` (its default is 1, see
  ``--procrastinate-concurrency``).

Every task counts its calls and the count is checked against N after the consumer exits.

    benchmarks/.venv/bin/python benchmarks/peers.py [--runs 3] [-n 20000]
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    POSTGRES_URL,
    Ctx,
    Row,
    base_parser,
    child_env,
    ctx_from_args,
    nice_cmd,
    raw_connect,
    retrying,
    say,
    table,
)

HUEY_WORKERS = 8
PROCRASTINATE_CONCURRENCY = 8


def available() -> str | None:
    """None when huey and procrastinate can be imported, else why not."""
    try:
        import huey  # noqa: F401
        import procrastinate  # noqa: F401
    except ImportError as exc:
        return f"{exc}; run `bash benchmarks/setup.sh` and use benchmarks/.venv/bin/python"
    return None


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def _read_count(path: Path) -> int:
    try:
        return int(path.read_text() or "-1")
    except FileNotFoundError:
        return -1


def measure_huey_once(ctx: Ctx, workers: int = HUEY_WORKERS) -> float:
    from benchmarks.peer_apps import make_huey

    db = ctx.tmp / f"huey-{secrets.token_hex(3)}.db"
    counter = ctx.tmp / f"huey-count-{secrets.token_hex(3)}"
    h, noop = make_huey(str(db))
    try:
        rows = [(h.storage.name, h.serialize_task(noop.s(i)), 0) for i in range(ctx.jobs)]
        with h.storage.db(commit=True) as cur:
            cur.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)
        assert h.pending_count() == ctx.jobs
        env = child_env(BENCH_HUEY_DB=str(db), BENCH_COUNT_FILE=str(counter))
        cmd = [_bin("huey_consumer"), "benchmarks.peer_apps.huey", "-k", "thread", "-w", str(workers), "-q"]
        t0 = time.perf_counter()
        p = subprocess.Popen(nice_cmd(cmd), env=env, cwd=ctx.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while h.pending_count() > 0:
                if p.poll() is not None:
                    raise RuntimeError(f"huey_consumer exited early ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
                time.sleep(0.01)
            p.send_signal(signal.SIGINT)  # graceful: waits for the running tasks
            p.wait(120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        wall = time.perf_counter() - t0
        done = _read_count(counter)
        if done != ctx.jobs:
            raise RuntimeError(f"huey ran {done} of {ctx.jobs} tasks; stderr: {p.stderr.read().decode()[-2000:]}")
        return ctx.jobs / wall
    finally:
        h.storage.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        counter.unlink(missing_ok=True)


def _pg_dsn() -> str:
    from sqlalchemy.engine import make_url

    u = make_url(POSTGRES_URL)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def measure_procrastinate_once(ctx: Ctx, concurrency: int = PROCRASTINATE_CONCURRENCY) -> float:
    from benchmarks.peer_apps import make_procrastinate

    schema = f"bnproc{secrets.token_hex(3)}"
    counter = ctx.tmp / f"proc-count-{secrets.token_hex(3)}"
    admin = raw_connect("postgresql", POSTGRES_URL)
    admin.autocommit = True
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        dsn = _pg_dsn()
        a, noop = make_procrastinate(dsn, schema)
        with a.open():
            a.schema_manager.apply_schema()
            for start in range(0, ctx.jobs, 1000):
                noop.batch_defer(*({"i": i} for i in range(start, min(ctx.jobs, start + 1000))))
        env = child_env(BENCH_PROCRASTINATE_DSN=dsn, BENCH_PROCRASTINATE_SCHEMA=schema, BENCH_COUNT_FILE=str(counter))
        cmd = [_bin("procrastinate"), "--app=benchmarks.peer_apps.app", "--log-level=warning", "worker", "--one-shot",
               "--concurrency", str(concurrency)]
        t0 = time.perf_counter()
        proc = subprocess.run(nice_cmd(cmd), env=env, cwd=ctx.tmp, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"procrastinate worker exited {proc.returncode}: {proc.stderr[-2000:]}")
        done = _read_count(counter)
        left = admin.execute(f"SELECT count(*) FROM {schema}.procrastinate_jobs WHERE status <> 'succeeded'").fetchone()[0]
        if done != ctx.jobs or left:
            raise RuntimeError(f"procrastinate ran {done} of {ctx.jobs} tasks, {left} jobs not succeeded")
        return ctx.jobs / wall
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
        counter.unlink(missing_ok=True)


def huey_row(ctx: Ctx, values: list[float], workers: int = HUEY_WORKERS) -> Row:
    return Row("3 peers", "sqlite", f"huey {ctx.jobs:,} jobs/s start-to-exit ({workers} thread{'s' if workers > 1 else ''})", values, "jobs/s")


def procrastinate_row(ctx: Ctx, values: list[float], concurrency: int = PROCRASTINATE_CONCURRENCY) -> Row:
    return Row("3 peers", "postgresql", f"procrastinate {ctx.jobs:,} jobs/s start-to-exit (concurrency {concurrency})", values, "jobs/s")


def run(ctx: Ctx) -> list[Row]:
    why = available()
    if why:
        say(f"[peers] skipped: {why}")
        return []
    workers = ctx.extra.get("huey_workers") or HUEY_WORKERS
    conc = ctx.extra.get("procrastinate_concurrency") or PROCRASTINATE_CONCURRENCY
    out = []
    if "sqlite" in ctx.dbs:
        vals = []
        for r in range(ctx.runs):
            vals.append(retrying(f"huey run {r + 1}", lambda: measure_huey_once(ctx, workers)))
            say(f"[peers] huey run {r + 1}: {vals[-1]:,.0f} jobs/s")
        out.append(huey_row(ctx, vals, workers))
    if "postgresql" in ctx.dbs:
        vals = []
        for r in range(ctx.runs):
            vals.append(retrying(f"procrastinate run {r + 1}", lambda: measure_procrastinate_once(ctx, conc)))
            say(f"[peers] procrastinate run {r + 1}: {vals[-1]:,.0f} jobs/s")
        out.append(procrastinate_row(ctx, vals, conc))
    return out


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(db="sqlite,postgresql")
    ap.add_argument("--huey-workers", type=int, default=HUEY_WORKERS)
    ap.add_argument("--procrastinate-concurrency", type=int, default=PROCRASTINATE_CONCURRENCY)
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    ctx.extra.update(huey_workers=args.huey_workers, procrastinate_concurrency=args.procrastinate_concurrency)
    print(table(run(ctx)))


if __name__ == "__main__":
    main()
