"""Every example in README.md and docs/ runs (issue 15), checked through the marker on the line
before each fenced block:

- ``<!-- example: PATH[::NAME] -->`` (any language): the block is exactly that file, or the
  lines of its top-level function or class NAME, decorators included; a test elsewhere runs that file.
- ``<!-- peer: NAME -->`` (Python only): another library's code, shown for comparison on the
  migration page; it must compile (the page's own test runs our side of it).
- Shell blocks (sh, bash, console, crontab) carry one of
  - ``<!-- sh: run -->``: run here with ``bash -e`` in a scratch directory (a copy of the repo's
    examples/ and schedules.yaml, SQLite, no LINGER_* environment, ``.venv`` the test's virtualenv);
    it must exit 0.
  - ``<!-- sh: each -->``: a list of commands: each line runs on its own; it must exit 0, or 1
    (a runtime error such as "no job 42"), or still be running after a few seconds (a node, a
    server), and never print a traceback or a usage error.
  - ``<!-- sh: serve -->``: each line is a long-running command that must still be running, with
    no traceback, after a few seconds (then it gets SIGINT).
  - ``<!-- sh: transcript -->``: a console session: each ``$ command`` runs as under ``each``,
    and every table header line it shows (CAPITALS only) is in the command's real output. A
    ``$ echo $?`` after a command fixes its exit status; ``(exit 0, 1 or 2)`` in the marker allows
    those statuses (a health check's answer depends on the moment).
  - ``<!-- sh: checked by PATH -->``: a test (or .ci/run) at PATH runs these commands: every
    command line of the block is in that file verbatim.
  - ``<!-- sh: extracted by PATH -->``: the test at PATH reads the blocks from this page itself
    (the tutorial) and runs them.
  - ``<!-- sh: not run: REASON -->``: the one exception (benchmarks that take many minutes, a
    PyPI install of a release): reported with its reason in the count test's output.

``pip install X`` in a block run here becomes ``pip install --dry-run --no-index X``: the
requirement must resolve from what is installed (nothing is downloaded), and every extra it
names must be one pyproject.toml defines. The fast tests check the markers and the verbatim
copies; the ``slow`` ones run the shell blocks on SQLite."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from linger_sched import Linger

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(?P<kind>example|peer|sh|fires):\s*(?P<arg>.*?)\s*-->\s*$")
SHELL = {"sh", "bash", "shell", "console", "crontab"}
PYTHON = {"python", "py", "python3"}
SH_MODES = ("run", "each", "serve", "transcript", "checked by ", "extracted by ", "not run: ")
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    body: str
    kind: str | None  # the marker's kind ("example", "peer", "sh", "fires") or None
    arg: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def mode(self) -> str:
        return next((m for m in SH_MODES if self.kind == "sh" and self.arg.startswith(m)), "no marker").strip()


def blocks_of(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        indent = m.group("indent")
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m.group("body").splitlines(keepends=True))
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(before)
        found.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group("lang").lower(), body,
                           marker.group("kind") if marker else None, marker.group("arg") if marker else ""))
    return found


BLOCKS = [b for page in PAGES for b in blocks_of(page)]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]


def example_source(spec: str) -> str:
    """The text an ``<!-- example: PATH[::NAME] -->`` marker stands for."""
    path, _, name = spec.partition("::")
    text = (ROOT / path).read_text(encoding="utf-8")
    if not name:
        return text
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])  # with its decorators
            return "".join(text.splitlines(keepends=True)[first - 1:node.end_lineno])
    raise AssertionError(f"{path} has no top-level {name}")


def commands(block: Block) -> list[str]:
    """The command lines of a shell block: comments and blank lines dropped, a trailing comment
    cut, continuation lines joined; a transcript's ``$ `` lines only; a crontab line's command."""
    lines: list[str] = []
    pending = ""
    for raw in block.body.splitlines():
        line = raw.rstrip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if block.lang == "crontab":
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            line = line.split(None, 5)[5]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = re.sub(r"\s+#\s.*$", "", line).rstrip()  # a trailing "  # comment"
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((pending + line).strip())
        pending = ""
    return lines


# -- the markers and the verbatim copies (fast) -----------------------------------------------------
def test_the_pages_have_blocks_to_check() -> None:
    assert "docs/tutorial.md" in PAGES and "README.md" in PAGES
    assert len(BLOCKS) > 100 and len(SHELL_BLOCKS) > 30


@pytest.mark.parametrize("page", PAGES)
def test_every_python_and_shell_block_has_a_marker(page: str) -> None:
    missing = [f"{b.where} ```{b.lang}" for b in BLOCKS if b.page == page and
               ((b.lang in PYTHON and b.kind not in ("example", "peer")) or
                (b.lang in SHELL and not (b.kind == "sh" and b.arg.startswith(SH_MODES))))]
    assert not missing, "blocks without a marker saying how a test runs them:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES)
def test_example_blocks_are_the_files_verbatim(page: str) -> None:
    for b in (b for b in BLOCKS if b.page == page and b.kind == "example"):
        assert b.body == example_source(b.arg), f"{b.where}: the block is not {b.arg} as it is now"


def test_peer_code_compiles() -> None:
    for b in (b for b in BLOCKS if b.kind == "peer"):
        assert b.lang in PYTHON, f"{b.where}: a peer marker on a {b.lang} block"
        ast.parse(b.body, filename=b.where)


def test_checked_blocks_are_in_the_test_that_runs_them() -> None:
    for b in SHELL_BLOCKS:
        if b.kind != "sh" or not b.arg.startswith(("checked by ", "extracted by ")):
            continue
        path = ROOT / b.arg.split(" by ", 1)[1].strip()
        assert path.is_file(), f"{b.where}: {path} does not exist"
        text = path.read_text(encoding="utf-8")
        if b.arg.startswith("extracted by "):
            assert b.page in text, f"{b.where}: {path.name} does not read {b.page}"
            continue
        for command in commands(b):
            assert command in text, f"{b.where}: {command!r} is not in {path.relative_to(ROOT)}"


def test_the_examples_executed_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the numbers the closing note of issue 15 quotes (``pytest -s`` shows them)."""
    files = {b.arg.partition("::")[0] for b in BLOCKS if b.kind == "example"}
    by_mode: dict[str, int] = {}
    for b in SHELL_BLOCKS:
        by_mode[b.mode] = by_mode.get(b.mode, 0) + 1
    not_run = [f"{b.where}: {b.arg}" for b in SHELL_BLOCKS if b.mode == "not run:"]
    with capsys.disabled():
        print(f"\n{len(PAGES)} pages; {sum(b.kind == 'example' for b in BLOCKS)} blocks copied from "
              f"{len(files)} example files; {sum(b.kind == 'peer' for b in BLOCKS)} peer blocks compiled; "
              f"{len(SHELL_BLOCKS)} shell blocks: {by_mode}; not run: {not_run}")
    assert len(not_run) <= 3, "more than a few shell blocks are not run: run them"


