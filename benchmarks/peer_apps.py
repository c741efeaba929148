"""The peers' task modules, configured from the environment by benchmarks/peers.py.

Each no-op task counts its calls; the count is written to ``$BENCH_COUNT_FILE`` at exit so the
harness can check that every job ran. Only importable in benchmarks/.venv (huey, procrastinate).
"""

from __future__ import annotations

import atexit
import itertools
import os

_calls = itertools.count()
_count_file = os.environ.get("BENCH_COUNT_FILE")


@atexit.register
def _write_count() -> None:
    if _count_file:
        n = next(_calls)
        with open(_count_file, "w") as f:
            f.write(str(n))


def make_huey(filename: str):
    """SqliteHuey (WAL, its default) with synchronous=NORMAL, the durability linger-sched uses."""
    from huey import SqliteHuey

    class NormalSyncSqliteHuey(SqliteHuey):
        def get_storage(self, **kwargs):
            storage = super().get_storage(**kwargs)
            create = storage._create_connection

            def connect():
                conn = create()
                conn.execute("pragma synchronous=NORMAL")
                return conn

            storage._create_connection = connect
            return storage

    h = NormalSyncSqliteHuey("bench", filename=filename, results=False)

    @h.task(name="huey_noop")
    def huey_noop(i: int = 0) -> None:
        next(_calls)

    return h, huey_noop


def make_procrastinate(dsn: str, schema: str):
    """A procrastinate App on its psycopg 3 connector, its tables in their own schema."""
    import procrastinate

    a = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, kwargs={"options": f"-c search_path={schema}"})
    )

    @a.task(name="noop")
    def procrastinate_noop(i: int = 0) -> None:
        next(_calls)

    return a, procrastinate_noop


huey = make_huey(os.environ["BENCH_HUEY_DB"])[0] if os.environ.get("BENCH_HUEY_DB") else None
app = (
    make_procrastinate(os.environ["BENCH_PROCRASTINATE_DSN"], os.environ["BENCH_PROCRASTINATE_SCHEMA"])[0]
    if os.environ.get("BENCH_PROCRASTINATE_DSN") else None
)
