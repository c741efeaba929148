"""A shop's background work moved from huey (docs/migrating.md): the same periodic tasks,
retries and delayed mail as the huey code on that page."""

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


# @huey.periodic_task(crontab(minute="0", hour="3")) on a consumer whose local time is Berlin's,
# with @huey.lock_task: here the zone is the schedule's own, and overlap="skip" is the default
@app.task(name="shop.tasks.cleanup_sessions", schedule="cleanup-sessions", cron="0 3 * * *", tz="Europe/Berlin")
def cleanup_sessions() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    cutoff = job.scheduled_for  # the fire time, not the clock: a late or repeated run deletes the same rows
    for sid in [sid for sid, expiry in sessions.items() if expiry <= cutoff]:
        del sessions[sid]
    return cutoff.isoformat()


# @huey.periodic_task(crontab(minute="*/10")): on the clock's tens, as in huey
@app.task(name="shop.tasks.sync_inventory", schedule="sync-inventory", cron="*/10 * * * *")
def sync_inventory() -> None:
    ...  # fetch stock levels from the warehouse


# @huey.task(retries=3, retry_delay=30, retry_backoff=2)
@app.task(name="shop.tasks.send_email", max_attempts=4, retry_backoff=30)
def send_email(to: str, subject: str) -> None:
    if not smtp["up"]:
        raise ConnectionError("SMTP server unreachable")
    outbox.append((to, subject))


def remind_later(to: str) -> int:
    # send_email.schedule(args=(to, "Your cart is waiting"), delay=900)
    return send_email.enqueue(to, "Your cart is waiting", delay=900)


def fire_times(started: datetime = datetime(2027, 7, 15, 2, 25, tzinfo=BERLIN), hours: int = 1) -> list[str]:
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
