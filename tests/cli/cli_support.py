"""Support code for the CLI tests: a working directory holding a small tasks module, and two ways to
run ``linger-sched`` there: in-process with click's CliRunner (fast; each call gets a fresh
default app, as a new process would) and as the real console script in a subprocess."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

import linger_sched.app as app_module
from linger_sched.cli import main
from linger_sched.store import Store

TASKS_MODULE = "clijobs"
TASKS_SOURCE = '''
from pathlib import Path

from linger_sched import task

HERE = Path(__file__).parent


@task(name="add")
def add(a, b):
    return a + b


@task(name="explode", max_attempts=1)
def explode():
    raise RuntimeError("kaboom from explode")


@task(name="record", max_attempts=1)
def record(tag):
    with open(HERE / "order.txt", "a", encoding="utf-8") as f:
        f.write(f"{tag}\\n")


@task(name="noop")
def noop(*args, **kwargs):
    return None
'''


def script() -> str:
    candidate = Path(sys.executable).with_name("linger-sched")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("linger-sched")
    assert found, "the linger-sched console script is not installed"
    return found


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Cli:
    """Runs linger-sched in ``cwd`` with ``env`` (LINGER_* replaced by ``linger_env``)."""

    def __init__(self, cwd: Path, linger_env: dict[str, str]) -> None:
        self.cwd = cwd
        self.linger_env = linger_env
        base = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
        self.env = {**base, **linger_env}

    # -- in-process ---------------------------------------------------------------------
    def _fresh_process_state(self) -> None:
        old = app_module._default
        if old is not None and old._store is not None:
            old._store.dispose()
        app_module._default = None
        for name, mod in list(sys.modules.items()):  # modules of the work dir are imported afresh
            if str(getattr(mod, "__file__", None) or "").startswith(str(self.cwd)):
                del sys.modules[name]

    def invoke(self, *args: str) -> Outcome:
        self._fresh_process_state()
        unset = {k: None for k in os.environ if k.startswith("LINGER_") and k not in self.linger_env}
        old_cwd, old_path, old_level = os.getcwd(), list(sys.path), logging.getLogger().level
        os.chdir(self.cwd)
        try:
            result = CliRunner().invoke(main, list(args), prog_name="linger-sched", env={**unset, **self.linger_env}, catch_exceptions=True)
        finally:
            os.chdir(old_cwd)
            sys.path[:] = old_path
            logging.getLogger().setLevel(old_level)
            self._fresh_process_state()
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback is a bug: the CLI must print a message
        return Outcome(result.exit_code, result.stdout, result.stderr)

    # -- real console script ------------------------------------------------------------
    def run(self, *args: str, timeout: float = 60) -> Outcome:
        p = subprocess.run([script(), *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        return Outcome(p.returncode, p.stdout, p.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([script(), *args], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path


def tables(store: Store) -> list[str]:
    names = sa.inspect(store.engine).get_table_names()
    return sorted(n for n in names if n.startswith(store.prefix))


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a table printed by the CLI (columns are separated by two or more spaces); the
    indented lines below a row (a job's last error, a schedule's description) are left out."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
    header = re.split(r"\s{2,}", lines[0].strip())
    out = []
    for ln in lines[1:]:
        cells = re.split(r"\s{2,}", ln.strip())
        out.append(dict(zip(header, cells)))
    return out
