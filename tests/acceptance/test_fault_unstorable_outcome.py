"""One claimed batch: a job whose error the database cannot store as raised (NUL bytes, 200 KB),
one that succeeds and one that runs for two job leases. Each ends exactly once with its own
outcome, and the long job is never rescued by the peer worker while it runs (hardening, 1)."""

from __future__ import annotations

import pytest

from .helpers import Cluster, task_module, wait_for

EXTRA = '''
@task(max_attempts=1)
def unstorable():
    record()
    raise ValueError("NUL \\x00 inside, then " + "x" * 200_000 + " the end")
'''


@pytest.mark.slow
def test_unstorable_error_success_and_long_job_in_one_batch(server_db: str, cluster: Cluster) -> None:
    cluster.write("tasks.py", task_module(EXTRA))
    ids = {}
    for name, args in (("unstorable", "[]"), ("mark", "[]"), ("slow", "[7]")):
        out = cluster.run_cli("enqueue", f"tasks.{name}", "--args", args, "--import", "tasks")
        ids[name] = int(out.stdout.strip().splitlines()[-1])
    # one worker claims the whole batch (job lease 3 s, so the slow job outlives two leases);
    # a peer worker with the same settings would rescue any job whose lock it saw expire
    a = cluster.cli("worker-a", "worker", "--import", "tasks", "--concurrency", "4")
    wait_for(lambda: cluster.job(ids["slow"]).state == "running", 20, 0.1, "worker A to claim the batch")
    b = cluster.cli("worker-b", "worker", "--import", "tasks")
    done = wait_for(
        lambda: all(cluster.job(i).state in ("succeeded", "failed") for i in ids.values()), 30, 0.2,
        "every job to finish",
    )
    assert done
    jobs = {name: cluster.job(i) for name, i in ids.items()}
    assert (jobs["mark"].state, jobs["mark"].attempts) == ("succeeded", 1)
    assert (jobs["slow"].state, jobs["slow"].attempts) == ("succeeded", 1), jobs["slow"].last_error
    bad = jobs["unstorable"]
    assert (bad.state, bad.attempts) == ("failed", 1)
    err = bad.last_error or ""
    assert "\x00" not in err and "NUL  inside" in err and err.endswith("the end") and "bytes truncated" in err
    runs = [int(line[0]) for line in cluster.result_lines()]
    assert sorted(runs) == sorted(ids.values()), "each job ran exactly once"
    assert "rescued job" not in a.log() + b.log()
    assert "Traceback" not in a.log() + b.log()
