"""A shop's background work moved from APScheduler 3.x (docs/migrating.md): the same jobs,
triggers, per-customer schedules and delayed mail as the APScheduler code on that page."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from linger_sched import Linger, ScheduleStateError, current_job
from linger_sched.specs import IntervalSpec

app = Linger()  # LINGER_DATABASE_URL in production; the tests point it at a test database
BERLIN = ZoneInfo("Europe/Berlin")

sessions: dict[str, datetime] = {}  # session id -> expiry; stands in for the session table
outbox: list[tuple[str, str]] = []  # stands in for a mail server
smtp = {"up": True}
reports_sent: list[int] = []


# add_job(cleanup_sessions, "cron", hour=3, minute=0, misfire_grace_time=3600), coalesce and max_instances=1
@app.task(name="shop.tasks.cleanup_sessions", schedule="cleanup-sessions", cron="0 3 * * *", tz="Europe/Berlin",
          misfire_grace="1h")
def cleanup_sessions() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    cutoff = job.scheduled_for  # the fire time, not the clock: a late or repeated run deletes the same rows
    for sid in [sid for sid, expiry in sessions.items() if expiry <= cutoff]:
        del sessions[sid]
    return cutoff.isoformat()


# add_job(sync_inventory, "interval", minutes=10, start_date=datetime(2027, 1, 1, tzinfo=BERLIN))
@app.task(name="shop.tasks.sync_inventory", schedule="sync-inventory", every="10m",
          anchor=datetime(2027, 1, 1, tzinfo=BERLIN))
def sync_inventory() -> None:
    ...  # fetch stock levels from the warehouse


# APScheduler has no retries: here a failed attempt is retried 30 s, 60 s, 120 s later
@app.task(name="shop.tasks.send_email", max_attempts=4, retry_backoff=30)
def send_email(to: str, subject: str) -> None:
    if not smtp["up"]:
        raise ConnectionError("SMTP server unreachable")
    outbox.append((to, subject))


@app.task(name="shop.tasks.send_report")
def send_report(customer_id: int) -> None:
    reports_sent.append(customer_id)


def remind_at(to: str, when: datetime) -> int:
    # add_job(send_email, "date", run_date=when, args=[to, "Your cart is waiting"])
    return send_email.enqueue(to, "Your cart is waiting", run_at=when)  # an aware datetime


def schedule_reports_for(customer_id: int, cron: str = "0 7 * * MON") -> None:
    # add_job(send_report, "cron", ..., args=[customer_id], id=f"report-{customer_id}", replace_existing=True)
    name = f"report-{customer_id}"
    try:
        app.add_schedule(name, send_report, cron=cron, tz="Europe/Berlin", args=[customer_id])
    except ScheduleStateError:  # the name exists: replace its cadence, keep the rest
        app.update_schedule(name, cron=cron)


def customer_left(customer_id: int) -> None:
    app.remove_schedule(f"report-{customer_id}")  # remove_job(f"report-{customer_id}")


def fire_times(started: datetime = datetime(2027, 1, 14, 2, 25, tzinfo=BERLIN), hours: int = 1) -> list[str]:
    """When this app's declared schedules fire in the first ``hours`` after its first node
    started at ``started``, in Berlin time (docs/migrating.md lists them; the tests run the
    scheduler and compare). An interval without ``anchor=`` is anchored when first registered."""
    fires = []
    for sched in app.registry.schedules.values():
        spec, t = sched.spec, started
        if isinstance(spec, IntervalSpec) and spec.anchor is None:
            spec, t = spec.with_anchor(started), started - timedelta(microseconds=1)  # fires at its anchor
        while (t := spec.next_after(t)) <= started + timedelta(hours=hours):
            fires.append((t, sched.name))
    return [f"{t.astimezone(BERLIN):%Y-%m-%d %H:%M %Z}  {name}" for t, name in sorted(fires)]
