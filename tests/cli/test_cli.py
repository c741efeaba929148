"""The ``linger-sched`` command line, end to end.

Quick commands run in-process (click's CliRunner, a fresh default app per call); ``worker``,
``run`` and one call of each kind run the real console script in a subprocess. Tests that
touch a database run once per database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_support import Cli, parse_table, tables
from linger_sched.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.timeout(120)

LEAF_COMMANDS = [
    ["db", "init"], ["db", "upgrade"], ["db", "recount"], ["worker"], ["enqueue", "add"], ["jobs"], ["jobs", "show", "1"],
    ["jobs", "retry", "1"], ["jobs", "cancel", "1"], ["run"], ["schedules"], ["schedules", "pause", "x"],
    ["schedules", "resume", "x"], ["schedules", "trigger", "x"], ["validate"], ["status"],
]
ALL_COMMANDS = [[], ["db"], ["jobs"], ["schedules"], *LEAF_COMMANDS]

GOOD_YAML = """
imports: [clijobs]
schedules:
  hourly:
    task: noop
    cron: "0 * * * *"
    args: [1]
  every10:
    task: add
    every: 10m
    args: [2, 3]
"""


def job_id_of(outcome: object) -> int:
    text = getattr(outcome, "out").strip()
    assert re.fullmatch(r"\d+", text), f"enqueue should print only the job id: {outcome}"
    return int(text)


# -- no database -------------------------------------------------------------------------
@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_help_of_every_command(nodb_cli: Cli, command: list[str]) -> None:
    r = nodb_cli.invoke(*command, "--help")
    assert r.code == 0, r
    assert "Usage: linger-sched" in r.out
    assert not (nodb_cli.cwd / "untouched.db").exists()


@pytest.mark.parametrize("command", LEAF_COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_takes_the_common_options(nodb_cli: Cli, command: list[str]) -> None:
    r = nodb_cli.invoke(*command, "--database", "sqlite:///other.db", "--import", "clijobs", "--import", "json",
                        "-v", "--log-level", "debug", "--help")
    assert r.code == 0, r


def test_console_script_help_and_version(nodb_cli: Cli) -> None:
    r = nodb_cli.run("--help")
    assert r.code == 0, r
    for name in ("worker", "enqueue", "jobs", "db", "run", "schedules", "validate", "status"):
        assert name in r.out
    r = nodb_cli.run("--version")
    assert r.code == 0 and "linger-sched" in r.out, r


@pytest.mark.parametrize("args", [
    ["--bogus"], ["nosuchcommand"], ["enqueue", "add", "--bogus"], ["jobs", "--nope"], ["worker", "--bursty"],
    ["jobs", "show", "abc"], ["jobs", "--state", "lost"], ["enqueue", "add", "--priority", "high"],
    ["worker", "--concurrency", "0"], ["enqueue"], ["schedules", "pause"], ["db", "drop"],
], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2(nodb_cli: Cli, args: list[str]) -> None:
    r = nodb_cli.invoke(*args)
    assert r.code == 2, r
    assert "Error" in r.err or "error" in r.err
    assert not (nodb_cli.cwd / "untouched.db").exists()


def test_unknown_option_exits_2_from_the_console_script(nodb_cli: Cli) -> None:
    r = nodb_cli.run("enqueue", "add", "--frobnicate", "1")
    assert r.code == 2, r
    assert "--frobnicate" in r.err
    assert "Traceback" not in r.err


def test_validate_good_file(nodb_cli: Cli) -> None:
    nodb_cli.write("schedules.yaml", GOOD_YAML)
    r = nodb_cli.run("validate")  # default ./schedules.yaml, real process
    assert r.code == 0, r
    assert "ok" in r.out and "2 schedule(s)" in r.out
    assert "hourly" in r.out and "every10" in r.out
    nodb_cli.write("other.yaml", GOOD_YAML)
    r = nodb_cli.invoke("validate", "other.yaml", "--database", "postgresql://nobody@127.0.0.1:1/none")
    assert r.code == 0, r  # validate never connects
    assert not (nodb_cli.cwd / "untouched.db").exists()


BAD_YAML = {
    "unknown key": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
            cron: "0 * * * *"
            colour: red
        """, 6, "schedules.hourly.colour"),
    "cron and every": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
            cron: "0 * * * *"
            every: 1h
        """, 6, "schedules.hourly.every"),
    "neither cron nor every": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
        """, 3, "schedules.hourly"),
    "bad zone": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
            tz: Europe/Atlantis
            cron: "0 * * * *"
        """, 5, "schedules.hourly.tz"),
    "bad expression": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
            cron: "61 * * * *"
        """, 5, "schedules.hourly.cron"),
    "unknown task": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: nosuch
            cron: "0 * * * *"
        """, 4, "schedules.hourly.task"),
    "duplicate key": ("""
        imports: [clijobs]
        schedules:
          hourly:
            task: noop
            cron: "0 * * * *"
            task: add
        """, 6, "task"),
    "syntax error": ("""
        imports: [clijobs]
        schedules:
          hourly:
           task: noop
            cron: "0 * * * *"
        """, 5, "cron"),
    "unimportable module": ("""
        imports: [clijobs, no_such_module_here]
        schedules: {}
        """, 1, "imports"),
    "declared twice (YAML and @task)": ("""
        imports: [clijobs, cronjobs]
        schedules:
          report:
            task: noop
            every: 1h
        """, 3, "schedules.report"),
}
CRONJOBS = """
from linger_sched import task


