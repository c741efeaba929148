"""Tasks used by the benchmarks."""

from linger_sched import task


@task
def noop(i: int = 0) -> None:
    return None
