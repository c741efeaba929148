"""Raw limit: the ceiling a Python worker process can reach on each database, per table shape.

A minimal loop with no framework: claim a batch of k=100 due rows of queue 'default' by
(priority, run_at, id) -- UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))
RETURNING on PostgreSQL, SELECT ... FOR UPDATE SKIP LOCKED then UPDATE on MariaDB, UPDATE ...
RETURNING inside BEGIN IMMEDIATE on SQLite (WAL, synchronous=NORMAL) --, JSON-decode each
row's args, call a no-op Python function, mark the batch succeeded: two transactions per batch.
Plain DB-API drivers (sqlite3, psycopg, pymysql), one connection, one thread.

The same loop runs over several tables, one after the other in the same run (the order rotates
from run to run), each filled with the same N queued rows:

``linger_jobs``
    the jobs table exactly as linger-sched's ``Store`` installs it from the code checked out
    (filled with ``enqueue_many``): today's columns and indexes until the store changes them.
    This is "its raw loop" of each database, the figure the drain is compared with.
``today``
    a frozen copy of the jobs table of 2026-11 (schema version 2), independent of the store
    code, so that a before/after comparison stays possible once the store's indexes change:
    every column; indexes (state, queue, priority, run_at, id), (state, priority, run_at, id),
    (state, locked_until), (schedule_name, state); UNIQUE (schedule_name, scheduled_for);
    UNIQUE on the generated column ``active_key`` (CASE WHEN state IN ('queued', 'running')
    THEN unique_key END, stored).
``partial``
    the same columns (no generated ``active_key``) with partial, sparse indexes only -- the
    list of issue 11: claim (queue, priority, run_at, id) and (priority, run_at, id) WHERE
    state = 'queued'; lock (locked_until) WHERE state = 'running'; UNIQUE (schedule_name,
    scheduled_for) WHERE schedule_name IS NOT NULL; UNIQUE (unique_key) WHERE unique_key IS
    NOT NULL AND state IN ('queued', 'running'); history (state, id) WHERE state IN ('failed',
    'cancelled', 'skipped'). SQLite and PostgreSQL only (MariaDB has no partial indexes).
``narrow``
    the minimum for claim and finish: (id, queue, priority, run_at, state, args) with one claim
    index (queue, priority, run_at, id) WHERE state = 'queued' (MariaDB: the full index
    (state, queue, priority, run_at, id)). The claim sets only ``state = 'running'``, the
    finish only ``state = 'succeeded'``. The drain targets of issue 11 are ratios to it.

Each loop runs in a child process, so the figure is comparable with a worker process:
``start-to-exit`` is measured by the parent around the whole process (interpreter start,
imports, connect), ``loop`` by the child around the loop alone. Ratios (variant / linger_jobs,
in the loop) are computed per run, then their median taken.

    python benchmarks/raw_limit.py [--db sqlite,postgresql,mariadb] [--runs 3] [-n 20000]
    python benchmarks/raw_limit.py --variants narrow,linger_jobs --db sqlite
    python benchmarks/raw_limit.py --explain --db sqlite,postgresql    # claim plan per table, no timing

Tables are named ``bnr<random>_jobs`` and dropped at the end of each run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
    new_app,
    new_prefix,
    nice_cmd,
    raw_connect,
    retrying,
    say,
    table,
    url_for,
)

K = 100
NODE = "raw-limit"
VARIANTS = ("linger_jobs", "today", "partial", "narrow")
BASELINE = "linger_jobs"


def variants_for(db: str, wanted: tuple[str, ...] | list[str] = VARIANTS) -> list[str]:
    """The variants that exist on ``db``: MariaDB has no partial indexes (``narrow`` runs there
    with a full claim index)."""
    return [v for v in wanted if not (db == "mariadb" and v == "partial")]


def noop(i: int = 0) -> None:
    return None


FUNCS = {"benchmarks.noop_tasks.noop": noop}


def run_batch(rows) -> list[int]:
    """Decode each claimed row's JSON arguments and call its (no-op) function; the ids done."""
    ids = []
    for job_id, task, args in rows:
        payload = json.loads(args)
        FUNCS[task](*payload.get("args", ()), **payload.get("kwargs", {}))
        ids.append(job_id)
    return ids


