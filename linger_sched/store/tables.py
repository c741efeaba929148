"""Table definitions (SQLAlchemy Core). Times are stored as naive UTC and read back aware."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

SCHEMA_VERSION = 1

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "skipped")
ACTIVE_STATES = ("queued", "running")


class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, read back as the stored text: :class:`UTCDateTime` parses it with
    ``datetime.fromisoformat`` (C) instead of SQLAlchemy's regular expression, which is the
    larger part of reading a claimed batch."""

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetime in Python, naive UTC in the database (microsecond precision everywhere)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[datetime]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteDateTime())
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; pass an aware one")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | str | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite: stored text, read as is (see _SQLiteDateTime)
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc)


def _ts(name: str, **kw: object) -> sa.Column[datetime]:
    return sa.Column(name, UTCDateTime(), **kw)  # type: ignore[arg-type]


def build_metadata(prefix: str = "linger_") -> tuple[sa.MetaData, "Tables"]:
    md = sa.MetaData()
    jobs = sa.Table(
        f"{prefix}jobs",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("args", sa.Text(), nullable=False, default="{}"),
        sa.Column("queue", sa.String(64), nullable=False, default="default"),
        sa.Column("priority", sa.Integer(), nullable=False, default=0),
        sa.Column("state", sa.String(16), nullable=False, default="queued"),
        _ts("run_at", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, default=0),
        sa.Column("max_attempts", sa.Integer(), nullable=False, default=3),
        sa.Column("locked_by", sa.String(128)),
        _ts("locked_until"),
        sa.Column("last_error", sa.Text()),
        sa.Column("schedule_name", sa.String(191)),
        _ts("scheduled_for"),
        sa.Column("occurrences", sa.Integer(), nullable=False, default=1),
        sa.Column("reason", sa.String(255)),
        sa.Column("unique_key", sa.String(191)),
        # Set while the job is queued or running, NULL otherwise: a plain unique index on it
        # gives "one active job per key" on every dialect (MySQL has no partial indexes).
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
    # claims in (priority, run_at, id) order read an index in that order: a worker of named
    # queues reads claim_ix, a worker of every queue (the default) reads ready_ix; either way a
    # claim costs O(batch), not a sort of every queued row
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
        sa.Column("tz", sa.String(64), nullable=False, default="UTC"),
        _ts("anchor"),
        sa.Column("args", sa.Text(), nullable=False, default="{}"),
        sa.Column("options", sa.Text(), nullable=False, default="{}"),
        _ts("next_run_at"),
        _ts("last_run_at"),
        sa.Column("paused", sa.Boolean(), nullable=False, default=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, default=True),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        _ts("updated_at", nullable=False),
    )
    sa.Index(f"{prefix}schedules_due_ix", schedules.c.enabled, schedules.c.paused, schedules.c.next_run_at)

    leases = sa.Table(
        f"{prefix}leases",
        md,
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False, default=1),
        _ts("acquired_at", nullable=False),
        _ts("expires_at", nullable=False),
    )

    nodes = sa.Table(
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
    )

    meta = sa.Table(
        f"{prefix}meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    return md, Tables(jobs, schedules, leases, nodes, meta)


class Tables:
    def __init__(self, jobs: sa.Table, schedules: sa.Table, leases: sa.Table, nodes: sa.Table, meta: sa.Table):
        self.jobs = jobs
        self.schedules = schedules
        self.leases = leases
        self.nodes = nodes
        self.meta = meta
