"""Run ``linger-sched`` with timestamps on the worker's store calls: the node of
``latency.py --trace`` (linger-sched's code is not changed; its methods are wrapped here).

    python benchmarks/latency_trace.py TRACE.json run --import benchmarks.latency_tasks ...

Recorded (``time.time()`` at both ends of each call, as the probes' start times):

* every ``Store`` call of the node's threads that touches the jobs table (claim, finish,
  next_due, extend, rescue, hand_back) and the scheduler's (materialize, due_schedules,
  acquire_lease): ``[name, t0, t1, thread, n]``; a claim also lists the probes it took as
  ``[job id, position in the batch]`` (the worker starts a batch in claim order);
* the worker's ``flush`` (writing outcomes) and ``_wait`` (sleeping until woken);
* stalls: a thread of its own sleeps 2 ms in a loop and records every wake-up later than
  5 ms, i.e. the time it waited for the GIL (or for a CPU) -- ``["stall", t0, t1]``.

The trace is written as JSON at exit (the node exits on SIGTERM; ``os._exit`` is wrapped too).
With ``-`` as TRACE.json nothing is traced: only the experiments below apply.

Experiments (environment variables; they change the node's behaviour from outside, to measure a
proposed fix before anyone writes it -- linger-sched's code is not touched):

* ``BENCH_LAT_WORKER_SETTINGS="max_prefetch=50,lead_time=0.1"``: set these attributes of the
  worker's ``WorkerSettings`` after it is made (numbers only);
* ``BENCH_LAT_SQLITE_WRITE_LOCK=1``: every SQLite write transaction of the node (``BEGIN
  IMMEDIATE``) first takes one process-wide ``threading.Lock``, held until its commit or
  rollback, so the node's own threads (worker loop, scheduler, heartbeat, housekeeping) queue
  on a Python lock instead of polling SQLite's busy handler, whose sleeps grow to 100 ms.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EVENTS: list[list] = []
PROBES = ("benchmarks.latency_tasks.due_probe", "benchmarks.latency_tasks.tick_probe")
STALL_SLEEP, STALL_MIN = 0.002, 0.005


def _wrap(cls: type, name: str, extra=None) -> bool:
    fn = cls.__dict__.get(name)
    if fn is None:
        return False

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        t0 = time.time()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            EVENTS.append([name + "!", t0, time.time(), threading.current_thread().name])
            raise
        event = [name, t0, time.time(), threading.current_thread().name]
        if extra is not None:
            event += extra(result)
        EVENTS.append(event)
        return result

    setattr(cls, name, traced)
    return True


def _claimed(result) -> list:
    probes = [[j.id, i] for i, j in enumerate(result) if j.task in PROBES]
    return [len(result), probes]


def _count(result) -> list:
    return [result if isinstance(result, int) else len(result) if hasattr(result, "__len__") else -1]


def _trace_sql() -> None:
    """Every statement (and commit) of every engine that takes over 1 ms:
    ``["sql", t0, t1, thread, "BEGIN IMMEDIATE" / "UPDATE" / "COMMIT" ...]``."""
    import sqlalchemy as sa

    local = threading.local()

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        local.t0 = time.time()

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        t1 = time.time()
        t0 = getattr(local, "t0", t1)
        if t1 - t0 > 0.001:
            words = statement.split()
            kind = " ".join(words[:2]) if words[:1] in (["BEGIN"], ["SELECT"]) else (words[0] if words else "?")
            EVENTS.append(["sql", t0, t1, threading.current_thread().name, kind])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    real_commit = sa.engine.Connection._commit_impl

    def commit(self):
        t0 = time.time()
        try:
            return real_commit(self)
        finally:
            t1 = time.time()
            if t1 - t0 > 0.001:
                EVENTS.append(["sql", t0, t1, threading.current_thread().name, "COMMIT"])

    sa.engine.Connection._commit_impl = commit  # type: ignore[method-assign]


def _stalls() -> None:
    while True:
        t0 = time.time()
        time.sleep(STALL_SLEEP)
        t1 = time.time()
        if t1 - t0 > STALL_MIN:
            EVENTS.append(["stall", t0, t1, "stall-probe"])


def install(trace_file: str) -> list[str]:
    from linger_sched import store as store_mod
    from linger_sched import worker as worker_mod

    wrapped = []
    # Store may be one class or a JobStore base with a Store subclass: wrap where defined
    classes = [c for c in (getattr(store_mod, "JobStore", None), getattr(store_mod, "Store", None)) if c is not None]
    try:
        from linger_sched.store import store as store_impl

        classes += [c for c in (getattr(store_impl, "JobStore", None), getattr(store_impl, "Store", None)) if c is not None]
    except ImportError:
        pass
    try:
        from linger_sched.store import coordination

        classes += [v for v in vars(coordination).values() if isinstance(v, type) and v.__module__ == coordination.__name__]
    except ImportError:
        pass
    seen: set[int] = set()
    for cls in classes:
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        for name, extra in (("claim", _claimed), ("finish", None), ("next_due", None), ("extend", _count),
                            ("rescue", _count), ("hand_back", _count), ("materialize", None),
                            ("due_schedules", _count), ("acquire_lease", None)):
            if _wrap(cls, name, extra):
                wrapped.append(f"{cls.__name__}.{name}")
    for name, extra in (("flush", _count), ("_wait", None)):
        if _wrap(worker_mod.Worker, name, extra):
            wrapped.append(f"Worker.{name}")
    _trace_sql()
    wrapped.append("SQL statements and commits over 1 ms")
    threading.Thread(target=_stalls, name="stall-probe", daemon=True).start()

    done = []

    def dump() -> None:
        if not done:
            done.append(True)
            Path(trace_file).write_text(json.dumps({"wrapped": wrapped, "events": EVENTS}))

    atexit.register(dump)
    # the CLI leaves with os._exit when a job thread is still alive (no atexit then)
    real_exit = os._exit

    def exit_after_dump(code: int) -> None:
        dump()
        real_exit(code)

    os._exit = exit_after_dump  # type: ignore[assignment]
    return wrapped


def experiments() -> list[str]:
    import os as _os

    applied = []
    spec = _os.environ.get("BENCH_LAT_WORKER_SETTINGS", "").strip()
    if spec:
        from linger_sched import worker as worker_mod

        values = {k.strip(): float(v) for k, v in (item.split("=", 1) for item in spec.split(",") if item.strip())}
        real_init = worker_mod.Worker.__init__

        def init(self, *args, **kwargs):
            real_init(self, *args, **kwargs)
            for k, v in values.items():
                if not hasattr(self.settings, k):
                    raise SystemExit(f"WorkerSettings has no {k!r}")
                setattr(self.settings, k, int(v) if isinstance(getattr(self.settings, k), int) else v)

        worker_mod.Worker.__init__ = init  # type: ignore[method-assign]
        applied.append(f"worker settings {values}")
    if _os.environ.get("BENCH_LAT_SQLITE_WRITE_LOCK"):
        import sqlalchemy as sa

        lock = threading.Lock()
        holder = threading.local()
        real_exec = sa.engine.Connection.exec_driver_sql

        def exec_driver_sql(self, statement, *args, **kwargs):
            if statement == "BEGIN IMMEDIATE" and self.dialect.name == "sqlite":
                lock.acquire()
                holder.held = True
                try:
                    return real_exec(self, statement, *args, **kwargs)
                except BaseException:
                    holder.held = False
                    lock.release()
                    raise
            return real_exec(self, statement, *args, **kwargs)

        def release(*_a) -> None:
            if getattr(holder, "held", False):
                holder.held = False
                lock.release()

        sa.engine.Connection.exec_driver_sql = exec_driver_sql  # type: ignore[method-assign]
        for name in ("_commit_impl", "_rollback_impl"):  # released once the COMMIT/ROLLBACK has run
            real = getattr(sa.engine.Connection, name)

            def end(self, *args, _real=real, **kwargs):
                try:
                    return _real(self, *args, **kwargs)
                finally:
                    release()

            setattr(sa.engine.Connection, name, end)
        applied.append("process-wide lock around SQLite write transactions")
    return applied


def main() -> None:
    trace_file, *argv = sys.argv[1:]
    applied = experiments()
    if applied:
        print("[latency_trace] experiments: " + "; ".join(applied), file=sys.stderr, flush=True)
    if trace_file != "-":
        install(trace_file)
    from linger_sched.cli import main as cli_main

    cli_main(args=argv, prog_name="linger-sched")


if __name__ == "__main__":
    main()
