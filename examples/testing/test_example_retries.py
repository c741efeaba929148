from examples.testing.tasks import charge_card, gateway


def test_a_failing_charge_is_retried_then_given_up(linger_app, monkeypatch):
    monkeypatch.setitem(gateway, "up", False)
    job_id = charge_card.enqueue(42)  # max_attempts=3, retry_backoff=60

    first = linger_app.testing.run_pending()
    assert [job.id for job in first.retrying] == [job_id]  # attempt 1 failed: queued again 60 s (±25 %) later
    assert not linger_app.testing.run_pending()  # nothing is due before then

    linger_app.testing.advance("75s")  # past the first backoff
    assert linger_app.testing.run_pending().retrying  # attempt 2 failed: 120 s (±25 %) later

    linger_app.testing.advance("150s")
    (job,) = linger_app.testing.run_pending().failed  # attempt 3 of 3 failed: given up
    assert job.attempts == 3
    assert "ConnectionError: payment gateway unreachable (order 42)" in job.last_error


def test_a_charge_succeeds_once_the_gateway_is_back(linger_app, monkeypatch):
    monkeypatch.setitem(gateway, "up", False)
    job_id = charge_card.enqueue(43)
    linger_app.testing.run_pending()

    monkeypatch.setitem(gateway, "up", True)
    linger_app.testing.advance("10m", run=True)  # the retry runs when it comes due

    job = linger_app.get_job(job_id)
    assert (job.state, job.attempts) == ("succeeded", 2)
