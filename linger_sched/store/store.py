"""The Store: every SQL statement linger-sched runs, behind one documented contract
(see :class:`Store`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import sqlalchemy as sa

from ..clock import Clock, sleep
from ..errors import (
    JobNotFoundError,
    JobStateError,
    LingerError,
    ScheduleNotFoundError,
    ScheduleStateError,
    SchemaError,
    StoreError,
    WaitTimeout,
)
from . import schema
from .dialect import Dialect, UTCDateTime, create_engine, mask_url, same_database
from .rows import (
    CLAIMED_COLUMNS,
    TEXT_CAP,
    Claimed,
    Job,
    Lease,
    LockedJob,
    NodeRow,
    Occurrence,
    Plan,
    Rescued,
    ScheduleRow,
    claim_order,
    clean_error,
    clean_text,
    declared_names,
    decode_args,
    encode_args,
    occurrence_rows,
)
from .tables import (
    ACTIVE_STATES,
    FINISHED_STATES,
    JOB_STATES,
    PARTIAL_JOB_INDEX_STATES,
    SCHEMA_VERSION,
    build_metadata,
    check_table_prefix,
    state_is,
)

# the row types and helpers, importable from here as before
__all__ = [
    "TEXT_CAP", "Claimed", "Job", "Lease", "NodeRow", "Occurrence", "Plan", "ScheduleRow", "Store", "claim_order",
    "clean_text", "decode_args", "encode_args",
]

log = logging.getLogger(__name__)

# the finished states the automatic prune deletes (LINGER_KEEP_FINISHED); failed and skipped
# rows are kept for inspection unless an operator prunes them (linger-sched prune --state)
PRUNE_STATES = ("succeeded", "cancelled")


def _prunable(states: Sequence[str]) -> tuple[str, ...]:
    """``states`` when they are finished states (which alone may be deleted), else ValueError."""
    out = tuple(dict.fromkeys(states))
    if not out or not set(out) <= set(FINISHED_STATES):
        raise ValueError(f"prune deletes finished jobs only: states must be among {', '.join(FINISHED_STATES)}; "
                         f"got {list(states)!r}")
    return out
T = TypeVar("T")

DONE_NOTIFY_EVERY = 0.1  # seconds: a drain's finish batches send at most ten NOTIFYs a second


class Store:
    """All persistence of one linger-sched installation: one database, one table prefix
    (``<prefix>jobs``, ``schedules``, ``leases``, ``nodes``, ``meta``). Every SQL statement
    linger-sched runs is here; what differs between SQLite, PostgreSQL and MySQL/MariaDB is
    asked of :attr:`dialect` (:class:`~linger_sched.store.dialect.Dialect`).

    **The contract.** Every public method documents, after what it does:

    * ``Reads:`` the rows (and the index) it reads;
    * ``Writes:`` the rows and columns it changes;
    * ``Locks:`` what keeps it correct against concurrent callers on other nodes: *row locks*
      (SELECT ... FOR UPDATE: held to commit), *SKIP LOCKED* (rows another transaction has
      locked are passed over, so that claimers take disjoint batches), *compare-and-set* (an
      UPDATE applies only while a column still holds the value read before, e.g. a schedule's
      ``next_run_at``), *lease fencing* (a write applies only while the writer still holds the
      leader lease at its epoch), or a unique key (insert-if-absent). On SQLite every write
      transaction takes the database's write lock at its start (BEGIN IMMEDIATE): writers are
      serialized and row locks are moot there;
    * ``Clock:`` which instant the times it writes and compares are relative to.

    **The clock.** A method that takes ``now: datetime | None`` uses, with ``now=None`` (the
    default, and what a production node passes), the *database's* clock: the time is read by
    the statement itself (``now()`` of the server: ``clock_timestamp()``, ``UTC_TIMESTAMP(6)``,
    SQLite's ``strftime('now')``), so that every node compares lease expiry, due times and
    heartbeats against one clock, whatever its own wall clock says. An aware ``datetime`` is
    used instead when given: tests with a fake clock, whose store calls pass
    ``app.clock.store_now()``. Times are stored as naive UTC (microseconds) and come back as
    aware UTC datetimes.

    **Transactions.** Each public method is one short transaction (:meth:`_tx`), committed
    before it returns; none is held across calls. A deadlock, lock timeout, serialization
    failure or SQLite busy error rolls the transaction back and runs it again (up to 8
    attempts, backing off from 10 ms to 0.5 s); the function run is therefore written to be
    repeatable. Any other driver error is raised as :class:`~linger_sched.errors.StoreError`
    ``from`` it (or :class:`~linger_sched.errors.SchemaError` when the tables are missing or
    older than this version); nothing was committed then.

    **What is transient.** :meth:`is_transient` says whether an error may pass if the same
    call is made again later (a lost connection, a lock still held after the retries); the
    worker, scheduler and node loops retry those with backoff and log the rest.
    :meth:`rejects_values` says whether the database refused the values written (one bad
    row), which no retry of the same write can cure.

    Public attributes: ``url``, ``prefix``, ``engine``, ``dialect``, ``metadata`` and ``t``
    (the :class:`~linger_sched.store.tables.Tables`), ``channel`` (the NOTIFY channel).
    """

    def __init__(self, url: str, *, table_prefix: str = "linger_", engine: sa.Engine | None = None) -> None:
        self.url = url
        # validated before anything connects: the prefix is part of every table, index and
        # NOTIFY channel name
        self.prefix = check_table_prefix(table_prefix)
        self.engine = engine if engine is not None else create_engine(url)
        self.dialect = Dialect(self.engine)
        self.metadata, self.t = build_metadata(table_prefix, partial_indexes=self.dialect.partial_indexes)
        self.channel = f"{table_prefix}jobs"  # NOTIFY channel (PostgreSQL), quoted by the dialect
        self.done_channel = f"{table_prefix}done"  # jobs finished (wakes wait_finished, not workers)
        # finish batches notify done_channel at most every DONE_NOTIFY_EVERY seconds; one skipped
        # is owed, and sent by the next batch or by send_owed_notify()
        self._mono = Clock().monotonic
        self._done_sent_at = -1e18
        self._done_owed = False
        self._db_now: dict[float, sa.ColumnElement[Any]] = {}
        self._claim_cols = tuple(self.t.jobs.c[name] for name in CLAIMED_COLUMNS)

    # -- plumbing -----------------------------------------------------------------------
    def _now(self, now: datetime | None, plus: float = 0.0) -> sa.ColumnElement[Any]:
        """``now`` (plus ``plus`` seconds) as a SQL expression: the database clock when None."""
        if now is None:
            # expression trees are immutable: build each "database now + plus" once
            expr = self._db_now.get(plus)
            if expr is None:
                expr = self._db_now[plus] = self.dialect.now(plus)
            return expr

        return sa.bindparam(None, now + timedelta(seconds=plus) if plus else now, UTCDateTime())

    @property
    def display_url(self) -> str:
        """The database URL as messages show it (password masked). No database access."""
        return mask_url(self.engine.url.render_as_string(hide_password=True))

    @property
    def auto_install_default(self) -> bool:
        """Whether an app creates the tables on first use when its settings do not say
        (``auto_install`` unset): for an embedded database (a SQLite file), which has no
        operator to run ``linger-sched db init``. No database access."""
        return self.dialect.embedded

    @property
    def can_listen(self) -> bool:
        """Whether :meth:`listen` can wake a worker when jobs are enqueued (else it returns at
        once and the worker polls). No database access."""
        return self.dialect.can_notify

    def _tx(self, fn: Callable[[sa.Connection], T], *, retries: int = 8) -> T:
        """Run ``fn`` in one transaction and return what it returns, committed.

        Retryable errors (:meth:`Dialect.is_retryable`) run it again, up to ``retries``
        attempts with backoff; other database errors become :class:`SchemaError` (tables
        missing or too old) or :class:`StoreError`, raised ``from`` the driver's error."""
        delay = 0.01
        for attempt in range(retries):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                if self.dialect.is_retryable(exc) and attempt < retries - 1:
                    sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise self._store_error(exc) from exc
            except (sa.exc.SQLAlchemyError, OverflowError) as exc:
                raise self._store_error(exc) from exc
        raise AssertionError("unreachable")

    def _in(self, conn: sa.Connection, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` on the caller's connection, inside the caller's transaction: never
        committed, rolled back or retried here (the caller owns the transaction); database
        errors become :class:`StoreError` as in :meth:`_tx`."""
        try:
            return fn(conn)
        except (sa.exc.SQLAlchemyError, OverflowError) as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: Exception) -> StoreError:
        """The :class:`StoreError` (:class:`SchemaError` for missing or old tables) that a
        database error raised by a store method becomes; its message never holds a password."""
        if isinstance(exc, OverflowError):  # sqlite3: a Python int beyond 64 bits
            return StoreError(f"{self.dialect.name} error: value out of range: {exc}")
        if not isinstance(exc, sa.exc.DBAPIError):
            return StoreError(f"{self.dialect.name} error: {mask_url(str(exc))}")
        detail = mask_url(str(exc.orig))
        missing = self.dialect.missing_directory(self.engine)
        if missing is not None:  # the driver says only "unable to open database file"
            return StoreError(missing)
        if self.dialect.is_undefined_table(exc):
            return SchemaError(
                f"linger-sched tables ({self.prefix}jobs, ...) are missing in {self.display_url} "
                f"({detail}); run `linger-sched db init` (or app.install_schema())"
            )
        if self.dialect.is_undefined_column(exc):
            return SchemaError(
                f"the linger-sched tables in {self.display_url} are older than this version ({detail}); "
                "run `linger-sched db upgrade`"
            )
        return StoreError(f"{self.dialect.name} error: {detail}")

    def is_same_database(self, conn: sa.Connection) -> bool:
        """Whether ``conn`` (a caller's connection) is to the database that holds this store's
        tables, judged from the two engines' URLs (no database access)."""
        return conn.engine is self.engine or same_database(conn.engine.url, self.engine.url)

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or after a fork). The store stays
        usable: the next call connects again. No rows are read or written."""
        self.engine.dispose()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by a method of this store) may pass if the same call is
        retried later: a lost connection, a lock timeout, a deadlock. A value the database
        refuses (too long, invalid) is not: retrying the same write cannot succeed.
        Inspects the exception only (no database access)."""
        cause = exc.__cause__ if isinstance(exc, StoreError) else exc
        if cause is None or not isinstance(cause, sa.exc.DBAPIError):
            return False
        return self.dialect.is_retryable(cause) or self.dialect.is_disconnect(cause)

    def rejects_values(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by a write such as :meth:`materialize`, is the database or
        its driver refusing the values written (out of range, too long, a constraint, a
        parameter that does not convert), which one row can cause; not a lost connection or a
        failure of the schema, permissions or disk, which no single row causes. Inspects the
        exception only (no database access)."""
        cause = exc.__cause__ if isinstance(exc, StoreError) else exc
        if cause is None:
            return False
        if isinstance(cause, sa.exc.DBAPIError):
            if self.dialect.is_disconnect(cause):
                return False
            return isinstance(cause, (sa.exc.DataError, sa.exc.IntegrityError))
        if isinstance(cause, sa.exc.SQLAlchemyError):
            return isinstance(cause, sa.exc.StatementError)  # a parameter that failed to convert
        return not isinstance(cause, LingerError)  # the driver's own OverflowError, TypeError, ...

    def listen(self, on_notify: Callable[[], None], stop: threading.Event, *, channel: str | None = None) -> bool:
        """Block, calling ``on_notify`` whenever jobs are enqueued by any process (``channel``:
        :attr:`done_channel` for jobs that finished), until ``stop``; returns False at once on
        databases without notifications (poll instead; see :attr:`can_listen`).

        Reads: notifications on :attr:`channel` (PostgreSQL LISTEN, on a connection of its
        own), or the database file's change counter (SQLite ``PRAGMA data_version``: any
        commit). Writes: nothing. Locks: nothing. Clock: none (it waits on ``stop``)."""
        if not self.dialect.can_notify:
            return False
        self.dialect.listen(self.engine, channel or self.channel, on_notify, stop)
        return True

    # -- schema -------------------------------------------------------------------------
    def install_schema(self) -> None:
        """Create every table and index that is missing and record the schema version.

        Idempotent, and safe when several nodes start at once (a CREATE that loses the race
        fails, and the whole step runs once more).

        Reads: the catalog (which tables exist). Writes: the missing tables and their
        indexes; the ``schema_version`` row of ``meta`` when absent (insert-if-absent).
        Locks: none of its own (DDL). Clock: none."""

        def run(conn: sa.Connection) -> None:
            schema.install(conn, self.metadata, self.t.meta, self.dialect)

        try:
            self._tx(run)
        except StoreError:
            # two nodes creating the same table at once: the loser's CREATE fails; check again
            sleep(0.2)
            self._tx(run)

    def schema_version(self) -> int | None:
        """The installed schema version, or None when the tables are missing (a SQLite file
        that does not exist is not created to find out).

        Reads: the catalog, and the ``schema_version`` row of ``meta``. Writes: nothing.
        Locks: nothing. Clock: none."""
        if self.dialect.database_missing(self.engine):
            return None  # do not create an empty SQLite file just to look
        try:
            if not sa.inspect(self.engine).has_table(self.t.meta.name):
                return None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.dialect.name} error: {mask_url(str(getattr(exc, 'orig', exc)))}") from exc
        return self._tx(lambda c: schema.recorded_version(c, self.t.meta))

    def upgrade_schema(self) -> tuple[int | None, int]:
        """Move an older schema forward to :data:`SCHEMA_VERSION`; returns (from, to).
        :class:`SchemaError` for a schema newer than this version, or for a column that
        cannot be added, before anything changes.

        In separate transactions: the missing tables (:meth:`install_schema`); version 3's
        job table change (see :func:`.schema.migrate_jobs`: every row is kept); the missing
        columns (and, on MySQL/MariaDB, text columns widened to LONGTEXT; version 5's
        ``jobs.result``, ``progress``, ``progress_message``, ``cancel_requested`` and
        ``schedules.source``, and version 6's ``jobs.trace_context``, by ALTER TABLE ADD
        COLUMN with their defaults); version 4's
        rebuilt ``jobs_task_ix`` (PostgreSQL); the missing indexes; version 4's ``counts``
        filled from the finished rows (:meth:`recount`: stop the nodes first); the new
        version number.

        Reads: the catalog; ``meta``. Writes: DDL on every table that lacks something; the
        job table's rows are copied when it is rebuilt (SQLite); ``meta``'s version.
        Locks: DDL's own (MySQL/MariaDB: one atomic ALTER TABLE). Clock: none."""
        before = self.schema_version()
        if before is not None and before > SCHEMA_VERSION:
            raise SchemaError(
                f"the database schema is version {before}, newer than this linger-sched ({SCHEMA_VERSION}); upgrade the package"
            )
        self.install_schema()  # tables that are missing, with their indexes
        # a column that cannot be added: SchemaError before any change
        self._tx(lambda c: schema.missing_columns(c, self.metadata, self.dialect))
        # version 3: the job table's partial indexes, first: the job table is rebuilt (SQLite) or
        # changed by one ALTER TABLE with the columns it lacks (MySQL/MariaDB, atomic)
        self._ddl(lambda c: schema.migrate_jobs(c, self.t.jobs, self.prefix, self.dialect))
        self._ddl(lambda c: schema.add_missing_columns(c, self.metadata, self.dialect))  # to tables that exist
        if before is not None and before < 4:  # version 4: jobs_task_ix holds queued rows too
            self._ddl(lambda c: schema.rebuild_partial_indexes(c, self.t.jobs, [self.prefix + "jobs_task_ix"], self.dialect))
        self._ddl(lambda c: schema.add_missing_indexes(c, self.metadata))  # to tables that exist
        if before is not None and before < 4:
            self.recount()  # version 4: finished jobs counted in ``counts``
        self._tx(lambda c: schema.record_version(c, self.t.meta))
        return before, SCHEMA_VERSION

    def _ddl(self, fn: Callable[[sa.Connection], object]) -> None:
        """One upgrade step, which reads the catalog and changes only what is missing: when a
        peer's upgrade ran the same DDL first ("column already exists"), it runs once more and
        finds nothing to do (an error that persists is raised)."""
        try:
            self._tx(fn)
        except StoreError:
            sleep(0.5)
            self._tx(fn)

    def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless the tables are installed at
        :data:`SCHEMA_VERSION` (the message says which command to run).

        Reads: as :meth:`schema_version`. Writes: nothing. Locks: nothing. Clock: none."""
        version = self.schema_version()
        missing = self.dialect.missing_directory(self.engine, tables=True) if version is None else None
        if missing is not None:
            raise SchemaError(missing)
        if version is None:
            raise SchemaError(
                f"linger-sched tables ({self.prefix}jobs, ...) are missing in {self.display_url}; "
                "run `linger-sched db init`"
            )
        if version > SCHEMA_VERSION:  # a newer package wrote it: `db upgrade` would refuse it
            raise SchemaError(f"schema version {version}, expected {SCHEMA_VERSION}: the database was upgraded "
                              "by a newer linger-sched; upgrade the package")
        if version != SCHEMA_VERSION:
            raise SchemaError(f"schema version {version}, expected {SCHEMA_VERSION}: run `linger-sched db upgrade`")

    def drop_schema(self) -> None:
        """Drop every linger-sched table of this prefix (tests and uninstall).

        Reads: the catalog. Writes: drops the tables that exist, with every row.
        Locks: DDL's own. Clock: none."""
        self._tx(lambda c: self.metadata.drop_all(c, checkfirst=True))

    def db_now(self) -> datetime:
        """The database's current UTC time.

        Reads: the database clock. Writes: nothing. Locks: nothing. Clock: database."""
        now: datetime = self._tx(lambda c: c.execute(sa.select(self.dialect.now())).scalar_one())
        return now

    # -- jobs: enqueue, claim, finish, extend, hand_back, rescue --------------------------
    def enqueue(
        self, rows: list[dict[str, Any]], now: datetime | None = None, *, connection: sa.Connection | None = None,
    ) -> list[int]:
        """Insert jobs in one transaction; returns their ids in order. With ``connection`` (the
        caller's, to this database: see :meth:`is_same_database`), in the caller's transaction
        instead: nothing is committed or retried here, and the rows (and the notification)
        exist only if the caller commits.

        Each row has ``task, args (JSON text), queue, priority, max_attempts`` and optional
        ``run_at`` (aware) or ``delay`` (seconds from now), ``unique_key``. A row whose
        ``unique_key`` is held by a queued or running job inserts nothing and yields that
        job's id instead.

        Reads: with a ``unique_key``, the job holding it (``jobs_unique_key_ux``).
        Writes: one ``queued`` job row per row given (rows without key or delay: one
        multi-row statement); then a notification to listeners (on commit).
        Locks: the unique key of the active jobs (insert-if-absent). Clock: ``now`` or the
        database clock for ``created_at``, and for ``run_at`` when a row gives none."""
        j = self.t.jobs

        def values(row: dict[str, Any]) -> dict[str, Any]:
            run_at = row.get("run_at")
            v = {
                "task": row["task"],
                "args": row.get("args", "{}"),
                "queue": row.get("queue", "default"),
                "priority": row.get("priority", 0),
                "max_attempts": row.get("max_attempts", 3),
                "state": "queued",
                "attempts": 0,
                "unique_key": row.get("unique_key"),
                "run_at": run_at if run_at is not None else self._now(now, row.get("delay") or 0.0),
                "created_at": self._now(now),
            }
            for extra in ("schedule_name", "scheduled_for", "reason", "trace_context"):
                if row.get(extra) is not None:
                    v[extra] = row[extra]
            return v

        def run(conn: sa.Connection) -> list[int]:
            plain = [i for i, r in enumerate(rows) if not r.get("unique_key") and not r.get("delay")]
            ids: dict[int, int] = {}
            if len(plain) > 1:
                # one multi-row statement: every value must be a plain parameter
                ts = now if now is not None else conn.execute(sa.select(self.dialect.now())).scalar_one()
                params = []
                for i in plain:
                    v = values(rows[i])
                    v["created_at"] = ts
                    if rows[i].get("run_at") is None:
                        v["run_at"] = ts
                    params.append(v)
                ids.update(zip(plain, self.dialect.insert_many(conn, j, params)))
            for i, r in enumerate(rows):
                if i not in ids:
                    ids[i] = self._insert_one(conn, values(r), r.get("unique_key"))
            self.dialect.notify(conn, self.channel)
            return [ids[i] for i in range(len(rows))]

        return self._tx(run) if connection is None else self._in(connection, run)

    def _insert_one(self, conn: sa.Connection, v: dict[str, Any], unique_key: str | None) -> int:
        """Insert one job row and return its id; with ``unique_key``, the id of the queued or
        running job that holds the key when one does (insert-if-absent, a few tries when the
        holder finishes between the insert and the look-up)."""
        j = self.t.jobs
        if not unique_key:
            return self.dialect.insert_one(conn, j, v)
        for _ in range(5):
            got = self.dialect.insert_one_if_absent(conn, j, v)
            if got is not None:
                return got
            existing = conn.execute(sa.select(j.c.id).where(self._holds_key(unique_key))).first()
            if existing is not None:
                return int(existing[0])
        raise StoreError(f"could not enqueue job with unique_key {unique_key!r}")

    def _finished(self, *states: str) -> sa.ColumnElement[bool]:
        """The condition "the job is in one of the finished ``states``", in the form the
        history index (jobs_done_ix) serves: on ``state``, or on the generated
        ``finished_state`` column (tables without partial indexes)."""
        return state_is(self._finished_col, *states)

    @property
    def _finished_col(self) -> sa.ColumnElement[Any]:
        j = self.t.jobs
        return j.c.finished_state if "finished_state" in j.c else j.c.state

    def _holds_key(self, key: str) -> sa.ColumnElement[bool]:
        """The condition "a queued or running job with unique_key ``key``", as the unique index
        serves it: the partial one, or the generated ``active_key`` column (tables without
        partial indexes)."""
        j = self.t.jobs
        if "active_key" in j.c:
            return j.c.active_key == key
        return sa.and_(j.c.unique_key == key, state_is(j.c.state, *ACTIVE_STATES))

    def claim(
        self, node: str, queues: Sequence[str] | None, limit: int, lease_ttl: float, now: datetime | None = None,
        *, ahead: float = 0.0,
    ) -> list[Claimed]:
        """Claim up to ``limit`` due jobs (``queued``, ``run_at <= now + ahead``, in ``queues`` or
        any queue when None) in order (priority, run_at, id); they become ``running``, locked by
        ``node`` until ``now + lease_ttl``, with ``attempts + 1`` and ``started_at = now``.
        Each comes back with ``claimed_at = now``: a job claimed ``ahead`` of its ``run_at``
        must not start before ``run_at - claimed_at`` has passed.

        Reads: the first ``limit`` queued rows in claim order, per queue (``jobs_queued_ix``;
        every queue: ``jobs_next_ix``). Writes: the claimed rows' ``state``, ``locked_by``,
        ``locked_until``, ``attempts``, ``started_at``. Locks: the candidates, FOR UPDATE SKIP
        LOCKED, so that concurrent claimers take disjoint batches without waiting (SQLite: the
        write lock). Clock: ``now`` or the database clock (due check, lease, ``claimed_at``)."""
        if limit <= 0:
            return []
        j = self.t.jobs
        due = (state_is(j.c.state, "queued"), j.c.run_at <= self._now(now, ahead))
        # one pick per named queue, each reading jobs_queued_ix in claim order; every queue:
        # jobs_next_ix
        picks = [
            sa.select(j.c.id, j.c.priority, j.c.run_at).where(*due, *([j.c.queue == q] if q is not None else []))
            .order_by(j.c.priority, j.c.run_at, j.c.id).limit(limit)
            for q in (sorted(set(queues)) if queues else [None])
        ]
        values = {
            "state": "running",
            "locked_by": node,
            "locked_until": self._now(now, lease_ttl),
            "attempts": j.c.attempts + 1,
            # a job claimed ahead of its run_at starts then, not at the claim
            "started_at": self.dialect.greatest(self._now(now), j.c.run_at) if ahead > 0 else self._now(now),
        }

        def run(conn: sa.Connection) -> list[Claimed]:
            cols = (*self._claim_cols, sa.type_coerce(self._now(now), UTCDateTime()).label("claimed_at"))
            rows = self.dialect.claim(conn, j, picks, lambda c: (c.priority, c.run_at, c.id), limit, values, cols)
            out = Claimed.from_rows(rows)
            out.sort(key=claim_order)
            return out

        return self._tx(run)

    def next_due(self, queues: Sequence[str] | None, now: datetime | None = None) -> tuple[datetime | None, datetime]:
        """(earliest run_at of a queued job in ``queues``, the store's now): how long to sleep.

        The claim indexes are in (priority, run_at) order, so the earliest run_at is the
        least of the first run_at of each priority: a loose index scan (a recursive query
        that seeks from one priority to the next) reads two index entries per distinct
        priority of the queued jobs, however many jobs are queued.

        Reads: ``jobs_next_ix`` (``jobs_queued_ix`` per queue). Writes: nothing.
        Locks: nothing. Clock: returns ``now``, or the database clock read in the same query."""
        # one statement per queue, each with the store's now (one round trip for one queue)
        stmts = [self._earliest_run_at(q).add_columns(self._now(now))
                 for q in (sorted(set(queues)) if queues else [None])]

        def run(conn: sa.Connection) -> tuple[datetime | None, datetime]:
            found = [conn.execute(stmt).one() for stmt in stmts]
            times = [self._as_time(t) for t, _ in found if t is not None]
            return (min(times) if times else None), found[0][1]

        return self._tx(run)

    @staticmethod
    def _as_time(value: datetime | str) -> datetime:
        """min() over a TypeDecorator column loses the type on SQLite: stored text, naive."""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)

    def _earliest_run_at(self, queue: str | None) -> sa.Select[Any]:
        """SELECT the earliest run_at of the queued jobs (of ``queue``), seeking priority by
        priority through jobs_next_ix (jobs_queued_ix for a queue)."""
        j = self.t.jobs
        base = [state_is(j.c.state, "queued"), *([j.c.queue == queue] if queue is not None else [])]
        # ORDER BY ... LIMIT 1 rather than min(): MariaDB reads one index entry for it in a
        # correlated subquery, and the whole range for min()
        lowest = sa.select(j.c.priority).where(*base).order_by(j.c.priority).limit(1).scalar_subquery()
        pri = sa.select(lowest.label("p")).cte("pri", recursive=True)
        following = sa.select(j.c.priority).where(*base, j.c.priority > pri.c.p).order_by(j.c.priority).limit(1)
        pri = pri.union_all(sa.select(following.scalar_subquery()).where(pri.c.p.is_not(None)))
        first = sa.select(j.c.run_at).where(*base, j.c.priority == pri.c.p).order_by(j.c.run_at).limit(1).scalar_subquery()
        return sa.select(sa.func.min(first)).where(pri.c.p.is_not(None))

    def extend(self, node: str, lease_ttl: float, now: datetime | None = None, ids: Sequence[int] | None = None) -> int:
        """Heartbeat: push ``locked_until`` to ``now + lease_ttl`` for the jobs ``node`` runs
        (only ``ids`` when given: a job the node has lost track of must be left to expire).
        Returns how many rows were extended.

        Reads: the running rows ``node`` holds. Writes: their ``locked_until``.
        Locks: the rows it updates (only while ``state = 'running'`` and ``locked_by = node``:
        a job rescued meanwhile is not extended). Clock: ``now`` or the database clock."""
        stmt = self._held_by(node, ids)
        if stmt is None:
            return 0
        stmt = stmt.values(locked_until=self._now(now, lease_ttl))
        return self._tx(lambda c: c.execute(stmt).rowcount)

    def extend_and_check(
        self, node: str, lease_ttl: float, now: datetime | None = None, ids: Sequence[int] | None = None,
    ) -> tuple[int, list[int]]:
        """:meth:`extend`, and in the same transaction the ids of the extended jobs whose
        cancellation was requested (:meth:`cancel_job` of a running job): the worker's
        heartbeat, which is how a worker learns of a cancel. Returns (how many rows were
        extended, those ids in order).

        Reads: the running rows ``node`` holds; then, by primary key, the ``cancel_requested``
        of those. Writes: their ``locked_until``. Locks: as :meth:`extend`.
        Clock: ``now`` or the database clock."""
        stmt = self._held_by(node, ids)
        if stmt is None:
            return 0, []
        stmt = stmt.values(locked_until=self._now(now, lease_ttl))
        j = self.t.jobs
        asked = sa.select(j.c.id).where(state_is(j.c.state, "running"), j.c.locked_by == node,
                                        j.c.cancel_requested == sa.true())
        if ids is not None:
            asked = asked.where(j.c.id.in_(list(ids)))

        def run(conn: sa.Connection) -> tuple[int, list[int]]:
            n = conn.execute(stmt).rowcount
            return n, (sorted(int(r[0]) for r in conn.execute(asked)) if n else [])

        return self._tx(run)

    def set_progress(self, node: str, job_id: int, attempt: int, progress: float, message: str | None) -> bool:
        """Store the progress of job ``job_id`` (a fraction from 0 to 1 and a message, as
        :func:`~.rows.progress_value` makes them) while ``node`` runs its attempt ``attempt``;
        returns whether it applied (False: the job was rescued, or finished, meanwhile). The
        worker calls it at most about once a second per job.

        Reads: nothing before writing. Writes: ``progress``, ``progress_message`` (no indexed
        column). Locks: lease fencing: only while the row is ``running``, locked by ``node``, at
        ``attempt``. Clock: none."""
        j = self.t.jobs
        stmt = sa.update(j).where(j.c.id == job_id, state_is(j.c.state, "running"), j.c.locked_by == node,
                                  j.c.attempts == attempt).values(progress=progress, progress_message=message)
        return bool(self._tx(lambda c: c.execute(stmt).rowcount))

    def _held_by(self, node: str, ids: Sequence[int] | None) -> sa.Update | None:
        """UPDATE of the running jobs ``node`` holds (only ``ids`` when given; None for no ids)."""
        j = self.t.jobs
        stmt = sa.update(j).where(state_is(j.c.state, "running"), j.c.locked_by == node)
        if ids is None:
            return stmt
        return stmt.where(j.c.id.in_(list(ids))) if ids else None

    def finish(
        self,
        node: str,
        succeeded: Sequence[int] = (),
        failed: Sequence[tuple[int, str, float | None]] = (),
        now: datetime | None = None,
        *,
        attempts: Mapping[int, int] | None = None,
        queues: Mapping[int, str] | None = None,
        results: Mapping[int, str] | None = None,
        progress: Mapping[int, tuple[float, str | None]] | None = None,
        cancelled: Sequence[tuple[int, str]] = (),
    ) -> tuple[list[int], list[int]]:
        """Record outcomes of jobs ``node`` still holds, in one transaction.

        ``succeeded``: ids that become ``succeeded``. ``failed``: ``(id, error, retry_in)``;
        with ``retry_in`` seconds the job goes back to ``queued`` at ``now + retry_in``,
        with None it becomes ``failed`` (terminal); ``error`` is stored through
        :func:`clean_text`. ``cancelled``: ``(id, why)``: the job becomes ``cancelled`` (a
        cancel of the running job took effect), ``why`` in ``last_error``. ``results`` (id ->
        JSON text, :func:`~.rows.encode_result`): the ``result`` of a succeeded job;
        ``progress`` (id -> (fraction, message)): the last progress the job reported, not yet
        written (see :meth:`set_progress`). A job no longer locked by ``node`` (rescued after its lease
        expired), or, with ``attempts`` (id -> attempt), no longer at that attempt, is left
        alone. Returns the ids that were not recorded for that reason: (succeeded, failed or
        cancelled).
        ``queues`` (id -> queue, as claimed) spares reading the queues of the jobs that end,
        which the counts of finished jobs are kept by (see :meth:`count_by_queue_and_state`).

        Reads: the rows by primary key (their queues, unless ``queues`` has them); with results
        or progress to write and ``now`` None, the database clock. Writes:
        ``state``, ``finished_at`` or ``run_at``, ``last_error``, and clears
        ``locked_by``/``locked_until`` (successes: one UPDATE per queue; those with a result or
        progress: one executemany of per-row UPDATEs that set them too); ``result``,
        ``progress``, ``progress_message`` where given; a row of ``counts`` per queue and final
        state; then, when a job reached a final state, a notification on :attr:`done_channel`
        (on commit; at most every :data:`DONE_NOTIFY_EVERY` seconds, see :meth:`_notify_done`). Locks: lease fencing per
        job: each UPDATE applies only while the row is ``running``, locked by ``node`` (and
        at the given attempt). Clock: ``now`` or the database clock."""
        j = self.t.jobs
        mine = (state_is(j.c.state, "running"), j.c.locked_by == node)
        extra = set(results or ()) | set(progress or ())

        def same_attempt(job_id: int) -> tuple[sa.ColumnElement[bool], ...]:
            if attempts is None or job_id not in attempts:
                return ()
            return (j.c.attempts == attempts[job_id],)

        def run(conn: sa.Connection) -> tuple[list[int], list[int]]:
            lost_ok: list[int] = []
            lost_failed: list[int] = []
            finals = [job_id for job_id, _, retry_in in failed if retry_in is None]
            queue_of = self._queues_of(conn, [*succeeded, *finals, *(i for i, _ in cancelled)], queues)
            counted: Counter[tuple[str, str]] = Counter()
            by_queue: dict[str, list[int]] = {}
            for i in succeeded:
                if i in queue_of:
                    by_queue.setdefault(queue_of[i], []).append(i)
                else:
                    lost_ok.append(i)  # no such row any more
            stamp = now
            if stamp is None and extra and not extra.isdisjoint(succeeded):  # per-row statements bind the time
                stamp = conn.execute(sa.select(self.dialect.now())).scalar_one()
            for queue, ids in by_queue.items():  # one UPDATE per queue: its rowcount is the count
                plain = [i for i in ids if i not in extra] if extra else ids  # the common case: no result
                n = 0
                if plain:
                    which: list[sa.ColumnElement[bool]] = [j.c.id.in_(plain)]  # the primary key finds the rows
                    pinned = [(i, attempts[i]) for i in plain if attempts is not None and i in attempts]
                    if pinned:
                        which.append(sa.or_(j.c.id.not_in([i for i, _ in pinned]),
                                            sa.tuple_(j.c.id, j.c.attempts).in_(pinned)))
                    n += conn.execute(
                        sa.update(j)
                        .where(*which, *mine)
                        .values(state="succeeded", finished_at=self._now(now), locked_by=None, locked_until=None)
                    ).rowcount
                each = [i for i in ids if i in extra] if extra else []
                if each:
                    n += self._succeed_each(conn, node, each, stamp, attempts or {}, results or {}, progress or {})
                counted[queue, "succeeded"] += n
                if n != len(ids):
                    held = {r[0] for r in conn.execute(sa.select(j.c.id).where(j.c.id.in_(ids), j.c.state == "succeeded"))}
                    lost_ok += [i for i in ids if i not in held]
            for job_id, error, retry_in in failed:
                v: dict[str, Any] = {"locked_by": None, "locked_until": None, "last_error": clean_text(error)}
                if progress and job_id in progress:
                    v["progress"], v["progress_message"] = progress[job_id]
                row_is = (j.c.id == job_id, *mine, *same_attempt(job_id))
                # a retry, unless a cancel was requested meanwhile: a cancelled job is not retried
                if retry_in is not None and conn.execute(sa.update(j).where(*row_is, j.c.cancel_requested == sa.false()).values(
                        state="queued", run_at=self._now(now, retry_in), **v)).rowcount == 1:
                    continue
                if conn.execute(sa.update(j).where(*row_is).values(state="failed", finished_at=self._now(now), **v)).rowcount != 1:
                    lost_failed.append(job_id)
                else:
                    queue = queue_of.get(job_id) or self._queues_of(conn, [job_id], None)[job_id]
                    counted[queue, "failed"] += 1
            for job_id, why in cancelled:
                v = {"state": "cancelled", "finished_at": self._now(now), "locked_by": None, "locked_until": None,
                     "last_error": clean_text(why)}
                if progress and job_id in progress:
                    v["progress"], v["progress_message"] = progress[job_id]
                if conn.execute(sa.update(j).where(j.c.id == job_id, *mine, *same_attempt(job_id)).values(v)).rowcount != 1:
                    lost_failed.append(job_id)
                else:
                    counted[queue_of[job_id], "cancelled"] += 1
            self._count(conn, counted)
            if any(n > 0 for n in counted.values()):
                self._notify_done(conn)
            return lost_ok, lost_failed

        return self._tx(run)

    def _notify_done(self, conn: sa.Connection) -> None:
        """In a finish transaction: wake :meth:`wait_finished` callers (NOTIFY on
        :attr:`done_channel`), unless this store sent one within :data:`DONE_NOTIFY_EVERY`
        seconds; then it is owed (see :meth:`send_owed_notify`). A NOTIFY takes a lock at
        commit that every notifying transaction shares: a fast drain must not send one per
        batch."""
        if not self.dialect.sends_notify:
            return
        mono = self._mono()
        if mono - self._done_sent_at >= DONE_NOTIFY_EVERY:
            self.dialect.notify(conn, self.done_channel)
            self._done_sent_at, self._done_owed = mono, False
        else:
            self._done_owed = True

    @property
    def owes_notify(self) -> bool:
        """Whether a finish batch held back its notification of finished jobs (see
        :meth:`send_owed_notify`).

        Reads: nothing (this object's state). Writes: nothing. Locks: nothing. Clock: none."""
        return self._done_owed

    def send_owed_notify(self) -> bool:
        """Send the notification of finished jobs that a finish batch held back (see
        :meth:`finish`), once :data:`DONE_NOTIFY_EVERY` has passed since the last one; the
        worker calls it on every turn of its loop. Returns whether it sent one.

        Reads: nothing. Writes: a NOTIFY on :attr:`done_channel` (PostgreSQL), in a transaction
        of its own. Locks: nothing. Clock: this process's monotonic time (the interval)."""
        if not self._done_owed or self._mono() - self._done_sent_at < DONE_NOTIFY_EVERY:
            return False
        self._done_owed = False
        self._done_sent_at = self._mono()
        self._tx(lambda c: self.dialect.notify(c, self.done_channel))
        return True

    def _succeed_each(
        self, conn: sa.Connection, node: str, ids: Sequence[int], stamp: datetime | None, attempts: Mapping[int, int],
        results: Mapping[int, str], progress: Mapping[int, tuple[float, str | None]],
    ) -> int:
        """Mark ``ids`` (running, held by ``node``) succeeded at ``stamp``, each with its
        result and/or last progress, in the caller's transaction: one executemany per shape of
        row (which of attempt, result, progress it binds), every value a named parameter.
        Returns how many rows it matched."""
        j = self.t.jobs
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for i in ids:
            row: dict[str, Any] = {"b_id": i, "b_node": node, "b_now": stamp}
            if i in attempts:
                row["b_attempt"] = attempts[i]
            if i in results:
                row["b_result"] = results[i]
            if i in progress:
                row["b_progress"], row["b_message"] = progress[i]
            shapes.setdefault(tuple(row), []).append(row)
        n = 0
        for keys, rows in shapes.items():
            where = [j.c.id == sa.bindparam("b_id"), state_is(j.c.state, "running"), j.c.locked_by == sa.bindparam("b_node")]
            if "b_attempt" in keys:
                where.append(j.c.attempts == sa.bindparam("b_attempt"))
            # constants as SQL literals: a per-row statement's every parameter is named in its rows
            values: dict[str, Any] = {"state": sa.literal_column("'succeeded'", sa.String()), "locked_by": sa.null(),
                                      "locked_until": sa.null(), "finished_at": sa.bindparam("b_now", type_=UTCDateTime())}
            if "b_result" in keys:
                values["result"] = sa.bindparam("b_result", type_=sa.Text())
            if "b_progress" in keys:
                values["progress"] = sa.bindparam("b_progress", type_=sa.Float())
                values["progress_message"] = sa.bindparam("b_message", type_=sa.String())
            n += self.dialect.executemany(conn, sa.update(j).where(*where).values(values), rows)
        return n

    def _queues_of(self, conn: sa.Connection, ids: Sequence[int], known: Mapping[int, str] | None) -> dict[int, str]:
        """The queue of each job of ``ids`` that exists: from ``known`` where it has it, else
        read by primary key."""
        out = {i: known[i] for i in ids if i in known} if known else {}
        missing = [i for i in ids if i not in out]
        j = self.t.jobs
        for start in range(0, len(missing), 1000):
            stmt = sa.select(j.c.id, j.c.queue).where(j.c.id.in_(missing[start:start + 1000]))
            out.update((job_id, queue) for job_id, queue in conn.execute(stmt))
        return out

    def _count(self, conn: sa.Connection, deltas: Mapping[tuple[str, str], int]) -> None:
        """Record, in the caller's transaction, finished jobs that changed: ``(queue, state) ->
        n`` (negative when jobs left ``state`` or were deleted). An INSERT of its own rows: no
        two writers wait on one counter row."""
        rows = [{"queue": q, "state": st, "n": n} for (q, st), n in deltas.items() if n]
        if rows:
            conn.execute(sa.insert(self.t.counts), rows)

    def hand_back(self, node: str, ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
        """Shutdown: put jobs ``node`` holds (all, or ``ids``) back to ``queued`` at once.
        The interrupted attempt is not counted (``attempts - 1``). A job whose cancellation was
        requested becomes ``cancelled`` instead. Returns how many (both kinds); :meth:`hand_back_jobs`
        tells them apart.

        Reads: the running rows ``node`` holds with a cancel request (their queues). Writes:
        ``state``, ``run_at`` (``finished_at`` and ``counts`` for the cancelled), ``attempts``,
        ``last_error``, and clears ``locked_by``/``locked_until``; then a notification to
        listeners (on commit). Locks: lease fencing: only rows still ``running`` and locked
        by ``node``. Clock: ``now`` or the database clock (``run_at``)."""
        handed, cancelled = self.hand_back_jobs(node, ids, now)
        return handed + len(cancelled)

    def hand_back_jobs(self, node: str, ids: Sequence[int] | None = None,
                       now: datetime | None = None) -> tuple[int, list[int]]:
        """:meth:`hand_back`, returning how many jobs went back to ``queued`` and the ids of
        those that became ``cancelled`` (their cancel was requested while they ran).

        Reads: Writes: Locks: Clock: as :meth:`hand_back`."""
        j = self.t.jobs
        held = self._held_by(node, ids)
        if held is None:
            return 0, []
        asked = sa.select(j.c.id, j.c.queue).where(state_is(j.c.state, "running"), j.c.locked_by == node,
                                                   j.c.cancel_requested == sa.true())
        if ids is not None:
            asked = asked.where(j.c.id.in_(list(ids)))
        stmt = held.values(
            state="queued",
            locked_by=None,
            locked_until=None,
            run_at=self._now(now),
            attempts=sa.case((j.c.attempts > 0, j.c.attempts - 1), else_=0),
            last_error=sa.literal(clean_text(f"handed back: node {node} shut down before the job finished")),
        )

        def run(conn: sa.Connection) -> tuple[int, list[int]]:
            stopped = self._cancel_held(conn, node, list(conn.execute(asked)), now,
                                        f"cancelled: node {node} shut down after the cancel was requested")
            n = conn.execute(stmt).rowcount
            if n:
                self.dialect.notify(conn, self.channel)
            return n, stopped

        return self._tx(run)

    def _cancel_held(self, conn: sa.Connection, node: str, rows: Sequence[Any], now: datetime | None,
                     why: str) -> list[int]:
        """In the caller's transaction: the running jobs ``rows`` ((id, queue) pairs) that
        ``node`` holds become ``cancelled``, counted; returns the ids of those that did (one
        UPDATE each, lease-fenced: a row that changed meanwhile is left out)."""
        if not rows:
            return []
        j = self.t.jobs
        counted: Counter[tuple[str, str]] = Counter()
        done: list[int] = []
        for job_id, queue in rows:
            if conn.execute(
                    sa.update(j).where(j.c.id == job_id, state_is(j.c.state, "running"), j.c.locked_by == node).values(
                        state="cancelled", finished_at=self._now(now), locked_by=None, locked_until=None,
                        last_error=clean_text(why))).rowcount:
                counted[queue, "cancelled"] += 1
                done.append(job_id)
        self._count(conn, counted)
        if done:
            self.dialect.notify(conn, self.done_channel)
        return done

    def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[tuple[int, str | None, str]]:
        """:meth:`rescue_jobs`, returning ``(id, dead node, new state)`` for each rescued job.

        Reads: Writes: Locks: Clock: as :meth:`rescue_jobs`."""
        return [(r.id, r.node, r.state) for r in self.rescue_jobs(now, limit)]

    def rescue_jobs(self, now: datetime | None = None, limit: int = 1000) -> list[Rescued]:
        """Jobs ``running`` whose lease expired (their node died): back to ``queued`` at once,
        or ``failed`` when that was the last attempt, or ``cancelled`` when a cancel was
        requested. The lost attempt counts. Returns a :class:`Rescued` (id, dead node, new
        state, task, queue, the lost attempt, ...) for each rescued job.

        Reads: up to ``limit`` running rows with ``locked_until < now`` (``jobs_running_ix``).
        Writes: their ``state``, ``run_at`` or ``finished_at``, ``last_error``, and clears
        ``locked_by``/``locked_until``; ``counts`` for the failed and cancelled ones; then a
        notification to listeners (on commit; and on :attr:`done_channel` for those). Locks: the expired rows, FOR UPDATE SKIP LOCKED (SQLite: the write lock), and each
        UPDATE applies only while the lease is still expired (compare-and-set: a late
        heartbeat or finish wins). Clock: ``now`` or the database clock."""
        j = self.t.jobs
        expired = (state_is(j.c.state, "running"), j.c.locked_until < self._now(now))  # jobs_running_ix

        def run(conn: sa.Connection) -> list[Rescued]:
            pick = sa.select(j.c.id, j.c.locked_by, j.c.attempts, j.c.max_attempts, j.c.queue,
                             j.c.cancel_requested, j.c.task, j.c.schedule_name).where(*expired).limit(limit)
            rows = list(conn.execute(self.dialect.skip_locked(pick)))
            out = []
            counted: Counter[tuple[str, str]] = Counter()
            for job_id, holder, attempts, max_attempts, queue, asked, task, schedule in rows:
                last = attempts >= max_attempts
                state = "cancelled" if asked else "failed" if last else "queued"
                lost = f"lease expired: node {holder} stopped heartbeating during attempt {attempts}"
                v: dict[str, Any] = {
                    "state": state,
                    "locked_by": None,
                    "locked_until": None,
                    "last_error": clean_text(f"cancelled (requested while it ran); {lost}" if asked else lost),
                }
                if state != "queued":
                    v["finished_at"] = self._now(now)
                else:
                    v["run_at"] = self._now(now)
                if conn.execute(sa.update(j).where(j.c.id == job_id, *expired).values(v)).rowcount:
                    out.append(Rescued(job_id, holder, state, task, queue, attempts, max_attempts, schedule,
                                       v["last_error"]))
                    if state != "queued":
                        counted[queue, state] += 1
            self._count(conn, counted)
            if out:
                self.dialect.notify(conn, self.channel)
            if counted:
                self.dialect.notify(conn, self.done_channel)
            return out

        return self._tx(run)

    def expired_locks(
        self, older_than: float, now: datetime | None = None, limit: int = 20, cap: int = 10_000,
    ) -> tuple[int, list[LockedJob]]:
        """``(how many, the first limit)`` of the ``running`` jobs whose lock expired more
        than ``older_than`` seconds before ``now``, longest expired first: jobs that no worker
        rescued (every worker rescues expired locks every few seconds, :meth:`rescue`). The
        count stops at ``cap``.

        Reads: the range of ``jobs_running_ix`` before ``now - older_than`` (at most ``cap``
        entries), then ``limit`` rows. Writes: nothing. Locks: nothing. Clock: ``now`` or the
        database clock."""
        j = self.t.jobs
        where = (state_is(j.c.state, "running"), j.c.locked_until < self._now(now, -older_than))  # jobs_running_ix
        some = sa.select(j.c.id).where(*where).limit(max(1, int(cap))).subquery("expired")
        count = sa.select(sa.func.count()).select_from(some)
        cols = [j.c[f.name] for f in dataclasses.fields(LockedJob)]
        first = sa.select(*cols).where(*where).order_by(j.c.locked_until).limit(max(1, int(limit)))

        def run(conn: sa.Connection) -> tuple[int, list[LockedJob]]:
            n = int(conn.execute(count).scalar_one())
            return n, (LockedJob.from_rows(conn.execute(first)) if n else [])

        return self._tx(run)

    # -- jobs: inspection and operator actions ------------------------------------------
    def get_job(self, job_id: int) -> Job:
        """The job ``job_id``; :class:`JobNotFoundError` when there is none.

        Reads: the row by primary key. Writes: nothing. Locks: nothing. Clock: none."""
        if self._impossible_id(job_id):
            raise JobNotFoundError(job_id)
        j = self.t.jobs
        row = self._tx(lambda c: c.execute(sa.select(j).where(j.c.id == job_id)).first())
        if row is None:
            raise JobNotFoundError(job_id)
        return Job.from_row(row)

    def wait_finished(self, job_id: int, timeout: float | None = None) -> Job:
        """The job ``job_id`` once it has finished (``succeeded``, ``failed``, ``cancelled`` or
        ``skipped``), waiting up to ``timeout`` seconds (None: as long as it takes);
        :class:`JobNotFoundError` for an unknown id, :class:`~linger_sched.errors.WaitTimeout`
        (naming the job and the state it is in) when it has not finished by then.

        Wakes when the database says that jobs finished: PostgreSQL LISTEN on
        :attr:`done_channel` (a connection of its own while it waits; :meth:`finish` notifies
        once per batch), SQLite's change counter (any commit); it polls too, backing off from
        50 ms to 1 s (5 s where notifications wake it, so that a lost one only delays it).
        Several transactions (one read each), none held across the wait.

        Reads: the row by primary key, at each wake-up. Writes: nothing. Locks: nothing.
        Clock: real (monotonic) time for the timeout: neither the database's clock nor an
        app's fake one."""
        job = self.get_job(job_id)
        if job.state in FINISHED_STATES:
            return job
        real = Clock()
        deadline = None if timeout is None else real.monotonic() + timeout
        woken, stop = threading.Event(), threading.Event()
        cap = 1.0
        if self.dialect.can_notify and (timeout is None or timeout > 0):
            cap = 5.0
            threading.Thread(target=self.listen, args=(woken.set, stop), kwargs={"channel": self.done_channel},
                             name="linger-wait", daemon=True).start()
        delay = 0.05
        try:
            while True:
                left = None if deadline is None else deadline - real.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(job_id, job.state, timeout or 0.0)
                if woken.wait(delay if left is None else min(delay, left)):
                    woken.clear()
                else:
                    delay = min(delay * 2, cap)
                job = self.get_job(job_id)
                if job.state in FINISHED_STATES:
                    return job
        finally:
            stop.set()

    def list_jobs(
        self,
        state: str | None = None,
        limit: int = 50,
        *,
        task: str | None = None,
        schedule_name: str | None = None,
        queue: str | None = None,
        newest_first: bool = True,
        before_id: int | None = None,
        after_id: int | None = None,
    ) -> list[Job]:
        """Up to ``limit`` jobs (all with 0) matching every filter given, newest first (by id;
        oldest first with ``newest_first=False``). An unknown ``state`` matches nothing.
        ``before_id`` / ``after_id``: only ids below / above it (keyset pagination: the next
        page of a newest-first listing is ``before_id=`` its last id; the previous one
        ``after_id=`` its first id with ``newest_first=False``).

        Reads: an index in id order for each shape: by state (``jobs_done_ix`` for a finished
        state; the running ones are few), by schedule (``jobs_schedule_ix``), by task or
        queue (``jobs_task_ix`` / ``jobs_queue_ix``; where those are partial, the rows they
        hold through them and the other active ones apart, newest of the arms), from the
        keyset bound on (every key ends with ``id``);
        then the rows. Writes: nothing. Locks: nothing. Clock: none."""
        j = self.t.jobs
        if state is not None and state not in JOB_STATES:
            return []
        filters: list[sa.ColumnElement[bool]] = self._id_range(before_id, after_id)
        if task:
            filters.append(j.c.task == task)
        if schedule_name:
            filters.append(j.c.schedule_name == schedule_name)
        if queue:
            filters.append(j.c.queue == queue)

        def rows(*states: str) -> tuple[sa.Select[Any], sa.ColumnElement[int]]:
            """SELECT of the job rows in ``states`` (any with none) that match the filters,
            and its id column."""
            if states and set(states) <= set(FINISHED_STATES):
                where = [*filters, self._finished(*states)]
            else:
                where = [*filters, state_is(j.c.state, *states)] if states else filters
            if states == ("running",):
                # through jobs_running_ix, then sorted: the running jobs are few, and SQLite
                # would rather walk the primary key in id order through every row. OFFSET 0
                # keeps the subquery apart (SQLite, PostgreSQL do not merge it into the outer one)
                fenced = sa.select(j).where(*where).offset(0).subquery("running")
                return sa.select(fenced), fenced.c.id
            return sa.select(j).where(*where), j.c.id

        def ordered(stmt: sa.Select[Any], id_col: sa.ColumnElement[int]) -> sa.Select[Any]:
            stmt = stmt.order_by(id_col.desc() if newest_first else id_col.asc())
            return stmt.limit(limit) if limit else stmt

        stmt = ordered(*rows(*([state] if state else [])))
        index = "jobs_task_ix" if task else "jobs_queue_ix" if queue else None
        if limit and not state and not schedule_name and index is not None and self._partial(index):
            # the index holds the rows of some states only: read those through it, each other
            # active state apart (each in id order), and keep the first of the arms
            held = PARTIAL_JOB_INDEX_STATES[index]
            arms = []
            for group in (held, *[(s,) for s in ACTIVE_STATES if s not in held]):
                sel, id_col = rows(*group)
                arms.append(ordered(sel.with_only_columns(id_col), id_col).subquery())
            union = sa.union_all(*[sa.select(a.c.id) for a in arms]).subquery("arms")
            first = ordered(sa.select(union.c.id), union.c.id).subquery("newest")
            # a join, not IN: MariaDB takes no LIMIT in an IN subquery
            stmt = sa.select(j).join(first, j.c.id == first.c.id).order_by(j.c.id.desc() if newest_first else j.c.id.asc())
        return [Job.from_row(r) for r in self._tx(lambda c: list(c.execute(stmt)))]

    def _partial(self, index: str) -> bool:
        """Whether the job index ``index`` (its name after the prefix) is partial on this
        database: it holds the rows of :data:`PARTIAL_JOB_INDEX_STATES` only."""
        for ix in self.t.jobs.indexes:
            if ix.name == self.prefix + index:
                return self.dialect.index_is_partial(ix)
        return False

    def _id_range(self, before_id: int | None, after_id: int | None) -> list[sa.ColumnElement[bool]]:
        """The keyset conditions ``id < before_id`` and ``id > after_id`` (those given), with
        the bounds clamped to the 64-bit range of ids (a larger number binds on no driver)."""
        j = self.t.jobs
        out: list[sa.ColumnElement[bool]] = []
        if before_id is not None:
            out.append(j.c.id < min(int(before_id), 2**63 - 1))
        if after_id is not None:
            out.append(j.c.id > max(int(after_id), -(2**63)))
        return out

    # -- jobs: the dashboard's reads (linger_sched.web) -----------------------------------
    def count_jobs(
        self, state: str | None = None, *, task: str | None = None, schedule_name: str | None = None,
        queue: str | None = None, before_id: int | None = None, after_id: int | None = None,
    ) -> int:
        """How many jobs match every filter given (those of :meth:`list_jobs`; an unknown
        ``state`` matches nothing): the count a bulk retry or cancel confirms.

        Reads: the index :meth:`list_jobs` reads for the same filters (``jobs_done_ix`` for a
        finished state, the claim or lock index for an active one, ``jobs_schedule_ix``,
        ``jobs_task_ix``, ``jobs_queue_ix``), each matching entry once: its cost grows with
        the number of jobs it counts. Writes: nothing. Locks: nothing. Clock: none."""
        j = self.t.jobs
        if state is not None and state not in JOB_STATES:
            return 0
        where = self._id_range(before_id, after_id)
        if task:
            where.append(j.c.task == task)
        if schedule_name:
            where.append(j.c.schedule_name == schedule_name)
        if queue:
            where.append(j.c.queue == queue)
        if state is not None:
            where.append(self._finished(state) if state in FINISHED_STATES else state_is(j.c.state, state))
        stmt = sa.select(sa.func.count()).select_from(j).where(*where)
        return int(self._tx(lambda c: c.execute(stmt).scalar_one()))

    def first_job_id_since(self, instant: datetime) -> int | None:
        """The id of the first job created at or after ``instant`` (aware), or None when no job
        is that recent: a search of the primary key, which holds the jobs in the order they
        were inserted. It turns a time range into an id range, which every job index (each
        ends with ``id``) serves. A row whose ``created_at`` is out of id order (a node whose
        clock is off) can move the answer by its own place only.

        Reads: the first and the last row by primary key, then rows by primary key (each the
        first at or after an id, for its ``created_at``): a handful when jobs were created at
        a steady rate (the next id is guessed from the times), about log2(largest id) at
        worst (every other guess halves the range), in one transaction. Writes: nothing.
        Locks: nothing. Clock: none (``instant`` as given)."""
        j = self.t.jobs
        at = instant.astimezone(timezone.utc)

        def run(conn: sa.Connection) -> int | None:
            last = conn.execute(sa.select(j.c.id, j.c.created_at).order_by(j.c.id.desc()).limit(1)).first()
            if last is None or self._as_time(last[1]) < at:
                return None
            first = conn.execute(sa.select(j.c.id, j.c.created_at).order_by(j.c.id).limit(1)).one()
            if self._as_time(first[1]) >= at:
                return int(first[0])
            best, best_at = int(last[0]), self._as_time(last[1])  # the least qualifying id found
            lo, lo_at = int(first[0]) + 1, self._as_time(first[1])  # ids still to search: [lo, hi]
            hi, guess = best - 1, True
            while lo <= hi:
                span = (best_at - lo_at).total_seconds()
                if guess and span > 0:  # where the times say it is
                    mid = lo + int((at - lo_at).total_seconds() / span * (best - lo))
                    mid = min(max(mid, lo), hi)
                else:
                    mid = (lo + hi) // 2
                guess = not guess
                row = conn.execute(sa.select(j.c.id, j.c.created_at).where(j.c.id >= mid, j.c.id <= hi)
                                   .order_by(j.c.id).limit(1)).first()
                if row is None:  # no id in [mid, hi]
                    hi = mid - 1
                elif self._as_time(row[1]) >= at:
                    best, best_at, hi = int(row[0]), self._as_time(row[1]), mid - 1  # the least id >= mid
                else:
                    lo, lo_at = int(row[0]) + 1, self._as_time(row[1])
            return best

        return self._tx(run)

    def finished_histogram(
        self, bounds: Sequence[datetime], *, min_id: int, by_queue: bool = True,
    ) -> dict[tuple[str, str], list[int]]:
        """The jobs that finished ``succeeded`` or ``failed`` in each interval ``[bounds[i],
        bounds[i + 1])`` (``bounds`` ascending, aware): ``{(queue, state): [count per
        interval]}`` (with ``by_queue=False``, summed over the queues: ``("", state)``). Only
        jobs with ``id >= min_id`` are read: the dashboard's throughput chart passes
        :meth:`first_job_id_since` of a little before its window, so it reads the recent jobs,
        never the whole history (a job created long before it finished, a long delay, is then
        not counted).

        Reads: ``jobs_done_ix`` from ``min_id`` on, for the two states, then those rows'
        ``queue`` and ``finished_at`` (each placed by a balanced tree of comparisons).
        Writes: nothing. Locks: nothing. Clock: none (the bounds as given)."""
        if len(bounds) < 2:
            return {}
        j = self.t.jobs
        edges = [self._now(b) for b in bounds]

        def interval(lo: int, hi: int) -> sa.ColumnElement[int]:
            """The interval of finished_at among lo..hi-1: log2(intervals) comparisons a row."""
            if hi - lo == 1:
                return sa.literal_column(str(lo), sa.Integer())
            mid = (lo + hi) // 2
            return sa.case((j.c.finished_at < edges[mid], interval(lo, mid)), else_=interval(mid, hi))

        bucket = interval(0, len(bounds) - 1).label("bucket")
        queue = j.c.queue if by_queue else sa.literal_column("''", sa.String()).label("queue")
        stmt = (
            sa.select(queue, j.c.state, bucket, sa.func.count())
            .where(self._finished("succeeded", "failed"), j.c.id >= min_id,
                   j.c.finished_at >= edges[0], j.c.finished_at < edges[-1])
            # one interval: the bucket is the constant 0, which GROUP BY would read as a position
            .group_by(*([j.c.queue] if by_queue else []), j.c.state, *([bucket] if len(bounds) > 2 else []))
        )
        out: dict[tuple[str, str], list[int]] = {}
        for q, state, i, n in self._tx(lambda c: list(c.execute(stmt))):
            out.setdefault((q, state), [0] * (len(bounds) - 1))[int(i)] += int(n)
        return out

    def created_by_queue(self, min_id: int) -> dict[str, int]:
        """``{queue: jobs with id >= min_id}``: with :meth:`first_job_id_since` of an instant,
        the jobs enqueued (or materialized) since then, by queue (the dashboard's rate in).

        Reads: the primary key from ``min_id`` on, and those rows' ``queue``. Writes: nothing.
        Locks: nothing. Clock: none."""
        j = self.t.jobs
        # OFFSET 0: a subquery of its own, read by primary key; SQLite would rather group the
        # whole of jobs_queue_ix, which holds every row, than sort the few recent ones
        recent = sa.select(j.c.queue).where(j.c.id >= min_id).offset(0).subquery("recent")
        stmt = sa.select(recent.c.queue, sa.func.count()).group_by(recent.c.queue)
        return {q: int(n) for q, n in self._tx(lambda c: list(c.execute(stmt)))}

    def count_by_state(self) -> dict[str, int]:
        """``{state: number of jobs}`` for the states that have jobs.

        Reads: as :meth:`count_by_queue_and_state` (summed over queues). Writes: nothing.
        Locks: nothing. Clock: none."""
        out: Counter[str] = Counter()
        for (_, state), n in self.count_by_queue_and_state().items():
            out[state] += n
        return {state: n for state, n in out.items() if n}

    def count_by_queue_and_state(self) -> dict[tuple[str, str], int]:
        """``{(queue, state): number of jobs}`` for the pairs that have jobs, in time
        independent of the history's size.

        Reads: the queued jobs through ``jobs_queued_ix`` (in queue order) and the running
        ones through ``jobs_running_ix``, counted; the finished ones from ``counts``: the
        deltas that every transaction moving jobs into or out of a finished state wrote with
        its change (summed; the leader folds them, :meth:`fold_counts`), so they are exact at
        any commit as long as every change goes through this class (rows written or deleted
        by hand: :meth:`recount`). Writes: nothing. Locks: nothing. Clock: none."""
        j, k = self.t.jobs, self.t.counts
        # OFFSET 0: a subquery of its own, so that SQLite reads jobs_running_ix, not the
        # whole table in queue order
        running = sa.select(j.c.queue).where(state_is(j.c.state, "running")).offset(0).subquery("running")
        stmt = sa.union_all(
            sa.select(j.c.queue, sa.literal_column("'queued'", sa.String()), sa.func.count())
            .where(state_is(j.c.state, "queued")).group_by(j.c.queue),
            sa.select(running.c.queue, sa.literal_column("'running'", sa.String()), sa.func.count()).group_by(running.c.queue),
            sa.select(k.c.queue, k.c.state, sa.func.sum(k.c.n)).group_by(k.c.queue, k.c.state),
        )
        return {(q, st): int(n) for q, st, n in self._tx(lambda c: list(c.execute(stmt))) if n}

    def earliest_queued(
        self, queues: Sequence[str], now: datetime | None = None, *, max_priorities: int = 32,
    ) -> tuple[dict[str, datetime], datetime]:
        """``({queue: earliest run_at of its queued jobs}, the store's now)`` for each of
        ``queues`` that has a queued job (due or not): the age of a queue's oldest due job is
        ``now - run_at`` when that is positive (Prometheus metrics).

        Reads: per queue, ``jobs_queued_ix`` (in (priority, run_at) order within a queue) by a
        loose index scan driven from here: one seek per distinct priority of the queue's jobs,
        each reading one entry (the first run_at of the next priority), so its cost does not
        grow with the number of jobs queued. (A recursive query does the same in one statement
        on some databases, but MariaDB reads the whole range of the queue for its correlated
        ``priority >`` step.) A queue with more than ``max_priorities`` distinct priorities is
        read whole instead (``min(run_at)`` over its entries). Writes: nothing. Locks: nothing.
        Clock: returns ``now``, or the database clock read in the same transaction."""
        j = self.t.jobs
        queued = state_is(j.c.state, "queued")
        first = (sa.select(j.c.priority, j.c.run_at).where(queued, j.c.queue == sa.bindparam("q"))
                 .order_by(j.c.priority, j.c.run_at).limit(1))
        following = first.where(j.c.priority > sa.bindparam("after"))
        whole = sa.select(sa.func.min(j.c.run_at)).where(queued, j.c.queue == sa.bindparam("q"))

        def earliest(conn: sa.Connection, queue: str) -> datetime | None:
            best: datetime | None = None
            row = conn.execute(first, {"q": queue}).first()
            for _ in range(max(1, max_priorities)):
                if row is None:
                    return best
                at = self._as_time(row[1])
                best = at if best is None or at < best else best
                row = conn.execute(following, {"q": queue, "after": row[0]}).first()
            if row is None:
                return best
            value = conn.execute(whole, {"q": queue}).scalar()  # many priorities: read the queue
            return None if value is None else self._as_time(value)

        def run(conn: sa.Connection) -> tuple[dict[str, datetime], datetime]:
            at = self._as_time(conn.execute(sa.select(self._now(now))).scalar_one())
            found = {q: earliest(conn, q) for q in sorted(set(queues))}
            return {q: t for q, t in found.items() if t is not None}, at

        return self._tx(run)

    def fold_counts(self, limit: int = 50_000) -> int:
        """Fold the oldest ``limit`` rows of ``counts`` into one row per (queue, state), so
        that :meth:`count_by_queue_and_state` sums a few rows; returns how many rows went.
        The leader's housekeeping calls it every few seconds.

        Reads: those rows (primary key order). Writes: deletes them and inserts their sums.
        Locks: the rows read, FOR UPDATE (SQLite: the write lock); the deletes must remove
        every row read, or the transaction is rolled back and nothing changes (another
        folder got there first). Clock: none."""
        k = self.t.counts

        class Raced(Exception):
            """Another fold deleted some of the rows first."""

        def run(conn: sa.Connection) -> int:
            rows = list(conn.execute(sa.select(k.c.id, k.c.queue, k.c.state, k.c.n).order_by(k.c.id).limit(limit)
                                     .with_for_update()))
            sums: Counter[tuple[str, str]] = Counter()
            for _, queue, state, n in rows:
                sums[queue, state] += n
            if len(rows) <= len(sums):
                return 0  # one row per pair already
            ids = [r[0] for r in rows]
            gone = 0
            for start in range(0, len(ids), 1000):
                gone += conn.execute(sa.delete(k).where(k.c.id.in_(ids[start:start + 1000]))).rowcount
            if gone != len(ids):
                raise Raced
            self._count(conn, sums)
            return len(ids)

        try:
            return self._tx(run)
        except Raced:
            return 0

    def recount(self) -> dict[tuple[str, str], int]:
        """Rebuild ``counts`` from the job rows: after rows were written or deleted by hand,
        and by :meth:`upgrade_schema` from a version without ``counts``. Returns the finished
        jobs by (queue, state). Finishes committed by nodes while it runs may be counted twice
        or not at all: run it with the nodes stopped (``db upgrade`` is), or again when idle.

        Reads: every finished row (``jobs_done_ix``). Writes: replaces every row of
        ``counts``. Locks: nothing beyond the writes. Clock: none."""
        j, k = self.t.jobs, self.t.counts

        def run(conn: sa.Connection) -> dict[tuple[str, str], int]:
            found = {(q, st): int(n) for q, st, n in conn.execute(
                sa.select(j.c.queue, j.c.state, sa.func.count()).where(state_is(j.c.state, *FINISHED_STATES))
                .group_by(j.c.queue, j.c.state))}
            conn.execute(sa.delete(k))
            self._count(conn, found)
            return found

        return self._tx(run)

    @staticmethod
    def _impossible_id(job_id: int) -> bool:
        """Ids are 64-bit: a larger number names no job (and no driver can bind it)."""
        return not -(2**63) <= job_id < 2**63

    def retry_job(self, job_id: int, now: datetime | None = None) -> Job:
        """A ``failed``, ``cancelled`` or ``skipped`` job goes back to ``queued``, due now,
        with a fresh set of attempts.

        Raises :class:`JobNotFoundError` for an unknown id, and :class:`JobStateError` for a
        job in another state or one whose ``unique_key`` another queued or running job holds
        now (the message names the key and that job); the row is then left unchanged.

        Reads: the row; with a key, the job holding it. Writes: ``counts``; ``state``, ``attempts``,
        ``run_at``, clears ``finished_at``/``locked_by``/``locked_until`` and the last attempt's
        ``result``, ``progress``, ``progress_message``, ``cancel_requested``. Locks:
        compare-and-set on the state read, and the unique key of the active jobs (a job that
        takes the key meanwhile makes the update fail, and the row stays as it was).
        Clock: ``now`` or the database clock (``run_at``)."""
        if self._impossible_id(job_id):
            raise JobNotFoundError(job_id)
        j = self.t.jobs

        def holder_of(conn: sa.Connection, key: str) -> int | None:
            got = conn.execute(sa.select(j.c.id).where(self._holds_key(key), j.c.id != job_id).limit(1)).first()
            return None if got is None else int(got[0])

        def key_held(key: str, holder: int | None) -> JobStateError:
            by = f"job {holder}" if holder is not None else "another job"
            return JobStateError(
                f"job {job_id} cannot be retried: its unique_key {key!r} is held by {by}, which is queued or running"
            )

        class Raced(Exception):
            """A job with the key was enqueued between the check and the update."""

        def run(conn: sa.Connection) -> None:
            row = conn.execute(sa.select(j.c.state, j.c.unique_key, j.c.queue).where(j.c.id == job_id)).first()
            if row is None:
                raise JobNotFoundError(job_id)
            state, key, queue = row
            if state not in ("failed", "cancelled", "skipped"):
                raise JobStateError(f"job {job_id} is {state}; only failed, cancelled or skipped jobs can be retried")
            if key is not None:
                holder = holder_of(conn, key)
                if holder is not None:
                    raise key_held(key, holder)
            try:
                n = conn.execute(
                    sa.update(j).where(j.c.id == job_id, j.c.state == state).values(
                        state="queued", attempts=0, run_at=self._now(now), finished_at=None, locked_by=None, locked_until=None,
                        result=None, progress=None, progress_message=None, cancel_requested=False
                    )
                ).rowcount
                self._count(conn, {(queue, state): -n})
            except sa.exc.IntegrityError as exc:
                if key is None:
                    raise
                raise Raced(key) from exc  # rolls the transaction back

        try:
            self._tx(run)
        except Raced as exc:
            key = str(exc.args[0])
            raise key_held(key, self._tx(lambda c: holder_of(c, key))) from None
        return self.get_job(job_id)

    def cancel_job(self, job_id: int, now: datetime | None = None) -> Job:
        """A ``queued`` job becomes ``cancelled`` at once. A ``running`` job gets
        ``cancel_requested`` (its worker learns it at its next lease extension, see
        :meth:`extend_and_check`, and ends it ``cancelled`` if the task stops; asking twice is
        harmless); the job comes back still ``running``. :class:`JobStateError` for a finished
        job, :class:`JobNotFoundError` for an unknown id.

        Reads: the row. Writes: ``state``, ``finished_at``, ``counts`` and a notification on
        :attr:`done_channel` (queued), or ``cancel_requested`` (running). Locks: compare-and-set
        on ``state = 'queued'`` (a job claimed meanwhile is not cancelled but asked), then on
        ``state = 'running'``. Clock: ``now`` or the database clock (``finished_at``)."""
        if self._impossible_id(job_id):
            raise JobNotFoundError(job_id)
        j = self.t.jobs

        def run(conn: sa.Connection) -> None:
            for _ in range(3):  # a job may move between queued and running meanwhile
                n = conn.execute(
                    sa.update(j).where(j.c.id == job_id, state_is(j.c.state, "queued")).values(
                        state="cancelled", finished_at=self._now(now))
                ).rowcount
                if n:
                    self._count(conn, {(conn.execute(sa.select(j.c.queue).where(j.c.id == job_id)).scalar_one(), "cancelled"): 1})
                    self.dialect.notify(conn, self.done_channel)
                    return
                if conn.execute(sa.update(j).where(j.c.id == job_id, state_is(j.c.state, "running")).values(
                        cancel_requested=True)).rowcount:
                    return
                row = conn.execute(sa.select(j.c.state).where(j.c.id == job_id)).first()
                if row is None:
                    raise JobNotFoundError(job_id)
                if row[0] not in ACTIVE_STATES:
                    raise JobStateError(f"job {job_id} is {row[0]}; only queued or running jobs can be cancelled")
            raise JobStateError(f"job {job_id} kept changing state while it was being cancelled; try again")

        self._tx(run)
        return self.get_job(job_id)

    def prune(
        self, older_than: float, now: datetime | None = None, limit: int = 10000, *,
        states: Sequence[str] = PRUNE_STATES,
    ) -> int:
        """Delete finished jobs in ``states`` (default :data:`PRUNE_STATES`: succeeded and
        cancelled, the automatic prune's; any of succeeded, failed, cancelled and skipped,
        else ``ValueError``) that finished more than ``older_than`` seconds ago, up to
        ``limit`` of each state per call; returns how many. Queued and running rows are never
        deleted. (All of them, a batch at a time: :meth:`prune_after`.)

        Reads: the ``limit`` oldest rows of each state (by id, through ``jobs_done_ix``), so a
        call costs O(limit) whatever the history holds; rows finish in about id order, and
        one that finished late is left for a later call. Writes: deletes those among them
        that finished before the cutoff; ``counts``. Locks: the deleted rows (row locks of
        the DELETE). Clock: ``now`` or the database clock (the cutoff)."""
        picks = [(state, self._prune_pick(state, older_than, now, limit)) for state in _prunable(states)]

        def run(conn: sa.Connection) -> int:
            groups: dict[tuple[str, str], list[int]] = {}
            for state, pick in picks:
                for job_id, queue, old in conn.execute(pick):
                    if old:
                        groups.setdefault((queue, state), []).append(job_id)
            return self._delete_finished(conn, groups)

        return self._tx(run)

    def prune_after(
        self, after_id: int, older_than: float, now: datetime | None = None, limit: int = 1000, *, state: str,
        dry_run: bool = False,
    ) -> tuple[int, int | None]:
        """One batch of a complete prune (``linger-sched prune``): of the ``limit`` jobs in
        finished ``state`` (as :meth:`prune`) with an id above ``after_id``, delete those that
        finished more than ``older_than`` seconds before ``now`` (``dry_run``: count them).
        Returns ``(how many, the last id read)``, None for the id when no row was left: the
        next batch starts after that id, so a run from ``after_id=0`` until None reads each
        finished row of ``state`` once and misses none. Queued and running rows are never
        deleted.

        Reads: ``limit`` entries of ``jobs_done_ix`` from ``(state, after_id)`` and their
        rows. Writes: deletes the old ones; ``counts``. Locks: the deleted rows, in one
        short transaction per batch. Clock: ``now`` or the database clock (the cutoff)."""
        (state,) = _prunable([state])
        pick = self._prune_pick(state, older_than, now, limit, after_id)

        def run(conn: sa.Connection) -> tuple[int, int | None]:
            rows = list(conn.execute(pick))
            if not rows:
                return 0, None
            old = [(job_id, queue) for job_id, queue, is_old in rows if is_old]
            last = max(job_id for job_id, _, _ in rows)
            if dry_run:
                return len(old), last
            groups: dict[tuple[str, str], list[int]] = {}
            for job_id, queue in old:
                groups.setdefault((queue, state), []).append(job_id)
            return self._delete_finished(conn, groups), last

        return self._tx(run)

    def _prune_pick(
        self, state: str, older_than: float, now: datetime | None, limit: int, after_id: int | None = None,
    ) -> sa.Select[Any]:
        """``(id, queue, finished before the cutoff)`` of the ``limit`` first jobs in finished
        ``state`` by id (after ``after_id``): a range of ``jobs_done_ix``."""
        j = self.t.jobs
        oldest = sa.select(j.c.id, j.c.finished_at, j.c.queue).where(self._finished(state))
        if after_id is not None:
            oldest = oldest.where(j.c.id > after_id)
        sq = oldest.order_by(j.c.id).limit(max(1, int(limit))).subquery()
        old = sa.case((sq.c.finished_at < self._now(now, -older_than), 1), else_=0)
        return sa.select(sq.c.id, sq.c.queue, old)

    def _delete_finished(self, conn: sa.Connection, groups: Mapping[tuple[str, str], list[int]]) -> int:
        """Delete jobs ``{(queue, state): ids}`` still in that state, counting them out of
        ``counts``; returns how many went."""
        j = self.t.jobs
        counted: Counter[tuple[str, str]] = Counter()
        for (queue, state), ids in groups.items():  # by queue and state: each rowcount is a count
            for i in range(0, len(ids), 1000):
                counted[queue, state] -= conn.execute(
                    sa.delete(j).where(j.c.id.in_(ids[i:i + 1000]), j.c.state == state)).rowcount
        self._count(conn, counted)
        return -sum(counted.values())

    # -- schedules ----------------------------------------------------------------------
    def _next_run_at_is(self, conn: sa.Connection, name: str, expected: datetime | None) -> bool | None:
        """Compare-and-set support: whether schedule ``name``'s next_run_at equals ``expected``
        (None: there is no such schedule), read under a row lock. Compared in Python, as in
        :meth:`materialize`: SQLite keeps times as text whose form varies."""
        s = self.t.schedules
        row = conn.execute(sa.select(s.c.next_run_at).where(s.c.name == name).with_for_update()).first()
        return None if row is None else row[0] == expected

    def load_schedules(self, names: Iterable[str] | None = None) -> list[ScheduleRow]:
        """The schedules (only ``names`` when given), by name.

        Reads: the schedule rows. Writes: nothing. Locks: nothing. Clock: none."""
        s = self.t.schedules
        stmt = sa.select(s).order_by(s.c.name)
        if names is not None:
            stmt = stmt.where(s.c.name.in_(list(names)))
        return ScheduleRow.from_rows(self._tx(lambda c: list(c.execute(stmt))))

    def list_schedules(self, after: str | None = None, limit: int = 50) -> list[ScheduleRow]:
        """Up to ``limit`` schedules in name order, from the first name after ``after``
        (keyset pagination: the next page is ``after=`` the last name shown).

        Reads: the primary key (name) from ``after`` on, and those rows. Writes: nothing.
        Locks: nothing. Clock: none."""
        s = self.t.schedules
        stmt = sa.select(s).order_by(s.c.name).limit(max(1, int(limit)))
        if after is not None:
            stmt = stmt.where(s.c.name > after)
        return ScheduleRow.from_rows(self._tx(lambda c: list(c.execute(stmt))))

    def schedule_counts(self) -> dict[str, int]:
        """How many schedules there are (``total``) and how many are ``disabled``, ``paused``
        (and enabled), ``error`` (enabled, unpaused, in error) and ``active`` (the rest).

        Reads: every schedule row's ``enabled``, ``paused`` and ``error``, grouped (one row
        per schedule: a scan of the schedule table). Writes: nothing. Locks: nothing.
        Clock: none."""
        s = self.t.schedules
        failing = sa.case((s.c.error.is_(None), 0), else_=1).label("failing")
        stmt = sa.select(s.c.enabled, s.c.paused, failing, sa.func.count()).group_by(s.c.enabled, s.c.paused, failing)
        out = dict.fromkeys(("total", "active", "paused", "disabled", "error"), 0)
        for enabled, paused, error, n in self._tx(lambda c: list(c.execute(stmt))):
            kind = "disabled" if not enabled else "paused" if paused else "error" if error else "active"
            out[kind] += int(n)
            out["total"] += int(n)
        return out

    def schedule_errors(self) -> list[ScheduleRow]:
        """The schedules in error (see :meth:`mark_schedule_error`), by name.

        Reads: the schedule rows with an ``error``. Writes: nothing. Locks: nothing.
        Clock: none."""
        s = self.t.schedules
        stmt = sa.select(s).where(s.c.error.is_not(None)).order_by(s.c.name)
        return ScheduleRow.from_rows(self._tx(lambda c: list(c.execute(stmt))))

    def overdue_schedules(
        self, older_than: float, now: datetime | None = None, limit: int = 20,
    ) -> tuple[int, list[ScheduleRow], datetime]:
        """``(how many, the first limit, now)`` of the enabled, unpaused schedules whose
        ``next_run_at`` is more than ``older_than`` seconds before ``now``, oldest first: the
        occurrences a live leader should have written by then (health, the nodes' watch of
        the scheduler). A schedule in error is not among them (its ``next_run_at`` is its
        retry instant): see :meth:`schedule_errors`.

        Reads: the range of ``schedules_due_ix`` before ``now - older_than``, twice (count,
        then the first ``limit`` rows): its cost grows with the overdue schedules only.
        Writes: nothing. Locks: nothing. Clock: ``now``, or the database clock read in the
        same transaction (returned)."""
        s = self.t.schedules

        def run(conn: sa.Connection) -> tuple[int, list[ScheduleRow], datetime]:
            at = now if now is not None else conn.execute(sa.select(self._now(None))).scalar_one()
            where = (s.c.enabled == sa.true(), s.c.paused == sa.false(), s.c.next_run_at < self._now(at, -older_than))
            n = int(conn.execute(sa.select(sa.func.count()).select_from(s).where(*where)).scalar_one())
            rows = ScheduleRow.from_rows(conn.execute(
                sa.select(s).where(*where).order_by(s.c.next_run_at).limit(max(1, int(limit))))) if n else []
            return n, rows, at

        return self._tx(run)

    def get_schedule(self, name: str) -> ScheduleRow:
        """The schedule ``name``; :class:`ScheduleNotFoundError` when there is none.

        Reads: its row. Writes: nothing. Locks: nothing. Clock: none."""
        rows = self.load_schedules([name])
        if not rows:
            raise ScheduleNotFoundError(name)
        return rows[0]

    def insert_schedule(self, row: Mapping[str, Any], now: datetime | None = None) -> None:
        """Insert a new schedule (``row``: its columns, ``name`` included; a runtime one has
        ``source = 'runtime'``). :class:`ScheduleStateError` when a schedule of that name exists,
        whatever its source; nothing is written then.

        Reads: the name's row, locked (FOR UPDATE). Writes: one schedule row (``updated_at``).
        Locks: the row lock, and the primary key (an insert that loses a race fails as the
        name existing). Clock: ``now`` or the database clock (``updated_at``)."""
        s = self.t.schedules
        name = row["name"]

        def run(conn: sa.Connection) -> None:
            got = conn.execute(sa.select(s.c.source).where(s.c.name == name).with_for_update()).first()
            if got is not None:
                raise self._exists(name, got[0])
            conn.execute(sa.insert(s).values(**row, updated_at=self._now(now)))

        try:
            self._tx(run)
        except StoreError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):  # inserted meanwhile by another process
                raise self._exists(name, None) from None
            raise

    @staticmethod
    def _exists(name: str, source: str | None) -> ScheduleStateError:
        how = {"runtime": " (created at runtime)", "declared": " (declared in code or schedules.yaml)"}.get(source or "", "")
        return ScheduleStateError(f"schedule {name!r} exists already{how}: change it with update_schedule(), "
                                  "or remove it first")

    def update_runtime_schedule(
        self, name: str, values: Mapping[str, Any], *, expected: datetime | None, plan: Plan | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Change runtime schedule ``name``'s columns to ``values`` if its ``next_run_at``
        still equals ``expected`` (compare-and-set), with ``plan``'s occurrences (the due fire
        times of its previous definition) in the same transaction. Returns False when the
        compare-and-set failed (nothing written: read it again and retry).
        :class:`ScheduleNotFoundError` when there is none; :class:`ScheduleStateError` for a
        declared schedule (code and schedules.yaml own those).

        Reads: the row (``next_run_at``, ``source``), locked. Writes: ``values``,
        ``updated_at``; the plan's occurrence jobs. Locks: a row lock (FOR UPDATE) and
        compare-and-set on ``next_run_at``; the occurrence key (insert-if-absent).
        Clock: ``now`` or the database clock (``updated_at``, ``created_at``)."""
        s = self.t.schedules

        def run(conn: sa.Connection) -> bool:
            got = conn.execute(sa.select(s.c.next_run_at, s.c.source).where(s.c.name == name).with_for_update()).first()
            if got is None:
                raise ScheduleNotFoundError(name)
            if got[1] != "runtime":
                raise self._declared(name, "changed")
            if got[0] != expected:
                return False
            conn.execute(sa.update(s).where(s.c.name == name).values(**values, updated_at=self._now(now)))
            if plan is not None and plan.occurrences:
                self._insert_occurrences(conn, occurrence_rows([plan], now), now)
            return True

        return self._tx(run)

    @staticmethod
    def _declared(name: str, what: str) -> ScheduleStateError:
        return ScheduleStateError(f"schedule {name!r} is declared in code or schedules.yaml and cannot be {what} at "
                                  "runtime: change it there (each node's start-up sync writes it again)")

    def delete_runtime_schedule(self, name: str) -> None:
        """Delete runtime schedule ``name``: it fires no more. Its jobs stay (history, and any
        occurrence already queued). :class:`ScheduleNotFoundError` when there is none;
        :class:`ScheduleStateError` for a declared schedule.

        Reads: the row's ``source``, locked. Writes: deletes the schedule row. Locks: a row
        lock (FOR UPDATE; a tick's compare-and-set on it then finds nothing). Clock: none."""
        s = self.t.schedules

        def run(conn: sa.Connection) -> None:
            got = conn.execute(sa.select(s.c.source).where(s.c.name == name).with_for_update()).first()
            if got is None:
                raise ScheduleNotFoundError(name)
            if got[0] != "runtime":
                raise self._declared(name, "removed")
            conn.execute(sa.delete(s).where(s.c.name == name))

        self._tx(run)

    def save_schedules(
        self,
        inserts: Sequence[dict[str, Any]] = (),
        updates: Sequence[dict[str, Any]] = (),
        disable: Sequence[str] = (),
        now: datetime | None = None,
        *,
        plans: Sequence[Plan] = (),
        disabled_reason: str = "not declared",
    ) -> list[str]:
        """Registration sync in one transaction: insert new schedules (if absent), update
        changed ones by name (each dict has ``name`` and the columns to set), disable
        vanished ones (``enabled = false`` with ``disabled_reason``; their history stays).

        An update whose schedule has a plan in ``plans`` (the due occurrences of its old spec,
        recorded as the spec is replaced) applies only if ``next_run_at`` still equals
        ``plan.expected`` (compare-and-set, as in :meth:`materialize`), together with the
        plan's occurrences. Returns the names whose compare-and-set failed: nothing was
        written for them; read them again and retry.

        A schedule created at runtime (``source = 'runtime'``) is never disabled; an insert or
        update may set ``source``.

        Reads: the rows updated with a plan, and those disabled. Writes: schedule rows
        (``updated_at`` on each), the plans' occurrence jobs. Locks: insert-if-absent on
        the schedule name; row locks (FOR UPDATE) and compare-and-set on ``next_run_at`` for
        updates with a plan; row locks on the schedules disabled; the occurrence key
        (insert-if-absent). Clock: ``now`` or the database clock (``updated_at``, the
        occurrences' ``created_at``)."""
        s = self.t.schedules
        by_name = {p.name: p for p in plans}

        def run(conn: sa.Connection) -> list[str]:
            conflicts: list[str] = []
            for row in inserts:
                conn.execute(self.dialect.insert_ignore(s).values(**row, updated_at=self._now(now)))
            for row in updates:
                values = {k: v for k, v in row.items() if k != "name"}
                p = by_name.get(row["name"])
                if p is not None and not self._next_run_at_is(conn, p.name, p.expected):
                    conflicts.append(p.name)
                    continue
                conn.execute(sa.update(s).where(s.c.name == row["name"]).values(**values, updated_at=self._now(now)))
                if p is not None:
                    self._insert_occurrences(conn, occurrence_rows([p], now), now)
            if disable:
                self._disable(conn, disable, disabled_reason, now)
            return conflicts

        return self._tx(run)

    def _disable(self, conn: sa.Connection, names: Sequence[str], reason: str, now: datetime | None) -> list[str]:
        # a runtime schedule (app.add_schedule) is never disabled for not being declared
        s = self.t.schedules
        declared = s.c.source != "runtime"
        enabled = [r[0] for r in conn.execute(
            sa.select(s.c.name).where(s.c.name.in_(list(names)), s.c.enabled == sa.true(), declared).with_for_update()
        )]
        if enabled:
            conn.execute(
                sa.update(s).where(s.c.name.in_(enabled), s.c.enabled == sa.true(), declared).values(
                    enabled=False, disabled_reason=reason, updated_at=self._now(now)
                )
            )
        return enabled

    def disable_schedules(self, names: Sequence[str], reason: str = "not declared", now: datetime | None = None) -> list[str]:
        """Disable the enabled declared schedules among ``names`` (history kept; a runtime
        schedule is left alone); returns those it disabled.

        Reads: those of ``names`` that are enabled. Writes: their ``enabled``,
        ``disabled_reason``, ``updated_at``. Locks: row locks (FOR UPDATE) on them.
        Clock: ``now`` or the database clock (``updated_at``)."""
        if not names:
            return []
        return self._tx(lambda c: self._disable(c, names, reason, now))

    def mark_schedule_error(
        self, name: str, error: str, *, expected: datetime, retry_at: datetime, now: datetime | None = None
    ) -> bool:
        """The tick could not plan or write schedule ``name``: store ``error``, keep its first
        unaccounted fire time in ``retry_from`` (set by the first failure only), and move
        ``next_run_at`` to ``retry_at`` so that the tick leaves it alone until then instead of
        failing on it every tick; ``error_since`` keeps the first failure's time.
        Compare-and-set on ``next_run_at == expected``; returns whether it applied. A plan
        that commits (:meth:`materialize`) or a sync of a changed definition clears the error.

        Reads: the schedule's ``next_run_at``. Writes: ``error``, ``error_since``,
        ``retry_from``, ``next_run_at``, ``updated_at``. Locks: a row lock (FOR UPDATE) and
        compare-and-set on ``next_run_at``. Clock: ``now`` or the database clock
        (``error_since``, ``updated_at``); ``retry_at`` as given."""
        s = self.t.schedules
        stmt = (
            sa.update(s)
            .where(s.c.name == name)
            # MySQL applies SET clauses left to right on the new values: retry_from first
            .ordered_values(
                (s.c.retry_from, sa.func.coalesce(s.c.retry_from, s.c.next_run_at, type_=UTCDateTime())),
                (s.c.error_since, sa.func.coalesce(s.c.error_since, self._now(now), type_=UTCDateTime())),
                (s.c.error, clean_error(error)),
                (s.c.next_run_at, sa.bindparam(None, retry_at, UTCDateTime())),
                (s.c.updated_at, self._now(now)),
            )
        )

        def run(conn: sa.Connection) -> bool:
            return bool(self._next_run_at_is(conn, name, expected)) and bool(conn.execute(stmt).rowcount)

        return self._tx(run)

    def due_schedules(self, now: datetime | None = None, limit: int = 1000) -> list[ScheduleRow]:
        """Enabled, unpaused schedules with ``next_run_at <= now``, oldest first, each with
        ``active``: whether a job of it is queued or running (for ``overlap: skip``).

        Reads: ``schedules_due_ix``; for ``active``, a correlated EXISTS on
        ``jobs_active_schedule_ix`` in the same query (a column labelled ``active``).
        Writes: nothing. Locks: nothing. Clock: ``now`` or the database clock."""
        s, j = self.t.schedules, self.t.jobs
        if "active_schedule" in j.c:  # without partial indexes: the generated column (see tables._job_indexes)
            active = sa.exists().where(j.c.active_schedule == s.c.name)
        else:
            active = sa.exists().where(j.c.schedule_name == s.c.name, state_is(j.c.state, *ACTIVE_STATES))
        stmt = (
            sa.select(s, active.label("active"))
            .where(s.c.enabled == sa.true(), s.c.paused == sa.false(), s.c.next_run_at <= self._now(now))
            .order_by(s.c.next_run_at)
            .limit(limit)
        )
        return ScheduleRow.from_rows(self._tx(lambda c: list(c.execute(stmt))))

    def next_schedule_at(self) -> datetime | None:
        """The earliest ``next_run_at`` of an enabled, unpaused schedule.

        Reads: as :meth:`schedule_horizon`. Writes: nothing. Locks: nothing.
        Clock: none (the database clock is read along, and dropped)."""
        return self.schedule_horizon()[0]

    def schedule_horizon(self, now: datetime | None = None) -> tuple[datetime | None, datetime]:
        """``(earliest next_run_at of an enabled, unpaused schedule, now)`` in one round trip:
        an idle scheduler tick costs this one query.

        Reads: the first entry of ``schedules_due_ix``. Writes: nothing. Locks: nothing.
        Clock: returns ``now``, or the database clock read in the same query."""
        s = self.t.schedules
        first = sa.select(s.c.next_run_at).where(
            s.c.enabled == sa.true(), s.c.paused == sa.false(), s.c.next_run_at.is_not(None)
        ).order_by(s.c.next_run_at).limit(1).scalar_subquery()
        if now is not None:
            return self._tx(lambda c: c.execute(sa.select(first)).scalar()), now
        row = self._tx(lambda c: c.execute(sa.select(first, self._now(None))).one())
        return row[0], row[1]

    def materialize(
        self, plans: Sequence[Plan], *, lease: str, holder: str, epoch: int, now: datetime | None = None
    ) -> list[str]:
        """Commit due occurrences, fenced by the leader lease, in one transaction.

        Nothing is written unless ``holder`` still holds ``lease`` at ``epoch`` and it has not
        expired. Each plan is applied only if the schedule's ``next_run_at`` still equals
        ``plan.expected`` (compare-and-set), so a deposed or concurrent leader cannot create
        an occurrence twice; the unique (schedule_name, scheduled_for) key is the last line of
        defence. Returns the names of the schedules whose plans were applied.

        Reads: the lease row; the plans' schedules' ``next_run_at``. Writes: the schedules'
        ``next_run_at``, ``last_run_at`` (and clears an error state), one job row per
        occurrence; then a notification to listeners (on commit). Locks: lease fencing (the
        lease row read FOR SHARE), row locks (FOR UPDATE) and compare-and-set on the
        schedules, the occurrence key (insert-if-absent). Clock: ``now`` or the database
        clock (lease expiry, the occurrences' ``created_at``)."""
        if not plans:
            return []
        s, ls = self.t.schedules, self.t.leases

        def run(conn: sa.Connection) -> list[str]:
            fence = (
                sa.select(ls.c.name)
                .where(ls.c.name == lease, ls.c.holder == holder, ls.c.epoch == epoch, ls.c.expires_at > self._now(now))
                .with_for_update(read=True)
            )
            if conn.execute(fence).first() is None:
                return []
            # compare-and-set for the whole batch: read the current next_run_at under a row
            # lock (SQLite: the transaction already holds the write lock), keep the plans that
            # still start from it, and advance them with one executemany
            names = [p.name for p in plans]
            current = {
                name: value
                for name, value in conn.execute(
                    sa.select(s.c.name, s.c.next_run_at).where(s.c.name.in_(names)).with_for_update()
                )
            }
            fresh = [p for p in plans if p.expected is not None and current.get(p.name) == p.expected]
            if not fresh:
                return []
            self.dialect.executemany(conn, self._advance_stmt, [
                {"b_name": p.name, "b_next": p.next_run_at,
                 "b_last": max((o.scheduled_for for o in p.occurrences), default=None)}
                for p in fresh
            ])
            applied = [p.name for p in fresh]
            rows = occurrence_rows(fresh, now)
            if rows:
                self._insert_occurrences(conn, rows, now)
                self.dialect.notify(conn, self.channel)
            return applied

        return self._tx(run)

    @property
    def _advance_stmt(self) -> sa.Update:
        """UPDATE of one schedule after its plan (``b_name``): ``next_run_at`` and
        ``last_run_at`` set, an error state cleared; one executemany for a batch of plans."""
        s = self.t.schedules
        return (
            sa.update(s)
            .where(s.c.name == sa.bindparam("b_name"))
            .values(
                next_run_at=sa.bindparam("b_next", type_=UTCDateTime()),
                last_run_at=sa.func.coalesce(sa.bindparam("b_last", type_=UTCDateTime()), s.c.last_run_at),
                # a plan that commits ends an error state (literal NULLs: no per-row parameters)
                error=sa.null(), error_since=sa.null(), retry_from=sa.null(),
            )
        )

    def _insert_occurrences(self, conn: sa.Connection, rows: list[dict[str, Any]], now: datetime | None) -> None:
        j = self.t.jobs
        if now is None:
            db_now = conn.execute(sa.select(self.dialect.now())).scalar_one()
            for r in rows:
                r["created_at"] = db_now
                if r["finished_at"] is None and r["state"] == "skipped":
                    r["finished_at"] = db_now
        for r in rows:
            if r["state"] == "skipped":
                r["finished_at"] = r["created_at"]
        # skipped records are finished rows, counted: those whose occurrence is new (the lease
        # fence and the compare-and-set keep others from writing them meanwhile; the unique
        # key stays the last line of defence)
        counted: Counter[tuple[str, str]] = Counter()
        skipped = [r for r in rows if r["state"] == "skipped"]
        if skipped:
            there = {(name, self._as_time(at)) for name, at in conn.execute(
                sa.select(j.c.schedule_name, j.c.scheduled_for)
                .where(j.c.schedule_name.in_({r["schedule_name"] for r in skipped}),
                       j.c.scheduled_for.in_([r["scheduled_for"] for r in skipped])))}
            for r in skipped:
                counted[r["queue"], "skipped"] += (r["schedule_name"], r["scheduled_for"]) not in there
        self.dialect.executemany(conn, self.dialect.insert_ignore(j), rows)
        self._count(conn, counted)

    def resume_schedule(
        self, name: str, *, expected: datetime | None, next_run_at: datetime | None, plan: Plan | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Unpause ``name`` if it is paused and its ``next_run_at`` still equals ``expected``:
        set ``next_run_at`` (when given), clear an error state, and insert ``plan``'s
        occurrences (the fire times missed while paused) in the same transaction. Returns
        False when it is not paused or the compare-and-set failed (nothing written);
        :class:`ScheduleNotFoundError` when there is no such schedule.

        Reads: the schedule's ``next_run_at``. Writes: ``paused``, ``next_run_at``, the error
        columns, ``updated_at``; the plan's occurrence jobs. Locks: a row lock (FOR UPDATE)
        and compare-and-set on ``next_run_at`` (and on ``paused``); the occurrence key
        (insert-if-absent). Clock: ``now`` or the database clock (``updated_at``,
        ``created_at``)."""
        s = self.t.schedules
        values: dict[str, Any] = {
            "paused": False, "error": None, "error_since": None, "retry_from": None, "updated_at": self._now(now),
        }
        if next_run_at is not None:
            values["next_run_at"] = next_run_at

        def run(conn: sa.Connection) -> bool:
            same = self._next_run_at_is(conn, name, expected)
            if same is None:
                raise ScheduleNotFoundError(name)
            if not same or not conn.execute(
                sa.update(s).where(s.c.name == name, s.c.paused == sa.true()).values(values)
            ).rowcount:
                return False
            if plan is not None and plan.occurrences:
                self._insert_occurrences(conn, occurrence_rows([plan], now), now)
            return True

        return self._tx(run)

    def set_paused(self, name: str, paused: bool, next_run_at: datetime | None = None, now: datetime | None = None) -> None:
        """Pause or unpause schedule ``name`` (and set its ``next_run_at`` when given);
        :class:`ScheduleNotFoundError` when there is no such schedule.

        Reads: nothing before writing. Writes: ``paused``, ``next_run_at``, ``updated_at``.
        Locks: the row it updates (no compare-and-set: last writer wins). Clock: ``now`` or
        the database clock (``updated_at``)."""
        s = self.t.schedules
        values: dict[str, Any] = {"paused": paused, "updated_at": self._now(now)}
        if next_run_at is not None:
            values["next_run_at"] = next_run_at

        def run(conn: sa.Connection) -> None:
            if conn.execute(sa.update(s).where(s.c.name == name).values(values)).rowcount == 0:
                raise ScheduleNotFoundError(name)

        self._tx(run)

    def last_outcomes(self, names: Sequence[str]) -> dict[str, tuple[datetime | None, str]]:
        """For each schedule of ``names``, (scheduled_for, state) of its newest occurrence row
        (the one with the highest id).

        Reads: one seek per schedule into ``jobs_schedule_ix``, then those rows.
        Writes: nothing. Locks: nothing. Clock: none."""
        if not names:
            return {}
        s, j = self.t.schedules, self.t.jobs
        # ORDER BY id DESC LIMIT 1, not max(id): MariaDB reads one index entry for it in a
        # correlated subquery, and every entry of the schedule for max()
        newest = (
            sa.select(j.c.id).where(j.c.schedule_name == s.c.name).order_by(j.c.id.desc()).limit(1)
            .correlate(s).scalar_subquery()
        )
        ids = sa.select(newest.label("id")).where(s.c.name.in_(list(names))).subquery("newest")
        stmt = sa.select(j.c.schedule_name, j.c.scheduled_for, j.c.state).join(ids, j.c.id == ids.c.id)
        return {r[0]: (r[1], r[2]) for r in self._tx(lambda c: list(c.execute(stmt)))}

    # -- leader lease -------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float, now: datetime | None = None) -> Lease | None:
        """Acquire or renew lease ``name`` for ``holder`` until ``now + ttl``.

        Succeeds when the row is absent, already ``holder``'s, or expired; the epoch grows by
        one on every change of holder. Returns the lease when ``holder`` holds it, else None.

        Reads: the lease row. Writes: its ``holder``, ``epoch``, ``acquired_at``,
        ``expires_at``, or a new row. Locks: compare-and-set (the UPDATE applies only while
        the lease is ``holder``'s or expired), insert-if-absent on the name.
        Clock: ``now`` or the database clock (expiry)."""
        ls = self.t.leases

        def run(conn: sa.Connection) -> Lease | None:
            # MySQL applies SET clauses left to right on the *new* values: epoch and
            # acquired_at must be computed before holder changes.
            n = conn.execute(
                sa.update(ls)
                .where(ls.c.name == name, sa.or_(ls.c.holder == holder, ls.c.expires_at <= self._now(now)))
                .ordered_values(
                    (ls.c.epoch, sa.case((ls.c.holder == holder, ls.c.epoch), else_=ls.c.epoch + 1)),
                    (ls.c.acquired_at, sa.case((ls.c.holder == holder, ls.c.acquired_at), else_=self._now(now))),
                    (ls.c.holder, holder),
                    (ls.c.expires_at, self._now(now, ttl)),
                )
            ).rowcount
            if n == 0:
                conn.execute(
                    self.dialect.insert_ignore(ls).values(
                        name=name, holder=holder, epoch=1, acquired_at=self._now(now), expires_at=self._now(now, ttl)
                    )
                )
            row = conn.execute(sa.select(ls).where(ls.c.name == name)).first()
            if row is None:
                return None
            got = Lease.from_row(row)
            return got if got.holder == holder else None

        return self._tx(run)

    def release_lease(self, name: str, holder: str, now: datetime | None = None) -> bool:
        """Expire ``holder``'s lease at once so a peer takes over on its next tick; returns
        whether ``holder`` held it. The lease is marked released: ``acquired_at`` and
        ``expires_at`` both become the release instant (:attr:`Lease.released`; a lease
        that lapses always expires after it was acquired).

        Reads: the clock (one instant for both columns). Writes: the lease's ``expires_at``
        and ``acquired_at``. Locks: fencing on ``holder`` (another holder's lease is left
        alone). Clock: ``now`` or the database clock."""
        ls = self.t.leases

        def run(conn: sa.Connection) -> bool:
            at = now if now is not None else conn.execute(sa.select(self._now(None))).scalar_one()
            stmt = sa.update(ls).where(ls.c.name == name, ls.c.holder == holder).values(
                expires_at=self._now(at), acquired_at=self._now(at))
            return bool(conn.execute(stmt).rowcount)

        return self._tx(run)

    def get_lease(self, name: str) -> Lease | None:
        """Lease ``name`` as it is stored (held or expired), or None when there is none.

        Reads: the lease row. Writes: nothing. Locks: nothing. Clock: none."""
        ls = self.t.leases
        row = self._tx(lambda c: c.execute(sa.select(ls).where(ls.c.name == name)).first())
        return None if row is None else Lease.from_row(row)

    # -- nodes --------------------------------------------------------------------------
    def register_node(
        self, node: str, *, host: str, pid: int, roles: str, registry_hash: str | None, version: str,
        now: datetime | None = None, schedules: Sequence[str] | None = None,
    ) -> None:
        """Record a starting node. ``schedules``: the names of the schedules it declares (a
        node with a scheduler); a sync elsewhere never disables what a live node declares.

        Reads: nothing. Writes: the node's row (replaced). Locks: the row (delete, then
        insert). Clock: ``now`` or the database clock (``started_at``, ``heartbeat_at``)."""
        n = self.t.nodes
        declared = None if schedules is None else json.dumps(sorted(set(schedules)))

        def run(conn: sa.Connection) -> None:
            conn.execute(sa.delete(n).where(n.c.id == node))
            conn.execute(
                sa.insert(n).values(
                    id=node, host=host, pid=pid, roles=roles, registry_hash=registry_hash, version=version,
                    started_at=self._now(now), heartbeat_at=self._now(now), schedules=declared,
                )
            )

        self._tx(run)

    def heartbeat_node(self, node: str, now: datetime | None = None) -> None:
        """Record that ``node`` is alive.

        Reads: nothing. Writes: the node's ``heartbeat_at``. Locks: the row it updates.
        Clock: ``now`` or the database clock."""
        n = self.t.nodes
        self._tx(lambda c: c.execute(sa.update(n).where(n.c.id == node).values(heartbeat_at=self._now(now))))

    def remove_node(self, node: str) -> None:
        """Forget ``node`` (it stopped cleanly).

        Reads: nothing. Writes: deletes the node's row. Locks: the row. Clock: none."""
        n = self.t.nodes
        self._tx(lambda c: c.execute(sa.delete(n).where(n.c.id == node)))

    def list_nodes(self) -> list[NodeRow]:
        """Every recorded node, oldest start first.

        Reads: the node rows. Writes: nothing. Locks: nothing. Clock: none."""
        n = self.t.nodes
        stmt = sa.select(n).order_by(n.c.started_at)
        return NodeRow.from_rows(self._tx(lambda c: list(c.execute(stmt))))

    def live_declarations(self, within: float, now: datetime | None = None) -> dict[str, list[str]]:
        """``{node id: declared schedule names}`` of the nodes whose last heartbeat is at most
        ``within`` seconds old and that recorded what they declare.

        Reads: the node rows. Writes: nothing. Locks: nothing. Clock: ``now`` or the
        database clock."""
        n = self.t.nodes
        stmt = sa.select(n.c.id, n.c.schedules).where(
            n.c.heartbeat_at >= self._now(now, -within), n.c.schedules.is_not(None)
        )
        out: dict[str, list[str]] = {}
        for node, text in self._tx(lambda c: list(c.execute(stmt))):
            names = declared_names(text)
            if names is not None:
                out[node] = names
        return out

    def prune_nodes(self, older_than: float, now: datetime | None = None) -> int:
        """Forget nodes whose last heartbeat is older than ``older_than`` seconds; returns how
        many.

        Reads: the node rows. Writes: deletes the stale ones. Locks: the deleted rows.
        Clock: ``now`` or the database clock."""
        n = self.t.nodes
        stmt = sa.delete(n).where(n.c.heartbeat_at < self._now(now, -older_than))
        return self._tx(lambda c: c.execute(stmt).rowcount)
