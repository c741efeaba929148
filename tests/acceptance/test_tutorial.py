"""docs/tutorial.md, followed for real as a new user would: in an empty temporary directory,
with ``tasks.py`` copied from examples/tutorial/, every ``sh`` block of the page run by bash in
order (the first, mkdir + venv + pip install, really, beside a fresh copy of the repository), and the
outputs the page promises checked — each promised text is also checked to be on the page.
SQLite only (the tutorial's database); marked slow: it waits for real time (~20 s)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import fresh_copy

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorial.md"
TASKS = ROOT / "examples" / "tutorial" / "tasks.py"

pytestmark = pytest.mark.slow


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promised(page: str, output: str, *texts: str) -> None:
    """Each of ``texts`` is in the command's ``output`` and is what the page says."""
    for text in texts:
        assert text in page, f"the test checks {text!r}, which docs/tutorial.md does not show"
        assert text in output, f"docs/tutorial.md promises {text!r}; the commands printed:\n{output}"


def test_the_tutorial_works_as_written(tmp_path: Path) -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert f"<!-- example: examples/tutorial/tasks.py -->\n```python\n{TASKS.read_text(encoding='utf-8')}```" in page
    blocks = sh_blocks(page)
    setup, run, listing, one_off, retry1, retry2, dashboard = blocks  # the page's seven shell blocks
    # 1. install, beside a fresh clone named as git names it, in a virtualenv of its own
    fresh_copy(tmp_path, "linger-sched")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINGER_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != Path(sys.executable).parent.resolve())
    p = subprocess.run(["bash", "-e", "-c", setup], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{setup!r} exited {p.returncode}:\n{p.stdout}{p.stderr}"
    work = tmp_path / "linger-tutorial"
    shutil.copy(TASKS, work / "tasks.py")
    env["PATH"] = f"{work / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"  # what `. .venv/bin/activate` does
    env["VIRTUAL_ENV"] = str(work / ".venv")

    def bash(block: str, ok: tuple[int, ...] = (0,)) -> str:
        p = subprocess.run(["bash", "-e", "-c", block], cwd=work, env=env, capture_output=True, text=True,
                           timeout=60)
        out = p.stdout + p.stderr
        assert p.returncode in ok, f"{block!r} exited {p.returncode}:\n{out}"
        return out

    # 3. the node runs the recurring job (timeout sends SIGINT after 8 s: exit status 124)
    out = bash(run, ok=(124,))
    promised(page, out, "schedules synced: {'added': ['tasks.tick']}", "became leader (epoch 1)",
             "released the leader lease", "started (scheduler,worker) on sqlite:///linger.db")
    assert out.count("WARNING tutorial: tick scheduled for") >= 2, out
    assert (work / "linger.db").exists()
    out = bash(listing)
    promised(page, out, "tasks.tick  succeeded  default  1/3", "tasks.tick  active", "every 5 seconds")

    # 4. a one-off job
    out = bash(one_off)
    promised(page, out, "ran 1 job in", "1 succeeded, 0 failed", "result            sent to ann@example.com",
             "state             succeeded")

    # 5. a retry
    out = bash(retry1)
    promised(page, out, "0 succeeded, 0 failed, 1 retried",
             "last error: ConnectionError: the partner API is down (attempt 1)")
    assert re.search(r"tasks\.flaky_sync\s+queued\s+default\s+1/3", out), out
    out = bash(retry2)
    assert re.search(r"tasks\.flaky_sync\s+succeeded\s+default\s+2/3", out), out

    # 6. the dashboard (on a free port rather than 8765, which another run may hold), one GET each
    assert dashboard.strip() == "linger-sched dashboard"
    port = free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {dashboard.strip()} --port {port}"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"linger-sched dashboard on http://127.0.0.1:{port}/", line
        assert "prints `linger-sched dashboard on http://127.0.0.1:8765/`" in page

        def get(path: str) -> str:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                        assert r.status == 200
                        return str(r.read().decode("utf-8"))
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        assert "Overview · linger-sched" in get("/")
        promised(page, get("/schedules"), "tasks.tick", "every 5 seconds")
        jobs = get("/jobs")
        for name in ("tasks.tick", "tasks.send_welcome", "tasks.flaky_sync"):
            assert name in jobs
    finally:
        proc.terminate()
        proc.wait(timeout=30)
