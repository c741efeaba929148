"""``linger-sched validate`` on hostile and broken files, every error reported, task arguments
checked, ``--no-import``; and the working directory never shadowing the standard library or a
driver (hardening issue points 11, 5, 9, 15, 16). No database is needed except where noted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import Cli

pytestmark = pytest.mark.timeout(120)


def assert_clean_exit_2(r: object, *fragments: str) -> None:
    code, err = r.code, r.err  # type: ignore[attr-defined]
    assert code == 2, r
    assert "Traceback" not in err, r
    for f in fragments:
        assert f in err, r


# -- point 11: hostile files are errors with file and line, exit 2, no traceback ------------
HEAD = "imports: [clijobs]\nschedules:\n  x:\n    task: noop\n"
HOSTILE = {
    "not UTF-8": ((HEAD + "    cron: '0 0 * * *'\n").encode() + b"    queue: caf\xe9\n", "bad.yaml:6: queue: not UTF-8"),
    "month 13": ((HEAD + "    every: 1h\n    anchor: 2026-13-01\n").encode(), "bad.yaml:6: schedules.x.anchor:"),
    "!!int abc": ((HEAD + "    every: 1h\n    priority: !!int abc\n").encode(), "bad.yaml:6: schedules.x.priority:"),
    "!!bool maybe": ((HEAD + "    every: 1h\n    enabled: !!bool maybe\n").encode(), "bad.yaml:6: schedules.x.enabled:"),
    "!!timestamp foo": ((HEAD + "    every: 1h\n    anchor: !!timestamp foo\n").encode(), "bad.yaml:6: schedules.x.anchor:"),
    "list as a key": (b"imports: [clijobs]\nschedules:\n  [a]: {task: noop, every: 1h}\n", "bad.yaml:3:"),
    "anchor at year 1": ((HEAD + "    every: 1h\n    anchor: 0001-01-01T00:00:00+05:00\n").encode(), "bad.yaml:6: schedules.x.anchor:"),
    "anchor at year 9999": ((HEAD + "    every: 1h\n    anchor: 9999-12-31T23:00:00-05:00\n").encode(), "bad.yaml:6: schedules.x.anchor:"),
    "900 brackets": ((HEAD + "    every: 1h\n    args: " + "[" * 900 + "]" * 900 + "\n").encode(), "bad.yaml:6:"),
    "billion laughs": ((HEAD + "    every: 1h\n    args:\n      - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                        + "".join(f"      - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10))).encode(),
                       "bad.yaml:11: schedules.x.args: aliases"),
    "interval of 5000000 days": ((HEAD + "    every: 5000000d\n").encode(), "bad.yaml:5: schedules.x.every:"),
    "priority beyond 32 bits": ((HEAD + "    every: 1h\n    priority: 2147483648\n").encode(), "bad.yaml:6: schedules.x.priority:"),
    "queue of 65 characters": ((HEAD + "    every: 1h\n    queue: " + "q" * 65 + "\n").encode(), "bad.yaml:6: schedules.x.queue:"),
    "max_catch_up of a million": ((HEAD + "    every: 1h\n    max_catch_up: 1000000\n").encode(), "bad.yaml:6: schedules.x.max_catch_up:"),
    "schedule name of 192 characters": (("imports: [clijobs]\nschedules:\n  " + "n" * 192 + ": {task: noop, every: 1h}\n").encode(), "bad.yaml:3: schedules.nnn"),
    "args that do not fit": ((HEAD.replace("noop", "add") + "    every: 1h\n    args: [only-one]\n").encode(), "bad.yaml:6: schedules.x.args:"),
    "unknown kwargs": ((HEAD.replace("noop", "add") + "    every: 1h\n    args: [1, 2]\n    kwargs: {c: 3}\n").encode(), "bad.yaml:7: schedules.x.kwargs:"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_files_exit_2_naming_file_and_line(nodb_cli: Cli, case: str) -> None:
    data, fragment = HOSTILE[case]
    (nodb_cli.cwd / "bad.yaml").write_bytes(data)
    start = time.monotonic()
    r = nodb_cli.run("validate", "bad.yaml")
    assert_clean_exit_2(r, fragment)
    assert time.monotonic() - start < 20
    assert not (nodb_cli.cwd / "untouched.db").exists()


def test_args_error_names_the_task_and_the_parameter(nodb_cli: Cli) -> None:
    nodb_cli.write("bad.yaml", HEAD.replace("noop", "add") + "    every: 1h\n    args: [only-one]\n")
    r = nodb_cli.invoke("validate", "bad.yaml")
    assert_clean_exit_2(r, "bad.yaml:6: schedules.x.args:", "add", "'b'")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_at_once(nodb_cli: Cli) -> None:
    start = time.monotonic()
    r = nodb_cli.run("validate", "/dev/zero", timeout=30)
    assert_clean_exit_2(r, "/dev/zero")
    assert time.monotonic() - start < 20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_is_refused_without_hanging(nodb_cli: Cli) -> None:
    os.mkfifo(nodb_cli.cwd / "pipe.yaml")
    r = nodb_cli.run("validate", "pipe.yaml", timeout=30)
    assert_clean_exit_2(r, "pipe.yaml")


def test_oversized_file_is_refused(nodb_cli: Cli) -> None:
    (nodb_cli.cwd / "big.yaml").write_bytes(b"schedules: {}\n" + b"#" * (2 * 1024 * 1024) + b"\n")
    r = nodb_cli.run("validate", "big.yaml")
    assert_clean_exit_2(r, "big.yaml", "1 MiB")


def test_merge_keys_validate(nodb_cli: Cli) -> None:
    nodb_cli.write("merge.yaml", """
        imports: [clijobs]
        schedules:
          base: &base {task: noop, every: 1h, queue: reports}
          nightly:
            <<: *base
            cron: "0 3 * * *"
            every: null
        """)
    r = nodb_cli.run("validate", "merge.yaml")
    assert r.code == 0, r
    assert "nightly: noop at 03:00 every day" in r.out, r


# -- every error, one per line ------------------------------------------------------------
MANY = """
imports: [clijobs]
colour: red
schedules:
  one:
    task: noop
    cron: "0 25 * * *"
    colour: red
    priority: high
  two:
    task: nosuch
    every: 1h
  three:
    task: add
    every: 5000000d
    args: [1]
    misfire: sometimes
  fine:
    task: noop
    every: 1h
