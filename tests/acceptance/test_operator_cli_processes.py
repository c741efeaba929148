"""The operator's CLI as real processes (issue 14): Ctrl-C with a running job says which job it
waits for, how long at most, and that a second signal forces; ``--wait-db`` waits for a
database that is not there yet (a TCP proxy started later makes it reachable) and gives up
with exit 1 when its time is up. Log records are read as JSON lines (LINGER_LOG_FORMAT=json)
and checked by their ``action``."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from .helpers import Cluster, Proc, holder_pid, task_module, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def actions(proc: Proc) -> list[dict[str, Any]]:
    """The JSON log records a process wrote (its other lines are the CLI's own messages)."""
    out = []
    for line in proc.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_ctrl_c_with_a_running_job_names_it_and_a_second_one_forces(cluster: Cluster, log_format: str) -> None:
    """In text mode the operator reads a notice on stderr; with --log-format json stderr holds
    JSON lines only, and the same details are in the ``shutdown_wait`` / ``shutdown_forced``
    records."""
    cluster.write("tasks.py", task_module())
    out = cluster.run_cli("enqueue", "tasks.slow", "--args", "[60]", "--import", "tasks")
    job_id = int(out.stdout.strip().splitlines()[-1])
    w = cluster.cli("worker", "worker", "--import", "tasks", "--log-format", log_format, LINGER_SHUTDOWN_GRACE="45s")
    job = wait_for(lambda: (j := cluster.job(job_id)).state == "running" and j, 20, 0.05, "the worker to claim the job")
    assert holder_pid(job.locked_by) == w.pid
    time.sleep(1.0)

    sent = w.signal(signal.SIGINT)
    if log_format == "text":
        notice = wait_for(lambda: re.search(r"linger-sched: stopping: .*\n(  .*\n)+", w.log()), 5, 0.05,
                          "the shutdown notice")
        said = time.monotonic() - sent
        text = notice.group(0)
        print(f"\n[{cluster.label}] notice {said:.2f}s after SIGINT:\n{text}")
        assert "waiting up to 45s for 1 running job to finish (after that, unfinished jobs go back to the queue)" in text
        assert "a second Ctrl-C or SIGTERM stops at once" in text
        assert re.search(rf"^  job {job_id}  tasks\.slow  running for \d", text, re.M), text
    else:
        rec = wait_for(lambda: next((r for r in actions(w) if r.get("action") == "shutdown_wait"), None), 5, 0.05,
                       "the shutdown_wait record")
        said = time.monotonic() - sent
        assert rec["level"] == "WARNING" and rec["job_ids"] == [job_id] and rec["grace"] == 45
        assert rec["jobs"][0]["task"] == "tasks.slow" and rec["jobs"][0]["running_for"] >= 0.5  # it slept 1 s after the claim
        assert "a second signal stops at once" in rec["message"]
    assert said < 2.0

    time.sleep(0.5)
    assert w.alive(), "the first signal waits for the job"
    w.signal(signal.SIGINT)
    code = w.wait(10)
    took = time.monotonic() - sent
    assert code == 1 and took < 5.0, (code, took)
    if log_format == "text":
        assert "linger-sched: second signal: stopping now, handing the running jobs back to the queue" in w.log()
    else:
        assert [r["action"] for r in actions(w) if r.get("action", "").startswith("shutdown")] == \
            ["shutdown_wait", "shutdown_forced"]
        lines = [line for line in w.log().splitlines() if line.strip()]
        assert lines and all(line.startswith("{") for line in lines), w.log()  # nothing but JSON on stderr
    assert cluster.job(job_id).state == "queued"


# -- --wait-db ----------------------------------------------------------------------------------
class TcpProxy:
    """Forwards connections on ``port`` (127.0.0.1) to ``target``; started when the test says."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.server: socket.socket | None = None
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.2)
        self.server = s
        self._spawn(self._accept)

    def _spawn(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        assert self.server is not None
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target)
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.stopped.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        if self.server is not None:
            self.server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def via_port(url: str, port: int) -> str:
    return sa.engine.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_run_waits_for_a_database_that_comes_up_later(cluster: Cluster, server_db: str) -> None:
    cluster.write("tasks.py", task_module())
    real = sa.engine.make_url(server_db)
    port = free_port()
    proxy = TcpProxy(port, (real.host or "127.0.0.1", real.port or (5432 if real.get_backend_name() == "postgresql" else 3306)))
    node = cluster.cli("node", "run", "--wait-db", "20s", "--import", "tasks",
                       LINGER_DATABASE_URL=via_port(server_db, port), LINGER_LOG_FORMAT="json")
    try:
        started = time.monotonic()
        waits = wait_for(lambda: len([r for r in actions(node) if r.get("action") == "wait_db"]) >= 2 and actions(node),
                         15, 0.1, "two logged attempts")
        assert node.alive(), node.log()
        proxy.start()
        up = time.monotonic()
        wait_for(lambda: any(r.get("action") == "node_started" for r in actions(node)), 15, 0.1, "the node to start")
        print(f"\n[{cluster.label}] node started {time.monotonic() - up:.2f}s after the database became reachable "
              f"({time.monotonic() - started:.1f}s after the start)")
        attempts = [r for r in actions(node) if r.get("action") == "wait_db"]
        assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1)) and len(waits) >= 2
        assert all(r["level"] == "WARNING" and "unreachable" in r["message"] for r in attempts)
        assert any(r.get("action") == "db_reachable" for r in actions(node))
        assert time.monotonic() - up < 10.0, "the back-off is capped at 5s"
        assert len(cluster.store.list_nodes()) == 1
    finally:
        node.signal(signal.SIGTERM)
        code = node.wait(30)
        proxy.close()
    assert code == 0, node.log()


@pytest.mark.parametrize("command", ["worker", "run"])
def test_wait_db_gives_up_with_exit_1_when_the_time_is_up(cluster: Cluster, server_db: str, command: str) -> None:
    cluster.write("tasks.py", task_module())
    proc = cluster.cli(command, command, "--wait-db", "3s", "--import", "tasks",
                       LINGER_DATABASE_URL=via_port(server_db, free_port()), LINGER_LOG_FORMAT="json")
    code = proc.wait(20)
    took = time.monotonic() - proc.started
    assert code == 1, proc.log()
    assert 3.0 <= took < 10.0, took
    log = proc.log()
    assert re.search(r"linger-sched: error: the database \S+ is still unreachable after 3s \(\d+ attempts; --wait-db\): ", log), log
    assert "Traceback" not in log
    assert len([r for r in actions(proc) if r.get("action") == "wait_db"]) >= 2
    # the password never shows
    password = sa.engine.make_url(server_db).password
    assert not password or password not in log


def test_without_wait_db_an_unreachable_database_fails_at_once(cluster: Cluster, server_db: str) -> None:
    cluster.write("tasks.py", task_module())
    proc = cluster.cli("worker", "worker", "--import", "tasks", LINGER_DATABASE_URL=via_port(server_db, free_port()))
    assert proc.wait(20) == 1, proc.log()
    assert time.monotonic() - proc.started < 8.0
    assert "unreachable" not in proc.log() and "linger-sched: error:" in proc.log()
