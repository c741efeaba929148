"""``--log-format json`` (or ``LINGER_LOG_FORMAT=json``) for log shippers (issue 14): the real
console script writes one JSON object per stderr line, with the record's action and job fields;
``text`` stays the default; a bad format is a usage error naming where it came from."""

from __future__ import annotations

import json
from typing import Any

from cli_support import Cli
from linger_sched.store import Store


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines
    return [json.loads(ln) for ln in lines]  # every line is one JSON object


def test_worker_logs_one_json_object_per_line(cli: Cli, store: Store) -> None:
    ok = int(cli.invoke("enqueue", "add", "--import", "clijobs", "--args", "[2, 3]").out.split()[-1])
    bad = int(cli.invoke("enqueue", "explode", "--import", "clijobs").out.split()[-1])
    r = cli.run("worker", "--burst", "--import", "clijobs", "--log-format", "json")
    assert r.code == 0, r
    docs = json_lines(r.err)
    for doc in docs:
        assert list(doc)[:8] == ["time", "level", "logger", "message", "action", "job_id", "task", "attempt"]
        assert doc["time"].endswith("+00:00") and isinstance(doc["action"], str)
    by_action = {d["action"]: d for d in docs}
    assert {"node_started", "succeeded", "failed", "node_stopped"} <= set(by_action)
    assert (by_action["succeeded"]["job_id"], by_action["succeeded"]["task"], by_action["succeeded"]["attempt"]) == (ok, "add", 1)
    assert by_action["succeeded"]["level"] == "INFO"  # successes are visible at the default level
    assert (by_action["failed"]["job_id"], by_action["failed"]["task"], by_action["failed"]["level"]) == (bad, "explode", "WARNING")
    assert "kaboom from explode" in by_action["failed"]["message"]


def test_the_environment_chooses_json_and_the_flag_wins(cli: Cli, store: Store) -> None:
    env_json = Cli(cli.cwd, {**cli.linger_env, "LINGER_LOG_FORMAT": "json"})
    cli.invoke("enqueue", "add", "--import", "clijobs", "--args", "[1, 1]")
    r = env_json.run("worker", "--burst", "--import", "clijobs")
    assert r.code == 0, r
    assert any(d["action"] == "succeeded" for d in json_lines(r.err))
    cli.invoke("enqueue", "add", "--import", "clijobs", "--args", "[1, 2]")
    r = env_json.run("--log-format", "text", "worker", "--burst", "--import", "clijobs")  # before the command too
    assert r.code == 0, r
    assert not any(ln.startswith("{") for ln in r.err.splitlines())
    assert " INFO linger_sched.worker: job " in r.err and " succeeded in " in r.err


def test_a_bad_log_format_is_a_usage_error(nodb_cli: Cli) -> None:
    r = Cli(nodb_cli.cwd, {**nodb_cli.linger_env, "LINGER_LOG_FORMAT": "xml"}).invoke("jobs")
    assert r.code == 2 and "LINGER_LOG_FORMAT" in r.err and "use one of text, json" in r.err
    r = nodb_cli.invoke("jobs", "--log-format", "xml")
    assert r.code == 2 and "--log-format" in r.err


SLOW_TASKS = '''
import time

from linger_sched import task


@task(name="slow")
def slow():
    time.sleep(60)
'''


def test_shutdown_notices_are_json_lines_too(cli: Cli, store: Store) -> None:
    """With --log-format json the first and second signal's notices are only their log
    records (``shutdown_wait``, ``shutdown_forced``): no plain text among the JSON lines."""
    import signal
    import subprocess
    import time

    cli.write("slowjobs.py", SLOW_TASKS)
    job_id = int(cli.invoke("enqueue", "slow", "--import", "slowjobs").out.split()[-1])
    node = cli.popen("worker", "--import", "slowjobs", "--log-format", "json")
    try:
        deadline = time.monotonic() + 30
        while store.get_job(job_id).state != "running":
            assert node.poll() is None and time.monotonic() < deadline, node.communicate()
            time.sleep(0.1)
        time.sleep(0.5)  # claimed is not yet started: let its thread pick it up (the notice lists started jobs)
        node.send_signal(signal.SIGINT)
        time.sleep(1.0)
        node.send_signal(signal.SIGINT)
        _out, err = node.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        node.kill()
        raise
    assert node.returncode == 1, err
    actions = [d["action"] for d in json_lines(err)]
    assert "shutdown_wait" in actions and "shutdown_forced" in actions
    assert store.get_job(job_id).state == "queued"
