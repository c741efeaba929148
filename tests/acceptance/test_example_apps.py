"""The example web apps (issue 12, "an example app per framework ... each with a test that starts
it for real and sees a job run"): examples/flask_app under gunicorn (with and without
``--preload``) and under ``flask run`` (with and without the reloader), examples/fastapi_app under
uvicorn (one process and ``--workers 2``). Each is started with its documented command, gets real
HTTP requests that enqueue, and is watched running the jobs in the web processes' own nodes, one
per process, none in a master or a reloader's parent; stopped with a signal, every node leaves."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .faults import parent_pid
from .helpers import Cluster, Proc, wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def answering(url: str, proc: Proc) -> bool:
    """The server answers HTTP (any status), or has died (then the caller's next assert says so)."""
    if not proc.alive():
        return True
    try:
        http("GET", url)
        return True
    except OSError:
        return False


def run_jobs(cluster: Cluster, base: str, path: str, n: int, log_text: str, proc: Proc) -> list[int]:
    """POST ``path.format(i)`` n times (each enqueues a job), wait until every job succeeded (read
    through the app's own GET /jobs/ID) and the task's log line is there for each; the job ids."""
    ids = []
    for i in range(1, n + 1):
        status, body = http("POST", base + path.format(i))
        assert status == 202, (status, body)
        ids.append(body["job"])
    def succeeded(job_id: int) -> bool:
        return http("GET", f"{base}/jobs/{job_id}")[1] == {"id": job_id, "state": "succeeded", "attempts": 1}

    for job_id in ids:
        wait_for(lambda: succeeded(job_id), 30, 0.1, f"job {job_id} to succeed")  # noqa: B023 - waited for here
    wait_for(lambda: all(log_text.format(i) in proc.log() for i in range(1, n + 1)), 10, 0.1, "the task's log lines")
    return ids


def node_pids(cluster: Cluster) -> list[int]:
    return sorted(n.pid for n in cluster.store.list_nodes())


def stop(proc: Proc, sig: int = signal.SIGTERM) -> int | None:
    proc.signal(sig)
    return proc.wait(45)


def env() -> dict[str, str]:
    return {"PYTHONPATH": str(REPO)}


# -- Flask ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preload", [False, True], ids=["gunicorn", "gunicorn --preload"])
def test_the_flask_example_under_gunicorn_runs_a_node_in_each_worker(cluster: Cluster, preload: bool) -> None:
    import gunicorn.config

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "examples.flask_app.app:create_app()"]
    if preload:
        argv.insert(1, "--preload")
    if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS):
        argv.insert(1, "--no-control-socket")  # gunicorn >= 25: tests running side by side share none
    master = cluster.start("gunicorn", argv, **env())
    wait_for(lambda: answering(f"{base}/", master), 30, 0.2, "gunicorn to answer")
    assert master.alive(), master.log()
    # one node per worker, registered before any request, none in the master
    wait_for(lambda: len(node_pids(cluster)) == 2, 30, 0.1, f"two nodes\n{master.log()}")
    pids = node_pids(cluster)
    assert all(parent_pid(p) == master.pid for p in pids), (pids, master.pid)
    run_jobs(cluster, base, "/signup/{}", 6, "welcome mail to user {} sent", master)
    assert node_pids(cluster) == pids  # requests start no other node
    assert stop(master) == 0, master.log()
    assert node_pids(cluster) == []  # each worker's node stopped gracefully and left
    assert cluster.query("SELECT count(*) FROM {p}jobs WHERE state IN ('queued', 'running')")[0][0] == 0
    assert "Traceback" not in master.log(), master.log()


@pytest.mark.parametrize("reload", [False, True], ids=["flask run", "flask run --reload"])
def test_the_flask_example_under_flask_run(cluster: Cluster, reload: bool) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "flask"), "--app", "examples.flask_app.app", "run", "--port", str(port)]
    if reload:
        argv.append("--reload")
    server = cluster.start("flask", argv, **env())
    wait_for(lambda: answering(f"{base}/", server), 30, 0.2, "flask run to answer")
    assert server.alive(), server.log()
    wait_for(lambda: node_pids(cluster), 30, 0.1, "a node")
    run_jobs(cluster, base, "/signup/{}", 3, "welcome mail to user {} sent", server)
    (pid,) = node_pids(cluster)  # one node: in the serving process only
    assert pid == server.pid if not reload else parent_pid(pid) == server.pid, (pid, server.pid)
    # SIGTERM to the serving process (with --reload the reloader's child; the reloader then exits
    # with its status). Not Ctrl-C to both: Werkzeug's reloader kills its child 0.25 s after a SIGINT.
    os.kill(pid, signal.SIGTERM)
    assert server.wait(45) == 0, server.log()
    assert node_pids(cluster) == []


# -- FastAPI ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_the_fastapi_example_under_uvicorn_runs_its_async_task(cluster: Cluster, workers: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "uvicorn"), "examples.fastapi_app.main:app", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    server = cluster.start("uvicorn", argv, **env())
    wait_for(lambda: len(node_pids(cluster)) == workers or not server.alive(), 30, 0.1, f"{workers} node(s)")
    assert server.alive(), server.log()
    wait_for(lambda: answering(f"{base}/", server), 30, 0.2, "uvicorn to answer")
    run_jobs(cluster, base, "/orders/{}", 4, "receipt for order {} sent", server)
    pids = node_pids(cluster)
    assert pids == [server.pid] if workers == 1 else all(parent_pid(p) == server.pid for p in pids), (pids, server.pid)
    # uvicorn re-raises the signal after its graceful shutdown (exit -15 since 0.29, 0 before)
    assert stop(server) in (0, -signal.SIGTERM), server.log()
    assert server.log().count("Application shutdown complete") == workers, server.log()
    assert node_pids(cluster) == []  # the lifespan stopped each node before the process left
    assert "Traceback" not in server.log(), server.log()