@task(name="report", cron="0 6 * * *")
def report():
    return None
"""


@pytest.mark.parametrize("case", list(BAD_YAML), ids=list(BAD_YAML))
def test_validate_bad_file_exits_2_with_file_and_line(nodb_cli: Cli, case: str) -> None:
    text, line, key = BAD_YAML[case]
    nodb_cli.write("cronjobs.py", CRONJOBS)
    nodb_cli.write("bad.yaml", text)
    r = nodb_cli.invoke("validate", "bad.yaml")
    assert r.code == 2, r
    assert f"bad.yaml:{line}:" in r.err, r
    assert key in r.err, r
    assert "Traceback" not in r.err
    assert not (nodb_cli.cwd / "untouched.db").exists()


def test_validate_missing_file_and_bad_import(nodb_cli: Cli) -> None:
    r = nodb_cli.invoke("validate", "nope.yaml")
    assert r.code == 2 and "nope.yaml" in r.err, r
    r = nodb_cli.invoke("validate")
    assert r.code == 2 and "schedules.yaml" in r.err, r
    nodb_cli.write("schedules.yaml", GOOD_YAML)
    r = nodb_cli.invoke("validate", "--import", "no_such_module_here")
    assert r.code == 2 and "--import" in r.err and "no_such_module_here" in r.err, r


def test_run_refuses_to_run_nothing(nodb_cli: Cli) -> None:
    r = nodb_cli.invoke("run", "--no-worker", "--no-scheduler")
    assert r.code == 2 and "--no-worker" in r.err, r
    assert not (nodb_cli.cwd / "untouched.db").exists()


def test_database_precedence_flag_env_file(tmp_path: Path, workdir: Path) -> None:
    """--database beats LINGER_DATABASE_URL, which beats schedules.yaml's database:."""
    (workdir / "schedules.yaml").write_text("imports: [clijobs]\ndatabase: sqlite:///from-file.db\n", encoding="utf-8")
    no_env = Cli(workdir, {})
    r = no_env.invoke("db", "init")
    assert r.code == 0, r
    assert (workdir / "from-file.db").exists()
    with_env = Cli(workdir, {"LINGER_DATABASE_URL": "sqlite:///from-env.db"})
    r = with_env.invoke("db", "init")
    assert r.code == 0, r
    assert (workdir / "from-env.db").exists()
    r = with_env.invoke("db", "init", "--database", "sqlite:///from-flag.db")
    assert r.code == 0, r
    assert (workdir / "from-flag.db").exists()
    assert "from-flag.db" in r.out


def test_app_option_keeps_the_apps_explicit_database(workdir: Path) -> None:
    (workdir / "myapp.py").write_text(
        "from linger_sched import Linger\n"
        "app = Linger(database_url='sqlite:///explicit.db', table_prefix='expl_')\n"
        "@app.task(name='hello')\n"
        "def hello():\n"
        "    return 'hi'\n", encoding="utf-8")
    c = Cli(workdir, {"LINGER_DATABASE_URL": "sqlite:///from-env.db"})
    r = c.invoke("db", "init", "--app", "myapp:app")
    assert r.code == 0 and "explicit.db" in r.out and "expl_" in r.out, r
    assert not (workdir / "from-env.db").exists()
    r = c.invoke("db", "init", "--app", "myapp:app", "--database", "sqlite:///from-flag.db")
    assert r.code == 0 and "from-flag.db" in r.out, r  # the flag still wins
    r = c.invoke("enqueue", "nosuch", "--app", "myapp:app")
    assert r.code == 2 and "hello" in r.err, r  # the app's own registry
    r = c.invoke("db", "init", "--app", "myapp:nothere")
    assert r.code == 2 and "--app" in r.err, r


