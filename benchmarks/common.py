"""Shared plumbing of the benchmarks: niceness, databases, statistics, result rows and the table.

Every benchmark module exposes ``run(ctx) -> list[Row]`` and a ``main()`` that runs it alone;
``run_all.py`` runs several and prints one table. A :class:`Row` is one figure: the median of
the per-run values with their min and max.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NICE = 10

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POSTGRES_URL = os.environ.get("LINGER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("LINGER_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
ALL_DBS = ("sqlite", "postgresql", "mariadb")


def ensure_nice() -> None:
    """Run at niceness >= 10 (the machine is shared); children inherit it."""
    current = os.nice(0)
    if current < NICE:
        os.nice(NICE - current)


# -- statistics and rows ---------------------------------------------------------------
@dataclass
class Row:
    bench: str
    db: str
    metric: str
    values: list[float]
    unit: str
    target: str = ""  # e.g. ">= 0.5"
    status: str = ""  # "met" / "missed" / ""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def judge(self, op: str, bound: float, *, shown: str | None = None) -> "Row":
        """Set target and status from the median: op is '>=' or '<='."""
        self.target = shown or f"{op} {fmt(bound, self.unit)}"
        ok = self.median >= bound if op == ">=" else self.median <= bound
        self.status = "met" if ok else "MISSED"
        return self


def fmt(v: float, unit: str = "") -> str:
    if v != v:  # nan
        return "-"
    if unit == "x":
        return f"{v:.2f}"
    if unit in ("ms", "%"):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"
    if unit == "s":
        return f"{v:.3f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def table(rows: Sequence[Row]) -> str:
    head = ["benchmark", "db", "metric", "median", "min", "max", "unit", "n", "target", "status"]
    body = [
        [r.bench, r.db, r.metric, fmt(r.median, r.unit), fmt(r.lo, r.unit), fmt(r.hi, r.unit), r.unit,
         str(len(r.values)), r.target, r.status]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 7}

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    out = [line(head), sep, *(line(b) for b in body)]
    notes = [f"- {r.bench} / {r.db} / {r.metric}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- context -------------------------------------------------------------------------
@dataclass
class Ctx:
    runs: int = 3
    quick: bool = False
    dbs: list[str] = field(default_factory=lambda: list(ALL_DBS))
    jobs: int = 20_000  # drain / raw / peers size
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="linger-bench-")))
    extra: dict[str, Any] = field(default_factory=dict)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def base_parser(description: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="repetitions per figure (default 3; the median is reported)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, 3 runs still (override with --runs)")
    ap.add_argument("--db", default=",".join(ALL_DBS), help="comma-separated: sqlite,postgresql,mariadb (default all reachable)")
    ap.add_argument("-n", "--jobs", type=int, default=None, help="jobs per drain/raw/peer run (default 20,000; --quick 2,000)")
    return ap


def ctx_from_args(args: argparse.Namespace) -> Ctx:
    ensure_nice()
    wanted = [d.strip() for d in args.db.split(",") if d.strip()]
    bad = [d for d in wanted if d not in ALL_DBS]
    if bad:
        raise SystemExit(f"unknown database(s) {bad}; choose from {ALL_DBS}")
    dbs = [d for d in wanted if reachable(d)]
    for d in wanted:
        if d not in dbs:
            say(f"[bench] {d} is not reachable: skipped")
    jobs = args.jobs or (2_000 if args.quick else 20_000)
    return Ctx(runs=args.runs, quick=args.quick, dbs=dbs, jobs=jobs)


def run_standalone(description: str | None, fn: Callable[[Ctx], list[Row]], dbs: Iterable[str] = ALL_DBS) -> None:
    ap = base_parser(description)
    ap.set_defaults(db=",".join(dbs))
    print_rows(ctx_from_args(ap.parse_args()), fn)


def print_rows(ctx: Ctx, fn: Callable[[Ctx], list[Row]]) -> None:
    """Run one benchmark, remove its scratch directory, print its table."""
    try:
        rows = fn(ctx)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(table(rows))


# -- databases -----------------------------------------------------------------------
def url_for(db: str, ctx: Ctx | None = None, name: str = "bench") -> str:
    if db == "sqlite":
        tmp = ctx.tmp if ctx is not None else Path(tempfile.mkdtemp(prefix="linger-bench-"))
        return f"sqlite:///{tmp}/{name}-{secrets.token_hex(3)}.db"
    if db == "postgresql":
        return POSTGRES_URL
    if db == "mariadb":
        return MYSQL_URL
    raise ValueError(db)


_reachable: dict[str, bool] = {}


def reachable(db: str) -> bool:
    if db == "sqlite":
        return True
    if db not in _reachable:
        try:
            conn = raw_connect(db, url_for(db))
            conn.close()
            _reachable[db] = True
        except Exception as exc:
            say(f"[bench] cannot connect to {db}: {exc}")
            _reachable[db] = False
    return _reachable[db]


def new_prefix(tag: str = "b") -> str:
    return f"bn{tag}{secrets.token_hex(3)}_"


def new_app(url: str, prefix: str | None = None, **options: Any):  # -> Linger
    from linger_sched import Linger

    app = Linger(url, table_prefix=prefix or new_prefix(), **options)
    app.install_schema()
    return app


def drop_app(app: Any) -> None:
    """Drop the app's tables; a database restarting under us (fault tests) is waited for."""
    try:
        for attempt in range(30):
            try:
                app.store.drop_schema()
                break
            except Exception as exc:
                if attempt == 29:
                    say(f"[bench] could not drop tables {app.settings.table_prefix}*: {exc}")
                    break
                app.store.engine.dispose()
                time.sleep(1.0)
    finally:
        app.store.dispose()
        url = app.settings.database_url
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):].split("?")[0]
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass


