"""Monthly billing, idempotent per period.

The occurrence's ``scheduled_for`` (not the wall clock) decides which month is billed, so a
run that is retried, rescued after a crash, or coalesced after downtime bills the right
period exactly once: the invoice key ``(customer, period)`` is unique in your own table.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from linger_sched import current_job, task

log = logging.getLogger("examples.billing")
BILLING_TZ = ZoneInfo("Europe/Berlin")


def billing_period(scheduled_for: datetime) -> str:
    """The month that ended just before this occurrence, in the billing zone ("2026-10")."""
    local = scheduled_for.astimezone(BILLING_TZ)
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


@task(cron="0 0 1 * *", tz="Europe/Berlin", misfire="coalesce", max_attempts=5, retry_backoff=60)
def bill_customers() -> None:
    job = current_job()
    assert job is not None and job.scheduled_for is not None
    period = billing_period(job.scheduled_for)
    # In a real app: INSERT INTO invoices (customer_id, period, ...) ... ON CONFLICT DO NOTHING,
    # so a second run for the same period creates nothing.
    log.warning("billing period %s (occurrence %s, attempt %s)", period, job.scheduled_for.isoformat(), job.attempt)
