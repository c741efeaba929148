"""The pytest plugin on a server database: ``--linger-database-url`` gives each test tables of
its own prefix on that database, and drops them after it (issue "Fit the user's web stack":
testing). Runs once per database of ``db_url`` (SQLite: a file given by URL, PostgreSQL,
MariaDB; an unreachable server skips, or fails under CI=true)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

pytest_plugins = ["pytester"]


def test_the_plugin_runs_a_users_tests_on_the_named_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, db_url: str,
) -> None:
    monkeypatch.delenv("LINGER_TEST_DATABASE_URL", raising=False)
    pytester.makepyfile(
        """
        from datetime import datetime
        from zoneinfo import ZoneInfo

        import sqlalchemy as sa

        BERLIN = ZoneInfo("Europe/Berlin")

        def test_on_the_database(linger_app, linger_clock, linger_database_url, linger_table_prefix):
            assert linger_app.settings.database_url == linger_database_url
            assert linger_table_prefix + "jobs" in sa.inspect(linger_app.store.engine).get_table_names()
            linger_clock.set(datetime(2027, 3, 27, 12, 0, tzinfo=BERLIN))
            ran = []

            @linger_app.task(max_attempts=2, retry_backoff=60)
            def charge(order):
                ran.append(order)
                if len(ran) == 1:
                    raise ConnectionError("gateway down")

            @linger_app.task(cron="30 2 * * *", tz="Europe/Berlin")
            def nightly():
                pass

            charge.enqueue(42)
            linger_app.testing.assert_enqueued(charge, args=[42])
            (retrying,) = linger_app.testing.run_pending().retrying
            assert "ConnectionError: gateway down" in retrying.last_error

            rows = linger_app.testing.advance("2d", run=True)
            assert [r.scheduled_for.astimezone(BERLIN).isoformat() for r in rows] == [
                "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00",
            ]
            assert linger_app.get_job(retrying.id).state == "succeeded"
            linger_app.testing.refute_enqueued()

            with linger_app.testing.inline():
                charge.enqueue(43)
            assert ran == [42, 42, 43]
            print("PREFIX=" + linger_table_prefix)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--linger-database-url", db_url)
    result.assert_outcomes(passed=1)
    prefix = re.search(r"PREFIX=(\w+)", result.stdout.str())
    assert prefix is not None
    engine = sa.create_engine(db_url)
    try:
        left = [t for t in sa.inspect(engine).get_table_names() if t.startswith(prefix.group(1))]
    finally:
        engine.dispose()
    assert left == []  # dropped after the test
