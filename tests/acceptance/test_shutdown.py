"""SIGTERM on a worker: graceful (wait for the job), grace exceeded (hand back), forced (twice)."""

from __future__ import annotations

import signal
import time

from .helpers import Cluster, Proc, holder_pid, task_module, wait_for

HALT_HOOK = '''

HALTED = os.path.join(os.path.dirname(RESULTS), "halted.txt")


@default_app().on_halt
def _on_halt():
    with open(HALTED, "a") as f:
        f.write(f"{os.getpid()} {time.time():.3f}\\n")
'''


def start_with_running_job(cluster: Cluster, seconds: float, grace: str) -> tuple[Proc, int]:
    cluster.write("tasks.py", task_module(HALT_HOOK))
    out = cluster.run_cli("enqueue", "tasks.slow", "--args", f"[{seconds}]", "--import", "tasks")
    job_id = int(out.stdout.strip().splitlines()[-1])
    w = cluster.cli("worker", "worker", "--import", "tasks", LINGER_SHUTDOWN_GRACE=grace)
    job = wait_for(lambda: (j := cluster.job(job_id)).state == "running" and j, 20, 0.05, "the worker to claim the job")
    assert holder_pid(job.locked_by) == w.pid
    return w, job_id


def halted(cluster: Cluster) -> list[list[str]]:
    path = cluster.workdir / "halted.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_waits_for_the_running_job_then_exits_0(cluster: Cluster) -> None:
    w, job_id = start_with_running_job(cluster, 2, "10s")
    sent = w.signal(signal.SIGTERM)
    sent_wall = time.time()
    code = w.wait(15)
    took = time.monotonic() - sent
    print(f"\n[{cluster.label}] graceful: exit {code} {took:.2f}s after SIGTERM (job of 2s)")
    assert code == 0

    job = cluster.job(job_id)
    assert (job.state, job.attempts, job.locked_by) == ("succeeded", 1, None)
    runs = [line for line in cluster.result_lines() if int(line[0]) == job_id]
    assert len(runs) == 1
    finished_wall = float(runs[0][4])
    assert finished_wall > sent_wall, "the job was still running when SIGTERM arrived"
    assert took < 5.0, "the worker exits soon after its last job, not at the end of the grace"

    hooks = halted(cluster)
    assert len(hooks) == 1, "on_halt fires exactly once"
    assert int(hooks[0][0]) == w.pid
    assert float(hooks[0][1]) < finished_wall, "on_halt fires at the signal, before running jobs finish"


def test_grace_exceeded_hands_the_job_back_uncounted(cluster: Cluster) -> None:
    w, job_id = start_with_running_job(cluster, 60, "1s")
    sent = w.signal(signal.SIGTERM)
    code = w.wait(10)
    took = time.monotonic() - sent
    print(f"\n[{cluster.label}] grace exceeded: exit {code} {took:.2f}s after SIGTERM (grace 1s, job of 60s)")
    assert code is not None, "the worker did not exit within 10s of SIGTERM with a 1s grace"
    assert code == 0
    assert took < 4.0

    job = cluster.job(job_id)
    assert job.state == "queued", "handed back"
    assert job.attempts == 0, "the interrupted attempt is not counted"
    assert job.locked_by is None and job.locked_until is None
    assert "handed back" in (job.last_error or "")
    assert not [line for line in cluster.result_lines() if int(line[0]) == job_id]
    assert len(halted(cluster)) == 1


def test_second_sigterm_forces_a_prompt_exit(cluster: Cluster) -> None:
    w, job_id = start_with_running_job(cluster, 60, "60s")
    sent = w.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert w.alive(), "with a 60s grace the first SIGTERM waits for the job"
    w.signal(signal.SIGTERM)
    code = w.wait(10)
    took = time.monotonic() - sent
    print(f"\n[{cluster.label}] forced: exit {code} {took:.2f}s after the first SIGTERM (grace 60s, job of 60s)")
    assert code is not None, "a second SIGTERM did not force an exit within 10s"
    assert code == 1, "a forced stop exits 1"
    assert took < 4.0

    job = cluster.job(job_id)
    assert (job.state, job.attempts, job.locked_by) == ("queued", 0, None), "handed back on a forced stop too"
    assert len(halted(cluster)) == 1
