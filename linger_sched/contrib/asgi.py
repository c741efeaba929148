"""ASGI integration (FastAPI, Starlette, any framework with a lifespan): a node that starts
with the app and stops gracefully with it (``pip install linger-sched[fastapi]``).

    from fastapi import FastAPI
    from linger_sched import Linger
    from linger_sched.contrib.asgi import lifespan

    jobs = Linger()
    app = FastAPI(lifespan=lifespan(jobs))

With a lifespan of your own, either wrap it (``lifespan(jobs, wraps=my_lifespan)``) or enter
:func:`running` inside it. The node starts after your startup code and stops before your
shutdown code, so tasks may use what your lifespan sets up. Starting and stopping run on a
thread (``asyncio.to_thread``): the event loop serves on while the node connects, and while
running jobs get their shutdown grace. Each process that runs the lifespan runs one node
(``uvicorn --workers 4``: four nodes); in async code, enqueue with ``await task.aenqueue(...)``.
Nothing here imports a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..app import Linger, default_app

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def running(
    linger: Linger | None = None, *, concurrency: int | None = None, queues: Sequence[str] | None = None,
    worker: bool = True, scheduler: bool = True, grace: float | None = None,
) -> AsyncIterator[Linger]:
    """Run ``linger``'s node (default: :func:`~linger_sched.default_app`) for the block: started
    on entry (:meth:`~linger_sched.Linger.start` on a thread; its error, such as missing tables,
    is raised here), stopped on exit (:meth:`~linger_sched.Linger.stop` with ``grace``, default
    the ``shutdown_grace`` setting, on a thread)."""
    app = linger if linger is not None else default_app()
    await asyncio.to_thread(app.start, concurrency, queues, worker=worker, scheduler=scheduler)
    try:
        yield app
    finally:
        await asyncio.to_thread(app.stop, grace)


def lifespan(
    linger: Linger | None = None, *, wraps: Lifespan | None = None, concurrency: int | None = None,
    queues: Sequence[str] | None = None, worker: bool = True, scheduler: bool = True, grace: float | None = None,
) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)`` that runs
    ``linger``'s node while the app runs (see :func:`running` for the options). ``wraps`` is
    your own lifespan: it starts first and stops last, and the state it yields is the app's."""

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stack:
            state = await stack.enter_async_context(wraps(app)) if wraps is not None else None
            await stack.enter_async_context(
                running(linger, concurrency=concurrency, queues=queues, worker=worker, scheduler=scheduler, grace=grace))
            yield state

    return app_lifespan
