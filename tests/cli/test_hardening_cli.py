"""The CLI under hostile input: numbers and times out of every range, bad table prefixes,
passwords in URLs, a private SQLite file. A traceback anywhere is a failure (``Cli.invoke``
re-raises it)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cli_support import Cli
from linger_sched.store import Store

pytestmark = pytest.mark.timeout(120)

HUGE = "99999999999999999999"  # > 2**64


def assert_usage_error(r: object, named: str) -> None:
    code, err = getattr(r, "code"), getattr(r, "err")
    assert code == 2, r
    assert named in err, r
    assert "Traceback" not in err, r


# -- 13: numbers and times ----------------------------------------------------------------
@pytest.mark.parametrize("job_id", [HUGE, "-" + HUGE, str(2**63)])
def test_job_ids_outside_the_64_bit_range_are_simply_not_found(cli: Cli, store: Store, job_id: str) -> None:
    for action in ("show", "retry", "cancel"):
        r = cli.invoke("jobs", action, "--", job_id)  # "--": a negative number is not an option
        assert r.code == 1, (action, r)
        assert f"no job with id {job_id}" in r.err, (action, r)
        assert "Traceback" not in r.err


@pytest.mark.parametrize("args,named", [
    (["enqueue", "noop", "--priority", HUGE], "--priority"),
    (["enqueue", "noop", "--priority", str(2**31)], "--priority"),
    (["enqueue", "noop", "--priority", str(-(2**31) - 1)], "--priority"),
    (["jobs", "--limit", HUGE], "--limit"),
    (["jobs", "--limit", "0"], "--limit"),
    (["jobs", "--limit", "-1"], "--limit"),
    (["worker", "--burst", "--concurrency", HUGE], "--concurrency"),
    (["run", "--concurrency", HUGE], "--concurrency"),
    (["schedules", "--next", HUGE], "--next"),
    (["enqueue", "noop", "--run-at", "9999-12-31T23:59:59-05:00"], "--run-at"),
    (["enqueue", "noop", "--run-at", "0001-01-01T00:30:00+01:00"], "--run-at"),
    (["enqueue", "noop", "--in", "9999999w"], "--in"),
    (["enqueue", "noop", "--in", HUGE], "--in"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_numbers_and_times_out_of_range_are_usage_errors(cli: Cli, store: Store, args: list[str], named: str) -> None:
    store.enqueue([{"task": "add", "args": "{}"}])
    r = cli.invoke(*args, "--import", "clijobs")
    assert_usage_error(r, named)
    assert len(store.list_jobs()) == 1  # nothing was written


def test_priority_at_the_edges_of_its_range_round_trips(cli: Cli, store: Store) -> None:
    for priority in (2**31 - 1, -(2**31)):
        r = cli.invoke("enqueue", "noop", "--import", "clijobs", "--priority", str(priority))
        assert r.code == 0, r
        assert store.get_job(int(r.out.strip())).priority == priority


def test_job_list_limit_up_to_the_64_bit_maximum(cli: Cli, store: Store) -> None:
    store.enqueue([{"task": "add", "args": "{}"} for _ in range(3)])
    r = cli.invoke("jobs", "--limit", str(2**63 - 1))
    assert r.code == 0, r
    assert len(r.out.strip().splitlines()) == 1 + 3


@pytest.mark.parametrize("var,value", [
    ("LINGER_CLOCK_OFFSET", "nan"), ("LINGER_CLOCK_OFFSET", "1e300"), ("LINGER_CLOCK_OFFSET", "-inf"),
    ("LINGER_CLOCK_OFFSET", "inf"), ("LINGER_CLOCK_OFFSET", "1e10"),
    ("LINGER_TICK_INTERVAL", "9999999w"), ("LINGER_LEASE_TTL", "9999999w"), ("LINGER_JOB_LEASE_TTL", "9999999w"),
    ("LINGER_POLL_INTERVAL", "9999999w"), ("LINGER_SHUTDOWN_GRACE", "9999999w"), ("LINGER_KEEP_FINISHED", "9999999w"),
    ("LINGER_CONCURRENCY", HUGE),
])
def test_settings_out_of_range_in_the_environment_are_usage_errors(workdir: Path, var: str, value: str) -> None:
    c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'untouched.db'}", var: value})
    r = c.invoke("worker", "--burst")
    assert_usage_error(r, var)
    assert not (workdir / "untouched.db").exists()


def test_the_console_script_reports_a_bad_clock_offset_without_a_traceback(workdir: Path) -> None:
    c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'untouched.db'}", "LINGER_CLOCK_OFFSET": "nan"})
    r = c.run("jobs")
    assert_usage_error(r, "LINGER_CLOCK_OFFSET")


def test_retry_of_a_job_whose_unique_key_is_held_says_by_whom(cli: Cli, store: Store) -> None:
    (old,) = store.enqueue([{"task": "add", "args": "{}", "unique_key": "report:7", "max_attempts": 1}])
    (claimed,) = store.claim("n", None, 1, 30)
    store.finish("n", failed=[(claimed.id, "boom", None)])
    (holder,) = store.enqueue([{"task": "add", "args": "{}", "unique_key": "report:7"}])
    r = cli.invoke("jobs", "retry", str(old))
    assert r.code == 1, r
    assert "report:7" in r.err and f"job {holder}" in r.err and "StoreError" not in r.err, r
    assert store.get_job(old).state == "failed"


# -- 14: the table prefix -------------------------------------------------------------------
@pytest.mark.parametrize("bad", ['x";drop table t;--', "1abc", "a-b", "a" * 40, "préfix_"])
def test_a_bad_table_prefix_is_a_usage_error_everywhere(workdir: Path, bad: str) -> None:
    url = f"sqlite:///{workdir / 'untouched.db'}"
    c = Cli(workdir, {"LINGER_DATABASE_URL": url, "LINGER_TABLE_PREFIX": bad})
    for args in (["db", "init"], ["jobs"], ["enqueue", "noop", "--import", "clijobs"], ["run"]):
        r = c.invoke(*args)
        assert r.code == 2 and "table_prefix" in r.err.lower() and "Traceback" not in r.err, (args, r)
    # schedules.yaml (JSON is YAML: the prefix is quoted whatever it holds)
    (workdir / "schedules.yaml").write_text(f"imports: [clijobs]\ntable_prefix: {json.dumps(bad)}\n", encoding="utf-8")
    r = Cli(workdir, {"LINGER_DATABASE_URL": url}).invoke("db", "init")
    assert_usage_error(r, "table_prefix")
    assert not (workdir / "untouched.db").exists()


# -- 16: secrets in URLs and the SQLite file's mode -------------------------------------------
@pytest.mark.parametrize("url", [
    "postgresql://u:S3cr3t@127.0.0.1:notaport/db",  # does not parse
    "nosql://u:S3cr3t@127.0.0.1/db",  # unsupported
    "postgresql+nodriver://u:S3cr3t@127.0.0.1/db",  # no such driver
    "mysql+pymysql://u:S3cr3t@127.0.0.1:1/db",  # nothing listens
])
def test_passwords_in_database_urls_are_never_printed(nodb_cli: Cli, url: str) -> None:
    for args in (["jobs"], ["db", "init"], ["status"], ["enqueue", "add"]):
        r = nodb_cli.invoke(*args, "--database", url, "-v")
        assert r.code in (1, 2), (args, r)
        assert "S3cr3t" not in r.err + r.out, (args, r)
        assert "Traceback" not in r.err, (args, r)


def test_db_init_prints_the_url_without_its_password(workdir: Path, db_url: str, prefix: str, empty_db: Store) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite URLs carry no password")
    scheme, rest = db_url.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user.split(':')[0]}:S3cr3t@{host}"
    c = Cli(workdir, {"LINGER_DATABASE_URL": url, "LINGER_TABLE_PREFIX": prefix})
    r = c.invoke("db", "init", "-v")
    assert "S3cr3t" not in r.out + r.err, r
    if r.code == 0:  # PostgreSQL: the test server trusts local users whatever the password
        assert "***" in r.out, r
    else:  # MariaDB: root has no password, so this one is refused
        assert r.code == 1 and "Access denied" in r.err, r


def test_cli_creates_a_private_sqlite_file(workdir: Path) -> None:
    old = os.umask(0o022)
    try:
        c = Cli(workdir, {"LINGER_DATABASE_URL": f"sqlite:///{workdir / 'fresh.db'}"})
        assert c.run("db", "init").code == 0
        r = c.run("enqueue", "add", "--import", "clijobs", "--args", "[1, 2]")
        assert r.code == 0, r
    finally:
        os.umask(old)
    found = [p for p in workdir.iterdir() if p.name.startswith("fresh.db")]
    assert workdir / "fresh.db" in found
    for p in found:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))


# -- 20: a fresh database ----------------------------------------------------------------------
def test_read_only_commands_do_not_create_a_sqlite_file(nodb_cli: Cli) -> None:
    for args in (["jobs"], ["jobs", "show", "1"], ["status"], ["schedules"], ["jobs", "retry", "1"], ["enqueue", "add"]):
        r = nodb_cli.invoke(*args)
        assert r.code == 1 and "linger-sched db init" in r.err, (args, r)
        assert not (nodb_cli.cwd / "untouched.db").exists(), args


def test_enqueue_checks_the_arguments_against_the_task(cli: Cli, store: Store) -> None:
    """Hardening 9: an importable task's arguments are bound at enqueue, not hours later."""
    r = cli.invoke("enqueue", "add", "--import", "clijobs")
    assert r.code == 2 and "missing a required argument: 'a'" in r.err and "add" in r.err, r
    r = cli.invoke("enqueue", "add", "--args", "[1, 2]", "--kwargs", '{"c": 3}', "--import", "clijobs")
    assert r.code == 2 and "unexpected keyword argument 'c'" in r.err, r
    assert store.count_by_state() == {}
    r = cli.invoke("enqueue", "add", "--args", "[1, 2]", "--import", "clijobs")
    assert r.code == 0 and store.count_by_state() == {"queued": 1}, r


def test_resume_of_a_schedule_that_is_not_paused_says_so(cli: Cli, store: Store) -> None:
    """Hardening 7: resuming an unpaused schedule changes nothing, and the CLI says so."""
    from linger_sched import Linger

    app = Linger(store.url, table_prefix=store.prefix)

    @app.task(name="tick", every="1h")
    def tick() -> None: ...

    app.sync_schedules()
    before = app.store.get_schedule("tick")
    r = cli.invoke("schedules", "resume", "tick")
    assert r.code == 0 and "schedule tick is not paused: nothing changed" in r.out, r
    assert app.store.get_schedule("tick").next_run_at == before.next_run_at
    assert cli.invoke("schedules", "pause", "tick").out.strip() == "schedule tick paused"
    assert cli.invoke("schedules", "resume", "tick").out.strip() == "schedule tick resumed"
    app.store.dispose()
