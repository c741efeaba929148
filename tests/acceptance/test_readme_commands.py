"""README.md's first and third commands, run exactly as written in a copy of the repository, as
a new user would paste them: a fresh virtualenv, the package installed from the copy (its
dependencies from the package index), the example schedules.yaml's node running (its heartbeat
job logs within seconds) and stopping on Ctrl-C; then the documentation site built and served.
The second command (the tests) is what .ci/run runs. Slow: two installs (~1-3 min)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import fresh_copy

ROOT = Path(__file__).resolve().parents[2]
INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/linger-sched run"
DOCS = 'python3 -m venv .venv && .venv/bin/pip install -e ".[docs]" && .venv/bin/mkdocs serve'

pytestmark = pytest.mark.slow


def start(command: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINGER_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """The process's output up to the line that holds ``text`` (read by a thread: no hang)."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{text!r} not printed within {timeout}s:\n{seen}") from None
        if line is None:
            raise AssertionError(f"exited {proc.wait()} before printing {text!r}:\n{seen}")
        seen += line
    return seen


def test_the_readme_shows_these_commands_first() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index(INSTALL_AND_RUN) < readme.index(".venv/bin/python -m pytest -q") < readme.index(DOCS)
    assert readme.index(DOCS) < readme.index("\n## "), "the three commands come before the first section"


def test_install_and_run_the_example_schedules_then_serve_the_docs(tmp_path: Path) -> None:
    copy = fresh_copy(tmp_path)
    node = start(INSTALL_AND_RUN, copy)
    try:
        out = read_until(node, "hello from schedules.yaml", timeout=400)
        assert "became leader" in out
    finally:
        os.killpg(node.pid, signal.SIGINT)  # Ctrl-C: a graceful stop
        node.wait(timeout=60)
    assert node.returncode == 0, out
    assert (copy / "linger.db").exists()

    docs = start(DOCS, copy)
    try:
        read_until(docs, "Serving on http://127.0.0.1:8000/", timeout=600)
        with urllib.request.urlopen("http://127.0.0.1:8000/", timeout=30) as page:
            assert page.status == 200 and "linger-sched" in page.read().decode("utf-8")
        with urllib.request.urlopen("http://127.0.0.1:8000/tutorial/", timeout=30) as page:
            assert page.status == 200
    finally:
        os.killpg(docs.pid, signal.SIGINT)
        docs.wait(timeout=60)
