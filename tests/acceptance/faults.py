"""Utilities of the fault-injection tests (real ``linger-sched`` processes, real servers).

Built on :mod:`.helpers` (the :class:`Cluster` of processes sharing a database and a
table prefix). Added here: a task module whose tasks log every execution, a producer thread
that enqueues one-off jobs, leader-lease watching, a drain that leaves nothing queued, the audit
of a finished run, and stopping/starting the local PostgreSQL and MariaDB servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from linger_sched import Linger, LingerError

from .helpers import (
    FAST_ENV,
    Cluster,
    OccurrenceAudit,
    Proc,
    audit_occurrences,
    holder_pid,
    utc,
    wait_for,
)

__all__ = [
    "EVERY",
    "FAST_ENV",
    "IN_CI",
    "SCHEDULES_YAML",
    "TASKS",
    "Cluster",
    "OccurrenceAudit",
    "Proc",
    "Producer",
    "RunAudit",
    "audit_occurrences",
    "audit_run",
    "drain",
    "holder_pid",
    "server",
    "setup_files",
    "start_node",
    "stop_all",
    "utc",
    "wait_for",
    "wait_leader",
    "wait_new_holder",
    "wait_registered",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EVERY = timedelta(seconds=1)

# Every execution appends "<kind> <key> <job id> <pid> <attempt>" at its start, in one O_APPEND
# write, then works for TASK_SECONDS: a node killed mid-job leaves a line behind and the rescued
# attempt writes a second one, so the file shows every execution, not only completed ones.
TASKS = '''
import os
import time

from linger_sched import current_job, task

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.txt")
TASK_SECONDS = float(os.environ.get("FAULTS_TASK_SECONDS", "0.2"))


def record(kind, key):
    job = current_job()
    line = f"{kind} {key} {job.id} {os.getpid()} {job.attempt}\\n"
    fd = os.open(RESULTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task(max_attempts=5)
def tick():
    record("tick", current_job().scheduled_for.isoformat())
    time.sleep(TASK_SECONDS)


@task(max_attempts=5)
def order(n):
    record("order", n)
    time.sleep(TASK_SECONDS)
'''

SCHEDULES_YAML = """
imports: [tasks]
schedules:
  tick:
    task: tasks.tick
    every: 1s
    misfire: all
    overlap: allow
