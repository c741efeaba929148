"""A small shop's background work, on the shop's own app (tested in examples/testing/)."""

from __future__ import annotations

from linger_sched import Linger, current_job

app = Linger()  # LINGER_DATABASE_URL in production; the tests point it at a test database

outbox: list[tuple[str, str]] = []  # stands in for a mail server
gateway = {"up": True}  # stands in for a payment gateway
billed: list[str] = []


@app.task(queue="mail", max_attempts=5, retry_backoff=30)
def send_email(to: str, subject: str) -> None:
    outbox.append((to, subject))


@app.task
def sign_up(email: str) -> None:
    # ... create the account, then:
    send_email.enqueue(email, "Welcome!")


@app.task(max_attempts=3, retry_backoff=60)
def charge_card(order_id: int) -> None:
    if not gateway["up"]:
        raise ConnectionError(f"payment gateway unreachable (order {order_id})")


@app.task(cron="0 0 1 * *", tz="Europe/Berlin")
def bill_customers() -> None:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    billed.append(job.scheduled_for.isoformat())  # the period is the occurrence's, not the wall clock's


@app.task(cron="30 2 * * *", tz="Europe/Berlin")
def nightly_report() -> None: ...
