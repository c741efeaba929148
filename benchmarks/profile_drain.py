"""Profile a drain on SQLite inside one worker process: where does linger-sched spend its CPU?

N no-op jobs (default 20,000) are enqueued; then this process runs the worker the way
``linger-sched worker --burst`` does (``Linger.work(burst=True)``: the claim/finish loop in the
calling thread, the tasks on the default 8 job threads) under cProfile. Every thread gets its
own profiler measuring *CPU time* (``time.thread_time``), merged at the end, so the figures say
where the process burns CPU, not where threads wait. Profiling slows everything down several
times; read the shares, not the absolute times.

    benchmarks/.venv/bin/python benchmarks/profile_drain.py [-n 20000] [--top 30] [--db sqlite]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import drop_app, ensure_nice, fill_noop_jobs, new_app, url_for


def group_of(key: tuple[str, int, str]) -> str:
    path, _line, name = key
    if "sqlite3.Cursor" in name or "sqlite3.Connection" in name or "psycopg" in path or "pymysql" in path:
        return "database driver (incl. time inside the database library)"
    if "/sqlalchemy/" in path:
        return "SQLAlchemy (compile, execute, result processing, pool)"
    if "/linger_sched/" in path:
        return "linger_sched itself"
    if "json" in path or "json" in name:
        return "json"
    if "threading.py" in path or "queue.py" in path or "lock" in name or "_thread" in name:
        return "threads, locks, queues"
    if "benchmarks/noop_tasks" in path:
        return "the no-op task"
    return "other (stdlib, builtins)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql", "mariadb"))
    args = ap.parse_args()
    ensure_nice()
    import benchmarks.noop_tasks  # noqa: F401  (registers the task on the default app)
    from linger_sched import default_app

    app = new_app(url_for(args.db, None, "profile"))
    try:
        fill_noop_jobs(app, args.n)
        worker_app = default_app()
        worker_app.configure(database_url=app.settings.database_url, table_prefix=app.settings.table_prefix)
        profiles: list[cProfile.Profile] = []
        lock = threading.Lock()

        def start_thread_profiler(*_a: object) -> None:
            prof = cProfile.Profile(time.thread_time)
            with lock:
                profiles.append(prof)
            prof.enable()  # replaces this hook in the new thread

        threading.setprofile(start_thread_profiler)
        main_prof = cProfile.Profile(time.thread_time)
        profiles.append(main_prof)
        t0, c0 = time.perf_counter(), time.process_time()
        main_prof.enable()
        worker_app.work(burst=True)
        main_prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        threading.setprofile(None)
        counts = app.store.count_by_state()
        assert counts.get("succeeded") == args.n, counts
        stats = pstats.Stats(main_prof)
        for p in profiles[1:]:
            try:
                p.disable()
            except Exception:  # noqa: BLE001
                pass
            try:
                stats.add(p)
            except TypeError:  # a thread's profiler with nothing recorded
                pass
        print(f"drained {args.n:,} jobs on {args.db} in {wall:.2f} s wall, {cpu:.2f} s process CPU, under the profiler "
              f"({args.n / wall:,.0f} jobs/s; unprofiled it is several times faster); {len(profiles)} threads profiled")
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        groups: dict[str, float] = {}
        for key, v in stats.stats.items():  # type: ignore[attr-defined]
            groups[group_of(key)] = groups.get(group_of(key), 0.0) + v[2]
        print("\nCPU time by component (own time of functions, all threads):")
        for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {100 * t / total:5.1f} %  {g}")
        print(f"\nTop {args.top} functions by own CPU time (tottime):")
        stats.sort_stats("tottime").print_stats(args.top)
        print(f"Top {args.top} by cumulative CPU time:")
        stats.sort_stats("cumulative").print_stats(args.top)
    finally:
        drop_app(app)


if __name__ == "__main__":
    main()