def run_batch_narrow(rows) -> list[int]:
    """The narrow table has no task column: every row runs the no-op."""
    ids = []
    for job_id, args in rows:
        payload = json.loads(args)
        noop(*payload.get("args", ()), **payload.get("kwargs", {}))
        ids.append(job_id)
    return ids


# -- the loops (child process) ------------------------------------------------------------
def _statements(db: str, t: str, shape: str) -> dict[str, str]:
    """SQL of the claim and the finish for ``shape`` ('full' or 'narrow') on ``db``."""
    p = "?" if db == "sqlite" else "%s"
    if shape == "narrow":
        claim_set, ret = "state = 'running'", "id, args"
        finish_set, finish_where = "state = 'succeeded'", "state = 'running'"
    else:
        claim_set = f"state = 'running', locked_by = {p}, locked_until = {p}, attempts = attempts + 1, started_at = {p}"
        ret = "id, task, args"
        finish_set = f"state = 'succeeded', finished_at = {p}, locked_by = NULL, locked_until = NULL"
        finish_where = f"state = 'running' AND locked_by = {p}"
    pick = f"SELECT id FROM {t} WHERE state = 'queued' AND queue = 'default' AND run_at <= {p} ORDER BY priority, run_at, id LIMIT {K}"
    if db == "sqlite":
        claim = f"UPDATE {t} SET {claim_set} WHERE id IN ({pick}) RETURNING {ret}"
    elif db == "postgresql":
        # id = ANY(ARRAY(pick)), not linger-sched's "WITH picked AS (...) UPDATE ... FROM picked":
        # psycopg prepares a statement from its 6th execution, and the generic plan of the CTE
        # join is a seq scan + hash join of the whole table on the narrow table (3-4x slower
        # claims at 20,000 rows); the array form is an index lookup by primary key on every table
        claim = f"UPDATE {t} SET {claim_set} WHERE id = ANY(ARRAY({pick} FOR UPDATE SKIP LOCKED)) RETURNING {ret}"
    else:
        claim = f"SELECT {ret} FROM {t} WHERE state = 'queued' AND queue = 'default' AND run_at <= %s " \
                f"ORDER BY priority, run_at, id LIMIT {K} FOR UPDATE SKIP LOCKED"
    return {"pick": pick, "claim": claim, "claim_set": claim_set, "finish_set": finish_set, "finish_where": finish_where}