def test_common_options_before_the_command(workdir: Path) -> None:
    c = Cli(workdir, {})
    url = f"sqlite:///{workdir / 'root.db'}"
    assert c.invoke("--database", url, "db", "init").code == 0
    assert (workdir / "root.db").exists()
    r = c.run("--database", url, "--import", "clijobs", "--log-level", "warning", "enqueue", "add", "--args", "[1, 2]")
    job_id = job_id_of(r)
    r = c.invoke("--database", f"sqlite:///{workdir / 'elsewhere.db'}", "jobs", "show", str(job_id), "--database", url)
    assert r.code == 0 and re.search(r"task\s+add", r.out), r  # after the command wins
    r = c.invoke("--database", url, "jobs", "cancel", str(job_id))
    assert r.code == 0, r
    c.write("s.yaml", GOOD_YAML.replace("imports: [clijobs]\n", ""))
    assert c.invoke("validate", "s.yaml").code == 2  # tasks unknown without the import
    r = c.invoke("--import", "clijobs", "validate", "s.yaml")
    assert r.code == 0, r


def test_worker_without_tasks_warns_and_the_failure_stays_inspectable(workdir: Path) -> None:
    c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'lonely.db'}"})
    assert c.invoke("db", "init").code == 0
    r = c.invoke("enqueue", "add", "--args", "[1, 2]")  # no --import: queued by name, with a warning
    assert r.code == 0 and "not registered" in r.err, r
    job_id = job_id_of(r)
    r = c.run("worker", "--burst")
    assert r.code == 0, r
    assert "no task is registered" in r.err and "--import" in r.err
    r = c.invoke("jobs", "show", str(job_id))
    assert re.search(r"state\s+failed", r.out) and "unknown task 'add'" in r.out, r


def test_bad_database_urls_are_named(nodb_cli: Cli) -> None:
    r = nodb_cli.invoke("jobs", "--database", "nosql://x/y")
    assert r.code == 2 and "nosql" in r.err, r
    r = nodb_cli.invoke("status", "--database", "sqlite:///no/such/dir/x.db")
    assert r.code == 1, r
    assert "Traceback" not in r.err and "error" in r.err


# -- with a database ---------------------------------------------------------------------
BAD_ENQUEUES = {
    "bad JSON --args": (["add", "--args", "[1, 2"], "--args"),
    "bad JSON --kwargs": (["add", "--kwargs", "{a: 1}"], "--kwargs"),
    "--args not an array": (["add", "--args", '{"a": 1}'], "--args"),
    "--kwargs not an object": (["add", "--kwargs", "[1]"], "--kwargs"),
    "--run-at without offset": (["add", "--run-at", "2030-01-01T10:00:00"], "--run-at"),
    "--run-at not a date": (["add", "--run-at", "tomorrow"], "--run-at"),
    "--run-at and --in": (["add", "--run-at", "2030-01-01T10:00:00Z", "--in", "10m"], "--in"),
    "bad --in": (["add", "--in", "10 parsecs"], "--in"),
    "unknown task": (["nosuch.task"], "nosuch.task"),
    "unimportable --import": (["add", "--import", "no_such_module_here"], "no_such_module_here"),
}


def test_enqueue_usage_errors_exit_2_and_write_nothing(cli: Cli, store: Store) -> None:
    for case, (args, named) in BAD_ENQUEUES.items():
        r = cli.invoke("enqueue", *args, "--import", "clijobs")
        assert r.code == 2, f"{case}: {r}"
        assert named in r.err, f"{case}: {r}"
        assert "Traceback" not in r.err
    r = cli.run("enqueue", "add", "--import", "clijobs", "--args", "[1,", "--kwargs", "{}")  # the real script too
    assert r.code == 2 and "--args" in r.err and "JSON" in r.err, r
    r = cli.run("enqueue", "nosuch", "--import", "clijobs")
    assert r.code == 2 and "nosuch" in r.err and "add" in r.err, r  # lists the registered tasks
    assert store.list_jobs() == []


