"""What a task learns about its job, and how its outcome is decided (docs/tasks.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from linger_sched import current_job, task

stock = {"apple": 3}
seen: list[dict[str, Any]] = []


@task(max_attempts=2, retry_backoff=0)
def reserve(sku: str, qty: int = 1) -> bool:
    job = current_job()
    assert job is not None
    seen.append({"id": job.id, "attempt": job.attempt, "max_attempts": job.max_attempts, "args": job.args})
    if stock.get(sku, 0) < qty:
        return False  # this attempt failed: tried again (at once: retry_backoff=0), then failed
    stock[sku] -= qty
    return True  # kept as the job's result


@task(timeout=5)
async def fetch_price(sku: str) -> float:
    await asyncio.sleep(0)  # on the worker's event loop; cancelled if it runs past 5 s
    job = current_job()  # works in async tasks too
    assert job is not None
    return {"apple": 0.5}.get(sku, 1.0)
