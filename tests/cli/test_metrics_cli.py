"""``linger-sched run --metrics-port`` / ``worker --metrics-port``: /metrics and /healthz served
by a thread of the node; a port in use, a bad port or a missing prometheus-client is a usage
error (exit 2) before the node starts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli_support import Cli, script
from linger_sched.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def wait_answering(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:g}s")


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_node_serves_metrics_and_health(cli: Cli, store: Store, command: str) -> None:
    assert cli.invoke("enqueue", "add", "--args", "[1, 2]", "--import", "clijobs").code == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cli.env["LINGER_METRICS_TTL"] = "0"  # every scrape reads the database: the job's success shows at once
    node = cli.popen(command, "--import", "clijobs", "--metrics-port", str(port))
    try:
        wait_answering(f"{base}/metrics", node)
        deadline = time.monotonic() + 30
        while not store.list_jobs("succeeded") and time.monotonic() < deadline:
            time.sleep(0.1)
        status, content_type, body = get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
        assert 'linger_queue_jobs{queue="default",state="succeeded"} 1.0' in body, body
        assert "linger_scrape_error 0.0" in body
        status, content_type, body = get(f"{base}/healthz")
        assert status in (200, 503) and content_type == "application/json"
        assert json.loads(body)["status"] in ("healthy", "degraded", "unhealthy")
        assert get(f"{base}/nothing-here")[0] == 404
        # OpenMetrics when Prometheus asks for it
        req = urllib.request.Request(f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert resp.read().decode().rstrip().endswith("# EOF")
    finally:
        out, err = stop(node)
    assert node.returncode == 0, (out, err)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err
    with pytest.raises(OSError):  # the server stopped with the node
        get(f"{base}/metrics")


def test_a_port_in_use_is_a_usage_error_before_the_node_starts(cli: Cli, store: Store) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli.run("run", "--import", "clijobs", "--metrics-port", str(port), timeout=60)
    assert r.code == 2, r
    assert f"cannot serve metrics on 127.0.0.1:{port}" in r.err and "in use" in r.err, r
    assert "Traceback" not in r.err
    assert store.list_nodes() == []  # no node started


@pytest.mark.parametrize("args, named", [
    (["--metrics-port", "0"], "--metrics-port"),
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--metrics-port", "http"], "--metrics-port"),
    (["--metrics-port", "9999", "--metrics-host", "no-such-host.invalid"], "cannot serve metrics on no-such-host.invalid"),
])
def test_bad_metrics_options_are_usage_errors(nodb_cli: Cli, args: list[str], named: str) -> None:
    r = nodb_cli.invoke("worker", "--import", "clijobs", *args)
    assert r.code == 2, r
    assert named in r.err, r


def test_without_prometheus_client_the_error_names_the_extra(nodb_cli: Cli, workdir: Path) -> None:
    hidden = workdir / "hide"
    (hidden / "prometheus_client").mkdir(parents=True)
    (hidden / "prometheus_client" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(nodb_cli.env, PYTHONPATH=str(hidden))
    p = subprocess.run([script(), "worker", "--import", "clijobs", "--metrics-port", str(free_port())],
                       cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert 'pip install "linger-sched[metrics]"' in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (workdir / "untouched.db").exists()
