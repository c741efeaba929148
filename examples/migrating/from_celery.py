"""A shop's background work moved from Celery and celery beat (docs/migrating.md): the same
tasks, beat entries, retries and delayed mail as the Celery project on that page."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from linger_sched import Linger, current_job
from linger_sched.specs import IntervalSpec

app = Linger()  # LINGER_DATABASE_URL in production; the tests point it at a test database
BERLIN = ZoneInfo("Europe/Berlin")

sessions: dict[str, datetime] = {}  # session id -> expiry; stands in for the session table
outbox: list[tuple[str, str]] = []  # stands in for a mail server
smtp = {"up": True}


# beat entry "cleanup-sessions": crontab(hour=3, minute=0) under timezone = "Europe/Berlin"
@app.task(name="shop.tasks.cleanup_sessions", schedule="cleanup-sessions", cron="0 3 * * *", tz="Europe/Berlin",
          queue="maintenance")
def cleanup_sessions() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    cutoff = job.scheduled_for  # the fire time, not the clock: a late or repeated run deletes the same rows
    for sid in [sid for sid, expiry in sessions.items() if expiry <= cutoff]:
        del sessions[sid]
    return cutoff.isoformat()


# beat entry "sync-inventory": schedule 600.0 (seconds)
@app.task(name="shop.tasks.sync_inventory", schedule="sync-inventory", every="10m")
def sync_inventory() -> None:
    ...  # fetch stock levels from the warehouse


# autoretry_for=(ConnectionError,), retry_backoff=30, max_retries=3; routed to the "mail" queue
@app.task(name="shop.tasks.send_email", queue="mail", max_attempts=4, retry_backoff=30)
def send_email(to: str, subject: str) -> None:
    if not smtp["up"]:
        raise ConnectionError("SMTP server unreachable")
    outbox.append((to, subject))


def remind_later(to: str) -> int:
    # send_email.apply_async((to, "Your cart is waiting"), countdown=900)
    return send_email.enqueue(to, "Your cart is waiting", delay=timedelta(minutes=15))


def fire_times(started: datetime = datetime(2027, 1, 14, 2, 25, tzinfo=BERLIN), hours: int = 1) -> list[str]:
    """When this app's schedules fire in the first ``hours`` after its first node started at
    ``started``, in Berlin time (docs/migrating.md lists them; the tests run the scheduler and
    compare). An interval without ``anchor=`` is anchored when it is first registered."""
    fires = []
    for sched in app.registry.schedules.values():
        spec, t = sched.spec, started
        if isinstance(spec, IntervalSpec) and spec.anchor is None:
            spec, t = spec.with_anchor(started), started - timedelta(microseconds=1)  # fires at its anchor
        while (t := spec.next_after(t)) <= started + timedelta(hours=hours):
            fires.append((t, sched.name))
    return [f"{t.astimezone(BERLIN):%Y-%m-%d %H:%M %Z}  {name}" for t, name in sorted(fires)]
