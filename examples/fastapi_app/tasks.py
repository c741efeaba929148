"""The shop's background work: an async task, on the shop's own linger-sched app."""

from __future__ import annotations

import asyncio
import logging
import os

from linger_sched import Linger, current_job

jobs = Linger(auto_install=True)  # LINGER_DATABASE_URL, else ./linger.db; tables made at first use
log = logging.getLogger("shop")


@jobs.task(name="shop.send_receipt", max_attempts=5)
async def send_receipt(order_id: int) -> None:
    await asyncio.sleep(0.01)  # awaits on the worker's event loop, e.g. an HTTP call to a mail API
    job = current_job()
    assert job is not None
    log.warning("receipt for order %s sent (job %s, process %s)", order_id, job.id, os.getpid())
