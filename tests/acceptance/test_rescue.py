"""A worker killed with SIGKILL mid-job: another worker rescues the job once its lease expires."""

from __future__ import annotations

import signal
import time

from .helpers import Cluster, holder_pid, task_module, wait_for

JOB_LEASE_TTL = 3.0


def test_job_of_a_sigkilled_worker_is_rescued_and_rerun(cluster: Cluster) -> None:
    cluster.write("tasks.py", task_module())
    out = cluster.run_cli("enqueue", "tasks.slow_first_attempt", "--args", "[30]", "--import", "tasks")
    job_id = int(out.stdout.strip().splitlines()[-1])

    a = cluster.cli("worker-a", "worker", "--import", "tasks")
    running = wait_for(lambda: (j := cluster.job(job_id)).state == "running" and j, 20, 0.1, "worker A to claim the job")
    assert holder_pid(running.locked_by) == a.pid
    assert running.attempts == 1

    killed_at = a.signal(signal.SIGKILL)
    assert a.wait(5) == -signal.SIGKILL
    b = cluster.cli("worker-b", "worker", "--import", "tasks")

    done = wait_for(
        lambda: (j := cluster.job(job_id)).state in ("succeeded", "failed") and j,
        JOB_LEASE_TTL + 10, 0.1, "the job to be rescued and finished",
    )
    rescue_time = time.monotonic() - killed_at
    print(f"\n[{cluster.label}] rescue: job {job_id} succeeded {rescue_time:.2f}s after SIGKILL of its worker "
          f"(job lease TTL {JOB_LEASE_TTL:g}s)")

    assert done.state == "succeeded"
    assert done.attempts == 2, "the attempt lost with the killed worker counts"
    assert done.locked_by is None and done.locked_until is None
    assert "lease expired" in (done.last_error or ""), done.last_error
    assert str(a.pid) in (done.last_error or ""), "the error names the dead node"
    assert rescue_time <= JOB_LEASE_TTL + 4.0, f"rescued after {rescue_time:.2f}s"

    runs = [line for line in cluster.result_lines() if int(line[0]) == job_id]
    assert len(runs) == 1, runs  # attempt 1 died in its sleep, before writing
    _, _, attempt, pid, _ = runs[0]
    assert (int(attempt), int(pid)) == (2, b.pid)
    assert "rescued job" in b.log()