"""


def setup_files(cluster: Cluster) -> None:
    cluster.write("tasks.py", TASKS)
    cluster.write("schedules.yaml", SCHEDULES_YAML)


def start_node(cluster: Cluster, **env: str) -> Proc:
    return cluster.cli("node", "run", "--config", "schedules.yaml", **env)


# -- the leader lease -----------------------------------------------------------------------
def wait_leader(cluster: Cluster, nodes: list[Proc], timeout: float = 30) -> Proc:
    """The node (of ``nodes``) that holds a valid leader lease."""
    def holder() -> int | None:
        lease = cluster.leader()
        if lease is None or lease.expires_at <= cluster.store.db_now():
            return None
        pid = holder_pid(lease.holder)
        return pid if pid in {p.pid for p in nodes} else None

    return cluster.by_pid(wait_for(holder, timeout, 0.1, "a leader among the nodes"))


def wait_registered(cluster: Cluster, nodes: list[Proc], timeout: float = 30) -> None:
    """Until every node of ``nodes`` is in the nodes table (started: its signal handlers are set)."""
    want = {p.pid for p in nodes}
    wait_for(lambda: want <= {n.pid for n in cluster.store.list_nodes()}, timeout, 0.1, "the nodes to register")


def wait_new_holder(cluster: Cluster, old_holder: str, timeout: float, interval: float = 0.05) -> tuple[float, Any]:
    """Poll the lease row until someone other than ``old_holder`` holds it: (monotonic, lease)."""
    def changed() -> Any:
        lease = cluster.leader()
        return lease is not None and lease.holder != old_holder and lease

    lease = wait_for(changed, timeout, interval, "another node to take the leader lease")
    return time.monotonic(), lease


def stop_all(nodes: list[Proc], timeout: float = 45) -> list[int | None]:
    """SIGTERM every node, then wait for each; returns the exit codes."""
    for p in nodes:
        p.signal(signal.SIGTERM)
    return [p.wait(timeout) for p in nodes]


# -- producing one-off jobs -----------------------------------------------------------------
@dataclass
class Enqueued:
    n: int
    job_id: int
    at: float  # monotonic time the id came back


class Producer(threading.Thread):
    """Enqueues ``tasks.order(n)`` every ``interval`` seconds through the Python API until
    stopped. Only jobs whose id came back count as enqueued; failed attempts (database down)
    are counted and retried with the next ``n``."""

    def __init__(self, db_url: str, prefix: str, interval: float = 0.1) -> None:
        super().__init__(name="producer", daemon=True)
        self.app = Linger(db_url, table_prefix=prefix)
        self.interval = interval
        self.enqueued: list[Enqueued] = []
        self.errors: list[tuple[float, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.halt.is_set():
            n += 1
            try:
                job_id = self.app.enqueue("tasks.order", n)
                self.enqueued.append(Enqueued(n, job_id, time.monotonic()))
            except LingerError as exc:
                self.errors.append((time.monotonic(), str(exc).splitlines()[0][:200]))
            next_at += self.interval
            self.halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.app.store.dispose()

    def ids(self) -> list[int]:
        return [e.job_id for e in self.enqueued]


# -- after a run ----------------------------------------------------------------------------
def drain(cluster: Cluster, timeout: float = 120, args: tuple[str, ...] = ("--import", "tasks"), **env: str) -> int:
    """Burst workers until no job is queued or running (waiting for future run_at and for
    the rescue of jobs whose lock has not expired yet); returns how many bursts it took."""
    deadline = time.monotonic() + timeout
    bursts = 0
    while True:
        cluster.run_cli("worker", "--burst", *args, timeout=max(10.0, deadline - time.monotonic()), **env)
        bursts += 1
        left = cluster.query("SELECT count(*) FROM {p}jobs WHERE state IN ('queued', 'running')")[0][0]
        if not left:
            return bursts
        if time.monotonic() > deadline:
            raise AssertionError(f"{left} job(s) still queued or running after draining for {timeout:g}s")
        time.sleep(0.5)


@dataclass
class RunAudit:
    """Occurrences of the ``tick`` schedule and one-off jobs of a finished run, with the
    executions logged in the results file (lines "<kind> <key> <job id> <pid> ...")."""

    ticks: OccurrenceAudit
    tick_jobs: list[Any]
    tick_states: Counter[str]
    orders_enqueued: int
    orders_succeeded: int
    orders_lost: list[int]  # ids the producer got that did not succeed
    runs: Counter[int]  # job id -> executions in the results file
    rerun: list[Any]  # jobs executed more than once
    rerun_without_retry: list[Any]  # executed more than once with attempts <= 1: a real double run
    never_ran: list[Any]  # succeeded jobs without any execution line
    more_runs_than_attempts: list[Any]
    key_mismatch: list[str] = field(default_factory=list)

    def tick_line(self) -> str:
        return (f"occurrences expected {self.ticks.expected} seen {self.ticks.seen} duplicated {self.ticks.duplicated} "
                f"missing {len(self.ticks.missing)} misaligned {len(self.ticks.misaligned)} states {dict(self.tick_states)}")

    def order_line(self) -> str:
        return (f"one-off enqueued {self.orders_enqueued} succeeded {self.orders_succeeded} lost {len(self.orders_lost)}")

    def exec_line(self) -> str:
        return (f"executions {sum(self.runs.values())}, jobs run more than once {len(self.rerun)} "
                f"(all with attempts>1: {not self.rerun_without_retry}), never ran {len(self.never_ran)}")

    def assert_clean(self, min_ticks: int = 1) -> None:
        t = self.ticks
        assert t.expected >= min_ticks, t
        assert t.missing == [] and t.duplicated == 0 and t.misaligned == [], t.line()
        assert t.seen == t.expected == len(self.tick_jobs)
        assert self.tick_states == {"succeeded": len(self.tick_jobs)}, self.tick_states
        assert self.orders_lost == [], f"one-off jobs not succeeded: {self.orders_lost[:20]}"
        assert self.orders_succeeded == self.orders_enqueued
        assert self.never_ran == [], [j.id for j in self.never_ran[:20]]
        assert self.rerun_without_retry == [], [(j.id, j.attempts, self.runs[j.id]) for j in self.rerun_without_retry]
        assert self.more_runs_than_attempts == [], [(j.id, j.attempts, self.runs[j.id]) for j in self.more_runs_than_attempts]
        assert self.key_mismatch == [], self.key_mismatch[:10]


def audit_run(cluster: Cluster, order_ids: list[int], *, schedule: str = "tick", lines: list[list[str]] | None = None,
              tick_kind: str = "tick") -> RunAudit:
    anchor = utc(cluster.store.get_schedule(schedule).anchor)
    tick_jobs = cluster.all_jobs(schedule_name=schedule)
    ticks = audit_occurrences([j.scheduled_for for j in tick_jobs], anchor, EVERY)
    lines = cluster.result_lines() if lines is None else lines
    runs = Counter(int(line[2]) for line in lines)
    jobs = {j.id: j for j in cluster.all_jobs()}
    mismatch = []
    for line in lines:
        job = jobs.get(int(line[2]))
        if job is None:
            mismatch.append(" ".join(line) + " (no such job)")
        elif line[0] == tick_kind and job.scheduled_for is not None and line[1] != utc(job.scheduled_for).isoformat():
            mismatch.append(" ".join(line) + f" (job scheduled for {job.scheduled_for})")
        elif line[0] == "order" and [str(a) for a in job.args] != [line[1]]:
            mismatch.append(" ".join(line) + f" (job args {job.args})")
    considered = [jobs[i] for i in order_ids if i in jobs] + tick_jobs
    orders_ok = sum(1 for i in order_ids if i in jobs and jobs[i].state == "succeeded")
    return RunAudit(
        ticks=ticks,
        tick_jobs=tick_jobs,
        tick_states=Counter(j.state for j in tick_jobs),
        orders_enqueued=len(order_ids),
        orders_succeeded=orders_ok,
        orders_lost=[i for i in order_ids if i not in jobs or jobs[i].state != "succeeded"],
        runs=runs,
        rerun=[j for j in considered if runs[j.id] > 1],
        rerun_without_retry=[j for j in considered if runs[j.id] > 1 and j.attempts <= 1],
        never_ran=[j for j in considered if j.state == "succeeded" and runs[j.id] == 0],
        more_runs_than_attempts=[j for j in considered if runs[j.id] > max(j.attempts, 1)],
        key_mismatch=mismatch,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


# -- the database servers -------------------------------------------------------------------
class Server:
    """Stop and start the local PostgreSQL cluster or MariaDB server of a test URL."""

    def __init__(self, db_name: str, url: str) -> None:
        self.db_name = db_name
        self.url = url
        host = sa.engine.make_url(url).host or "127.0.0.1"
        self.local = host in ("127.0.0.1", "localhost", "::1")

    # probing ------------------------------------------------------------------------------
    def up(self) -> bool:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool,
                                  connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            engine.dispose()

    def wait_up(self, timeout: float = 90) -> float:
        wait_for(self.up, timeout, 0.1, f"the {self.db_name} server to answer")
        return time.monotonic()

    def wait_down(self, timeout: float = 60) -> None:
        wait_for(lambda: not self.up() and not self._process_running(), timeout, 0.1, f"the {self.db_name} server to stop")

    # control ------------------------------------------------------------------------------
    def require_control(self) -> None:
        tools = ["pg_ctlcluster"] if self.db_name == "postgresql" else ["mariadb-admin", "start-stop-daemon"]
        missing = [t for t in tools if shutil.which(t) is None]
        problem = None
        if not self.local:
            problem = f"the {self.db_name} test server is not local ({self.url})"
        elif missing:
            problem = f"cannot restart {self.db_name}: {', '.join(missing)} not found"
        elif self.db_name == "postgresql" and not self._pg_version():
            problem = "no cluster under /etc/postgresql"
        elif self.db_name != "postgresql" and not os.path.exists("/usr/sbin/mariadbd"):
            problem = "/usr/sbin/mariadbd not found"
        if problem:
            if IN_CI:
                pytest.fail(f"CI=true and {problem}")
            pytest.skip(problem)

    def _pg_version(self) -> str | None:
        try:
            versions = sorted(os.listdir("/etc/postgresql"))
        except OSError:
            return None
        return versions[-1] if versions else None

    def _process_running(self) -> bool:
        name = "postgres" if self.db_name == "postgresql" else "mariadbd"
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                        return True
                except OSError:
                    continue
        return False

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def stop(self) -> None:
        if self.db_name == "postgresql":
            out = self._run(["pg_ctlcluster", "--skip-systemctl-redirect", str(self._pg_version()), "main", "stop"])
            if out.returncode not in (0, 2):  # 2: it was not running
                raise AssertionError(f"pg_ctlcluster stop exited {out.returncode}: {out.stdout}{out.stderr}")
        else:
            out = self._run(["mariadb-admin", "-h", "127.0.0.1", "-uroot", "shutdown"])
            if out.returncode != 0 and self.up():
                raise AssertionError(f"mariadb-admin shutdown exited {out.returncode}: {out.stdout}{out.stderr}")
        self.wait_down()

    def start(self) -> None:
        if self.db_name == "postgresql":
            out = self._run(["pg_ctlcluster", "--skip-systemctl-redirect", str(self._pg_version()), "main", "start"])
            if out.returncode != 0 and not self.up():  # 2: already running
                raise AssertionError(f"pg_ctlcluster start exited {out.returncode}: {out.stdout}{out.stderr}")
        else:
            self._run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"])

    def ensure_up(self, timeout: float = 90) -> None:
        """Start the server if it does not answer, and wait until it does (finally blocks)."""
        if self.up():
            return
        self.start()
        deadline = time.monotonic() + timeout
        while not self.up():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not bring the {self.db_name} server back up")
            time.sleep(0.5)
            if not self._process_running():
                self.start()


def server(db_name: str, url: str) -> Server:
    return Server(db_name, url)


def db_time(cluster: Cluster) -> datetime:
    return utc(cluster.store.db_now())


def seconds_between(a: datetime, b: datetime) -> float:
    return (utc(b) - utc(a)).total_seconds()
