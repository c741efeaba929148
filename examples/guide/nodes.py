"""A node inside a web process: background threads, a hook at stop (docs/nodes.md)."""

from __future__ import annotations

from linger_sched import Linger

app = Linger()  # LINGER_DATABASE_URL, else ./linger.db
flushed: list[str] = []


@app.task
def resize(image: str) -> str:
    return f"{image} resized"


@app.on_halt
def flush_metrics() -> None:  # called once when the node is asked to stop
    flushed.append("metrics")


def start_background_node() -> None:
    app.start(concurrency=4)  # background threads: worker + scheduler (leader-elected)


def leads() -> bool:
    return app.is_leader()  # True while this process's node holds the leader lease


def stop_background_node() -> None:
    app.stop(grace=10)  # also called at interpreter exit (with the shutdown grace)
