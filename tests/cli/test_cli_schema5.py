"""The command line of schema 5: ``schedules add|remove`` (runtime schedules, shown with their
source), ``jobs show`` with a job's result and progress, ``jobs cancel`` of a running job.
Once per database."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from cli_support import Cli
from linger_sched.store import Store

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("command", [["schedules", "add", "x"], ["schedules", "remove", "x"]], ids=" ".join)
def test_help(nodb_cli: Cli, command: list[str]) -> None:
    r = nodb_cli.invoke(*command, "--help")
    assert r.code == 0 and "Usage: linger-sched" in r.out, r
    assert not (nodb_cli.cwd / "untouched.db").exists()


def test_schedules_add_list_and_remove(cli: Cli, store: Store) -> None:
    r = cli.invoke("schedules", "add", "report-7", "--task", "add", "--every", "10m", "--args", "[1, 2]",
                   "--queue", "reports", "--priority", "-3", "--overlap", "allow", "--import", "clijobs")
    assert r.code == 0, r
    assert "report-7" in r.out and "runtime" in r.out, r
    row = store.get_schedule("report-7")
    assert (row.source, row.task, row.spec, json.loads(row.args)) == ("runtime", "add", "every:600s", {"args": [1, 2]})
    options = json.loads(row.options)
    assert (options["queue"], options["priority"], options["overlap"]) == ("reports", -3, "allow")

    r = cli.run("schedules", "add", "nightly-x", "--task", "noop", "--cron", "0 3 * * *", "--tz", "Europe/Berlin",
                "--kwargs", '{"k": 1}', "--misfire", "skip", "--import", "clijobs")
    assert r.code == 0, r
    rows = {row["name"]: row for row in json.loads(cli.invoke("schedules", "--json").out)}
    assert rows["report-7"]["source"] == "runtime" and rows["nightly-x"]["source"] == "runtime"
    assert rows["nightly-x"]["tz"] == "Europe/Berlin"
    assert rows["nightly-x"]["next_runs"][0].endswith(("+01:00", "+02:00"))  # in the schedule's zone
    assert "added at runtime" in cli.invoke("schedules").out

    # a task this process does not know is added by name, with a warning
    r = cli.invoke("schedules", "add", "remote", "--task", "billing.tasks.run", "--every", "1h")
    assert r.code == 0 and "not registered" in r.err, r
    assert store.get_schedule("remote").task == "billing.tasks.run"

    # the same name again: a state error (exit 1), nothing changed
    r = cli.invoke("schedules", "add", "report-7", "--task", "add", "--every", "5m", "--args", "[1, 2]", "--import", "clijobs")
    assert r.code == 1 and "report-7" in r.err and "exists" in r.err, r
    assert store.get_schedule("report-7").spec == "every:600s"

    r = cli.run("schedules", "remove", "report-7")
    assert r.code == 0 and "report-7" in r.out, r
    assert [s.name for s in store.load_schedules()] == ["nightly-x", "remote"]
    r = cli.invoke("schedules", "remove", "report-7")
    assert r.code == 1 and "no schedule named 'report-7'" in r.err, r


@pytest.mark.parametrize(("args", "words"), [
    (["--task", "add", "--cron", "61 * * * *", "--args", "[1, 2]"], ["cron", "minute"]),
    (["--task", "add", "--cron", "0 * * * *", "--every", "1h"], ["every"]),
    (["--task", "add"], ["cron", "every"]),
    (["--task", "add", "--every", "1h", "--tz", "Mars/Olympus"], ["tz"]),
    (["--task", "add", "--every", "1h", "--args", "[1, 2, 3]"], ["args"]),
    (["--task", "add", "--every", "1h", "--args", "{not json"], ["--args", "JSON"]),
    (["--task", "add", "--every", "1h", "--kwargs", "[1]"], ["--kwargs"]),
    (["--task", "add", "--every", "1h", "--args", "[1, 2]", "--misfire", "never"], ["misfire"]),
    (["--task", "add", "--every", "1h", "--args", "[1, 2]", "--anchor", "2030-01-01T00:00:00"], ["--anchor", "offset"]),
    (["--every", "1h"], ["--task"]),
])
def test_schedules_add_refuses_bad_input_and_writes_nothing(cli: Cli, store: Store, args: list[str], words: list[str]) -> None:
    r = cli.invoke("schedules", "add", "bad", *args, "--import", "clijobs")
    assert r.code == 2, r
    assert all(w in r.err for w in words) and "Traceback" not in r.err, (words, r)
    assert store.load_schedules() == []


def test_schedules_remove_refuses_a_declared_schedule(cli: Cli, store: Store) -> None:
    store.save_schedules(inserts=[{
        "name": "declared", "task": "noop", "spec": "every:60s", "tz": "UTC", "anchor": T0, "args": "{}",
        "options": "{}", "next_run_at": T0, "paused": False, "enabled": True, "spec_hash": "h",
    }])
    r = cli.invoke("schedules", "remove", "declared")
    assert r.code == 1 and "declared" in r.err, r
    assert store.get_schedule("declared").source == "declared"
    assert json.loads(cli.invoke("schedules", "--json").out)[0]["source"] == "declared"


def test_jobs_show_has_the_result_and_progress_and_cancel_asks_a_running_job(cli: Cli, store: Store) -> None:
    job_id = int(cli.invoke("enqueue", "add", "--import", "clijobs", "--args", "[2, 3]").out)
    r = cli.run("worker", "--burst", "--import", "clijobs", timeout=60)
    assert r.code == 0, r
    shown = cli.invoke("jobs", "show", str(job_id))
    assert re.search(r"^result\s+5$", shown.out, re.M), shown
    assert re.search(r"^progress\s+-$", shown.out, re.M), shown
    assert json.loads(cli.invoke("jobs", "show", str(job_id), "--json").out)["result"] == 5

    (running,) = store.enqueue([{"task": "noop", "args": "{}"}], now=T0)
    store.claim("node-a", None, 1, 30, now=T0)
    store.set_progress("node-a", running, 1, 0.25, "a quarter")
    r = cli.invoke("jobs", "cancel", str(running))
    assert r.code == 0 and "cancel requested" in r.out, r
    job = store.get_job(running)
    assert (job.state, job.cancel_requested) == ("running", True)
    shown = cli.invoke("jobs", "show", str(running)).out
    assert re.search(r"^progress\s+25%", shown, re.M) and "a quarter" in shown, shown
    assert re.search(r"^cancel_requested\s+True$", shown, re.M), shown
