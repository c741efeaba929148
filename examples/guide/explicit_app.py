"""A task on an app of your own rather than the default app (docs/tasks.md)."""

from linger_sched import Linger

app = Linger("postgresql://postgres@127.0.0.1/app", concurrency=16)
cleaned: list[str] = []


@app.task
def cleanup() -> None:
    cleaned.append("tmp")
