"""Raw limit: the ceiling a Python worker process can reach on each database.

A minimal loop with no framework, over linger-sched's own jobs table (same columns, indexes and
constraints): claim a batch of k=100 due rows of queue 'default' by (priority, run_at, id), the
order of the claim index (state, queue, priority, run_at, id) as linger-sched's worker uses it -- FOR UPDATE SKIP
LOCKED on PostgreSQL and MariaDB, UPDATE ... RETURNING inside BEGIN IMMEDIATE on SQLite (WAL,
synchronous=NORMAL) --, JSON-decode each row's args, call a no-op Python function, mark the
batch succeeded. Plain DB-API drivers (sqlite3, psycopg, pymysql), one connection, one thread.

The loop runs in a child process, so the figure is comparable with a worker process:
``start-to-exit`` is measured by the parent around the whole process (interpreter start,
imports, connect), ``loop`` by the child around the loop alone.

    python benchmarks/raw_limit.py [--db sqlite,postgresql,mariadb] [--runs 3] [-n 20000]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Ctx,
    Row,
    child_env,
    drop_app,
    fill_noop_jobs,
    new_app,
    nice_cmd,
    raw_connect,
    retrying,
    run_standalone,
    say,
    url_for,
)

K = 100
NODE = "raw-limit"


def noop(i: int = 0) -> None:
    return None


FUNCS = {"benchmarks.noop_tasks.noop": noop}


def run_batch(rows) -> list[int]:  # noqa: ANN001
    """Decode each claimed row's JSON arguments and call its (no-op) function; the ids done."""
    ids = []
    for job_id, task, args in rows:
        payload = json.loads(args)
        FUNCS[task](*payload.get("args", ()), **payload.get("kwargs", {}))
        ids.append(job_id)
    return ids


def _loop_sqlite(conn, table: str) -> int:
    done = 0
    claim = (
        f"UPDATE {table} SET state = 'running', locked_by = ?, locked_until = ?, attempts = attempts + 1, started_at = ? "
        f"WHERE id IN (SELECT id FROM {table} WHERE state = 'queued' AND queue = 'default' AND run_at <= ? "
        f"ORDER BY priority, run_at, id LIMIT {K}) RETURNING id, task, args"
    )
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        ts = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        until = (now + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(claim, (NODE, until, ts, ts)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            return done
        ids = run_batch(rows)
        ts = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f"UPDATE {table} SET state = 'succeeded', finished_at = ?, locked_by = NULL, locked_until = NULL "
            f"WHERE id IN ({','.join('?' * len(ids))}) AND state = 'running' AND locked_by = ?",
            (ts, *ids, NODE),
        )
        conn.execute("COMMIT")
        done += len(ids)


def _loop_postgresql(conn, table: str) -> int:
    done = 0
    claim = (
        f"WITH picked AS (SELECT id FROM {table} WHERE state = 'queued' AND queue = 'default' AND run_at <= %s "
        f"ORDER BY priority, run_at, id LIMIT {K} FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} j SET state = 'running', locked_by = %s, locked_until = %s, attempts = j.attempts + 1, "
        f"started_at = %s FROM picked WHERE j.id = picked.id RETURNING j.id, j.task, j.args"
    )
    finish = (
        f"UPDATE {table} SET state = 'succeeded', finished_at = %s, locked_by = NULL, locked_until = NULL "
        f"WHERE id = ANY(%s) AND state = 'running' AND locked_by = %s"
    )
    cur = conn.cursor()
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        cur.execute(claim, (now, NODE, now + timedelta(seconds=30), now))
        rows = cur.fetchall()
        conn.commit()
        if not rows:
            return done
        ids = run_batch(rows)
        cur.execute(finish, (datetime.now(timezone.utc).replace(tzinfo=None), ids, NODE))
        conn.commit()
        done += len(ids)


def _loop_mariadb(conn, table: str) -> int:
    done = 0
    pick = (
        f"SELECT id, task, args FROM {table} WHERE state = 'queued' AND queue = 'default' AND run_at <= %s "
        f"ORDER BY priority, run_at, id LIMIT {K} FOR UPDATE SKIP LOCKED"
    )
    with conn.cursor() as cur:
        while True:
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            cur.execute(pick, (now,))
            rows = cur.fetchall()
            if not rows:
                conn.commit()
                return done
            marks = ",".join(["%s"] * len(rows))
            cur.execute(
                f"UPDATE {table} SET state = 'running', locked_by = %s, locked_until = %s, attempts = attempts + 1, "
                f"started_at = %s WHERE id IN ({marks})",
                (NODE, now + timedelta(seconds=30), now, *(r[0] for r in rows)),
            )
            conn.commit()
            ids = run_batch(rows)
            cur.execute(
                f"UPDATE {table} SET state = 'succeeded', finished_at = %s, locked_by = NULL, locked_until = NULL "
                f"WHERE id IN ({marks}) AND state = 'running' AND locked_by = %s",
                (datetime.now(timezone.utc).replace(tzinfo=None), *ids, NODE),
            )
            conn.commit()
            done += len(ids)


def child(db: str, url: str, table: str) -> None:
    conn = raw_connect(db, url)
    t0 = time.perf_counter()
    done = {"sqlite": _loop_sqlite, "postgresql": _loop_postgresql, "mariadb": _loop_mariadb}[db](conn, table)
    loop = time.perf_counter() - t0
    conn.close()
    print(json.dumps({"done": done, "loop": loop}))


def measure_once(ctx: Ctx, db: str) -> dict[str, float]:
    """One run on ``db``: {"start_to_exit": jobs/s, "loop": jobs/s}."""
    app = new_app(url_for(db, ctx, "raw"))
    try:
        fill_noop_jobs(app, ctx.jobs)
        cmd = nice_cmd([sys.executable, __file__, "--child", db, app.settings.database_url, app.store.t.jobs.name])
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=child_env(), cwd=ctx.tmp, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
        got = json.loads(out.strip().splitlines()[-1])
        counts = app.store.count_by_state()
        if got["done"] != ctx.jobs or counts.get("succeeded") != ctx.jobs:
            raise RuntimeError(f"raw loop on {db} finished {got['done']} jobs, table says {counts}")
        return {"start_to_exit": ctx.jobs / wall, "loop": ctx.jobs / got["loop"]}
    finally:
        drop_app(app)


def rows_from(ctx: Ctx, db: str, runs: list[dict[str, float]]) -> list[Row]:
    return [
        Row("1 raw limit", db, "jobs/s start-to-exit (k=100)", [r["start_to_exit"] for r in runs], "jobs/s"),
        Row("1 raw limit", db, "jobs/s in the loop", [r["loop"] for r in runs], "jobs/s"),
    ]


def run(ctx: Ctx) -> list[Row]:
    out: list[Row] = []
    for db in ctx.dbs:
        runs = []
        for r in range(ctx.runs):
            runs.append(retrying(f"raw {db} run {r + 1}", lambda: measure_once(ctx, db)))
            say(f"[raw] {db} run {r + 1}: {runs[-1]['start_to_exit']:,.0f} jobs/s start-to-exit, {runs[-1]['loop']:,.0f} in the loop")
        out += rows_from(ctx, db, runs)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        run_standalone(__doc__, run)