def raw_connect(db: str, url: str) -> Any:
    """A plain DB-API connection (sqlite3, psycopg, pymysql) for a SQLAlchemy-style URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if db == "sqlite":
        import sqlite3

        conn = sqlite3.connect(u.database, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn
    if db == "postgresql":
        import psycopg

        return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password or None,
                               dbname=u.database, connect_timeout=5)
    if db == "mariadb":
        import pymysql

        conn = pymysql.connect(host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
                               database=u.database, autocommit=False, connect_timeout=5)
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("SET time_zone = '+00:00'")
        return conn
    raise ValueError(db)


def fill_noop_jobs(app: Any, n: int, task: str = "benchmarks.noop_tasks.noop", chunk: int = 10_000) -> None:
    for start in range(0, n, chunk):
        app.enqueue_many(task, [(i,) for i in range(start, min(n, start + chunk))])


# -- processes -----------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith("LINGER_") and not k.startswith("LINGER_BENCH_")]:
        del env[k]
    env.update(extra)
    return env


def linger_cmd(*args: str) -> list[str]:
    """The console script of the running interpreter's environment (``linger-sched``)."""
    exe = Path(sys.executable).with_name("linger-sched")
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-m", "linger_sched.cli", *args]


def nice_cmd(cmd: Sequence[str]) -> list[str]:
    """Children inherit our niceness; say it explicitly anyway (a no-op when already >= 10)."""
    return list(cmd) if os.nice(0) >= NICE else ["nice", "-n", str(NICE), *cmd]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children are not counted)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def stop_process(p: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()
    return p.returncode


# -- machine facts -------------------------------------------------------------------
def machine_facts(dbs: Sequence[str]) -> list[tuple[str, str]]:
    import sqlite3

    facts = [
        ("date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime())),
        ("nproc", str(os.cpu_count())),
    ]
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        facts.append(("memory", f"{kb / 1024 / 1024:.1f} GiB"))
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
        facts.append(("cpu", model))
    except OSError:
        pass
    facts.append(("kernel", platform.release()))
    facts.append(("python", f"{platform.python_implementation()} {platform.python_version()}"))
    try:
        import importlib.metadata as md

        facts.append(("packages", ", ".join(f"{p} {md.version(p)}" for p in ("SQLAlchemy", "psycopg", "PyMySQL", "huey", "procrastinate") if _has(p))))
    except Exception:
        pass
    facts.append(("SQLite", f"{sqlite3.sqlite_version} (WAL, synchronous=NORMAL: linger-sched's default and the raw loop's)"))
    if "postgresql" in dbs:
        try:
            conn = raw_connect("postgresql", POSTGRES_URL)
            cur = conn.cursor()
            cur.execute("select version()")
            v = cur.fetchone()[0].split(" on ")[0]
            settings = []
            for s in ("synchronous_commit", "fsync", "wal_level", "shared_buffers"):
                cur.execute(f"show {s}")
                settings.append(f"{s}={cur.fetchone()[0]}")
            conn.close()
            facts.append(("PostgreSQL", f"{v} ({', '.join(settings)}) at 127.0.0.1"))
        except Exception as exc:
            facts.append(("PostgreSQL", f"unavailable ({exc})"))
    if "mariadb" in dbs:
        try:
            conn = raw_connect("mariadb", MYSQL_URL)
            with conn.cursor() as cur:
                cur.execute("select version()")
                v = cur.fetchone()[0]
                settings = []
                for s in ("innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "innodb_buffer_pool_size"):
                    cur.execute(f"show variables like '{s}'")
                    r = cur.fetchone()
                    if r:
                        settings.append(f"{r[0]}={r[1]}")
            conn.close()
            facts.append(("MariaDB", f"{v} ({', '.join(settings)}) at 127.0.0.1"))
        except Exception as exc:
            facts.append(("MariaDB", f"unavailable ({exc})"))
    facts.append(("niceness", f"benchmark processes at nice {os.nice(0)}"))
    try:
        load = os.getloadavg()
        facts.append(("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
    except OSError:
        pass
    return facts


def _has(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


INCIDENTS: list[str] = []


def retrying(what: str, fn: Callable[[], Any], attempts: int = 3) -> Any:
    """Run one measurement; on a failure (e.g. a database restarted by the fault tests running
    on this machine) wait for the databases and run it again, at most ``attempts`` times. Every
    failure is recorded in INCIDENTS and printed with the results, never hidden."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            INCIDENTS.append(f"{what}, attempt {attempt}: {type(exc).__name__}: {first}")
            say(f"[bench] {what} failed (attempt {attempt}/{attempts}): {type(exc).__name__}: {first}")
            if attempt == attempts:
                raise
            _reachable.clear()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(reachable(d) for d in ("postgresql", "mariadb")):
                _reachable.clear()
                time.sleep(2.0)
            time.sleep(2.0)
    raise AssertionError("unreachable")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
