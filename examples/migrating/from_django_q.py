"""A shop's background work moved from django-q2 (docs/migrating.md): the same tasks, and
``copy_schedule()``, which re-creates a django-q ``Schedule`` row as a runtime schedule."""

from __future__ import annotations

import ast
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from linger_sched import Linger, current_job

app = Linger()  # in a Django project: from linger_sched.contrib.django import app (docs/django.md)
TIME_ZONE = "Europe/Berlin"  # Q_CLUSTER["time_zone"], else settings.TIME_ZONE

sessions: dict[str, datetime] = {}  # session id -> expiry; stands in for the session table
outbox: list[tuple[str, str]] = []  # stands in for a mail server
smtp = {"up": True}


@app.task(name="shop.tasks.cleanup_sessions", timeout=60)
def cleanup_sessions() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    cutoff = job.scheduled_for  # the fire time, not the clock: a late or repeated run deletes the same rows
    for sid in [sid for sid, expiry in sessions.items() if expiry <= cutoff]:
        del sessions[sid]
    return cutoff.isoformat()


@app.task(name="shop.tasks.sync_inventory", timeout=60)
def sync_inventory() -> None:
    ...  # fetch stock levels from the warehouse


# Q_CLUSTER max_attempts=4; a failed attempt comes back 60 s, 120 s, 240 s later (django-q: after "retry")
@app.task(name="shop.tasks.send_email", timeout=60, max_attempts=4, retry_backoff=60)
def send_email(to: str, subject: str) -> None:
    if not smtp["up"]:
        raise ConnectionError("SMTP server unreachable")
    outbox.append((to, subject))


def welcome(to: str) -> int:
    return send_email.enqueue(to, "Welcome")  # async_task("shop.tasks.send_email", to, "Welcome")


def copy_schedule(row: Any, *, misfire: str = "coalesce") -> int | None:
    """Re-create one django-q ``Schedule`` (``row``: the model instance) as a runtime schedule of
    the same name, or, for a ONCE schedule, as a job at its ``next_run`` (its id is returned).
    ``misfire="all"`` keeps ``catch_up=True``. Its task must be a linger-sched task of the
    name ``row.func``."""
    name = row.name or f"django-q-{row.pk}"
    args = ast.literal_eval(row.args) if row.args else ()
    args = list(args) if isinstance(args, tuple) else [args]  # django-q's "1, 2" or a single value
    kwargs = ast.literal_eval(row.kwargs) if row.kwargs else {}  # the dict form of Schedule.kwargs
    local = row.next_run.astimezone(ZoneInfo(TIME_ZONE))
    when: dict[str, Any]
    if row.schedule_type == "O":  # ONCE
        return app.enqueue(row.func, *args, run_at=row.next_run, **kwargs)
    if row.schedule_type == "C":  # CRON
        when = {"cron": row.cron, "tz": TIME_ZONE}
    elif row.schedule_type in ("I", "H"):  # MINUTES, HOURLY: the same cadence, anchored at next_run
        when = {"every": f"{row.minutes or 1}m" if row.schedule_type == "I" else "1h", "anchor": row.next_run}
    elif row.schedule_type == "D":  # DAILY: at next_run's local time
        when = {"cron": f"{local.minute} {local.hour} * * *", "tz": TIME_ZONE}
    elif row.schedule_type == "W":  # WEEKLY: on next_run's weekday (cron: 0 is Sunday)
        when = {"cron": f"{local.minute} {local.hour} * * {local.isoweekday() % 7}", "tz": TIME_ZONE}
    else:
        raise ValueError(f"schedule {name}: type {row.schedule_type!r} has no plain translation; write its cron")
    app.add_schedule(name, row.func, args=args, kwargs=kwargs, misfire=misfire, **when)
    return None
