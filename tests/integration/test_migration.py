"""`db upgrade` brings an older install to the current schema: afterwards it has the shape of a
fresh one, every row the old tables held is still there with the same values, and every unique
guarantee holds (one active job per unique_key, one row per occurrence).

The old installs are built from a frozen copy of the tables as they were: schema version 2
(today's main before partial indexes: the generated ``active_key`` column with a unique
constraint, the occurrence unique constraint, full indexes led by ``state``), and versions 1 and
0 (fewer columns, plain TEXT without server defaults, fewer indexes).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from linger_sched.errors import SchemaError, StoreError
from linger_sched.store import SCHEMA_VERSION, Store, encode_args
from linger_sched.store.tables import LONG_TEXT, TextDefault, UTCDateTime

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


# -- the previous schemas, frozen ------------------------------------------------------------
def _ts(name: str, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), **kw)


def build_v2_metadata(prefix: str) -> sa.MetaData:
    """The tables exactly as schema version 2 (linger-sched before partial indexes) made them."""
    md = sa.MetaData()
    jobs = sa.Table(
        f"{prefix}jobs",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("args", sa.Text(), nullable=False, default="{}", server_default=TextDefault("{}")),
        sa.Column("queue", sa.String(64), nullable=False, default="default", server_default="default"),
        sa.Column("priority", sa.Integer(), nullable=False, default=0, server_default=sa.text("0")),
        sa.Column("state", sa.String(16), nullable=False, default="queued", server_default="queued"),
        _ts("run_at", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, default=0, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer(), nullable=False, default=3, server_default=sa.text("3")),
        sa.Column("locked_by", sa.String(128)),
        _ts("locked_until"),
        sa.Column("last_error", sa.Text()),
        sa.Column("schedule_name", sa.String(191)),
        _ts("scheduled_for"),
        sa.Column("occurrences", sa.Integer(), nullable=False, default=1, server_default=sa.text("1")),
        sa.Column("reason", sa.String(255)),
        sa.Column("unique_key", sa.String(191)),
        sa.Column(
            "active_key",
            sa.String(191),
            sa.Computed("CASE WHEN state IN ('queued', 'running') THEN unique_key END", persisted=True),
        ),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.UniqueConstraint("schedule_name", "scheduled_for", name=f"{prefix}jobs_occurrence_uq"),
        sa.UniqueConstraint("active_key", name=f"{prefix}jobs_active_key_uq"),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name=f"{prefix}jobs_state_ck",
        ),
    )
    sa.Index(f"{prefix}jobs_claim_ix", jobs.c.state, jobs.c.queue, jobs.c.priority, jobs.c.run_at, jobs.c.id)
    sa.Index(f"{prefix}jobs_ready_ix", jobs.c.state, jobs.c.priority, jobs.c.run_at, jobs.c.id)
    sa.Index(f"{prefix}jobs_lock_ix", jobs.c.state, jobs.c.locked_until)
    sa.Index(f"{prefix}jobs_schedule_state_ix", jobs.c.schedule_name, jobs.c.state)
    schedules = sa.Table(
        f"{prefix}schedules",
        md,
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("spec", sa.String(255), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False, default="UTC", server_default="UTC"),
        _ts("anchor"),
        sa.Column("args", sa.Text(), nullable=False, default="{}", server_default=TextDefault("{}")),
        sa.Column("options", sa.Text(), nullable=False, default="{}", server_default=TextDefault("{}")),
        _ts("next_run_at"),
        _ts("last_run_at"),
        sa.Column("paused", sa.Boolean(), nullable=False, default=False, server_default=sa.false()),
        sa.Column("enabled", sa.Boolean(), nullable=False, default=True, server_default=sa.true()),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        _ts("updated_at", nullable=False),
        sa.Column("error", sa.Text()),
        _ts("error_since"),
        _ts("retry_from"),
        sa.Column("disabled_reason", sa.String(255)),
    )
    sa.Index(f"{prefix}schedules_due_ix", schedules.c.enabled, schedules.c.paused, schedules.c.next_run_at)
    sa.Table(
        f"{prefix}leases",
        md,
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False, default=1, server_default=sa.text("1")),
        _ts("acquired_at", nullable=False),
        _ts("expires_at", nullable=False),
    )
    sa.Table(
        f"{prefix}nodes",
        md,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("registry_hash", sa.String(64)),
        sa.Column("version", sa.String(32)),
        _ts("started_at", nullable=False),
        _ts("heartbeat_at", nullable=False),
        sa.Column("schedules", sa.Text()),
    )
    sa.Table(
        f"{prefix}meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    for table in md.tables.values():
        for col in table.columns:
            if type(col.type) is sa.Text:
                col.type = LONG_TEXT
    return md


# What versions 1 and 0 lacked of version 2 (0: the first release): columns, and the indexes
# they had. Their text columns were plain TEXT (64 KB on MySQL) without server defaults.
MISSING_COLUMNS = {
    1: {"schedules": {"error", "error_since", "retry_from", "disabled_reason"}, "nodes": {"schedules"}},
    0: {"schedules": {"error", "error_since", "retry_from", "disabled_reason"}, "nodes": {"schedules"},
        "jobs": {"occurrences", "reason"}},
}
INDEXES = {
    1: {"jobs_claim_ix", "jobs_ready_ix", "jobs_lock_ix", "jobs_schedule_state_ix", "schedules_due_ix"},
    0: {"jobs_claim_ix", "jobs_lock_ix", "schedules_due_ix"},
}


def old_column(c: sa.Column[Any]) -> sa.Column[Any]:
    """``c`` as versions 0 and 1 declared it: plain TEXT, no server default."""
    typ = sa.Text() if isinstance(c.type, sa.Text) or c.type is LONG_TEXT else c.type
    extra = [c.computed._copy()] if c.computed is not None else []
    return sa.Column(c.name, typ, *extra, primary_key=c.primary_key, nullable=c.nullable, autoincrement=c.autoincrement)


def create_old_install(store: Store, version: int, *, without: str | None = None) -> dict[str, sa.Table]:
    """The tables of schema ``version`` (0, 1 or 2) for ``store``'s prefix, by short name
    (``without``: that job table constraint left out)."""
    p = store.prefix
    v2 = build_v2_metadata(p)
    if without is not None:
        jobs = v2.tables[p + "jobs"]
        jobs.constraints = {c for c in jobs.constraints if c.name != p + without}
    if version == 2:
        md = v2
    else:
        md = sa.MetaData()
        for table in v2.sorted_tables:
            short = table.name[len(p):]
            missing = MISSING_COLUMNS[version].get(short, set())
            constraints: list[Any] = []
            for con in table.constraints:
                if isinstance(con, sa.UniqueConstraint) and isinstance(con.name, str):
                    constraints.append(sa.UniqueConstraint(*[col.name for col in con.columns], name=con.name))
                elif isinstance(con, sa.CheckConstraint) and isinstance(con.name, str):
                    constraints.append(sa.CheckConstraint(str(con.sqltext), name=con.name))
            t = sa.Table(table.name, md, *[old_column(c) for c in table.columns if c.name not in missing], *constraints)
            for ix in table.indexes:
                if isinstance(ix.name, str) and ix.name[len(p):] in INDEXES[version]:
                    sa.Index(ix.name, *[t.c[col.name] for col in ix.columns])
    with store.engine.begin() as conn:
        md.create_all(conn)
    return {name[len(p):]: table for name, table in md.tables.items()}


# -- the rows --------------------------------------------------------------------------------
def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job_row(i: int, state: str, **extra: Any) -> dict[str, Any]:
    row = {
        "id": i, "task": f"task{i}", "args": encode_args([i, "x"], {"k": i}), "queue": "default", "priority": i - 3,
        "state": state, "run_at": at(i), "attempts": 0, "max_attempts": 3, "locked_by": None, "locked_until": None,
        "last_error": None, "schedule_name": None, "scheduled_for": None, "unique_key": None, "created_at": at(-100),
        "started_at": None, "finished_at": None, "occurrences": 1, "reason": None,
    }
    row.update(extra)
    return row


OLD_JOBS = [
    job_row(1, "queued", unique_key="only-one", run_at=at(-10)),
    job_row(2, "queued", run_at=at(3600), queue="mail", priority=-7),
    job_row(3, "running", attempts=1, locked_by="node-a", locked_until=at(30), started_at=at(-5), unique_key="held-r"),
    job_row(4, "succeeded", attempts=1, started_at=at(-50), finished_at=at(-40), unique_key="held-r"),
    job_row(5, "failed", attempts=3, max_attempts=3, last_error="Traceback ...\nValueError: nope", finished_at=at(-30),
            unique_key="only-one"),
    job_row(6, "cancelled", finished_at=at(-20), unique_key="released"),
    job_row(7, "skipped", schedule_name="nightly", scheduled_for=at(-86400), finished_at=at(-86400), occurrences=3,
            reason="overlap"),
    job_row(8, "succeeded", schedule_name="nightly", scheduled_for=at(-3600), attempts=1, finished_at=at(-3500)),
    job_row(9, "queued", schedule_name="nightly", scheduled_for=at(-60), run_at=at(-60), queue="reports"),
    job_row(10, "running", schedule_name="hourly", scheduled_for=at(-5), attempts=2, locked_by="node-b",
            locked_until=at(25), started_at=at(-4), last_error="lease expired"),
    job_row(11, "failed", schedule_name="hourly", scheduled_for=at(-3605), attempts=3, finished_at=at(-3000),
            unique_key="held-q"),
    job_row(12, "queued", unique_key="held-q", priority=5, run_at=at(7200)),
]
OLD_SCHEDULE = {
    "name": "nightly", "task": "task7", "spec": "0 3 * * *", "tz": "Europe/Berlin", "anchor": None,
    "args": encode_args([1], {"a": "b"}), "options": '{"queue": "reports"}', "next_run_at": at(50_000),
    "last_run_at": at(-3600), "paused": True, "enabled": True, "spec_hash": "abc123", "updated_at": at(-7200),
}
OLD_LEASE = {"name": "leader", "holder": "node-a", "epoch": 7, "acquired_at": at(-600), "expires_at": at(30)}
OLD_NODE = {"id": "node-a", "host": "web1", "pid": 4242, "roles": "scheduler,worker", "registry_hash": "r1",
            "version": "0.1.0", "started_at": at(-600), "heartbeat_at": at(-1)}


def fill_old_install(store: Store, tables: dict[str, sa.Table], version: int) -> None:
    def only(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k in table.c}

    with store.engine.begin() as conn:
        conn.execute(sa.insert(tables["jobs"]), [only(tables["jobs"], r) for r in OLD_JOBS])
        conn.execute(sa.insert(tables["schedules"]), [only(tables["schedules"], OLD_SCHEDULE)])
        conn.execute(sa.insert(tables["leases"]), [OLD_LEASE])
        conn.execute(sa.insert(tables["nodes"]), [only(tables["nodes"], OLD_NODE)])
        conn.execute(sa.insert(tables["meta"]).values(key="schema_version", value=str(version)))
        if conn.dialect.name == "postgresql":  # the rows were inserted with their ids: move the sequence on
            name = tables["jobs"].name
            conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'), {len(OLD_JOBS)})"))


# -- shape -----------------------------------------------------------------------------------
def shape(store: Store, rename: Any = lambda name: name) -> dict[str, Any]:
    """Per table: the columns (name, nullable, generated expression) and the indexes and unique
    constraints (name, columns, unique, partial WHERE, included columns), names passed through
    ``rename``."""
    insp = sa.inspect(store.engine)
    out = {}
    present = set(insp.get_table_names())
    for table in store.metadata.sorted_tables:
        if table.name not in present:  # a table of a later version than the install's
            continue
        cols = set()
        for c in insp.get_columns(table.name):
            computed = c.get("computed")
            cols.add((c["name"], bool(c["nullable"]), " ".join(str(computed["sqltext"]).split()) if computed else None))
        ixs = set()
        for ix in insp.get_indexes(table.name):
            opts = ix.get("dialect_options", {})
            where = opts.get("postgresql_where", opts.get("sqlite_where"))
            ixs.add((rename(ix["name"]), tuple(ix["column_names"]), bool(ix["unique"]),
                     " ".join(str(where).split()) if where is not None else None,
                     tuple(opts.get("postgresql_include", ()))))
        for uc in insp.get_unique_constraints(table.name):
            ixs.add((rename(uc["name"]), tuple(uc["column_names"]), True, "constraint", ()))
        out[rename(table.name)] = (cols, ixs)
    return out


# the job columns of schema version 5 (result, progress, cancel request) and their values in a row
# written before them
NEW_IN_5 = {"result": None, "progress": None, "progress_message": None, "cancel_requested": False}
# the job column of schema version 6 (the enqueuing span's traceparent, for OpenTelemetry)
NEW_IN_6 = {"trace_context": None}


def job_rows(store: Store) -> dict[int, dict[str, Any]]:
    """Every job row by id, without the columns of versions 5 and 6 (checked apart: see
    NEW_IN_5, NEW_IN_6)."""
    j = store.t.jobs
    with store.engine.connect() as conn:
        rows = {r.id: dict(r._mapping) for r in conn.execute(sa.select(*[c for c in j.c if c.computed is None]))}
    for row in rows.values():
        assert {k: row.pop(k) for k in NEW_IN_5} == NEW_IN_5, row
        assert {k: row.pop(k) for k in NEW_IN_6} == NEW_IN_6, row
    return rows


# -- the test --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 1, 0])
def test_upgrade_keeps_every_row_and_unique_guarantee_and_equals_a_fresh_install(
    db_url: str, prefix: str, version: int
) -> None:
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        tables = create_old_install(old, version)
        fill_old_install(old, tables, version)
        assert old.schema_version() == version

        assert old.upgrade_schema() == (version, SCHEMA_VERSION)

        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        assert shape(old, rename) == shape(fresh)
        old.check_schema()
        assert old.count_by_queue_and_state() == counted(OLD_JOBS)  # version 4's counts, filled
        if not old.dialect.is_mysql:
            assert "active_key" not in {c["name"] for c in sa.inspect(old.engine).get_columns(old.t.jobs.name)}

        # every row survived with every value; the columns the old version lacked hold their defaults
        assert job_rows(old) == {r["id"]: r for r in OLD_JOBS} if version > 0 else {
            r["id"]: {**r, "occurrences": 1, "reason": None} for r in OLD_JOBS}
        for row in OLD_JOBS:
            job = old.get_job(row["id"])
            assert (job.args, job.kwargs) == ([row["id"], "x"], {"k": row["id"]})
        schedule = old.get_schedule("nightly")
        assert {k: getattr(schedule, k) for k in OLD_SCHEDULE} == OLD_SCHEDULE
        assert (schedule.error, schedule.disabled_reason) == (None, None)
        lease = old.get_lease("leader")
        assert lease is not None and (lease.holder, lease.epoch, lease.expires_at) == ("node-a", 7, at(30))
        (node,) = old.list_nodes()
        assert {k: getattr(node, k) for k in OLD_NODE} == OLD_NODE

        # one queued or running job per unique_key: insert-if-absent yields the holder ...
        assert old.enqueue([{"task": "t", "args": "{}", "unique_key": "only-one"}], now=T0) == [1]
        assert old.enqueue([{"task": "t", "args": "{}", "unique_key": "held-r"}], now=T0) == [3]
        assert old.enqueue([{"task": "t", "args": "{}", "unique_key": "held-q"}], now=T0) == [12]
        # ... a plain INSERT of a second one is refused by the database itself ...
        j = old.t.jobs
        dup = {k: v for k, v in job_row(99, "queued", unique_key="held-q").items() if k != "id"}
        for state in ("queued", "running"):
            with pytest.raises(sa.exc.IntegrityError), old.engine.begin() as conn:
                conn.execute(sa.insert(j).values({**dup, "state": state}))
        # ... a finished job holds no key ...
        (released,) = old.enqueue([{"task": "t", "args": "{}", "unique_key": "released"}], now=T0)
        assert released > len(OLD_JOBS)
        # ... and the key is free again once its holder finished
        assert old.finish("node-a", succeeded=[3], now=T0) == ([], [])
        (again,) = old.enqueue([{"task": "t", "args": "{}", "unique_key": "held-r"}], now=T0)
        assert again not in (3, released)
        with pytest.raises(sa.exc.IntegrityError), old.engine.begin() as conn:
            conn.execute(sa.insert(j).values({**dup, "unique_key": "held-r"}))

        # one row per occurrence: a second (schedule_name, scheduled_for) is refused, whatever
        # the state of the first, and insert-if-absent writes nothing
        for sched, when in (("nightly", at(-86400)), ("nightly", at(-60)), ("hourly", at(-5)), ("hourly", at(-3605))):
            with pytest.raises(sa.exc.IntegrityError), old.engine.begin() as conn:
                conn.execute(sa.insert(j).values({**dup, "unique_key": None, "schedule_name": sched, "scheduled_for": when}))
            with old.engine.begin() as conn:
                conn.execute(old.dialect.insert_ignore(j).values(
                    {**dup, "unique_key": None, "schedule_name": sched, "scheduled_for": when}))
        assert len(old.list_jobs(schedule_name="nightly", limit=0)) == 3
        assert len(old.list_jobs(schedule_name="hourly", limit=0)) == 2

        # the upgraded tables work: claims see the old rows, texts of any size fit (on
        # MySQL/MariaDB the upgrade widened TEXT to LONGTEXT)
        assert [c.id for c in old.claim("n", ["reports"], 10, 30, now=T0)] == [9]
        big = encode_args(["z" * 200_000])
        (big_id,) = old.enqueue([{"task": "t", "args": big}], now=T0)
        assert old.get_job(big_id).args == ["z" * 200_000]
        with old.engine.begin() as conn:
            conn.execute(sa.update(old.t.schedules).values(args=big))
        assert old.get_schedule("nightly").args == big

        assert old.upgrade_schema() == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
        assert shape(old, rename) == shape(fresh)
    finally:
        for s in (fresh, old):
            s.drop_schema()
            s.dispose()


def test_an_upgrade_that_meets_a_duplicate_changes_nothing(db_url: str, prefix: str) -> None:
    """Rows that break a unique guarantee of the new schema (an old install that lost its
    occurrence constraint, and a duplicate written meanwhile) make the upgrade fail as a whole:
    the old table, its rows and its indexes stay as they were (SQLite: the rebuild is rolled
    back; PostgreSQL: one transaction; MySQL/MariaDB: one atomic ALTER TABLE)."""
    old = Store(db_url, table_prefix=prefix)
    try:
        tables = create_old_install(old, 2, without="jobs_occurrence_uq")
        fill_old_install(old, tables, 2)
        with old.engine.begin() as conn:
            conn.execute(sa.insert(tables["jobs"]).values(job_row(50, "skipped", schedule_name="nightly", scheduled_for=at(-86400))))
        before = shape(old)
        with pytest.raises(StoreError):
            old.upgrade_schema()
        assert shape(old)[f"{prefix}jobs"] == before[f"{prefix}jobs"]
        with old.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables["jobs"])).scalar_one() == len(OLD_JOBS) + 1
        assert old.schema_version() == 2
        assert f"{prefix}jobs__rebuild" not in sa.inspect(old.engine).get_table_names()
    finally:
        old.drop_schema()
        old.dispose()


def counted(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        out[r["queue"], r["state"]] = out.get((r["queue"], r["state"]), 0) + 1
    return out


def test_upgrade_from_version_3_adds_the_counts_and_rebuilds_the_task_index(db_url: str, prefix: str) -> None:
    """Version 3 (the previous release): the same tables but no ``counts``, and on PostgreSQL
    a ``jobs_task_ix`` of finished rows only. The upgrade counts the finished rows there were
    and gives the task index its new WHERE; the result has the shape of a fresh install."""
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        old.install_schema()
        j = old.t.jobs
        task_ix = next(ix for ix in j.indexes if ix.name == old.prefix + "jobs_task_ix")
        with old.engine.begin() as conn:  # back to version 3
            old.t.counts.drop(conn)
            if old.dialect.index_is_partial(task_ix):
                task_ix.drop(conn)
                finished = " OR ".join(f"state = '{st}'" for st in ("succeeded", "failed", "cancelled", "skipped"))
                conn.exec_driver_sql(f'CREATE INDEX "{task_ix.name}" ON "{j.name}" (task, id) WHERE {finished}')
            conn.execute(sa.update(old.t.meta).where(old.t.meta.c.key == "schema_version").values(value="3"))
            conn.execute(sa.insert(j), OLD_JOBS)
            if old.dialect.is_postgres:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{j.name}\"', 'id'), {len(OLD_JOBS)})"))
        assert old.schema_version() == 3
        assert old.upgrade_schema() == (3, SCHEMA_VERSION)
        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        assert shape(old, rename) == shape(fresh)
        assert old.count_by_queue_and_state() == counted(OLD_JOBS)
        assert job_rows(old) == {r["id"]: r for r in OLD_JOBS}
        # and the counts go on from there
        (new_id,) = old.enqueue([{"task": "t", "args": "{}", "queue": "mail"}], now=T0)
        old.cancel_job(new_id, now=T0)
        assert old.count_by_queue_and_state() == counted([*OLD_JOBS, {"queue": "mail", "state": "cancelled"}])
    finally:
        for st in (fresh, old):
            st.drop_schema()
            st.dispose()


def test_upgrade_from_version_4_adds_results_progress_cancel_and_the_schedule_source(db_url: str, prefix: str) -> None:
    """Version 4 (the previous release) lacks ``jobs.result``, ``progress``, ``progress_message``,
    ``cancel_requested`` and ``schedules.source``. The upgrade adds them to tables that hold rows
    (ALTER TABLE ADD COLUMN): every row keeps every value, the new columns hold their defaults
    (a schedule of an old install was declared), the counts stay, and the result has the shape of
    a fresh install."""
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        old.install_schema()
        j, s = old.t.jobs, old.t.schedules
        with old.engine.begin() as conn:  # back to version 4
            quote = conn.dialect.identifier_preparer.quote
            for table, col in [(j, c) for c in {**NEW_IN_5, **NEW_IN_6}] + [(s, "source")]:
                conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} DROP COLUMN {quote(col)}")
            conn.execute(sa.update(old.t.meta).where(old.t.meta.c.key == "schema_version").values(value="4"))
        v4 = sa.MetaData()
        v4_jobs = sa.Table(j.name, v4, autoload_with=old.engine)
        v4_schedules = sa.Table(s.name, v4, autoload_with=old.engine)
        assert not {*NEW_IN_5, *NEW_IN_6, "source"} & ({c.name for c in v4_jobs.c} | {c.name for c in v4_schedules.c})
        with old.engine.begin() as conn:
            conn.execute(sa.insert(v4_jobs), [{k: v for k, v in r.items() if k in v4_jobs.c} for r in OLD_JOBS])
            conn.execute(sa.insert(v4_schedules), [{k: v for k, v in OLD_SCHEDULE.items() if k in v4_schedules.c}])
            if old.dialect.is_postgres:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{j.name}\"', 'id'), {len(OLD_JOBS)})"))
        old.recount()
        with pytest.raises(SchemaError):  # nodes of this version refuse to start on it
            old.check_schema()

        assert old.upgrade_schema() == (4, SCHEMA_VERSION)

        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        assert shape(old, rename) == shape(fresh)
        old.check_schema()
        assert job_rows(old) == {r["id"]: r for r in OLD_JOBS}  # and the new columns hold their defaults
        schedule = old.get_schedule("nightly")
        assert {k: getattr(schedule, k) for k in OLD_SCHEDULE} == OLD_SCHEDULE
        assert schedule.source == "declared"
        assert old.count_by_queue_and_state() == counted(OLD_JOBS)

        # the new columns work on the upgraded tables: a result, progress, a cancel request
        assert [c.id for c in old.claim("n", ["reports"], 10, 30, now=T0)] == [9]
        assert old.set_progress("n", 9, 1, 0.5, "half")
        assert old.cancel_job(9, now=T0).cancel_requested
        assert old.extend_and_check("n", 30, now=T0, ids=[9]) == (1, [9])
        assert old.finish("n", [9], [], now=T0, results={9: '{"rows": 3}'}) == ([], [])
        job = old.get_job(9)
        assert (job.state, job.result, job.progress, job.progress_message, job.cancel_requested) == (
            "succeeded", {"rows": 3}, 0.5, "half", True)
        assert old.upgrade_schema() == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
        assert shape(old, rename) == shape(fresh)
    finally:
        for st in (fresh, old):
            st.drop_schema()
            st.dispose()


def test_upgrade_from_version_5_adds_the_trace_context(db_url: str, prefix: str) -> None:
    """Version 5 lacks ``jobs.trace_context`` (the W3C traceparent of the span that enqueued a
    job). The upgrade adds it to a job table that holds rows (ALTER TABLE ADD COLUMN): every
    row keeps every value, the new column is NULL, and the result has the shape of a fresh
    install; a claim then returns what an enqueue stores there."""
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        old.install_schema()
        j = old.t.jobs
        with old.engine.begin() as conn:  # back to version 5
            quote = conn.dialect.identifier_preparer.quote
            conn.exec_driver_sql(f"ALTER TABLE {quote(j.name)} DROP COLUMN {quote('trace_context')}")
            conn.execute(sa.update(old.t.meta).where(old.t.meta.c.key == "schema_version").values(value="5"))
        v5_jobs = sa.Table(j.name, sa.MetaData(), autoload_with=old.engine)
        assert "trace_context" not in v5_jobs.c
        with old.engine.begin() as conn:
            conn.execute(sa.insert(v5_jobs), [{k: v for k, v in r.items() if k in v5_jobs.c} for r in OLD_JOBS])
            if old.dialect.is_postgres:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('\"{j.name}\"', 'id'), {len(OLD_JOBS)})"))
        old.recount()
        with pytest.raises(SchemaError, match="db upgrade"):  # nodes of this version refuse to start on it
            old.check_schema()

        assert old.upgrade_schema() == (5, SCHEMA_VERSION)

        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        assert shape(old, rename) == shape(fresh)
        old.check_schema()
        assert job_rows(old) == {r["id"]: r for r in OLD_JOBS}  # and trace_context is NULL
        assert old.count_by_queue_and_state() == counted(OLD_JOBS)
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        (new_id,) = old.enqueue([{"task": "t", "args": "{}", "queue": "traced", "trace_context": parent}], now=T0)
        assert old.get_job(new_id).trace_context == parent
        (claimed,) = old.claim("n", ["traced"], 10, 30, now=T0)
        assert (claimed.id, claimed.trace_context) == (new_id, parent)
        assert old.upgrade_schema() == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
        assert shape(old, rename) == shape(fresh)
    finally:
        for st in (fresh, old):
            st.drop_schema()
            st.dispose()


def test_concurrent_upgrades_both_succeed(db_url: str, prefix: str) -> None:
    """Two `db upgrade` at once (the Kubernetes init container of two replicas, docs/deploying.md)
    both end with the schema upgraded, neither with "column already exists": each step of the
    upgrade reads the catalog again and is retried once when a peer's DDL beat it. Several rounds
    from version 5 (one ADD COLUMN) and from version 2 (the job table changed, counts added)."""
    import threading

    for version in (5, 5, 5, 2, 2):
        stores = [Store(db_url, table_prefix=prefix) for _ in range(2)]
        try:
            if version == 5:
                stores[0].install_schema()
                with stores[0].engine.begin() as conn:
                    quote = conn.dialect.identifier_preparer.quote
                    conn.exec_driver_sql(f"ALTER TABLE {quote(stores[0].t.jobs.name)} DROP COLUMN {quote('trace_context')}")
                    conn.execute(sa.update(stores[0].t.meta).where(stores[0].t.meta.c.key == "schema_version")
                                 .values(value="5"))
            else:
                fill_old_install(stores[0], create_old_install(stores[0], 2), 2)
            start = threading.Barrier(2)
            outcomes: list[object] = [None, None]

            def upgrade(i: int) -> None:
                start.wait()
                try:
                    outcomes[i] = stores[i].upgrade_schema()
                except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
                    outcomes[i] = exc

            threads = [threading.Thread(target=upgrade, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert all(isinstance(o, tuple) and o[1] == SCHEMA_VERSION for o in outcomes), (version, outcomes)
            stores[0].check_schema()
        finally:
            stores[0].drop_schema()
            for s in stores:
                s.dispose()