def test_enqueue_work_and_inspect(cli: Cli, store: Store) -> None:
    ok_id = job_id_of(cli.run("enqueue", "add", "--import", "clijobs", "--args", "[2, 3]"))
    bad_id = job_id_of(cli.invoke("enqueue", "explode", "--import", "clijobs", "--queue", "default"))
    later_id = job_id_of(cli.invoke("enqueue", "add", "--import", "clijobs", "--kwargs", '{"a": 1, "b": 2}', "--in", "10m"))
    future_id = job_id_of(cli.invoke("enqueue", "noop", "--import", "clijobs", "--run-at", "2099-06-01T12:00:00+02:00"))
    assert len({ok_id, bad_id, later_id, future_id}) == 4
    assert store.get_job(future_id).run_at == datetime(2099, 6, 1, 10, tzinfo=timezone.utc)
    later = store.get_job(later_id)
    assert later.kwargs == {"a": 1, "b": 2}
    assert timedelta(minutes=9) < later.run_at - later.created_at <= timedelta(minutes=10, seconds=1)

    r = cli.run("worker", "--burst", "--import", "clijobs", "--concurrency", "2", timeout=60)
    assert r.code == 0, r

    assert store.get_job(ok_id).state == "succeeded"
    failed = store.get_job(bad_id)
    assert failed.state == "failed" and "kaboom from explode" in (failed.last_error or "")
    for jid in (later_id, future_id):  # not due: burst leaves them alone
        job = store.get_job(jid)
        assert (job.state, job.attempts) == ("queued", 0)

    rows = {int(row["ID"]): row for row in parse_table(cli.invoke("jobs").out)}
    assert set(rows) == {ok_id, bad_id, later_id, future_id}
    assert (rows[ok_id]["TASK"], rows[ok_id]["STATE"]) == ("add", "succeeded")
    assert rows[bad_id]["STATE"] == "failed" and rows[later_id]["STATE"] == "queued"
    failed_rows = parse_table(cli.invoke("jobs", "--state", "failed").out)
    assert [int(x["ID"]) for x in failed_rows] == [bad_id]
    assert len(parse_table(cli.invoke("jobs", "--limit", "2").out)) == 2

    r = cli.invoke("jobs", "show", str(bad_id))
    assert r.code == 0, r
    for text in (f"id {bad_id}", "task explode", "state failed", "attempts 1", "max_attempts 1", "kaboom from explode"):
        assert re.search(r"\s+".join(map(re.escape, text.split())), r.out), (text, r.out)
    data = json.loads(cli.invoke("jobs", "show", str(ok_id), "--json").out)
    assert (data["id"], data["task"], data["state"], data["args"]) == (ok_id, "add", "succeeded", [2, 3])

    # retry a failed job: queued again, due now, fresh attempts
    r = cli.invoke("jobs", "retry", str(bad_id))
    assert r.code == 0 and str(bad_id) in r.out, r
    retried = store.get_job(bad_id)
    assert (retried.state, retried.attempts) == ("queued", 0)
    assert retried.run_at <= store.db_now() + timedelta(seconds=1)
    # cancel a queued job
    r = cli.run("jobs", "cancel", str(later_id))
    assert r.code == 0 and str(later_id) in r.out, r
    assert store.get_job(later_id).state == "cancelled"

    # the wrong state or a missing id: exit 1 with a message
    for args, words in (
        (["jobs", "retry", str(ok_id)], ["succeeded"]),
        (["jobs", "cancel", str(later_id)], ["cancelled"]),
        (["jobs", "cancel", str(ok_id)], ["succeeded"]),
        (["jobs", "retry", "987654"], ["987654"]),
        (["jobs", "cancel", "987654"], ["987654"]),
        (["jobs", "show", "987654"], ["987654"]),
    ):
        r = cli.invoke(*args)
        assert r.code == 1, (args, r)
        assert all(w in r.err for w in words) and "Traceback" not in r.err, (args, r)
    assert store.get_job(ok_id).state == "succeeded"


def test_priority_order_and_queues_through_burst(cli: Cli, store: Store) -> None:
    for tag, priority in (("p5", 5), ("p1", 1), ("p9", 9), ("pminus", -2), ("p3", 3)):
        job_id_of(cli.invoke("enqueue", "record", "--import", "clijobs", "--args", json.dumps([tag]), "--priority", str(priority)))
    other = job_id_of(cli.invoke("enqueue", "record", "--import", "clijobs", "--args", '["other"]', "--priority", "-10", "--queue", "other"))
    r = cli.run("worker", "--burst", "--concurrency", "1", "--queues", "default", "--import", "clijobs", timeout=60)
    assert r.code == 0, r
    order = (cli.cwd / "order.txt").read_text().split()
    assert order == ["pminus", "p1", "p3", "p5", "p9"]
    assert store.get_job(other).state == "queued"  # not in --queues


