"""Idempotent tasks keyed on ``scheduled_for`` and the job id (docs/explanation/guarantees.md)."""

from __future__ import annotations

import sqlite3
from zoneinfo import ZoneInfo

from linger_sched import Linger, current_job

app = Linger("sqlite:///billing.db")
BERLIN = ZoneInfo("Europe/Berlin")
LEDGER = "ledger.db"


def record_once(key: str, amount_cents: int, path: str = LEDGER) -> bool:
    """Write the charge under ``key`` unless it is there already; True when this call wrote it.
    The primary key makes a second attempt of the same job (or a second job for the same
    period) a no-op instead of a second charge."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, amount_cents INTEGER)")
        cur = db.execute("INSERT OR IGNORE INTO charges VALUES (?, ?)", (key, amount_cents))
        return cur.rowcount == 1


@app.task(name="billing.charge_month", cron="0 0 1 * *", tz="Europe/Berlin")
def charge_month() -> str:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    # the fire time, not the clock: the same on every attempt, late or not
    period = job.scheduled_for.astimezone(BERLIN).strftime("%Y-%m")
    record_once(f"charge:{period}", 4900)
    return period


@app.task(name="billing.refund")
def refund(order_id: int) -> None:
    job = current_job()
    assert job is not None
    # a one-off job has no scheduled_for: its id is the same on every attempt
    record_once(f"refund:{order_id}:job-{job.id}", -4900)
