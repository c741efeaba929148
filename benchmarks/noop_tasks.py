"""Tasks used by the drain, memory and profile benchmarks (registered on the default app)."""

from linger_sched import task


@task
def noop(i: int = 0) -> None:
    return None
