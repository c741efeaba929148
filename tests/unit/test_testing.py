"""The testing helpers (issue "Fit the user's web stack": testing): the pytest plugin of
``linger_sched.testing`` tested with pytester (a user's test file written, run, its outcome
counted, failing runs included), ``app.testing`` in detail through the plugin's own fixtures,
and the examples of docs/testing.md, run and compared with the doc. SQLite only."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from linger_sched import Clock, FakeClock, Linger, current_job
from linger_sched.errors import (
    FakeClockRequiredError,
    JobArgumentsError,
    JobFailedError,
    JobOptionError,
    LingerError,
    NaiveDatetimeError,
    RunLimitError,
    SpecError,
)
from linger_sched.harness import LingerTesting
from linger_sched.testing import file_database_url, on_test_database

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


@pytest.fixture(autouse=True)
def _no_configured_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run on SQLite files of their own, whatever the environment names."""
    monkeypatch.delenv("LINGER_TEST_DATABASE_URL", raising=False)


def tables_of(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- the plugin and its fixtures (pytester) ---------------------------------------------------
def test_the_plugin_is_registered_under_pytest11_and_adds_its_options(pytester: pytest.Pytester) -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("linger_sched") == "linger_sched.testing"
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--linger-database-url=URL*", "*linger_database_url*"])


@pytest.mark.parametrize("how", ["auto", "-p", "pytest_plugins", "no autoload, -p", "no autoload, -p entry point"])
def test_the_plugin_loads_once_however_it_is_named(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                     how: str) -> None:
    """Registered by its entry point and named again (``-p linger_sched.testing``, ``pytest_plugins``)
    it is loaded once, not refused by pytest as a module registered twice."""
    args = ["-p", "no:cacheprovider"]
    if how.startswith("no autoload"):
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if how in ("-p", "no autoload, -p"):
        args += ["-p", "linger_sched.testing"]
    if how == "no autoload, -p entry point":
        args += ["-p", "linger_sched"]
    header = 'pytest_plugins = ["linger_sched.testing"]\n' if how == "pytest_plugins" else ""
    pytester.makepyfile(header + """
def test_fixtures(linger_app, linger_clock):
    assert linger_app.clock is linger_clock
""")
    pytester.runpytest(*args).assert_outcomes(passed=1)


def test_without_the_plugin_there_are_no_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_fixtures(linger_app):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:linger_sched")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'linger_app' not found*"])


def test_linger_app_is_a_fresh_app_per_test_on_a_sqlite_file_and_a_fake_clock(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from datetime import datetime, timezone

        import sqlalchemy as sa

        from linger_sched import FakeClock, Linger

        seen = []

        def test_one(linger_app, linger_clock, linger_database_url, linger_table_prefix, tmp_path):
            assert isinstance(linger_app, Linger)
            assert isinstance(linger_clock, FakeClock) and linger_app.clock is linger_clock
            assert linger_clock.now() == datetime(2030, 1, 1, tzinfo=timezone.utc)
            assert linger_app.settings.database_url == linger_database_url
            assert linger_database_url.startswith("sqlite:///") and str(tmp_path) in linger_database_url
            assert linger_app.settings.table_prefix == linger_table_prefix
            assert linger_app.testing is linger_app.testing
            names = sa.inspect(linger_app.store.engine).get_table_names()
            assert linger_table_prefix + "jobs" in names  # created before the test
            linger_app.enqueue("some.task", 1)
            seen.append((linger_database_url, linger_table_prefix))

        def test_two(linger_app, linger_table_prefix):
            assert linger_app.jobs() == []  # nothing of test_one's
            seen.append((linger_app.settings.database_url, linger_table_prefix))

        def test_tables_were_dropped_after_each_test():
            (url1, prefix1), (url2, prefix2) = seen
            assert url1 != url2 and prefix1 != prefix2
            for url, prefix in seen:
                engine = sa.create_engine(url)
                assert not [t for t in sa.inspect(engine).get_table_names() if t.startswith(prefix)]
                engine.dispose()
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


@pytest.mark.parametrize("where", ["ini", "env", "cli"])
def test_the_database_url_comes_from_the_option_the_environment_or_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str,
) -> None:
    urls = {w: file_database_url(pytester.path / f"{w}.db") for w in ("ini", "env", "cli")}
    pytester.makeini(f"[pytest]\nlinger_database_url = {urls['ini']}\n")
    args = ["-p", "no:cacheprovider", "-s"]
    if where in ("env", "cli"):
        monkeypatch.setenv("LINGER_TEST_DATABASE_URL", urls["env"])
    if where == "cli":
        args += ["--linger-database-url", urls["cli"]]
    pytester.makepyfile(
        """
        def test_uses_it(linger_app, linger_database_url):
            assert linger_app.settings.database_url == linger_database_url
            linger_app.enqueue("some.task")
            assert linger_app.testing.enqueued_jobs("some.task")
            print("URL=" + linger_database_url + " PREFIX=" + linger_app.settings.table_prefix)
        """
    )
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*URL={urls[where]} PREFIX=lt*"])
    prefix = re.search(r"PREFIX=(\w+)", result.stdout.str()).group(1)  # type: ignore[union-attr]
    assert not [t for t in tables_of(urls[where]) if t.startswith(prefix)]  # dropped after the test


