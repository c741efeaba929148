"""SQLite under contention: two processes each work (8 threads) while enqueueing from 8 threads."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from .helpers import PYTHON, Cluster, wait_for

SELECTED = [d.strip() for d in os.environ.get("LINGER_TEST_DATABASES", "sqlite,postgresql,mariadb").split(",") if d.strip()]

PER_PROCESS = 1500
PRODUCERS = 8

SCRIPT = '''
import logging
import os
import sys
import threading
import time
import traceback

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")

from linger_sched import Linger, current_job

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.txt")
TAG, N, TOTAL, PRODUCERS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

app = Linger()  # LINGER_DATABASE_URL, LINGER_TABLE_PREFIX from the environment


@app.task(name="noop")
def noop(item):
    line = f"{current_job().id} {item} {os.getpid()}\\n"
    fd = os.open(RESULTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


errors = []


def produce(k):
    try:
        for n in range(k, N, PRODUCERS):
            app.enqueue("noop", f"{TAG}-{n}")
    except BaseException:
        errors.append(traceback.format_exc())


app.start(concurrency=8)  # worker threads (and a scheduler and housekeeping) in the background
open(os.path.join(HERE, f"ready-{TAG}"), "w").close()
while not os.path.exists(os.path.join(HERE, "go")):
    time.sleep(0.01)
started = time.monotonic()
threads = [threading.Thread(target=produce, args=(k,), name=f"producer-{k}") for k in range(PRODUCERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"{TAG}: enqueued {N} in {time.monotonic() - started:.2f}s", file=sys.stderr)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if app.store.count_by_state().get("succeeded", 0) >= TOTAL:
            break
    except Exception:
        errors.append(traceback.format_exc())
    time.sleep(0.2)
else:
    errors.append("not every job succeeded within 120s")
print(f"{TAG}: all done after {time.monotonic() - started:.2f}s", file=sys.stderr)
app.stop(grace=10)
for e in errors:
    print(f"{TAG}: ERROR {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
'''


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only (this test is about SQLite's single writer), unless deselected."""
    if "sqlite" not in SELECTED:
        pytest.skip("sqlite not in LINGER_TEST_DATABASES")
    return f"sqlite:///{tmp_path / 'linger.db'}"


@pytest.mark.slow
def test_two_busy_processes_share_one_sqlite_file(cluster: Cluster) -> None:
    cluster.write("busy.py", SCRIPT)
    total = 2 * PER_PROCESS
    procs = [
        cluster.start(f"busy-{tag}", [PYTHON, "busy.py", tag, str(PER_PROCESS), str(total), str(PRODUCERS)])
        for tag in ("a", "b")
    ]
    wait_for(lambda: all((cluster.workdir / f"ready-{t}").exists() for t in ("a", "b")) or
             any(not p.alive() for p in procs), 30, 0.05, "both processes to start")
    (cluster.workdir / "go").touch()
    codes = [p.wait(150) for p in procs]

    logs = {p.name: p.log() for p in procs}
    lines = cluster.result_lines()
    ids = Counter(int(line[0]) for line in lines)
    items = Counter(line[1] for line in lines)
    per_pid = Counter(int(line[2]) for line in lines)
    states = cluster.store.count_by_state()
    print(f"\n[{cluster.label}] sqlite contention: {len(lines)} runs of {total} jobs, {len(ids)} distinct ids, "
          f"runs per process {dict(per_pid)}, states {states}")
    for p in procs:
        print("  " + " | ".join(line for line in p.log().splitlines() if "enqueued" in line or "all done" in line))

    assert codes == [0, 0], codes
    for name, text in logs.items():
        assert "database is locked" not in text, name
        assert "Traceback" not in text, name
        assert " ERROR " not in text, name
        assert "StoreError" not in text, name
    assert states == {"succeeded": total}
    assert len(lines) == total, "every job ran exactly once"
    assert len(ids) == total and set(ids.values()) == {1}
    assert len(items) == total and set(items.values()) == {1}
    assert set(items) == {f"{t}-{n}" for t in ("a", "b") for n in range(PER_PROCESS)}
    assert set(per_pid) <= {p.pid for p in procs}
