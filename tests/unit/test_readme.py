"""README.md's examples (examples/quickstart.py) do what the README says, on the default app
with a fake clock (SQLite). The README's blocks being that file verbatim, and its shell
commands being run: tests/acceptance/test_docs_examples.py and test_readme_commands.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import linger_sched.app
from examples import quickstart
from linger_sched import default_app
from linger_sched.testing import for_app

BERLIN = ZoneInfo("Europe/Berlin")
linger_app = for_app(default_app)


@pytest.fixture(autouse=True)
def _the_default_app_of_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' @task functions are bound to the default app of the moment they were
    imported (at collection); a test that ran before may have replaced that app (the CLI tests
    start each command from a fresh default app): make it the default again for these tests."""
    monkeypatch.setattr(linger_sched.app, "_default", quickstart.send_welcome.app)


def test_sign_up_sends_the_welcome_mail_ten_minutes_later(linger_app, linger_clock) -> None:
    job_id = quickstart.sign_up("ann@example.com")
    job = linger_app.get_job(job_id)
    assert job.state == "queued" and job.run_at == linger_clock.now() + timedelta(minutes=10)
    assert job.max_attempts == 5
    linger_app.testing.advance("9m")
    assert linger_app.get_job(job_id).state == "queued"
    linger_app.testing.advance("1m")
    linger_app.testing.run_pending()
    finished = linger_app.get_job(job_id)
    assert (finished.state, finished.result) == ("succeeded", "welcome mail sent to ann@example.com")


def test_customers_are_billed_at_midnight_berlin_on_the_first(linger_app, linger_clock) -> None:
    linger_clock.set(datetime(2027, 1, 31, 23, 30, tzinfo=BERLIN))
    linger_app.testing.advance("29m")
    assert not [j for j in linger_app.jobs() if j.task == quickstart.bill_customers.name]
    linger_app.testing.advance("1m")  # 2027-02-01 00:00 Berlin = 2027-01-31 23:00 UTC
    job = linger_app.testing.assert_enqueued(quickstart.bill_customers)
    assert job.scheduled_for == datetime(2027, 2, 1, 0, 0, tzinfo=BERLIN)
    linger_app.testing.run_pending()
    assert linger_app.get_job(job.id).result == "billed 2027-02"