"""


def test_every_error_is_reported_one_per_line(nodb_cli: Cli) -> None:
    nodb_cli.write("many.yaml", MANY)
    r = nodb_cli.run("validate", "many.yaml")
    assert_clean_exit_2(r)
    lines = [ln for ln in r.err.splitlines() if ln.startswith("many.yaml:")]
    got = [tuple(re.match(r"many\.yaml:(\d+): (\S+):", ln).groups()) for ln in lines]  # type: ignore[union-attr]
    assert got == [("2", "colour"), ("6", "schedules.one.cron"), ("7", "schedules.one.colour"),
                   ("8", "schedules.one.priority"), ("10", "schedules.two.task"), ("14", "schedules.three.every"),
                   ("15", "schedules.three.args"), ("16", "schedules.three.misfire")], r
    assert "8 problems" in r.err, r
    assert "ok" not in r.out


def test_parse_error_stops_with_its_line(nodb_cli: Cli) -> None:
    nodb_cli.write("broken.yaml", MANY + "  broken:\n   task: noop\n    cron: x\n")
    r = nodb_cli.invoke("validate", "broken.yaml")
    assert_clean_exit_2(r, "broken.yaml:22:")


# -- point 16: --no-import ----------------------------------------------------------------
def test_no_import_imports_nothing_and_says_so(nodb_cli: Cli) -> None:
    marker = nodb_cli.cwd / "imported.txt"
    nodb_cli.write("evil.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    nodb_cli.write("s.yaml", """
        imports: [evil, clijobs]
        schedules:
          a: {task: not.importable, every: 1h, args: [1]}
          b: {task: add, cron: "0 0 * * *", args: [1]}
        """)
    r = nodb_cli.run("validate", "--no-import", "s.yaml", "--import", "evil", "--app", "evil:app")
    assert r.code == 0, r
    assert not marker.exists()
    assert "not checked" in r.out + r.err and "--no-import" in r.out + r.err, r
    # without it, the file's modules are imported (and the unknown task is an error)
    r = nodb_cli.run("validate", "s.yaml")
    assert marker.exists()
    assert_clean_exit_2(r, "s.yaml:3: schedules.a.task:", "s.yaml:4: schedules.b.args:")


def test_no_import_still_checks_everything_else(nodb_cli: Cli) -> None:
    nodb_cli.write("s.yaml", """
        imports: [clijobs]
        schedules:
          a: {task: whatever, cron: "0 0 5-5 * *", tz: Mars/Base}
          b: {task: whatever, every: 1h, priority: 99999999999}
        """)
    r = nodb_cli.invoke("validate", "--no-import", "s.yaml")
    assert_clean_exit_2(r, "s.yaml:3: schedules.a.tz:", "s.yaml:4: schedules.b.priority:")


def test_help_says_validate_imports_code() -> None:
    out = subprocess.run([sys.executable, "-m", "linger_sched.cli", "validate", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    flat = " ".join(out.split())
    assert "--no-import" in flat and "imports" in flat and "runs" in flat, out


# -- point 15: the working directory does not shadow the standard library or a driver -------
EVIL = "import pathlib\npathlib.Path(__file__).with_name('SHADOWED-' + __name__).write_text('imported')\nraise ImportError('shadow')\n"
MYTASKS = """
from pathlib import Path
from linger_sched import task