def _loop_sqlite(conn, table: str, shape: str) -> int:
    done = 0
    s = _statements("sqlite", table, shape)
    narrow = shape == "narrow"
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        ts = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        until = (now + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(s["claim"], (ts,) if narrow else (NODE, until, ts, ts)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            return done
        ids = run_batch_narrow(rows) if narrow else run_batch(rows)
        marks = ",".join("?" * len(ids))
        conn.execute("BEGIN IMMEDIATE")
        if narrow:
            conn.execute(f"UPDATE {table} SET {s['finish_set']} WHERE id IN ({marks}) AND {s['finish_where']}", ids)
        else:
            ts = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
            conn.execute(f"UPDATE {table} SET {s['finish_set']} WHERE id IN ({marks}) AND {s['finish_where']}",
                         (ts, *ids, NODE))
        conn.execute("COMMIT")
        done += len(ids)


def _loop_postgresql(conn, table: str, shape: str) -> int:
    done = 0
    s = _statements("postgresql", table, shape)
    narrow = shape == "narrow"
    finish = f"UPDATE {table} SET {s['finish_set']} WHERE id = ANY(%s) AND {s['finish_where']}"
    cur = conn.cursor()
    while True:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        cur.execute(s["claim"], (now,) if narrow else (NODE, now + timedelta(seconds=30), now, now))
        rows = cur.fetchall()
        conn.commit()
        if not rows:
            return done
        if narrow:
            ids = run_batch_narrow(rows)
            cur.execute(finish, (ids,))
        else:
            ids = run_batch(rows)
            cur.execute(finish, (datetime.now(timezone.utc).replace(tzinfo=None), ids, NODE))
        conn.commit()
        done += len(ids)


def _loop_mariadb(conn, table: str, shape: str) -> int:
    done = 0
    s = _statements("mariadb", table, shape)
    narrow = shape == "narrow"
    with conn.cursor() as cur:
        while True:
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            cur.execute(s["claim"], (now,))
            rows = cur.fetchall()
            if not rows:
                conn.commit()
                return done
            marks = ",".join(["%s"] * len(rows))
            ids_in = [r[0] for r in rows]
            if narrow:
                cur.execute(f"UPDATE {table} SET {s['claim_set']} WHERE id IN ({marks})", ids_in)
            else:
                cur.execute(f"UPDATE {table} SET {s['claim_set']} WHERE id IN ({marks})",
                            (NODE, now + timedelta(seconds=30), now, *ids_in))
            conn.commit()
            if narrow:
                ids = run_batch_narrow(rows)
                cur.execute(f"UPDATE {table} SET {s['finish_set']} WHERE id IN ({marks}) AND {s['finish_where']}", ids)
            else:
                ids = run_batch(rows)
                cur.execute(f"UPDATE {table} SET {s['finish_set']} WHERE id IN ({marks}) AND {s['finish_where']}",
                            (datetime.now(timezone.utc).replace(tzinfo=None), *ids, NODE))
            conn.commit()
            done += len(ids)


def child(db: str, url: str, table: str, shape: str) -> None:
    conn = raw_connect(db, url)
    t0 = time.perf_counter()
    done = {"sqlite": _loop_sqlite, "postgresql": _loop_postgresql, "mariadb": _loop_mariadb}[db](conn, table, shape)
    loop = time.perf_counter() - t0
    conn.close()
    print(json.dumps({"done": done, "loop": loop}))


# -- the frozen tables (parent) -----------------------------------------------------------
def frozen_metadata(variant: str, db: str, name: str):  # -> sa.MetaData
    """The table of a frozen variant (see the module docstring), named ``name``."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    md = sa.MetaData()
    if variant == "narrow":
        t = sa.Table(
            name, md,
            sa.Column("id", ID, primary_key=True, autoincrement=True),
            sa.Column("queue", sa.String(64), nullable=False),
            sa.Column("priority", sa.Integer(), nullable=False),
            sa.Column("run_at", TS, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("args", TEXT, nullable=False),
        )
        if db == "mariadb":
            sa.Index(f"{name}_claim_ix", t.c.state, t.c.queue, t.c.priority, t.c.run_at, t.c.id)
        else:
            queued = sa.text("state = 'queued'")
            sa.Index(f"{name}_claim_ix", t.c.queue, t.c.priority, t.c.run_at, t.c.id,
                     sqlite_where=queued, postgresql_where=queued)
        return md
    cols = [
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("args", TEXT, nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(128)),
        sa.Column("locked_until", TS),
        sa.Column("last_error", TEXT),
        sa.Column("schedule_name", sa.String(191)),
        sa.Column("scheduled_for", TS),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(255)),
        sa.Column("unique_key", sa.String(191)),
    ]
    if variant == "today":
        cols.append(sa.Column("active_key", sa.String(191), sa.Computed(
            "CASE WHEN state IN ('queued', 'running') THEN unique_key END", persisted=True)))
    cols += [sa.Column("created_at", TS, nullable=False), sa.Column("started_at", TS), sa.Column("finished_at", TS)]
    t = sa.Table(name, md, *cols, sa.CheckConstraint(
        "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')", name=f"{name}_state_ck"))
    if variant == "today":
        t.append_constraint(sa.UniqueConstraint("schedule_name", "scheduled_for", name=f"{name}_occurrence_uq"))
        t.append_constraint(sa.UniqueConstraint("active_key", name=f"{name}_active_key_uq"))
        sa.Index(f"{name}_claim_ix", t.c.state, t.c.queue, t.c.priority, t.c.run_at, t.c.id)
        sa.Index(f"{name}_ready_ix", t.c.state, t.c.priority, t.c.run_at, t.c.id)
        sa.Index(f"{name}_lock_ix", t.c.state, t.c.locked_until)
        sa.Index(f"{name}_schedule_state_ix", t.c.schedule_name, t.c.state)
        return md
    assert variant == "partial" and db != "mariadb", (variant, db)

    def where(sql: str) -> dict[str, Any]:
        return {"sqlite_where": sa.text(sql), "postgresql_where": sa.text(sql)}

    sa.Index(f"{name}_claim_ix", t.c.queue, t.c.priority, t.c.run_at, t.c.id, **where("state = 'queued'"))
    sa.Index(f"{name}_ready_ix", t.c.priority, t.c.run_at, t.c.id, **where("state = 'queued'"))
    sa.Index(f"{name}_lock_ix", t.c.locked_until, **where("state = 'running'"))
    sa.Index(f"{name}_occurrence_uq", t.c.schedule_name, t.c.scheduled_for, unique=True,
             **where("schedule_name IS NOT NULL"))
    # OR, not IN: SQLite 3.40 proves a partial index usable only from the same form of the terms
    sa.Index(f"{name}_unique_key_uq", t.c.unique_key, unique=True,
             **where("unique_key IS NOT NULL AND (state = 'queued' OR state = 'running')"))
    sa.Index(f"{name}_history_ix", t.c.state, t.c.id,
             **where("state = 'failed' OR state = 'cancelled' OR state = 'skipped'"))
    return md


def _fill_frozen(db: str, conn: Any, name: str, variant: str, n: int, chunk: int = 5_000) -> None:
    """``n`` queued no-op rows, due now, as enqueue_many writes them (same args text)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ts: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if db == "sqlite" else now
    p = "?" if db == "sqlite" else "%s"
    if variant == "narrow":
        cols = ("queue", "priority", "run_at", "state", "args")
        make = lambda i: ("default", 0, ts, "queued", f'{{"args":[{i}]}}')  # noqa: E731
    else:
        cols = ("task", "args", "queue", "priority", "state", "run_at", "attempts", "max_attempts", "occurrences",
                "created_at")
        make = lambda i: ("benchmarks.noop_tasks.noop", f'{{"args":[{i}]}}', "default", 0, "queued", ts, 0, 3, 1, ts)  # noqa: E731
    sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))})"
    for start in range(0, n, chunk):
        rows = [make(i) for i in range(start, min(n, start + chunk))]
        if db == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        else:
            cur = conn.cursor()
            cur.executemany(sql, rows)
            conn.commit()
    if db == "postgresql":  # as autovacuum would soon after a bulk insert; the store's table gets the same
        conn.autocommit = True
        conn.execute(f"ANALYZE {name}")
        conn.autocommit = False


