"""Process utilities for the acceptance tests: real ``linger-sched`` processes on a real database.

A :class:`Cluster` owns a working directory, the environment the processes share (database URL,
table prefix, short leases), the processes it started and their log files. It never kills a
process it did not start, and its :meth:`Cluster.close` (run by the ``cluster`` fixture) kills
every leftover one. Database state is read through a :class:`~linger_sched.store.Store` of the
same URL and prefix, or with plain SQL (:meth:`Cluster.query`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import sqlalchemy as sa

from linger_sched.store import Store

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(VENV_BIN / "python")
CLI = str(VENV_BIN / "linger-sched")
if not Path(CLI).exists():  # pragma: no cover - a venv always has it; fall back to the module
    CLI = ""

# Short leases, so that failures are noticed in seconds rather than the production defaults.
FAST_ENV = {
    "LINGER_LEASE_TTL": "3s",
    "LINGER_RENEW_INTERVAL": "1s",
    "LINGER_JOB_LEASE_TTL": "3s",
    "LINGER_RESCUE_INTERVAL": "0.5s",
    "LINGER_POLL_INTERVAL": "0.2s",
    "LINGER_TICK_INTERVAL": "1s",
}


def cli_cmd(*args: str) -> list[str]:
    if CLI:
        return [CLI, *args]
    return [PYTHON, "-m", "linger_sched.cli", *args]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; return it. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> float:
        """Send ``sig``; returns the monotonic time it was sent."""
        t = time.monotonic()
        if self.alive():
            self.popen.send_signal(sig)
        return t

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Cluster:
    """Processes sharing one database/prefix, started in ``workdir`` with a common environment."""

    def __init__(self, workdir: Path, db_url: str, prefix: str, **env: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.prefix = prefix
        backend = sa.engine.make_url(db_url).get_backend_name()
        self.label = "mariadb" if backend in ("mysql", "mariadb") else backend
        base = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
        base.update(FAST_ENV)
        base.update(
            LINGER_DATABASE_URL=db_url,
            LINGER_TABLE_PREFIX=prefix,
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        base.update(env)
        self.env = base
        self.procs: list[Proc] = []
        self._store: Store | None = None
        self._counter = Counter[str]()

    # -- files ------------------------------------------------------------------------------
    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    @property
    def results(self) -> Path:
        return self.workdir / "results.txt"

    def result_lines(self) -> list[list[str]]:
        if not self.results.exists():
            return []
        return [line.split() for line in self.results.read_text().splitlines() if line.strip()]

    # -- processes --------------------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str], **env: str) -> Proc:
        self._counter[name] += 1
        tag = name if self._counter[name] == 1 else f"{name}-{self._counter[name]}"
        log_path = self.workdir / f"{tag}.log"
        full_env = dict(self.env, **env)
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv), cwd=self.workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        proc = Proc(tag, popen, log_path)
        self.procs.append(proc)
        return proc

    def cli(self, name: str, *args: str, **env: str) -> Proc:
        return self.start(name, cli_cmd(*args), **env)

    def run_cli(self, *args: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a short CLI command to completion (enqueue, db init, a burst worker)."""
        out = subprocess.run(
            cli_cmd(*args), cwd=self.workdir, env=dict(self.env, **env), capture_output=True, text=True, timeout=timeout,
        )
        if out.returncode != 0:
            raise AssertionError(f"linger-sched {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def by_pid(self, pid: int) -> Proc:
        for p in self.procs:
            if p.pid == pid:
                return p
        raise KeyError(pid)

    def logs(self) -> str:
        parts = []
        for p in self.procs:
            status = "running" if p.alive() else f"exit {p.popen.returncode}"
            parts.append(f"===== {p.name} (pid {p.pid}, {status}) =====\n{p.log()}")
        return "\n".join(parts)

    def close(self) -> None:
        """Kill every process this cluster started that is still running (its whole group)."""
        for p in self.procs:
            if p.alive():
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                except PermissionError:  # pragma: no cover
                    p.popen.kill()
        for p in self.procs:
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self._store is not None:
            self._store.dispose()
            self._store = None

    # -- database ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_url, table_prefix=self.prefix)
        return self._store

    def query(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        """Plain SQL on this cluster's tables: ``{p}`` in ``sql`` is the table prefix."""
        text = sa.text(sql.replace("{p}", self.prefix))
        return self.store._tx(lambda c: list(c.execute(text, params)))

    def job(self, job_id: int) -> Any:
        return self.store.get_job(job_id)

    def all_jobs(self, **filters: Any) -> list[Any]:
        return self.store.list_jobs(None, 0, newest_first=False, **filters)

    def leader(self) -> Any:
        return self.store.get_lease("leader")

    def leader_pid(self) -> int | None:
        lease = self.leader()
        if lease is None or lease.holder is None:
            return None
        return holder_pid(lease.holder)


def holder_pid(node_id: str) -> int:
    """The pid in a node id ``host:pid:random``."""
    return int(node_id.rsplit(":", 2)[1])


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass
class OccurrenceAudit:
    """Every fire time of an interval schedule between its first and last occurrence row."""

    expected: int  # fire times anchor + k·every from the first row's to the last row's
    seen: int  # distinct fire times among the rows
    duplicated: int  # rows beyond one per fire time
    missing: list[datetime]
    misaligned: list[datetime]
    first: datetime | None
    last: datetime | None

    def line(self) -> str:
        return (f"expected {self.expected} / seen {self.seen} (rows {self.seen + self.duplicated}) / duplicated {self.duplicated} / "
                f"missing {len(self.missing)} / misaligned {len(self.misaligned)}")


def audit_occurrences(scheduled: Iterable[datetime], anchor: datetime, every: timedelta) -> OccurrenceAudit:
    """Compare the scheduled_for values of a schedule's rows with anchor + k·every."""
    times = sorted(utc(t) for t in scheduled)
    counts = Counter(times)
    if not times:
        return OccurrenceAudit(0, 0, 0, [], [], None, None)
    anchor = utc(anchor)
    misaligned = [t for t in counts if (t - anchor) % every != timedelta(0)]
    first, last = times[0], times[-1]
    k0 = (first - anchor) // every
    k1 = (last - anchor) // every
    expected_times = [anchor + k * every for k in range(k0, k1 + 1)]
    missing = [t for t in expected_times if t not in counts]
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    return OccurrenceAudit(len(expected_times), len(counts), duplicated, missing, misaligned, first, last)


def task_module(extra: str = "") -> str:
    """A task module for the CLI processes: tasks that log one line per run to results.txt.

    Each line is ``<job id> <scheduled_for or -> <attempt> <pid> <unix time>``, written with O_APPEND in a
    single write so lines of concurrent processes never interleave."""
    return textwrap.dedent(
        '''
        import os
        import time

        from linger_sched import current_job, default_app, task

        RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.txt")


        def record(*extra):
            job = current_job()
            when = job.scheduled_for.isoformat() if job.scheduled_for else "-"
            line = " ".join(str(x) for x in (job.id, when, job.attempt, os.getpid(), f"{time.time():.3f}", *extra)) + "\\n"
            fd = os.open(RESULTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


        @task
        def mark():
            record()


        @task(max_attempts=3)
        def slow(seconds):
            time.sleep(seconds)
            record()


        @task(max_attempts=3)
        def slow_first_attempt(seconds):
            """Sleeps ``seconds`` on its first attempt only."""
            if current_job().attempt == 1:
                time.sleep(seconds)
            record()
        '''
    ) + textwrap.dedent(extra)


def fresh_copy(tmp_path: Path, name: str = "linger-sched") -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored), in
    ``tmp_path / name``: for tests that follow the README or the tutorial from a clone."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    copy = tmp_path / name
    for entry in filter(None, listed):
        source = REPO / entry
        if source.is_file():
            (copy / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / entry)
    return copy