@task(name="mark")
def mark():
    Path(__file__).with_name("ran.txt").write_text("ran")
"""


def plant(workdir: Path) -> None:
    """A module in the working directory for every top-level standard library module (and the
    database drivers): importing any of them from there leaves a SHADOWED-<name> file."""
    names = {n for n in sys.stdlib_module_names if n.isidentifier() and not n.startswith("_")}
    # the drivers, and modules they (or SQLAlchemy) import only if present: psycopg looks for
    # psycopg_c, PyMySQL for cryptography
    names |= {"sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb", "psycopg_c", "psycopg_binary", "greenlet",
              "cryptography", "asyncpg", "aiosqlite", "pysqlite2", "mysqlclient", "mariadb", "typing_extensions"}
    names -= {"mytasks", "clijobs"}
    for n in names:
        (workdir / f"{n}.py").write_text(EVIL, encoding="utf-8")
    (workdir / "mytasks.py").write_text(MYTASKS, encoding="utf-8")


def shadowed(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.glob("SHADOWED-*"))


def test_cwd_modules_never_shadow_the_driver(workdir: Path) -> None:
    plant(workdir)
    c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'app.db'}"})
    r = c.run("db", "init")
    assert r.code == 0, r
    assert shadowed(workdir) == [], r
    r = c.run("jobs")
    assert r.code == 0, r
    assert shadowed(workdir) == [], r
    c.write("schedules.yaml", "imports: [mytasks]\nschedules:\n  m: {task: mark, every: 1h}\n")
    r = c.run("validate")
    assert r.code == 0 and "m: mark" in r.out, r
    assert shadowed(workdir) == [], r
    r = c.run("--import", "mytasks", "enqueue", "mark")
    assert r.code == 0, r
    assert shadowed(workdir) == [], r
    (workdir / "schedules.yaml").unlink()
    p = c.popen("run", "--import", "mytasks", "--no-scheduler")
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "ran.txt").exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert (workdir / "ran.txt").exists(), (out, err)  # --import of a module in the cwd still works
    assert shadowed(workdir) == [], (out, err)
    assert "Traceback" not in err, err


@pytest.mark.parametrize("url", ["postgresql+psycopg://u:secret@127.0.0.1:1/x", "mysql+pymysql://u:secret@127.0.0.1:1/x"],
                         ids=["postgresql", "mysql"])
def test_cwd_modules_never_shadow_a_drivers_optional_modules(workdir: Path, url: str) -> None:
    """The working directory is importable once a module is named; a driver's own lookups of
    optional modules (psycopg_c, cryptography) must still never be answered from it."""
    plant(workdir)
    c = Cli(workdir, {"LINGER_DATABASE_URL": url})
    r = c.run("--import", "mytasks", "jobs", timeout=60)
    assert r.code == 1 and "Traceback" not in r.err, r  # nobody listens on port 1
    assert shadowed(workdir) == [], r
    (workdir / "helper_mod.py").write_text("VALUE = 42\n", encoding="utf-8")
    (workdir / "lazy_tasks.py").write_text(
        "from linger_sched import task\n\n@task(name='lazy')\ndef lazy():\n    import helper_mod\n    return helper_mod.VALUE\n",
        encoding="utf-8")
    c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'app.db'}"})
    assert c.run("db", "init").code == 0
    r = c.run("--import", "lazy_tasks", "enqueue", "lazy")
    assert r.code == 0, r
    r = c.run("--import", "lazy_tasks", "worker", "--burst")
    assert r.code == 0, r
    r = c.run("jobs", "--state", "succeeded")
    assert "lazy" in r.out, r  # a task importing a module of the working directory when it runs
    assert shadowed(workdir) == [], r