def _count_succeeded(db: str, conn: Any, name: str) -> int:
    if db == "sqlite":
        return conn.execute(f"SELECT count(*) FROM {name} WHERE state = 'succeeded'").fetchone()[0]
    cur = conn.cursor()
    cur.execute(f"SELECT count(*) FROM {name} WHERE state = 'succeeded'")
    got = cur.fetchone()[0]
    conn.commit()
    return got


def _run_child(ctx: Ctx, db: str, url: str, name: str, shape: str) -> tuple[float, dict[str, Any]]:
    cmd = nice_cmd([sys.executable, __file__, "--child", db, url, name, shape])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(), cwd=ctx.tmp, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"raw loop child on {db}/{name} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def measure_variant(ctx: Ctx, db: str, variant: str) -> dict[str, float]:
    """One loop over a fresh ``variant`` table on ``db``: {"start_to_exit": jobs/s, "loop": jobs/s}."""
    if variant == BASELINE:
        app = new_app(url_for(db, ctx, "raw"))
        try:
            fill_noop_jobs(app, ctx.jobs)
            if db == "postgresql":  # analyzed after the fill, as the frozen tables are
                with app.store.engine.connect() as c:
                    c.exec_driver_sql(f"ANALYZE {app.store.t.jobs.name}")
                    c.commit()
            wall, got = _run_child(ctx, db, app.settings.database_url, app.store.t.jobs.name, "full")
            app.store.recount()  # the raw loop writes no counts deltas (schema 4); rebuild them from the rows
            counts = app.store.count_by_state()
            if got["done"] != ctx.jobs or counts.get("succeeded") != ctx.jobs:
                raise RuntimeError(f"raw loop on {db}/{variant} finished {got['done']} jobs, table says {counts}")
            return {"start_to_exit": ctx.jobs / wall, "loop": ctx.jobs / got["loop"]}
        finally:
            drop_app(app)

    import sqlalchemy as sa

    url = url_for(db, ctx, f"raw-{variant}")
    name = new_prefix("r") + "jobs"
    md = frozen_metadata(variant, db, name)
    engine = sa.create_engine(url)
    conn = None
    try:
        md.create_all(engine)
        engine.dispose()
        conn = raw_connect(db, url)
        _fill_frozen(db, conn, name, variant, ctx.jobs)
        wall, got = _run_child(ctx, db, url, name, "narrow" if variant == "narrow" else "full")
        n = _count_succeeded(db, conn, name)
        if got["done"] != ctx.jobs or n != ctx.jobs:
            raise RuntimeError(f"raw loop on {db}/{variant} finished {got['done']} jobs, {n} succeeded in the table")
        return {"start_to_exit": ctx.jobs / wall, "loop": ctx.jobs / got["loop"]}
    finally:
        if conn is not None:
            try:
                conn.rollback() if db != "sqlite" else None
                conn.close()
            except Exception:  # noqa: BLE001 - closing a connection that is gone
                pass
        try:
            md.drop_all(engine)
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            say(f"[raw] could not drop {name} on {db}: {exc}")
        engine.dispose()
        _unlink_sqlite(url)


