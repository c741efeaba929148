import pytest

from examples.testing.tasks import charge_card, gateway, outbox, send_email, sign_up
from linger_sched.errors import JobArgumentsError, JobFailedError


def test_sign_up_queues_a_welcome_email(linger_app):
    sign_up("ann@example.com")  # a task is still a plain function: this runs it here, now

    linger_app.testing.assert_enqueued(send_email, args=["ann@example.com", "Welcome!"], queue="mail")


def test_the_welcome_email_is_sent(linger_app):
    sign_up.enqueue("bob@example.com")

    result = linger_app.testing.run_pending()  # sign_up, then the email it queued

    assert [job.task for job in result.succeeded] == [sign_up.name, send_email.name]
    assert ("bob@example.com", "Welcome!") in outbox
    linger_app.testing.refute_enqueued()  # nothing left


def test_inline_mode(linger_app, monkeypatch):
    with linger_app.testing.inline():
        sign_up.enqueue("cy@example.com")  # runs sign_up and the email before it returns
        assert ("cy@example.com", "Welcome!") in outbox

        with pytest.raises(JobArgumentsError):  # arguments still go through JSON
            send_email.enqueue("cy@example.com", subject={"not", "JSON"})

        monkeypatch.setitem(gateway, "up", False)
        with pytest.raises(JobFailedError, match="payment gateway unreachable"):
            charge_card.enqueue(7)
