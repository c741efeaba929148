"""Tick cost: ``scheduler.tick()`` with 100,000 schedules, on SQLite and PostgreSQL.

Setup (not timed): 100,000 schedule rows inserted with one executemany per 10,000 rows on the
store's own table (the same columns ``store.save_schedules`` writes: name, task, spec
(``every:60s`` or ``* * * * *``, alternating), tz, anchor, args '{}', options '{}',
next_run_at, paused false, enabled true, spec_hash), all due an hour or more from now. A
scheduler takes the leader lease with a first tick.

Per run:
* idle tick: the leader already holds the lease and nothing is due; 50 ticks are timed one by
  one (the lease is renewed every 10 s only, so these ticks do not renew it); the run's
  figures are the median and the max of those ticks;
* 10,000 due at once: 10,000 of the schedules get ``next_run_at = now - 0.5 s``; one
  ``tick()`` materializes them (20 batches of 500: plan, fenced compare-and-set, job insert),
  timed as a whole; it must report 10,000 jobs. Then they are pushed back an hour and their
  jobs deleted, for the next run.

    python benchmarks/tick.py [--db sqlite,postgresql] [--runs 3]
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
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


def fill_schedules(app, n: int, chunk: int = 10_000) -> None:
    import sqlalchemy as sa

    s = app.store.t.schedules
    now = app.store.db_now()
    later = now + timedelta(hours=1)
    with app.store.engine.begin() as conn:
        for start in range(0, n, chunk):
            rows = []
            for i in range(start, min(n, start + chunk)):
                every = i % 2 == 0
                rows.append({
                    "name": f"s{i:07d}", "task": TASK, "spec": "every:60s" if every else "* * * * *", "tz": "UTC",
                    "anchor": now if every else None, "args": "{}", "options": "{}",
                    "next_run_at": later + timedelta(seconds=i % 3600), "last_run_at": None,
                    "paused": False, "enabled": True, "spec_hash": "every60" if every else "cron-every-minute",
                    "updated_at": now,
                })
            conn.execute(sa.insert(s), rows)


def _set_next(app, names_upto: str, when, *, anchor: bool = False) -> None:
    """Set next_run_at of the schedules named up to ``names_upto``; with ``anchor`` the interval
    ones are re-anchored there too, so ``when`` is one of their fire times (and the next is 60 s
    later), exactly as for a schedule that is simply due."""
    import sqlalchemy as sa

    s = app.store.t.schedules
    with app.store.engine.begin() as conn:
        conn.execute(sa.update(s).where(s.c.name <= names_upto).values(next_run_at=when))
        if anchor:
            conn.execute(sa.update(s).where(s.c.name <= names_upto, s.c.spec == "every:60s").values(anchor=when))


def _due_instant(app):  # noqa: ANN001, ANN202
    """Half a second ago, not within half a second after a minute boundary: a '* * * * *'
    schedule then has exactly one fire time in [next_run_at, now]."""
    while True:
        now = app.store.db_now()
        if not (now.second == 59 and now.microsecond > 300_000) and not (now.second == 0 and now.microsecond < 700_000):
            return now - timedelta(seconds=0.5)
        time.sleep(0.2)


def run_db(ctx: Ctx, db: str) -> list[dict[str, float]]:
    import sqlalchemy as sa

    n = ctx.scale(100_000, 10_000)
    due_n = ctx.scale(10_000, 1_000)
    ticks = ctx.scale(50, 10)
    app = new_app(url_for(db, ctx, "tick"))
    runs = []
    try:
        t0 = time.perf_counter()
        fill_schedules(app, n)
        say(f"[tick] {db}: {n:,} schedules inserted in {time.perf_counter() - t0:.1f} s")
        sched = app.new_scheduler()
        first = sched.tick()
        assert first.leader and first.jobs == 0, first
        last_due = f"s{due_n - 1:07d}"
        j = app.store.t.jobs
        for r in range(ctx.runs):
            times = []
            for _ in range(ticks):
                t0 = time.perf_counter()
                rep = sched.tick()
                times.append(time.perf_counter() - t0)
                assert rep.leader and rep.due == 0, rep
            _set_next(app, last_due, _due_instant(app), anchor=True)
            t0 = time.perf_counter()
            rep = sched.tick()
            materialize = time.perf_counter() - t0
            if rep.jobs != due_n:
                raise RuntimeError(f"tick on {db} materialized {rep.jobs} jobs, expected {due_n}: {rep}")
            _set_next(app, last_due, app.store.db_now() + timedelta(hours=1))
            with app.store.engine.begin() as conn:
                conn.execute(sa.delete(j))
            runs.append({"idle_median_ms": statistics.median(times) * 1000, "idle_max_ms": max(times) * 1000,
                         "materialize_s": materialize})
            say(f"[tick] {db} run {r + 1}: idle tick median {runs[-1]['idle_median_ms']:.2f} ms "
                f"(max {runs[-1]['idle_max_ms']:.2f}), {due_n:,} due materialized in {materialize:.3f} s")
    finally:
        drop_app(app)
    return runs


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    n = ctx.scale(100_000, 10_000)
    due_n = ctx.scale(10_000, 1_000)
    ticks = ctx.scale(50, 10)
    for db in [d for d in ctx.dbs if d in ("sqlite", "postgresql")]:
        runs = retrying(f"tick {db}", lambda: run_db(ctx, db))
        rows.append(Row("6 tick", db, f"idle tick, {n:,} schedules, none due (median of {ticks} ticks)",
                        [r["idle_median_ms"] for r in runs], "ms").judge("<=", 5.0, shown="<= 5 ms"))
        rows.append(Row("6 tick", db, f"idle tick, {n:,} schedules, none due (max of {ticks} ticks)",
                        [r["idle_max_ms"] for r in runs], "ms"))
        rows.append(Row("6 tick", db, f"{due_n:,} of {n:,} due at once: one tick materializes them",
                        [r["materialize_s"] for r in runs], "s").judge("<=", 1.0, shown="<= 1 s"))
    return rows


if __name__ == "__main__":
    run_standalone(__doc__, run, dbs=("sqlite", "postgresql"))