def _unlink_sqlite(url: str) -> None:
    import os

    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(url[len("sqlite:///"):] + suffix)
            except FileNotFoundError:
                pass


def measure_all(ctx: Ctx, db: str, run_index: int = 0, variants: list[str] | None = None) -> dict[str, dict[str, float]]:
    """One run of every variant on ``db``, back to back; the order rotates with ``run_index``
    so no variant always runs first (or right after another's writes)."""
    vs = variants_for(db, variants or ctx.extra.get("raw_variants") or VARIANTS)
    k = run_index % len(vs)
    out: dict[str, dict[str, float]] = {}
    for v in vs[k:] + vs[:k]:
        out[v] = retrying(f"raw {db}/{v} run {run_index + 1}", lambda v=v: measure_variant(ctx, db, v))
        say(f"[raw] {db} {v} run {run_index + 1}: {out[v]['start_to_exit']:,.0f} jobs/s start-to-exit, "
            f"{out[v]['loop']:,.0f} in the loop")
    return {v: out[v] for v in vs}


def measure_once(ctx: Ctx, db: str) -> dict[str, float]:
    """The ``linger_jobs`` loop alone (the figure of earlier versions of this benchmark)."""
    return measure_variant(ctx, db, BASELINE)


LABELS = {
    "linger_jobs": "linger_jobs as installed",
    "today": "today's linger_jobs (frozen copy)",
    "partial": "same rows, partial sparse indexes",
    "narrow": "narrow table",
}


