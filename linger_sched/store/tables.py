"""Table definitions (SQLAlchemy Core). Times are stored as naive UTC and read back aware.

The column types and index options that differ by database come from :mod:`.dialect`
(:class:`UTCDateTime`, :data:`LONG_TEXT`, :data:`ROW_ID`, :class:`TextDefault`,
:func:`partial_index`); this module names no database."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigError
from .dialect import LONG_TEXT, ROW_ID, TextDefault, UTCDateTime, index_include, partial_index
from .rows import PROGRESS_MESSAGE_CAP, TRACE_CONTEXT_CAP

__all__ = [
    "ACTIVE_STATES", "FINISHED_STATES", "JOB_STATES", "LEGACY_JOB_CONSTRAINTS", "LEGACY_JOB_INDEXES", "LONG_TEXT", "PARTIAL_JOB_INDEX_STATES",
    "SCHEMA_VERSION", "TABLE_PREFIX_MAX", "Tables", "TextDefault", "UTCDateTime", "build_metadata",
    "check_table_prefix", "state_is",
]

# 2: schedule errors, nodes' declared schedules, server defaults, LONGTEXT
# 3: partial, sparse job indexes (PostgreSQL, SQLite); no active_key column there
# 4: the counts table (finished jobs by queue and state, as deltas); jobs_task_ix holds
#    queued rows too (PostgreSQL)
# 5: jobs.result (a task's JSON return value), progress, progress_message, cancel_requested;
#    schedules.source ('declared' or 'runtime'); added by ALTER TABLE ADD COLUMN, no new index
# 6: jobs.trace_context (the W3C traceparent of the span that enqueued the job, for
#    OpenTelemetry); added by ALTER TABLE ADD COLUMN, no new index
SCHEMA_VERSION = 6

# The longest table prefix: every table, index and constraint name is the prefix plus at most
# 31 characters (``jobs_active_schedule_ix`` is 23), within PostgreSQL's 63 and MySQL's 64.
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


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "skipped")
ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("succeeded", "failed", "cancelled", "skipped")  # terminal: the history


def state_is(state: sa.ColumnElement[Any], *states: str) -> sa.ColumnElement[bool]:
    """``state = 'a'``, or ``(state = 'a' OR state = 'b' ...)``, with the states as literals.

    Partial indexes are declared with this form and every query that must read one writes its
    condition with it: SQLite uses a partial index only when it can prove the index's WHERE
    from the query's (``state = 'failed'`` proves ``state = 'failed' OR ...``; an ``IN`` list
    proves only the identical ``IN`` list), and PostgreSQL cannot prove it from a bound
    parameter under a generic (prepared) plan."""
    if not states or any(s not in JOB_STATES for s in states):
        raise ValueError(f"not job states: {states!r}")
    terms = [state == sa.literal_column(f"'{s}'", sa.String()) for s in states]
    return terms[0] if len(terms) == 1 else sa.or_(*terms).self_group()


def _ts(name: str, **kw: object) -> sa.Column[datetime]:
    return sa.Column(name, UTCDateTime(), **kw)  # type: ignore[arg-type]


def build_metadata(prefix: str = "linger_", *, partial_indexes: bool = True) -> tuple[sa.MetaData, Tables]:
    """The tables of one installation, named ``<prefix>jobs`` etc. Every ``sa.Text()`` column
    becomes :data:`LONG_TEXT` (LONGTEXT on MySQL/MariaDB).

    ``partial_indexes``: whether the database has partial indexes (SQLite, PostgreSQL; see
    :meth:`~linger_sched.store.dialect.Dialect.partial_indexes`); without them (MySQL/MariaDB)
    the job table gets the closest equivalent (see :func:`_job_indexes`)."""
    check_table_prefix(prefix)
    md = sa.MetaData()
    extra: list[Any] = []
    if not partial_indexes:
        # Without partial indexes, generated columns that are NULL outside of what a partial
        # index would hold: an index on one is only rewritten when its value changes.
        # active_key: the unique_key while the job is queued or running (a plain unique index
        # on it gives "one active job per key"); active_schedule: likewise the schedule_name
        # (overlap); finished_state: the state once it is final (the history by state).
        def generated(name: str, length: int, expr: str) -> sa.Column[Any]:
            return sa.Column(name, sa.String(length), sa.Computed(expr, persisted=True))

        extra += [
            generated("active_key", 191, "CASE WHEN state IN ('queued', 'running') THEN unique_key END"),
            generated("active_schedule", 191, "CASE WHEN state IN ('queued', 'running') THEN schedule_name END"),
            generated("finished_state", 16,
                      "CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN state END"),
        ]
    jobs = sa.Table(
        f"{prefix}jobs",
        md,
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
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
        *extra,
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        # schema 5, in no index: a claim writes none of them, a finish only the result of a
        # task that returned one (in the same UPDATE batch), a progress write only these two
        sa.Column("result", sa.Text()),  # the task's return value as JSON (None: nothing kept)
        sa.Column("progress", sa.Float()),  # 0..1, written at most about once a second
        sa.Column("progress_message", sa.String(PROGRESS_MESSAGE_CAP)),
        # a cancel of a running job: its worker learns it with the lease extension
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, default=False, server_default=sa.false()),
        # schema 6, in no index: the traceparent of the enqueuing span (None: none was current,
        # tracing is off, or a schedule's occurrence); read by a claim, written by an enqueue
        sa.Column("trace_context", sa.String(TRACE_CONTEXT_CAP)),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name=f"{prefix}jobs_state_ck",
        ),
    )
    _job_indexes(jobs, prefix, partial_indexes)

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
        # schema 5: "declared" (code or schedules.yaml, synced at start) or "runtime"
        # (app.add_schedule: never disabled by a sync)
        sa.Column("source", sa.String(16), nullable=False, default="declared", server_default="declared"),
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
    # Finished jobs by (queue, state), kept as signed deltas: each transaction that moves jobs
    # into or out of a finished state (or deletes finished rows) inserts its own rows here, so
    # no two writers ever wait for one counter row; the leader folds them (Store.fold_counts).
    counts = sa.Table(
        f"{prefix}counts",
        md,
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    for table in md.tables.values():
        for col in table.columns:
            if type(col.type) is sa.Text:
                col.type = LONG_TEXT
    return md, Tables(jobs, schedules, leases, nodes, meta, counts)


# The index names of schema version 2 and older, dropped by ``db upgrade`` (the unique ones
# were table constraints).
LEGACY_JOB_INDEXES = ("jobs_claim_ix", "jobs_ready_ix", "jobs_lock_ix", "jobs_schedule_state_ix")
LEGACY_JOB_CONSTRAINTS = ("jobs_occurrence_uq", "jobs_active_key_uq")


# the states whose rows a job index holds where it is partial (PostgreSQL); elsewhere it holds all
PARTIAL_JOB_INDEX_STATES = {"jobs_task_ix": ("queued", *FINISHED_STATES), "jobs_queue_ix": FINISHED_STATES}


def _job_indexes(jobs: sa.Table, prefix: str, partial: bool) -> None:
    """The job table's indexes.

    With partial indexes (SQLite, PostgreSQL) every index holds only the rows it serves, so a
    claim or a finish rewrites as few index entries as possible:

    ========================  =====================================  ==========================
    name (after the prefix)   key                                    rows
    ========================  =====================================  ==========================
    jobs_queued_ix            queue, priority, run_at, id            queued: claim of named
                                                                     queues, next_due, counts
    jobs_next_ix              priority, run_at, id                   queued: claim of every
                                                                     queue, next_due
    jobs_running_ix           locked_until                           running: rescue
    jobs_occurrence_ux        UNIQUE schedule_name, scheduled_for    scheduled rows
    jobs_unique_key_ux        UNIQUE unique_key                      queued or running with a key
    jobs_active_schedule_ix   schedule_name, state                   scheduled, queued or
                                                                     running: overlap
    jobs_schedule_ix          schedule_name, id                      scheduled rows: history of
                                                                     a schedule, last outcome
    jobs_done_ix              state, id                              finished rows: newest by
                                                                     state, counts, prune
    jobs_task_ix              task, id                               SQLite: all; PostgreSQL:
                                                                     queued and finished rows
    jobs_queue_ix             queue, id (PostgreSQL: INCLUDE state)  SQLite: all; PostgreSQL:
                                                                     finished rows
    ========================  =====================================  ==========================

    ``jobs_task_ix`` and ``jobs_queue_ix`` cover every row on SQLite: their columns never
    change, and SQLite leaves an index alone when an UPDATE changes none of its columns (or
    of its WHERE), so they cost one entry per enqueue; as partial indexes over finished rows
    they would cost one per finish, in the hot loop. PostgreSQL writes a new entry into every
    index whose WHERE the new row version satisfies on each UPDATE that changes an indexed
    column (``state`` is one: no claim or finish is a HOT update), so there they hold
    finished rows only.

    Without partial indexes (MySQL/MariaDB) the same names hold the closest equivalent: the
    claim and lock keys start with ``state`` (rewritten by every claim and finish: InnoDB
    rewrites an index entry when one of its columns changes); the unique key, the overlap key
    and the history by state are on generated columns that are NULL outside the rows a
    partial index would hold (``active_key``, ``active_schedule``, ``finished_state``), so
    that a claim leaves them alone (a finish rewrites ``finished_state``'s); the (task, id),
    (queue, id), (schedule_name, id) and occurrence keys never change after the insert."""
    c = jobs.c
    if not partial:
        sa.Index(f"{prefix}jobs_queued_ix", c.state, c.queue, c.priority, c.run_at, c.id)
        sa.Index(f"{prefix}jobs_next_ix", c.state, c.priority, c.run_at, c.id)
        sa.Index(f"{prefix}jobs_running_ix", c.state, c.locked_until)
        sa.Index(f"{prefix}jobs_occurrence_ux", c.schedule_name, c.scheduled_for, unique=True)
        sa.Index(f"{prefix}jobs_unique_key_ux", c.active_key, unique=True)
        sa.Index(f"{prefix}jobs_active_schedule_ix", c.active_schedule)
        sa.Index(f"{prefix}jobs_schedule_ix", c.schedule_name, c.id)
        sa.Index(f"{prefix}jobs_done_ix", c.finished_state, c.id)
        sa.Index(f"{prefix}jobs_task_ix", c.task, c.id)
        sa.Index(f"{prefix}jobs_queue_ix", c.queue, c.id)
        return

    queued, running = state_is(c.state, "queued"), state_is(c.state, "running")
    active, finished = state_is(c.state, *ACTIVE_STATES), state_is(c.state, *FINISHED_STATES)
    scheduled = c.schedule_name.is_not(None)
    sa.Index(f"{prefix}jobs_queued_ix", c.queue, c.priority, c.run_at, c.id, **partial_index(queued))
    sa.Index(f"{prefix}jobs_next_ix", c.priority, c.run_at, c.id, **partial_index(queued))
    sa.Index(f"{prefix}jobs_running_ix", c.locked_until, **partial_index(running))
    # insert-if-absent (ON CONFLICT DO NOTHING, no target) works with partial unique indexes
    sa.Index(f"{prefix}jobs_occurrence_ux", c.schedule_name, c.scheduled_for, unique=True, **partial_index(scheduled))
    sa.Index(f"{prefix}jobs_unique_key_ux", c.unique_key, unique=True,
             **partial_index(sa.and_(c.unique_key.is_not(None), active)))
    # state in the key: SQLite prefers it to jobs_schedule_ix for "queued or running" (two
    # constrained columns against one) without statistics
    sa.Index(f"{prefix}jobs_active_schedule_ix", c.schedule_name, c.state, **partial_index(sa.and_(scheduled, active)))
    sa.Index(f"{prefix}jobs_schedule_ix", c.schedule_name, c.id, **partial_index(scheduled))
    sa.Index(f"{prefix}jobs_done_ix", c.state, c.id, **partial_index(finished))
    # queued rows too (PostgreSQL): a rare task's listing reads its queued rows here rather
    # than sorting the whole backlog; one entry per enqueue, and a claim's new row version
    # (running) leaves it
    sa.Index(f"{prefix}jobs_task_ix", c.task, c.id,
             **partial_index(state_is(c.state, *PARTIAL_JOB_INDEX_STATES["jobs_task_ix"]), stable_columns=True))
    # PostgreSQL: INCLUDE (state) makes counts by queue and state index-only scans
    sa.Index(f"{prefix}jobs_queue_ix", c.queue, c.id, **index_include("state"),
             **partial_index(state_is(c.state, *PARTIAL_JOB_INDEX_STATES["jobs_queue_ix"]), stable_columns=True))


class Tables:
    def __init__(self, jobs: sa.Table, schedules: sa.Table, leases: sa.Table, nodes: sa.Table, meta: sa.Table,
                 counts: sa.Table):
        self.jobs = jobs
        self.schedules = schedules
        self.leases = leases
        self.nodes = nodes
        self.meta = meta
        self.counts = counts