def test_db_init_twice_and_upgrade(cli: Cli, empty_db: Store) -> None:
    r = cli.invoke("jobs")  # before init: a message that says what to do, exit 1
    assert r.code == 1 and "db init" in r.err, r
    r = cli.invoke("enqueue", "add", "--import", "clijobs")
    assert r.code == 1 and "db init" in r.err, r
    assert empty_db.schema_version() is None
    r = cli.run("db", "init")
    assert r.code == 0, r
    assert empty_db.schema_version() == SCHEMA_VERSION
    assert {f"{empty_db.prefix}{t}" for t in ("jobs", "schedules", "leases", "nodes")} <= set(tables(empty_db))
    r = cli.invoke("db", "init")
    assert r.code == 0, r
    r = cli.invoke("db", "upgrade")
    assert r.code == 0 and f"already up to date (version {SCHEMA_VERSION})" in r.out, r
    assert cli.invoke("jobs").code == 0
    # rows changed by hand (no counts written): db recount counts them again
    with empty_db.engine.begin() as conn:
        conn.execute(sa.insert(empty_db.t.jobs), [
            {"task": "t", "args": "{}", "queue": q, "state": "succeeded", "run_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
             "created_at": datetime(2030, 1, 1, tzinfo=timezone.utc)} for q in ("a", "a", "b")])
    assert empty_db.count_by_state().get("succeeded") is None
    r = cli.invoke("db", "recount")
    assert r.code == 0 and "3 finished jobs counted in 2 (queue, state) pairs" in r.out, r
    assert empty_db.count_by_queue_and_state() == {("a", "succeeded"): 2, ("b", "succeeded"): 1}


def test_run_with_bad_yaml_exits_2_and_writes_nothing(cli: Cli, empty_db: Store) -> None:
    cli.write("schedules.yaml", BAD_YAML["unknown task"][0])
    r = cli.run("run")  # ./schedules.yaml
    assert r.code == 2, r
    assert "schedules.yaml:4:" in r.err and "nosuch" in r.err, r
    assert tables(empty_db) == []  # not even the schema
    empty_db.install_schema()
    cli.write("bad.yaml", BAD_YAML["syntax error"][0])
    r = cli.invoke("run", "--config", "bad.yaml", "--concurrency", "1")
    assert r.code == 2 and "bad.yaml:5:" in r.err, r
    assert empty_db.load_schedules() == [] and empty_db.list_jobs() == []


def test_run_then_schedules_status_pause_resume_trigger(cli: Cli, store: Store) -> None:
    cli.write("schedules.yaml", GOOD_YAML)
    node = cli.popen("run", "--concurrency", "2")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert node.poll() is None, node.communicate()
            done = store.list_jobs("succeeded", schedule_name="every10")
            if done:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the every: 10m schedule did not run within 30 s")
        r = cli.invoke("status")
        assert r.code == 0, r
        assert re.search(r"leader: \S+ \(epoch \d+, lease valid", r.out), r
        assert "nodes: 1" in r.out and "scheduler,worker" in r.out
        assert re.search(r"jobs: .*succeeded 1", r.out), r
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            out, err = node.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
    assert node.returncode == 0, (out, err)
    assert store.list_nodes() == []  # the node deregistered on SIGTERM
    r = cli.invoke("status")
    assert r.code == 0 and "leader: none" in r.out and "nodes: 0" in r.out, r  # the lease was released

    r = cli.run("schedules", "--next", "3", "--json")
    assert r.code == 0, r
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert set(rows) == {"hourly", "every10"}
    for name, step in (("hourly", timedelta(hours=1)), ("every10", timedelta(minutes=10))):
        nxt = store.get_schedule(name).next_run_at
        assert nxt is not None
        expected = [(nxt + k * step).isoformat() for k in range(3)]
        assert rows[name]["next_runs"] == expected, r.out
        assert rows[name]["state"] == "active"
    assert store.get_schedule("hourly").next_run_at.minute == 0
    assert rows["every10"]["last_state"] == "succeeded"

    r = cli.invoke("schedules", "pause", "hourly")
    assert r.code == 0 and "paused" in r.out, r
    assert store.get_schedule("hourly").paused
    assert {row["name"]: row["state"] for row in json.loads(cli.invoke("schedules", "--json").out)}["hourly"] == "paused"
    r = cli.invoke("schedules", "resume", "hourly")
    assert r.code == 0, r
    assert not store.get_schedule("hourly").paused

    r = cli.invoke("schedules", "trigger", "hourly")
    assert r.code == 0, r
    job_id = int(re.search(r"job (\d+)", r.out).group(1))
    job = store.get_job(job_id)
    assert (job.task, job.schedule_name, job.reason, job.state, job.args) == ("noop", "hourly", "manual", "queued", [1])

    for action in ("pause", "resume", "trigger"):
        r = cli.invoke("schedules", action, "nosuch")
        assert r.code == 1 and "nosuch" in r.err, (action, r)
    r = cli.run("schedules", "pause", "nosuch")
    assert r.code == 1 and "no schedule named 'nosuch'" in r.err, r
