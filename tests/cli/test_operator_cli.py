"""The CLI an operator needs (issue 14): ``schedules`` that fits 100 columns with ``--next N``
one per line and ``--json``; ``jobs --json/--queue`` with an error preview and durations; one
time format (ISO 8601 with the offset of the schedule's zone); the burst summary; ``db
upgrade`` and ``db init`` messages. Each test that touches a database runs on all three."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from cli_support import Cli

from linger_sched import FakeClock, Linger
from linger_sched.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.timeout(120)

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
T0 = datetime(2030, 1, 7, 6, 0, tzinfo=timezone.utc)  # a Monday

# realistic long names and zones
LONG_SCHEDULES = [
    ("billing.invoices.generate_monthly_customer_invoices", "0 9 1 * *", "America/Argentina/Buenos_Aires"),
    ("reports.send_weekly_summary_email_to_all_subscribers", "30 9 * * 1-5", "Europe/Berlin"),
    ("maintenance.rebuild_search_index_for_every_tenant_shard", "15 */6 * * *", "America/North_Dakota/New_Salem"),
    ("cleanup.tmp", "*/1 * * * *", "UTC"),
    ("ping", "* * * * *", "Asia/Kolkata"),
]
SCHEDULE_KEYS = {"name", "task", "spec", "description", "tz", "source", "state", "enabled", "paused", "disabled_reason",
                 "next_runs", "last_run_at", "last_state", "error", "error_since", "retry_at"}

LONG_TASKS = '''
from linger_sched import task


@task(name="reports.send_weekly_summary_email_to_all_subscribers", max_attempts=1)
def weekly(n):
    raise RuntimeError("the mail relay refused the message: 550 5.7.1 relaying denied for every recipient of the list")


@task(name="flaky", max_attempts=3, retry_backoff=3600)
def flaky():
    raise ValueError("try later")


@task(name="ok")
def ok(n):
    return n
'''


@pytest.fixture
def wide_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")


def declared(db_url: str, prefix: str) -> Linger:
    """An app (fake clock at T0) that declares LONG_SCHEDULES, a paused one and a runtime one
    with another task, writes them, and runs one occurrence of ``cleanup.tmp``."""
    app = Linger(db_url, table_prefix=prefix, clock=FakeClock(T0))
    for name, cron, tz in LONG_SCHEDULES:
        app.task(name=name, cron=cron, tz=tz)(lambda: None)
    app.task(name="nightly.paused", cron="0 3 * * *", tz="Pacific/Chatham")(lambda: None)
    app.task(name="other.task")(lambda: None)
    app.sync_schedules()
    app.add_schedule("runtime.added_by_an_operator_for_the_quarterly_audit", "other.task", every="1h")
    app.pause("nightly.paused")
    app.testing.advance(60, run=True)  # cleanup.tmp and ping fire and run
    return app


def lines_of(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_schedules_fit_100_columns_one_next_time_per_line(cli: Cli, store: Store, db_url: str, prefix: str,
                                                          wide_env: None) -> None:
    app = declared(db_url, prefix)
    try:
        for args in ([], ["--next", "5"]):
            r = cli.invoke("schedules", *args)
            assert r.code == 0, r
            assert max(len(ln) for ln in r.out.splitlines()) <= 100, r.out
            for ln in r.out.splitlines():
                assert len(re.findall(ISO, ln)) <= 1 or ln.lstrip().startswith(("at ", "every ")), ln
            assert "every 1 minutes" not in r.out and "every minute" in r.out
            assert "every 6 hours at minute 15 (America/North_Dakota/New_Salem)" in r.out
            assert "task other.task" in r.out and "added at runtime" in r.out
        # --next 5: the five fire times of the Buenos Aires schedule, one per line, at -03:00
        times = re.findall(r"(\d{4}-\d\d-01T09:00:00-03:00)", r.out)
        assert times == [f"{y}-{m:02d}-01T09:00:00-03:00" for y, m in ((2030, 2), (2030, 3), (2030, 4), (2030, 5), (2030, 6))]
        # every name is there in full (a long one continues on the next line of its column)
        state_at = r.out.index("STATE")
        names = "".join(ln[:state_at].strip() for ln in r.out.splitlines()[1:] if not ln.startswith(" "))
        for name, _, _ in LONG_SCHEDULES:
            assert name in names
        # a state per schedule, on its first line
        states = dict(re.findall(r"^(\S+)\s+(active|paused|error|disabled)\b", r.out, re.M))
        assert states["nightly.paused"] == "paused" and states["cleanup.tmp"] == "active"
        assert re.search(r"^nightly\.paused\s+paused\s+-\s+-$", r.out, re.M), r.out
        assert re.search(r"^cleanup\.tmp\s+active\s+2030-01-07T06:02:00\+00:00\s+succeeded$", r.out, re.M), r.out
        assert re.search(r"every minute; last run 2030-01-07T06:01:00\+00:00", r.out), r.out
        # a real terminal of 100 columns, and a pipe (no COLUMNS): 100 too
        for env in ({"COLUMNS": "100"}, {}):
            cli.env.pop("COLUMNS", None)
            cli.env.update(env)
            r = cli.run("schedules", "--next", "3")
            assert r.code == 0 and max(len(ln) for ln in r.out.splitlines()) <= 100, r
    finally:
        app.store.dispose()


def test_schedules_json_has_stable_keys_and_times_in_the_zone(cli: Cli, store: Store, db_url: str, prefix: str) -> None:
    app = declared(db_url, prefix)
    try:
        r = cli.run("schedules", "--json", "--next", "3", "-v")  # debug logging goes to stderr only
        assert r.code == 0, r
        data = json.loads(r.out)
        assert [s["name"] for s in data] == sorted(s["name"] for s in data)
        by_name = {s["name"]: s for s in data}
        for s in data:
            assert set(s) == SCHEDULE_KEYS, s
            assert isinstance(s["enabled"], bool) and isinstance(s["paused"], bool)
        for name, _, tz in LONG_SCHEDULES:
            s = by_name[name]
            assert s["tz"] == tz and s["state"] == "active" and len(s["next_runs"]) == 3
            for text in s["next_runs"]:
                t = datetime.fromisoformat(text)
                assert t.utcoffset() == t.astimezone(ZoneInfo(tz)).utcoffset(), (name, text)
        assert by_name["cleanup.tmp"]["description"] == "every minute"
        assert by_name["cleanup.tmp"]["last_state"] == "succeeded"
        assert datetime.fromisoformat(by_name["cleanup.tmp"]["last_run_at"]) == T0 + timedelta(minutes=1)
        assert by_name["ping"]["last_run_at"].endswith("+05:30")
        paused = by_name["nightly.paused"]
        assert (paused["state"], paused["paused"], paused["tz"]) == ("paused", True, "Pacific/Chatham")
        assert paused["next_runs"] == []  # it does not fire while paused
        runtime = by_name["runtime.added_by_an_operator_for_the_quarterly_audit"]
        assert (runtime["source"], runtime["task"], runtime["spec"]) == ("runtime", "other.task", "every:3600s")
        r = cli.invoke("schedules", "--json")
        assert all(len(s["next_runs"]) <= 1 for s in json.loads(r.out))  # default --next 1
    finally:
        app.store.dispose()


def test_jobs_queue_json_error_preview_duration_and_burst_summary(cli: Cli, store: Store, wide_env: None) -> None:
    cli.write("longtasks.py", LONG_TASKS)
    imp = ("--import", "longtasks")
    weekly = int(cli.invoke("enqueue", "reports.send_weekly_summary_email_to_all_subscribers", "--args", "[1]",
                            "--queue", "mail-high-priority-europe", *imp).out)
    flaky = int(cli.invoke("enqueue", "flaky", *imp).out)
    oks = [int(cli.invoke("enqueue", "ok", "--args", f"[{i}]", *imp).out) for i in range(3)]
    later = int(cli.invoke("enqueue", "ok", "--args", "[9]", "--in", "1h", *imp).out)

    r = cli.run("worker", "--burst", *imp, timeout=60)
    assert r.code == 0, r
    (summary,) = [ln for ln in r.out.splitlines() if ln.startswith("ran ")]
    assert re.fullmatch(r"ran 5 jobs in \S+: 3 succeeded, 1 failed, 1 retried", summary), r.out
    r = cli.run("worker", "--burst", *imp, timeout=60)  # nothing due: the summary says so
    assert r.code == 0 and re.search(r"^ran 0 jobs in \S+: 0 succeeded, 0 failed$", r.out, re.M), r

    # a running job (claimed here, no worker): its duration so far
    running = store.enqueue([{"task": "ok", "args": "[]", "queue": "nightly"}])[0]
    assert [c.id for c in store.claim("operator-test", ["nightly"], 1, 300)] == [running]

    r = cli.invoke("jobs")
    assert r.code == 0, r
    assert max(len(ln) for ln in r.out.splitlines()) <= 100, r.out
    header, *rows = lines_of(r.out)
    assert header.split() == ["ID", "TASK", "STATE", "QUEUE", "ATTEMPTS", "RUN_AT", "DURATION"]
    row, below, last = {}, {}, 0
    for ln in rows:  # a job's row, and the line below it
        if ln.startswith(" "):
            below[last] = ln
        else:
            last = int(ln.split()[0])
            row[last] = ln
    assert set(row) == {weekly, flaky, *oks, later, running}
    assert re.search(r"reports\.send\S*\s+failed\s+mail-high\S*\s+1/1\s+" + ISO + r"\s+\d+ms$",
                     row[weekly]), row[weekly]
    assert re.fullmatch(r"  last error: RuntimeError: the mail relay refused the message: 550 5\.7\.1 relaying denied.*\.\.\.",
                        below[weekly]), below[weekly]
    assert "Traceback" not in r.out
    assert re.search(r"queued\s+default\s+1/3\s+" + ISO + r"\s+-$", row[flaky]), row[flaky]
    assert below[flaky] == "  last error: ValueError: try later"
    assert re.search(r"succeeded\s+default\s+1/3\s+" + ISO + r"\s+\d+ms$", row[oks[0]]), row[oks[0]]
    assert re.search(r"queued\s+default\s+0/3\s+" + ISO + r"\s+-$", row[later]), row[later]
    assert re.search(r"running\s+nightly\s+1/3\s+" + ISO + r"\s+\d", row[running]), row[running]
    assert set(below) == {weekly, flaky}
    assert all("+00:00" in ln for ln in row.values())  # UTC

    r = cli.invoke("jobs", "--queue", "mail-high-priority-europe")
    assert [int(ln.split()[0]) for ln in lines_of(r.out)[1:] if not ln.startswith(" ")] == [weekly]

    r = cli.run("jobs", "--json", "-v")
    assert r.code == 0, r
    data = json.loads(r.out)
    assert [j["id"] for j in data] == sorted([weekly, flaky, *oks, later, running], reverse=True)
    keys = set(json.loads(cli.invoke("jobs", "show", str(weekly), "--json").out))
    for j in data:
        assert set(j) == keys and isinstance(j["id"], int) and isinstance(j["attempts"], int)
        assert isinstance(j["priority"], int) and isinstance(j["args"], list)
        assert datetime.fromisoformat(j["created_at"]).utcoffset() == timedelta(0)
    by_id = {j["id"]: j for j in data}
    assert by_id[weekly]["state"] == "failed" and "relaying denied" in by_id[weekly]["last_error"]
    assert isinstance(by_id[weekly]["duration"], float) and by_id[later]["duration"] is None
    assert by_id[running]["duration"] >= 0 and by_id[running]["finished_at"] is None
    shown = json.loads(cli.invoke("jobs", "show", str(weekly), "--json").out)
    assert shown == by_id[weekly]
    assert json.loads(cli.invoke("jobs", "--json", "--queue", "nightly").out)[0]["id"] == running
    assert json.loads(cli.invoke("jobs", "--json", "--queue", "nosuch").out) == []

    r = cli.invoke("jobs", "show", str(weekly))
    assert re.search(r"^finished_at\s+" + ISO + "$", r.out, re.M) and re.search(r"^duration\s+\d+ms$", r.out, re.M), r


def test_stored_text_is_escaped_in_tables(cli: Cli, store: Store, wide_env: None) -> None:
    evil = "x\x1b]0;owned\x07\x1b[2J"
    (job_id,) = store.enqueue([{"task": evil, "args": "[]", "queue": "q\x1b[31m"}])
    store.claim("n", None, 1, 30)
    store.finish("n", [], [(job_id, "Boom\x1b[5m blink\nline 2", None)])
    for args in (["jobs"], ["jobs", "show", str(job_id)]):
        r = cli.invoke(*args)
        assert r.code == 0 and "\x1b" not in r.out and "\\x1b" in r.out, r


def test_db_upgrade_says_already_up_to_date(cli: Cli, empty_db: Store) -> None:
    r = cli.invoke("db", "upgrade")
    assert r.code == 0 and f"schema version {SCHEMA_VERSION} installed" in r.out, r
    r = cli.invoke("db", "upgrade")
    assert r.code == 0 and f"schema already up to date (version {SCHEMA_VERSION})" in r.out, r
    meta = empty_db.t.meta
    with empty_db.engine.begin() as conn:
        conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value="4"))
    r = cli.invoke("db", "upgrade")
    assert r.code == 0 and f"schema upgraded from version 4 to {SCHEMA_VERSION}" in r.out, r
    assert empty_db.schema_version() == SCHEMA_VERSION


def test_db_init_names_a_missing_directory(nodb_cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    for args in (["db", "init"], ["run"], ["worker", "--burst"]):
        r = nodb_cli.invoke(*args, "--database", f"sqlite:///{missing / 'jobs.db'}")
        assert r.code == 1, (args, r)
        assert re.search(f"(its|nor its) directory {re.escape(str(missing))}( does not exist)?", r.err), (args, r)
        assert "Traceback" not in r.err
    assert not (tmp_path / "no").exists()
    # relative paths are named as the directory they resolve to
    r = nodb_cli.invoke("db", "init", "--database", "sqlite:///nowhere/jobs.db")
    assert r.code == 1 and f"its directory {nodb_cli.cwd / 'nowhere'} does not exist" in r.err, r


@pytest.mark.parametrize("value", ["soon", "-5s", "1e99d"])
def test_wait_db_refuses_a_bad_duration(nodb_cli: Cli, value: str) -> None:
    r = nodb_cli.invoke("worker", "--wait-db", value)
    assert r.code == 2 and "--wait-db" in r.err, r
    assert not (nodb_cli.cwd / "untouched.db").exists()
