"""`db upgrade` brings an older install to the current schema: afterwards it equals a fresh one,
and every row the old tables held is still there with the same values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from linger_sched.store import SCHEMA_VERSION, Store, encode_args

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)

# The first release's tables (schema version 0): the columns and indexes it had. Everything
# else in today's tables was added since and must be added by the upgrade, on tables with rows.
LEGACY_COLUMNS = {
    "jobs": ("id", "task", "args", "queue", "priority", "state", "run_at", "attempts", "max_attempts", "locked_by",
             "locked_until", "last_error", "schedule_name", "scheduled_for", "unique_key", "active_key", "created_at",
             "started_at", "finished_at"),
    "schedules": ("name", "task", "spec", "tz", "anchor", "args", "options", "next_run_at", "last_run_at", "paused",
                  "enabled", "spec_hash", "updated_at"),
    "leases": ("name", "holder", "epoch", "acquired_at", "expires_at"),
    "nodes": ("id", "host", "pid", "roles", "registry_hash", "version", "started_at", "heartbeat_at"),
    "meta": ("key", "value"),
}
LEGACY_INDEXES = ("jobs_claim_ix", "jobs_lock_ix", "schedules_due_ix")


def legacy_column(c: sa.Column[Any]) -> sa.Column[Any]:
    """``c`` as the first release declared it: plain TEXT (64 KB on MySQL), no server default."""
    typ = sa.Text() if isinstance(c.type, sa.Text) else c.type
    extra = [c.computed._copy()] if c.computed is not None else []
    return sa.Column(c.name, typ, *extra, primary_key=c.primary_key, nullable=c.nullable, autoincrement=c.autoincrement)


def create_legacy_install(store: Store) -> sa.MetaData:
    md = sa.MetaData()
    p = store.prefix
    for table in store.metadata.sorted_tables:
        keep = LEGACY_COLUMNS[table.name[len(p):]]
        constraints: list[Any] = []
        for con in table.constraints:
            if isinstance(con, sa.UniqueConstraint) and isinstance(con.name, str):
                constraints.append(sa.UniqueConstraint(*[col.name for col in con.columns], name=con.name))
            elif isinstance(con, sa.CheckConstraint) and isinstance(con.name, str):
                constraints.append(sa.CheckConstraint(str(con.sqltext), name=con.name))
        legacy = sa.Table(table.name, md, *[legacy_column(c) for c in table.columns if c.name in keep], *constraints)
        for ix in table.indexes:
            if isinstance(ix.name, str) and ix.name[len(p):] in LEGACY_INDEXES:
                sa.Index(ix.name, *[legacy.c[col.name] for col in ix.columns])
    with store.engine.begin() as conn:
        md.create_all(conn)
    return md


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job_row(i: int, state: str, **extra: Any) -> dict[str, Any]:
    row = {
        "id": i, "task": f"task{i}", "args": encode_args([i, "x"], {"k": i}), "queue": "default", "priority": i - 3,
        "state": state, "run_at": at(i), "attempts": 0, "max_attempts": 3, "locked_by": None, "locked_until": None,
        "last_error": None, "schedule_name": None, "scheduled_for": None, "unique_key": None, "created_at": at(-100),
        "started_at": None, "finished_at": None,
    }
    row.update(extra)
    return row


LEGACY_JOBS = [
    job_row(1, "queued", unique_key="only-one", run_at=at(-10)),
    job_row(2, "queued", run_at=at(3600), queue="mail", priority=-7),
    job_row(3, "running", attempts=1, locked_by="node-a", locked_until=at(30), started_at=at(-5)),
    job_row(4, "succeeded", attempts=1, started_at=at(-50), finished_at=at(-40)),
    job_row(5, "failed", attempts=3, max_attempts=3, last_error="Traceback ...\nValueError: nope", finished_at=at(-30)),
    job_row(6, "cancelled", finished_at=at(-20)),
    job_row(7, "skipped", schedule_name="nightly", scheduled_for=at(-86400), finished_at=at(-86400)),
    job_row(8, "succeeded", schedule_name="nightly", scheduled_for=at(-3600), attempts=1, finished_at=at(-3500)),
]
LEGACY_SCHEDULE = {
    "name": "nightly", "task": "task7", "spec": "0 3 * * *", "tz": "Europe/Berlin", "anchor": None,
    "args": encode_args([1], {"a": "b"}), "options": '{"queue": "reports"}', "next_run_at": at(50_000),
    "last_run_at": at(-3600), "paused": True, "enabled": True, "spec_hash": "abc123", "updated_at": at(-7200),
}
LEGACY_LEASE = {"name": "leader", "holder": "node-a", "epoch": 7, "acquired_at": at(-600), "expires_at": at(30)}
LEGACY_NODE = {"id": "node-a", "host": "web1", "pid": 4242, "roles": "scheduler,worker", "registry_hash": "r1",
               "version": "0.1.0", "started_at": at(-600), "heartbeat_at": at(-1)}


def shape(store: Store) -> dict[str, tuple[set[tuple[str, bool]], set[str]]]:
    insp = sa.inspect(store.engine)
    out = {}
    for table in store.metadata.sorted_tables:
        cols = {(c["name"], bool(c["nullable"])) for c in insp.get_columns(table.name)}
        ixs = {i["name"] for i in insp.get_indexes(table.name)} | {u["name"] for u in insp.get_unique_constraints(table.name)}
        out[table.name] = (cols, {i for i in ixs if i})
    return out


def test_upgrade_of_an_older_install_with_rows_equals_a_fresh_install_and_keeps_every_row(db_url: str, prefix: str) -> None:
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        md = create_legacy_install(old)
        legacy = {name[len(old.prefix):]: table for name, table in md.tables.items()}
        with old.engine.begin() as conn:
            conn.execute(sa.insert(legacy["jobs"]), LEGACY_JOBS)
            conn.execute(sa.insert(legacy["schedules"]), [LEGACY_SCHEDULE])
            conn.execute(sa.insert(legacy["leases"]), [LEGACY_LEASE])
            conn.execute(sa.insert(legacy["nodes"]), [LEGACY_NODE])
            conn.execute(sa.insert(legacy["meta"]).values(key="schema_version", value="0"))
            if conn.dialect.name == "postgresql":  # the rows were inserted with their ids: move the sequence on
                jobs = legacy["jobs"].name
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{jobs}\"', 'id'), {len(LEGACY_JOBS)})"))
        assert old.schema_version() == 0

        before, after = old.upgrade_schema()
        assert (before, after) == (0, SCHEMA_VERSION)

        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        got = {rename(t): (cols, {rename(i) for i in ixs}) for t, (cols, ixs) in shape(old).items()}
        assert got == shape(fresh)
        old.check_schema()

        # every row survived with its values; the added columns hold their defaults
        for row in LEGACY_JOBS:
            job = old.get_job(row["id"])
            expected = dict(row)
            args = expected.pop("args")
            assert (job.args, job.kwargs) == ([row["id"], "x"], {"k": row["id"]}), args
            assert {k: getattr(job, k) for k in expected} == expected
            assert (job.occurrences, job.reason) == (1, None)
        schedule = old.get_schedule("nightly")
        assert {k: getattr(schedule, k) for k in LEGACY_SCHEDULE} == LEGACY_SCHEDULE
        lease = old.get_lease("leader")
        assert lease is not None and (lease.holder, lease.epoch, lease.expires_at) == ("node-a", 7, at(30))
        (node,) = old.list_nodes()
        assert {k: getattr(node, k) for k in LEGACY_NODE if hasattr(node, k)} == {
            k: v for k, v in LEGACY_NODE.items() if hasattr(node, k)}

        # the upgraded tables work: the unique key still holds, claims see the old rows, texts
        # of any size fit (on MySQL/MariaDB the upgrade widened TEXT to LONGTEXT)
        assert old.enqueue([{"task": "t", "args": "{}", "unique_key": "only-one"}], now=T0) == [1]
        assert [c.id for c in old.claim("n", None, 10, 30, now=T0)] == [1]
        big = encode_args(["z" * 200_000])
        (big_id,) = old.enqueue([{"task": "t", "args": big}], now=T0)
        assert old.get_job(big_id).args == ["z" * 200_000]
        with old.engine.begin() as conn:
            conn.execute(sa.update(old.t.schedules).values(args=big))
        assert old.get_schedule("nightly").args == big

        assert old.upgrade_schema() == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
    finally:
        for s in (fresh, old):
            s.drop_schema()
            s.dispose()