def test_for_app_runs_the_users_own_app_on_a_test_database_and_puts_it_back(pytester: pytest.Pytester) -> None:
    prod = pytester.path / "prod.db"
    pytester.makepyfile(
        shop=f"""
        from linger_sched import Linger

        app = Linger({file_database_url(prod)!r})

        @app.task(queue="mail")
        def send(to):
            sent.append(to)

        sent = []
        """,
        conftest="""
        from linger_sched.testing import for_app

        import shop

        linger_app = for_app(shop.app)
        """,
        test_shop="""
        from linger_sched import Clock, FakeClock

        import shop

        def test_the_app_is_the_users(linger_app, linger_clock, linger_database_url):
            assert linger_app is shop.app
            assert shop.app.settings.database_url == linger_database_url
            assert shop.app.clock is linger_clock
            shop.send.enqueue("ann")          # the code under test enqueues through its own app
            linger_app.testing.assert_enqueued(shop.send, args=["ann"], queue="mail")
            linger_app.testing.run_pending()
            assert shop.sent == ["ann"]

        def test_afterwards_the_app_is_back_on_its_own_database():
            assert shop.app.settings.database_url.endswith("prod.db")
            assert type(shop.app.clock) is Clock
        """,
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert not prod.exists()  # the production database was never touched


def test_for_app_takes_a_function_returning_the_app_such_as_default_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        conftest="""
        from linger_sched import default_app
        from linger_sched.testing import for_app

        linger_app = for_app(default_app)
        """,
        test_default="""
        from linger_sched import default_app, task

        @task
        def hello(name):
            return None

        def test_module_level_tasks(linger_app):
            assert linger_app is default_app()
            hello.enqueue("world")
            job = linger_app.testing.assert_enqueued(hello, args=["world"])
            assert linger_app.testing.run_pending().succeeded[0].id == job.id
        """,
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_for_app_refuses_what_is_not_an_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        conftest="""
        from linger_sched.testing import for_app

        linger_app = for_app(lambda: "not an app")
        """,
        test_bad="""
        def test_it(linger_app):
            pass
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError: for_app() needs a Linger app or a function returning one, got 'not an app'*"])


def test_on_test_database_puts_the_app_back_even_when_the_block_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    prod, test = file_database_url(tmp_path / "prod.db"), file_database_url(tmp_path / "test.db")
    app = Linger(prod)
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="the test failed"):
        with on_test_database(app, test, clock=clock) as same:
            assert same is app and app.clock is clock and app.settings.database_url == test
            assert app.settings.table_prefix.startswith("lt")
            app.enqueue("some.task")
            raise RuntimeError("the test failed")
    assert app.settings.database_url == prod and type(app.clock) is Clock
    assert not (tmp_path / "prod.db").exists()
    assert tables_of(test) == []  # dropped
    monkeypatch.setattr(app, "_node", object())  # a node running in this process
    with pytest.raises(LingerError, match=r"stop the app's node \(app.stop\(\)\) before"):
        with on_test_database(app, test):
            pass


# -- app.testing through pytester ---------------------------------------------------------------
def test_run_pending_runs_sync_and_async_tasks_and_records_retries_as_a_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        from datetime import timedelta

        from linger_sched import current_job

        def test_run_pending(linger_app, linger_clock):
            calls = []

            @linger_app.task(max_attempts=3, retry_backoff=60)
            def flaky(n):
                calls.append(("flaky", n, current_job().attempt))
                raise ValueError(f"boom {n}")

            @linger_app.task
            async def fetch(url):
                await asyncio.sleep(0)
                calls.append(("fetch", url, current_job().id))

            @linger_app.task
            def says_no():
                return False

            flaky_id = flaky.enqueue(1)
            fetch_id = fetch.enqueue("https://example.com")
            no_id = says_no.enqueue()
            start = linger_clock.now()

            result = linger_app.testing.run_pending()

            assert result.attempts == 3 and len(result) == 3
            assert isinstance(result, list) and result.jobs == list(result) and result[0].id == flaky_id
            assert [j.id for j in result.succeeded] == [fetch_id]
            assert ("fetch", "https://example.com", fetch_id) in calls
            assert [j.id for j in result.failed] == []
            (retry,) = [j for j in result.retrying if j.id == flaky_id]
            assert retry.attempts == 1 and "ValueError: boom 1" in retry.last_error
            assert start + timedelta(seconds=45) <= retry.run_at <= start + timedelta(seconds=75)
            no = linger_app.get_job(no_id)
            assert (no.state, no.last_error) == ("queued", "task returned False")

            assert not linger_app.testing.run_pending()  # nothing due before the backoff
            linger_app.testing.advance("10m")
            linger_app.testing.run_pending()
            linger_app.testing.advance("10m")
            last = linger_app.testing.run_pending()
            (failed,) = [j for j in last.failed if j.id == flaky_id]
            assert failed.attempts == 3 and failed.state == "failed"
            assert [c[2] for c in calls if c[0] == "flaky"] == [1, 2, 3]
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_assert_and_refute_enqueued_failure_messages(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def send(linger_app):
            @linger_app.task(queue="mail")
            def send(to, subject="hi"):
                pass
            return send

        def test_passes(linger_app, send):
            send.enqueue("ann")
            job = linger_app.testing.assert_enqueued(send, args=("ann",), queue="mail")
            assert job.args == ["ann"]
            linger_app.testing.refute_enqueued(send, args=["bob"])

        def test_assert_wrong_args(linger_app, send):
            send.enqueue("ann")
            send.enqueue("bob", subject="yo")
            linger_app.testing.assert_enqueued(send, args=["zed"])

        def test_assert_nothing_queued_but_it_ran(linger_app, send):
            send.enqueue("ann")
            linger_app.testing.run_pending()
            linger_app.testing.assert_enqueued("test_assert_and_refute_enqueued_failure_messages.send")

        def test_assert_count(linger_app, send):
            send.enqueue("ann")
            send.enqueue("bob")
            linger_app.testing.assert_enqueued(send, args=["ann"], count=2)

        def test_refute(linger_app, send):
            send.enqueue("ann")
            send.enqueue("bob")
            linger_app.testing.refute_enqueued(send, kwargs={}, args=["bob"])
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=4)
    task = "test_assert_and_refute_enqueued_failure_messages.send.<locals>.send"
    out = result.stdout.str()
    rest = "queue='mail' priority=0 run_at=2030-01-01T00:00:00+00:00 attempts=0/3"
    ann, bob = f"#1 {task} args=['ann'] kwargs={{}} {rest}", f"#2 {task} args=['bob'] kwargs={{'subject': 'yo'}} {rest}"
    bob_plain = f"#2 {task} args=['bob'] kwargs={{}} {rest}"

    def shown(*lines: str) -> None:
        block = "\n".join("E       " + line for line in lines)
        assert block in out, f"not in the output:\n{block}\n---\n{out}"

    shown(f"AssertionError: expected a queued job of task '{task}' with args=['zed']; found none.",
          "Queued jobs (2):", f"  {ann}", f"  {bob}")
    shown("AssertionError: expected a queued job of task 'test_assert_and_refute_enqueued_failure_messages.send'; "
          "found none.", "No job is queued.")
    shown(f"AssertionError: expected 2 queued jobs of task '{task}' with args=['ann']; found 1.",
          "Queued jobs (2) (* = matching):", f"  * {ann}", f"  {bob_plain}")
    shown(f"AssertionError: expected no queued job of task '{task}' with args=['bob'], kwargs={{}}; found 1.",
          "Queued jobs (2) (* = matching):", f"  {ann}", f"  * {bob_plain}")
    # the helper's own frame is hidden: pytest points at the test's line
    assert "harness.py" not in out


def test_jobs_of_the_task_in_other_states_are_listed_when_none_is_queued(linger_app: Linger) -> None:
    @linger_app.task
    def ping(n: int) -> None:
        pass

    ping.enqueue(1)
    linger_app.testing.run_pending()
    with pytest.raises(AssertionError) as caught:
        linger_app.testing.assert_enqueued(ping)
    message = str(caught.value)
    assert "No job is queued." in message
    assert f"Jobs of {ping.name} in other states (1):\n  #1 [succeeded] {ping.name} args=[1]" in message


def test_advance_materializes_occurrences_across_dst_in_berlin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from datetime import datetime
        from zoneinfo import ZoneInfo

        BERLIN = ZoneInfo("Europe/Berlin")

        def local(jobs, name):
            return [j.scheduled_for.astimezone(BERLIN).strftime("%m-%d %H:%M%z") for j in jobs if j.schedule_name == name]

        def test_spring_forward(linger_app, linger_clock):
            @linger_app.task(cron="30 2 * * *", tz="Europe/Berlin")
            def nightly():
                pass

            @linger_app.task(cron="0 * * * *", tz="Europe/Berlin")
            def hourly():
                pass

            linger_clock.set(datetime(2027, 3, 28, 0, 30, tzinfo=BERLIN))
            jobs = linger_app.testing.advance("4h", run=True)
            assert local(jobs, nightly.name) == ["03-28 03:00+0200"]  # fixed time: right after the gap
            assert local(jobs, hourly.name) == [  # wildcard hour: no 02:00 that night
                "03-28 01:00+0100", "03-28 03:00+0200", "03-28 04:00+0200", "03-28 05:00+0200",
            ]
            assert {j.state for j in jobs} == {"succeeded"}
            assert linger_clock.now() == datetime(2027, 3, 28, 5, 30, tzinfo=BERLIN)

        def test_fall_back(linger_app, linger_clock):
            @linger_app.task(cron="30 2 * * *", tz="Europe/Berlin")
            def nightly():
                pass

            @linger_app.task(cron="0 * * * *", tz="Europe/Berlin")
            def hourly():
                pass

            linger_clock.set(datetime(2027, 10, 31, 0, 30, tzinfo=BERLIN))
            jobs = linger_app.testing.advance_to(datetime(2027, 10, 31, 4, 0, tzinfo=BERLIN), run=True)
            assert local(jobs, nightly.name) == ["10-31 02:30+0200"]  # the first pass only
            assert local(jobs, hourly.name) == [
                "10-31 01:00+0200", "10-31 02:00+0200", "10-31 02:00+0100", "10-31 03:00+0100", "10-31 04:00+0100",
            ]

        def test_monthly_billing(linger_app, linger_clock):
            @linger_app.task(cron="0 0 1 * *", tz="Europe/Berlin")
            def bill():
                pass

            linger_clock.set(datetime(2027, 3, 31, 12, 0, tzinfo=BERLIN))
            linger_app.testing.advance("1d")
            job = linger_app.testing.assert_enqueued(bill, scheduled_for=datetime(2027, 4, 1, tzinfo=BERLIN))
            assert job.run_at == datetime(2027, 3, 31, 22, 0, tzinfo=ZoneInfo("UTC"))
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_inline_mode_runs_each_job_at_enqueue_after_the_json_round_trip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from datetime import datetime, timezone

        import pytest

        from linger_sched.errors import JobArgumentsError, JobFailedError

        def test_inline(linger_app):
            got = []

            @linger_app.task
            def keep(value):
                got.append(value)

            with linger_app.testing.inline():
                job_id = keep.enqueue((1, 2), )
                assert got == [[1, 2]]            # the stored JSON, not the tuple
                assert linger_app.get_job(job_id).state == "succeeded"

                with pytest.raises(JobArgumentsError) as inline_error:
                    keep.enqueue(datetime(2030, 1, 1, tzinfo=timezone.utc))
            with pytest.raises(JobArgumentsError) as plain_error:
                keep.enqueue(datetime(2030, 1, 1, tzinfo=timezone.utc))
            assert str(inline_error.value) == str(plain_error.value)
            assert "must be JSON-serializable" in str(plain_error.value)

            keep.enqueue("after the block")       # queued only
            assert got == [[1, 2]]
            linger_app.testing.assert_enqueued(keep, args=["after the block"])

        def test_inline_failure(linger_app):
            @linger_app.task(max_attempts=2)
            def broken():
                raise KeyError("gone")

            with linger_app.testing.inline():
                with pytest.raises(JobFailedError) as caught:
                    broken.enqueue()
            assert caught.value.job.state == "queued" and caught.value.job.attempts == 1
            assert "KeyError: 'gone'" in str(caught.value)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


# -- app.testing in detail, through the plugin's fixtures in this session -----------------------
def test_app_testing_is_made_once_and_is_not_a_test_class(linger_app: Linger) -> None:
    assert isinstance(linger_app.testing, LingerTesting)
    assert linger_app.testing is linger_app.testing
    assert LingerTesting.__test__ is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["banana", "-5m", "", -5, -0.001, timedelta(seconds=-1), float("nan"), float("inf"),
                                 True, None, [1], "1e400"])
def test_advance_refuses_what_is_not_a_forward_duration(linger_app: Linger, bad: Any) -> None:
    before = linger_app.clock.now()
    with pytest.raises(SpecError) as caught:
        linger_app.testing.advance(bad)
    assert "advance" in str(caught.value)
    assert linger_app.clock.now() == before


def test_advance_error_messages_say_what_is_wrong(linger_app: Linger) -> None:
    with pytest.raises(SpecError, match=r"'banana' field advance: not a duration; use e.g. '30s'"):
        linger_app.testing.advance("banana")
    with pytest.raises(SpecError, match=r"time only moves forward"):
        linger_app.testing.advance(-5)
    with pytest.raises(SpecError, match=r"past the year 9999"):
        linger_app.testing.advance("1000000w")
    with pytest.raises(SpecError, match=r"too large"):
        linger_app.testing.advance(1e30)
    with pytest.raises(SpecError, match=r"is before the clock's now \(2030-01-01T00:00:00\+00:00\)"):
        linger_app.testing.advance_to(datetime(2029, 12, 31, tzinfo=UTC))
    with pytest.raises(NaiveDatetimeError):
        linger_app.testing.advance_to(datetime(2031, 1, 1))
    with pytest.raises(TypeError):
        linger_app.testing.advance_to("2031-01-01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_steps"):
        linger_app.testing.advance("1m", max_steps=0)


def test_advance_zero_materializes_what_is_due_now(linger_app: Linger) -> None:
    @linger_app.task(every="1h")
    def hourly() -> None:
        pass

    (first,) = linger_app.testing.advance(0)  # an interval fires at its anchor: now
    assert first.scheduled_for == linger_app.clock.now()
    assert linger_app.testing.advance(timedelta(0)) == []


def test_advance_needs_a_fake_clock(tmp_path: Path) -> None:
    app = Linger(file_database_url(tmp_path / "real.db"), clock=Clock())
    try:
        with pytest.raises(FakeClockRequiredError, match=r"must run on a FakeClock.*this app's clock is Clock"):
            app.testing.advance("1m")
        with pytest.raises(FakeClockRequiredError):
            app.testing.advance_to(datetime(2031, 1, 1, tzinfo=UTC))
        # the rest works on the real clock (the database's)
        app.enqueue("no.such.task")
        assert [j.state for j in app.testing.run_pending()] == ["failed"]
    finally:
        app.store.dispose()


def test_advance_stops_at_max_steps_with_everything_before_materialized(linger_app: Linger) -> None:
    @linger_app.task(every="1s", overlap="allow")
    def often() -> None:
        pass

    start = linger_app.clock.now()
    with pytest.raises(RunLimitError, match=r"after 100 steps \(max_steps\), short of 2030-01-01T01:00:00"):
        linger_app.testing.advance("1h", max_steps=100)
    assert linger_app.clock.now() == start + timedelta(seconds=100)
    assert len(linger_app.jobs(limit=0)) == 101  # the fire at now, then one per step
    assert len(linger_app.testing.advance("10s")) == 10  # and it goes on from there


def test_advance_without_run_leaves_jobs_queued_and_overlap_skips(linger_app: Linger) -> None:
    @linger_app.task(cron="0 6 * * *")
    def morning() -> None:
        pass

    one_off = linger_app.enqueue(morning, delay="1h")
    rows = linger_app.testing.advance("3d")
    assert [(r.state, r.reason) for r in rows] == [
        ("queued", None),
        ("skipped", "overlap: previous occurrence still queued or running"),
        ("skipped", "overlap: previous occurrence still queued or running"),
    ]
    assert one_off not in [r.id for r in rows]  # occurrences only
    assert linger_app.get_job(one_off).state == "queued"  # nothing ran


def test_advance_syncs_schedules_declared_since_the_last_advance(linger_app: Linger) -> None:
    linger_app.testing.advance("1h")

    @linger_app.task
    def later() -> None:
        pass

    linger_app.schedule("every-2h", later, every="2h")
    rows = linger_app.testing.advance("5h", run=True)
    assert [r.scheduled_for - rows[0].scheduled_for for r in rows] == [timedelta(hours=h) for h in (0, 2, 4)]
    assert {r.state for r in rows} == {"succeeded"}


def test_advance_with_run_runs_retries_and_one_off_jobs_as_they_come_due(linger_app: Linger) -> None:
    ran: list[datetime] = []

    @linger_app.task(max_attempts=4, retry_backoff=30)
    def flaky() -> None:
        ran.append(linger_app.clock.now())
        if len(ran) < 3:
            raise RuntimeError("not yet")

    start = linger_app.clock.now()
    job_id = flaky.enqueue(delay="10m")
    assert linger_app.testing.advance("1h", run=True) == []
    job = linger_app.get_job(job_id)
    assert (job.state, job.attempts) == ("succeeded", 3)
    assert ran[0] == start + timedelta(minutes=10)
    assert timedelta(seconds=22.5) <= ran[1] - ran[0] <= timedelta(seconds=37.5)
    assert linger_app.clock.now() == start + timedelta(hours=1)


def test_advance_refuses_to_go_on_when_another_node_holds_the_lease(linger_app: Linger) -> None:
    linger_app.store.acquire_lease("leader", "someone-else", 3600, now=linger_app.clock.now())
    with pytest.raises(LingerError, match=r"could not take the leader lease.*held by someone-else"):
        linger_app.testing.advance("1m")


def test_run_pending_fails_a_job_of_an_unknown_task_at_once(linger_app: Linger) -> None:
    job_id = linger_app.enqueue("nobody.registered", 1, max_attempts=5)
    (job,) = linger_app.testing.run_pending().failed
    assert job.id == job_id and job.attempts == 1
    assert job.last_error is not None and job.last_error.startswith("unknown task 'nobody.registered'")
    assert not linger_app.testing.run_pending()


def test_run_pending_runs_jobs_that_tasks_enqueue_in_the_same_call(linger_app: Linger) -> None:
    order: list[str] = []

    @linger_app.task
    def child(n: int) -> None:
        order.append(f"child {n}")

    @linger_app.task
    def parent() -> None:
        order.append("parent starts")
        child.enqueue(1)
        child.enqueue(2, delay="1m")  # not due: stays queued
        order.append("parent ends")

    parent.enqueue()
    result = linger_app.testing.run_pending()
    assert order == ["parent starts", "parent ends", "child 1"]
    assert [j.task for j in result] == [parent.name, child.name]
    linger_app.testing.assert_enqueued(child, args=[2])


def test_run_pending_stops_a_task_that_enqueues_itself_forever(linger_app: Linger) -> None:
    @linger_app.task
    def forever(n: int) -> None:
        forever.enqueue(n + 1)

    forever.enqueue(0)
    with pytest.raises(RunLimitError) as caught:
        linger_app.testing.run_pending(limit=20)
    message = str(caught.value)
    assert "ran 20 attempts (limit=20) and jobs are still due" in message
    assert f"next #21 {forever.name} args=[20]" in message
    assert f"most run: {forever.name} (20x)" in message
    assert "Pass limit= to allow more" in message
    with pytest.raises(ValueError, match="limit"):
        linger_app.testing.run_pending(limit=0)


def test_run_pending_limit_reached_exactly_is_no_error(linger_app: Linger) -> None:
    @linger_app.task
    def once() -> None:
        pass

    once.enqueue()
    once.enqueue()
    assert linger_app.testing.run_pending(limit=2).attempts == 2


def test_run_pending_inside_a_task_is_refused_and_recorded_as_its_failure(linger_app: Linger) -> None:
    @linger_app.task(max_attempts=1)
    def nested() -> None:
        linger_app.testing.run_pending()

    nested.enqueue()
    (job,) = linger_app.testing.run_pending().failed
    assert "run_pending() was called while it is running jobs" in (job.last_error or "")


def test_run_pending_of_named_queues_only(linger_app: Linger) -> None:
    @linger_app.task(queue="mail")
    def mail() -> None:
        pass

    @linger_app.task
    def other() -> None:
        pass

    mail.enqueue()
    other_id = other.enqueue()
    assert [j.task for j in linger_app.testing.run_pending(queues="mail")] == [mail.name]
    assert linger_app.get_job(other_id).state == "queued"
    assert [j.id for j in linger_app.testing.run_pending(queues=["default"])] == [other_id]


def test_run_pending_ignores_the_apps_queue_setting(tmp_path: Path) -> None:
    app = Linger(file_database_url(tmp_path / "q.db"), clock=FakeClock(), queues=["mail"])
    try:
        app.enqueue("no.such", queue="default")
        assert len(app.testing.run_pending()) == 1
    finally:
        app.store.dispose()


def test_run_pending_runs_async_tasks_with_their_timeout(linger_app: Linger) -> None:
    @linger_app.task(timeout=0.05, max_attempts=1)
    async def slow() -> None:
        await asyncio.sleep(5)

    @linger_app.task
    async def fast() -> int:
        job = current_job()
        assert job is not None
        return job.id

    slow.enqueue()
    fast.enqueue()
    result = linger_app.testing.run_pending()
    assert [j.last_error for j in result.failed] == ["timed out after 0.05s"]
    assert [j.task for j in result.succeeded] == [fast.name]


def test_run_pending_from_a_thread_that_runs_an_event_loop(linger_app: Linger) -> None:
    """As in an ``async def`` test: the coroutine task runs on a thread of its own."""
    seen: list[int] = []

    @linger_app.task
    async def work(n: int) -> None:
        await asyncio.sleep(0)
        job = current_job()
        assert job is not None
        seen.append(job.id)

    job_id = work.enqueue(1)

    async def test_body() -> list[Any]:
        return list(linger_app.testing.run_pending())

    (job,) = asyncio.run(test_body())
    assert job.state == "succeeded" and seen == [job_id]


def test_enqueued_jobs_filters(linger_app: Linger) -> None:
    @linger_app.task(queue="mail")
    def send(to: str, subject: str = "hi") -> None:
        pass

    at = datetime(2030, 6, 1, 12, tzinfo=BERLIN)
    a = send.enqueue("ann", subject="yo", priority=5)
    b = send.enqueue("bob", run_at=at, unique_key="bob")
    c = linger_app.enqueue("other.task", queue="x")
    t = linger_app.testing
    assert [j.id for j in t.enqueued_jobs()] == [a, b, c]
    assert [j.id for j in t.enqueued_jobs(send)] == [a, b]
    assert [j.id for j in t.enqueued_jobs(send.name)] == [a, b]
    assert [j.id for j in t.enqueued_jobs(send, kwargs={"subject": "yo"})] == [a]
    assert [j.id for j in t.enqueued_jobs(send, args=("bob",))] == [b]
    assert [j.id for j in t.enqueued_jobs(run_at=at)] == [b]
    assert [j.id for j in t.enqueued_jobs(run_at=at.astimezone(UTC))] == [b]
    assert [j.id for j in t.enqueued_jobs(priority=5)] == [a]
    assert [j.id for j in t.enqueued_jobs(unique_key="bob")] == [b]
    assert [j.id for j in t.enqueued_jobs(queue="x")] == [c]
    assert [j.id for j in t.enqueued_jobs(scheduled_for=None, attempts=0, max_attempts=3)] == [a, b, c]
    assert t.enqueued_jobs(send, args=["nobody"]) == []
    assert t.assert_enqueued(send, count=2).id == a


def test_assertion_filters_are_checked(linger_app: Linger) -> None:
    t = linger_app.testing
    with pytest.raises(TypeError, match="args= must be a list or tuple"):
        t.assert_enqueued(args="ann")
    with pytest.raises(TypeError, match="kwargs= must be a dict"):
        t.enqueued_jobs(kwargs=["x"])
    with pytest.raises(JobArgumentsError, match="not JSON-serializable"):
        t.refute_enqueued(args=[object()])
    with pytest.raises(NaiveDatetimeError):
        t.enqueued_jobs(run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="for none, use refute_enqueued"):
        t.assert_enqueued(count=0)
    with pytest.raises(JobOptionError):
        t.enqueued_jobs("")
    with pytest.raises(TypeError):
        t.assert_enqueued(arg=[1])  # type: ignore[call-arg]  # a misspelt filter is an error, not ignored


def test_inline_mode_in_detail(linger_app: Linger) -> None:
    ran: list[Any] = []
    invoices: list[int] = []

    @dataclass
    class Invoice:
        number: int

        def perform(self) -> None:
            invoices.append(self.number)

    @linger_app.task(max_attempts=3, retry_backoff=0)
    def step(x: Any) -> None:
        ran.append(x)
        if x == "fail":
            raise RuntimeError("nope")

    @linger_app.task
    def parent() -> None:
        ran.append("parent")
        step.enqueue("from parent")
        ran.append("parent done")

    invoice = linger_app.task(Invoice)
    t = linger_app.testing
    with t.inline() as helper:
        assert helper is t
        ids = linger_app.enqueue_many(step, [(1,), (2,)])
        assert ran == [1, 2] and [linger_app.get_job(i).state for i in ids] == ["succeeded", "succeeded"]
        parent.enqueue()
        assert ran[2:] == ["parent", "parent done", "from parent"]  # after the parent's attempt
        invoice.enqueue(7)  # type: ignore[attr-defined]
        assert invoices == [7]
        with pytest.raises(JobFailedError, match=r"attempt 3 of 3 failed, failed for good") as caught:
            step.enqueue("fail")  # retry_backoff=0: its retries run in the same call
        assert caught.value.job.state == "failed"
        with t.inline(raise_failures=False):
            quiet = step.enqueue("fail")
            assert linger_app.get_job(quiet).state == "failed"
        with pytest.raises(JobFailedError):  # the outer block's setting is back
            step.enqueue("fail")
        later = step.enqueue("later", delay="1h")
        assert linger_app.get_job(later).state == "queued"
        linger_app.testing.advance("2h")  # run=True inside inline()
        assert linger_app.get_job(later).state == "succeeded"
    after = step.enqueue("after")
    assert linger_app.get_job(after).state == "queued"


# -- the examples of docs/testing.md --------------------------------------------------------------
def test_the_examples_pass() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LINGER_TEST_DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b9 passed\b", proc.stdout), proc.stdout


EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.DOTALL)


def test_docs_testing_shows_every_example_file() -> None:
    text = (ROOT / "docs/testing.md").read_text(encoding="utf-8")
    shown = {spec for spec, _ in EXAMPLE.findall(text)}
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "examples/testing").glob("*.py") if p.name != "__init__.py"}
    assert files <= shown, f"not in docs/testing.md: {sorted(files - shown)}"
