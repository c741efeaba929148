from datetime import datetime
from zoneinfo import ZoneInfo

from examples.testing.tasks import bill_customers, billed, nightly_report

BERLIN = ZoneInfo("Europe/Berlin")


def test_monthly_billing_runs_at_midnight_on_the_first_in_berlin(linger_app, linger_clock):
    linger_clock.set(datetime(2027, 1, 31, 12, 0, tzinfo=BERLIN))
    linger_app.testing.advance("1d")
    job = linger_app.testing.assert_enqueued(bill_customers)
    assert job.scheduled_for == datetime(2027, 2, 1, 0, 0, tzinfo=BERLIN)


def test_billing_bills_the_occurrence_it_was_scheduled_for(linger_app, linger_clock):
    linger_clock.set(datetime(2027, 2, 28, 12, 0, tzinfo=BERLIN))
    linger_app.testing.advance("1d", run=True)  # run=True: a worker runs each job as it comes due
    assert billed[-1] == "2027-02-28T23:00:00+00:00"  # 2027-03-01 00:00 in Berlin


def test_nightly_report_across_the_spring_forward_change(linger_app, linger_clock):
    linger_clock.set(datetime(2027, 3, 27, 12, 0, tzinfo=BERLIN))

    occurrences = linger_app.testing.advance("2d", run=True)

    assert [(o.task, o.scheduled_for.astimezone(BERLIN).isoformat(), o.state) for o in occurrences] == [
        # on 2027-03-28 02:30 does not exist in Berlin (02:00 -> 03:00): it fires once, right after the gap
        (nightly_report.name, "2027-03-28T03:00:00+02:00", "succeeded"),
        (nightly_report.name, "2027-03-29T02:30:00+02:00", "succeeded"),
    ]


def test_nightly_report_across_the_fall_back_change(linger_app, linger_clock):
    linger_clock.set(datetime(2027, 10, 30, 12, 0, tzinfo=BERLIN))

    occurrences = linger_app.testing.advance("1d", run=True)

    # on 2027-10-31 02:30 happens twice in Berlin (03:00 -> 02:00): it fires once, at the first
    assert [o.scheduled_for.isoformat() for o in occurrences] == ["2027-10-31T00:30:00+00:00"]
