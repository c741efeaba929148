"""Table definitions (SQLAlchemy Core). Times are stored as naive UTC and read back aware."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.compiler import compiles

from ..errors import ConfigError

SCHEMA_VERSION = 2  # 2: schedule errors, nodes' declared schedules, server defaults, LONGTEXT

# The longest table prefix: every table, index and constraint name is the prefix plus at most
# 31 characters (``jobs_schedule_state_ix`` is 22), within PostgreSQL's 63 and MySQL's 64.
TABLE_PREFIX_MAX = 32
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_table_prefix(prefix: object) -> str:
    """``prefix`` when it can be used unquoted in every table, index and NOTIFY channel name:
    ASCII letters, digits and ``_``, not starting with a digit, at most
    :data:`TABLE_PREFIX_MAX` characters. Anything else raises :class:`ConfigError`."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix) or len(prefix) > TABLE_PREFIX_MAX:
        raise ConfigError(
            f"must be 1 to {TABLE_PREFIX_MAX} ASCII letters, digits or '_', not starting with a digit; got {prefix!r}",
            key="table_prefix",
        )
    return prefix


class TextDefault(sa.sql.expression.ColumnElement[Any]):
    """The server default of a text column: ``DEFAULT '{}'``, and on MySQL/MariaDB the
    expression form ``DEFAULT ('{}')`` (MySQL 8 accepts no literal default on TEXT types).
    SQLite's ADD COLUMN needs the literal form."""

    inherit_cache = True

    def __init__(self, value: str) -> None:
        self.value = value


@compiles(TextDefault)
def _text_default(element: TextDefault, compiler: Any, **kw: Any) -> str:
    return str(compiler.render_literal_value(element.value, sa.String()))


@compiles(TextDefault, "mysql")
@compiles(TextDefault, "mariadb")
def _text_default_mysql(element: TextDefault, compiler: Any, **kw: Any) -> str:
    return f"({compiler.render_literal_value(element.value, sa.String())})"


# MySQL/MariaDB's TEXT holds 64 KB; every text column is LONGTEXT there (args of any size)
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

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
    """The tables of one installation, named ``<prefix>jobs`` etc. Every ``sa.Text()`` column
    becomes :data:`LONG_TEXT` (LONGTEXT on MySQL/MariaDB)."""
    check_table_prefix(prefix)
    md = sa.MetaData()
    jobs = sa.Table(
        f"{prefix}jobs",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        # a NOT NULL column with a Python default has the same server default: `db upgrade`
        # can then add it to a table that holds rows
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
        # a schedule the tick could not plan or write: the message, since when, and its first
        # fire time not yet accounted for (next_run_at then holds the retry instant)
        sa.Column("error", sa.Text()),
        _ts("error_since"),
        _ts("retry_from"),
        # why enabled is false: "not declared" (no live node declares it) or "enabled: false"
        sa.Column("disabled_reason", sa.String(255)),
    )
    sa.Index(f"{prefix}schedules_due_ix", schedules.c.enabled, schedules.c.paused, schedules.c.next_run_at)

    leases = sa.Table(
        f"{prefix}leases",
        md,
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False, default=1, server_default=sa.text("1")),
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
        sa.Column("schedules", sa.Text()),  # JSON list of the schedule names the node declares
    )

    meta = sa.Table(
        f"{prefix}meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    for table in md.tables.values():
        for col in table.columns:
            if type(col.type) is sa.Text:
                col.type = LONG_TEXT
    return md, Tables(jobs, schedules, leases, nodes, meta)


class Tables:
    def __init__(self, jobs: sa.Table, schedules: sa.Table, leases: sa.Table, nodes: sa.Table, meta: sa.Table):
        self.jobs = jobs
        self.schedules = schedules
        self.leases = leases
        self.nodes = nodes
        self.meta = meta