def label(variant: str, db: str) -> str:
    if variant == "narrow" and db == "mariadb":
        return "narrow table (full claim index)"
    return LABELS[variant]


def rows_from(ctx: Ctx, db: str, runs: list[dict[str, dict[str, float]]]) -> list[Row]:
    """Rows of the runs of :func:`measure_all`: each variant's figures, then the ratios of each
    variant's loop to the ``linger_jobs`` loop of the same run."""
    out: list[Row] = []
    variants = [v for v in VARIANTS if runs and v in runs[0]]
    for v in variants:
        out += [
            Row("1 raw limit", db, f"{label(v, db)}: jobs/s start-to-exit (k={K})", [r[v]["start_to_exit"] for r in runs], "jobs/s"),
            Row("1 raw limit", db, f"{label(v, db)}: jobs/s in the loop", [r[v]["loop"] for r in runs], "jobs/s"),
        ]
    if BASELINE in variants:
        for v in variants:
            if v != BASELINE:
                out.append(Row("1 raw limit", db, f"{label(v, db)} / linger_jobs as installed, in the loop",
                               [r[v]["loop"] / r[BASELINE]["loop"] for r in runs], "x"))
    return out


def run(ctx: Ctx) -> list[Row]:
    out: list[Row] = []
    for db in ctx.dbs:
        runs = [measure_all(ctx, db, r) for r in range(ctx.runs)]
        out += rows_from(ctx, db, runs)
    return out


# -- plans ------------------------------------------------------------------------------
def explain(ctx: Ctx) -> None:
    """Print the plan of each variant's claim (on a filled table) and drop the tables."""
    import sqlalchemy as sa

    for db in ctx.dbs:
        for variant in variants_for(db, ctx.extra.get("raw_variants") or VARIANTS):
            app = None
            url = url_for(db, ctx, f"explain-{variant}")
            if variant == BASELINE:
                app = new_app(url)
                name, engine, md = app.store.t.jobs.name, None, None
                url = app.settings.database_url
            else:
                name = new_prefix("r") + "jobs"
                md = frozen_metadata(variant, db, name)
                engine = sa.create_engine(url)
                md.create_all(engine)
                engine.dispose()
            conn = raw_connect(db, url)
            try:
                if app is not None:
                    fill_noop_jobs(app, ctx.jobs)
                else:
                    _fill_frozen(db, conn, name, variant, ctx.jobs)
                if db == "postgresql":
                    conn.autocommit = True
                    conn.execute(f"ANALYZE {name}")
                s = _statements(db, name, "narrow" if variant == "narrow" else "full")
                now = datetime.now(timezone.utc).replace(tzinfo=None)
                arg: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if db == "sqlite" else now
                if db == "sqlite":
                    plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + s["pick"], (arg,))]
                else:
                    cur = conn.cursor()
                    cur.execute("EXPLAIN " + s["pick"], (arg,))
                    plan = [" | ".join(str(c) for c in r) for r in cur.fetchall()]
                    conn.rollback() if db == "mariadb" else None
                print(f"== {db} / {variant} ({name}): claim pick\n   " + "\n   ".join(plan))
            finally:
                conn.close()
                if app is not None:
                    drop_app(app)
                else:
                    e = sa.create_engine(url)
                    md.drop_all(e)
                    e.dispose()
                    _unlink_sqlite(url)


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--explain", action="store_true", help="print the claim plan of each table instead of timing")
    args = ap.parse_args()
    ctx = ctx_from_args(args)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(wanted) - set(VARIANTS):
        ap.error(f"unknown variant(s) {sorted(set(wanted) - set(VARIANTS))}")
    ctx.extra["raw_variants"] = wanted
    import shutil

    try:
        if args.explain:
            explain(ctx)
        else:
            print(table(run(ctx)))
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