# -- running the shell blocks (slow) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a user has after a first node ran in the repo: the examples, schedules.yaml, and
    ./linger.db with its tables, the example schedules and jobs 1 to 45 or so (a ``jobs show 42``
    finds one)."""
    work = tmp_path_factory.mktemp("docs") / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    shutil.copy(ROOT / "schedules.yaml", work / "schedules.yaml")
    status, out = run_line(f"{BIN / 'linger-sched'} run", work, alive_for=5.0)
    assert status is None and "became leader" in out, out
    app = Linger(f"sqlite:///{work / 'linger.db'}")
    app.enqueue_many("examples.tasks.send_email", [(f"user{i}@example.com", "Hello") for i in range(45)])
    app.store.dispose()
    return work


def scratch(template: Path, tmp_path: Path, block: Block) -> Path:
    """A copy of the template; without schedules.yaml when the marker says so (a project of the
    user's own, where the repo's example schedules.yaml would name tasks it does not have)."""
    work = tmp_path / "work"
    shutil.copytree(template, work)
    (work / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # the README's .venv/bin/...
    if "without schedules.yaml" in block.arg:
        (work / "schedules.yaml").unlink()
    return work


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])


def offline_pip(command: str) -> str:
    """``pip install X`` resolved against what is installed: nothing downloaded, every extra real."""
    def rewrite(m: re.Match[str]) -> str:
        args = m.group(2)
        for extras in re.findall(r"linger-sched\[([^\]]*)\]", args):
            unknown = {e.strip() for e in extras.split(",")} - EXTRAS
            assert not unknown, f"{command!r}: pyproject.toml has no extra {sorted(unknown)}"
        return f"{BIN}/python -m pip install --dry-run --no-index --quiet {args}"
    return re.sub(r"(?:\S*/)?(pip install)((?:\s+(?!&&|\|\||;)\S+)+)", rewrite, command)


def run_line(command: str, cwd: Path, *, alive_for: float = 6.0) -> tuple[int | None, str]:
    """Run one command; return (exit status or None if still running ``alive_for`` seconds after its
    first line of output, output). Counting from the first line, not the start, keeps the interrupt out
    of a slow start-up's imports on a loaded machine (a traceback there would be ours, not the command's)."""
    proc = subprocess.Popen(["bash", "-c", offline_pip(command)], cwd=cwd, env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    spoke = threading.Event()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.append(line)
            spoke.set()
        spoke.set()

    reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
    reader.start()
    spoke.wait(timeout=60)
    try:
        proc.wait(timeout=alive_for)
        reader.join(timeout=10)
        return proc.returncode, "".join(lines)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        return None, "".join(lines)


# commands that serve until stopped; every other command shown in the docs must finish on its own
SERVES = re.compile(r"\blinger(?:-sched)?\s+(?:run|dashboard)\b|\brunserver\b|\bgunicorn\b|\buvicorn\b")


def run_shown(command: str, cwd: Path) -> tuple[int | None, str]:
    """A server runs for a few seconds and is stopped (status None); any other command must finish
    (on a loaded machine a ``pytest`` run took more than 6 s and was interrupted mid-import)."""
    if SERVES.search(command):
        return run_line(command, cwd)
    status, out = run_line(command, cwd, alive_for=180.0)
    assert status is not None, f"{command!r} was still running after 180 s; the page shows it finishing:\n{out}"
    return status, out


# what a runtime error (exit 1) of a command shown in the docs must never say: the example is broken
BROKEN = re.compile(r"cannot import|No module named|tables .* missing|no such (table|option|command)|"
                    r"not registered|command not found|Traceback \(most recent call last\)|Usage:|Error: ")


def assert_sane(where: str, command: str, status: int | None, out: str) -> None:
    """Still running, exit 0, or exit 1 for a reason of the data (``no job 42``), never a broken example."""
    assert status in (None, 0, 1), f"{where}: {command!r} exited {status}:\n{out}"
    assert "Traceback (most recent call last)" not in out, f"{where}: {command!r}:\n{out}"
    assert "Usage:" not in out or "--help" in command, f"{where}: {command!r} is not a valid command line:\n{out}"
    assert status != 1 or not BROKEN.search(out), f"{where}: {command!r} is broken as written:\n{out}"


def runnable(*modes: str) -> list[Block]:
    return [b for b in SHELL_BLOCKS if b.kind == "sh" and b.mode in modes]


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable("run"), ids=lambda b: b.where)
def test_run_blocks_exit_0(block: Block, template: Path, tmp_path: Path) -> None:
    work = scratch(template, tmp_path, block)
    script = "\n".join(offline_pip(c) for c in commands(block))
    p = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=environment(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"{block.where} exited {p.returncode}:\n{script}\n{p.stdout}{p.stderr}"
    assert "Traceback (most recent call last)" not in p.stdout + p.stderr, f"{block.where}:\n{p.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable("each", "transcript"), ids=lambda b: b.where)
def test_each_command_runs(block: Block, template: Path, tmp_path: Path) -> None:
    work = scratch(template, tmp_path, block)
    if "manage.py" in block.body:  # the Django example's commands run in its project directory
        work = work / "examples" / "django_app"
    shown = [line.strip() for line in block.body.splitlines() if re.fullmatch(r"[A-Z_]+(?:\s{2,}[A-Z_]+)+", line.strip())]
    shown_status = re.findall(r"^\$ (.+)\n(?:(?!\$ ).*\n)*?\$ echo \$\?\n(\d+)$", block.body, re.M)
    expected = {command: int(status) for command, status in shown_status}  # "$ echo $?" after it shows
    allowed = {int(n) for n in re.findall(r"\d+", block.arg.partition("exit")[2])}  # "(exit 0, 1 or 2)"
    outputs = ""
    for command in commands(block):
        if command == "echo $?":
            continue
        status, out = run_shown(command, work)
        if command in expected:
            assert status == expected[command], f"{block.where}: {command!r} exited {status}, the page shows " \
                                                f"{expected[command]}:\n{out}"
        elif status in allowed:
            assert "Traceback (most recent call last)" not in out, f"{block.where}: {command!r}:\n{out}"
        else:
            assert_sane(block.where, command, status, out)
        outputs += out
    for header in shown:
        assert re.sub(r"\s+", " ", header) in re.sub(r"\s+", " ", outputs), \
            f"{block.where}: the header {header!r} is not in the real output:\n{outputs}"


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable("serve"), ids=lambda b: b.where)
def test_serve_blocks_keep_running(block: Block, template: Path, tmp_path: Path) -> None:
    for n, command in enumerate(commands(block)):
        work = scratch(template, tmp_path / str(n), block)
        started = time.monotonic()
        status, out = run_line(command, work)
        assert status is None, f"{block.where}: {command!r} exited {status} after {time.monotonic() - started:.1f}s:\n{out}"
        assert "Traceback (most recent call last)" not in out, f"{block.where}: {command!r}:\n{out}"
