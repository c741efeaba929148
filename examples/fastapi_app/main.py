"""The shop's API: ``uvicorn examples.fastapi_app.main:app``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

from examples.fastapi_app.tasks import jobs, send_receipt
from linger_sched.contrib.asgi import lifespan

app = FastAPI(lifespan=lifespan(jobs))  # a node runs in this process while the app runs


@app.post("/orders/{order_id}", status_code=202)
async def create_order(order_id: int) -> dict[str, int]:
    job_id = await send_receipt.aenqueue(order_id)  # written on a thread: the event loop serves on
    return {"job": job_id}


@app.get("/jobs/{job_id}")
async def job_status(job_id: int) -> dict[str, Any]:
    job = await asyncio.to_thread(jobs.get_job, job_id)
    return {"id": job.id, "state": job.state, "attempts": job.attempts}
