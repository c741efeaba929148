"""The Store: every SQL statement linger-sched runs, behind one documented contract.

Conventions of every method:
* ``now: datetime | None``: ``None`` means the database's own clock (production); an aware
  datetime is used instead (tests with a fake clock). Lease expiry and due checks therefore
  never depend on a node's wall clock.
* Each public method is one short transaction; deadlocks and SQLite busy errors are retried,
  every other driver error is raised as :class:`~linger_sched.errors.StoreError` ``from`` it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from ..clock import sleep
from ..errors import JobArgumentsError, JobNotFoundError, JobStateError, SchemaError, StoreError
from .dialect import Dialect, create_engine, mask_url
from .tables import (
    ACTIVE_STATES,
    FINISHED_STATES,
    JOB_STATES,
    LEGACY_JOB_CONSTRAINTS,
    LEGACY_JOB_INDEXES,
    SCHEMA_VERSION,
    UTCDateTime,
    build_metadata,
    check_table_prefix,
    state_is,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """A row of the job table, as the API and the CLI show it."""

    id: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    state: str
    run_at: datetime
    attempts: int
    max_attempts: int
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    schedule_name: str | None
    scheduled_for: datetime | None
    occurrences: int
    reason: str | None
    unique_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run a claimed job."""

    id: int
    task: str
    args: str
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    schedule_name: str | None
    scheduled_for: datetime | None
    run_at: datetime
    claimed_at: datetime | None = None  # the database clock when it was claimed


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    expires_at: datetime


# one encoder for all jobs: json.dumps with options builds a new one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def encode_args(args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
    payload: dict[str, Any] = {}
    if args:
        payload["args"] = list(args)
    if kwargs:
        payload["kwargs"] = kwargs
    return _ENCODER.encode(payload)


def decode_args(text: str) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` of a stored ``args`` column; :class:`JobArgumentsError` when the
    stored text is not what :func:`encode_args` writes (a row written by hand, say)."""
    try:
        payload = json.loads(text) if text else {}
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        if isinstance(args, list) and isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs):
            return list(args), dict(kwargs)
    except (ValueError, TypeError, AttributeError, RecursionError):
        pass
    shown = text[:200] + "..." if isinstance(text, str) and len(text) > 200 else text
    raise JobArgumentsError(f"stored arguments are not a JSON object with 'args' (a list) and 'kwargs' (an object): {shown!r}")


def claim_order(job: Claimed) -> tuple[int, float, int]:
    """(priority, run_at, id): the claim order, tolerant of a malformed row (a text priority
    stored by hand on SQLite) so that such a row is failed by the worker, not compared."""
    pri = job.priority if isinstance(job.priority, int) and not isinstance(job.priority, bool) else 0
    at = job.run_at.timestamp() if isinstance(job.run_at, datetime) else 0.0
    return (pri, at, job.id)


# Stored text (last_error, reasons) is cut to this many bytes of UTF-8: a task may raise an
# exception of any size, and no database may refuse to store its outcome.
TEXT_CAP = 32 * 1024
_TRUNCATED = "\n[... {} bytes truncated ...]\n"


def clean_text(text: object, cap: int = TEXT_CAP) -> str:
    """``text`` as every supported database stores it: NUL characters removed, valid UTF-8
    (lone surrogates replaced by ``?``), at most ``cap`` bytes — the head and the tail of a
    longer text (a traceback's last line is its message) around a truncation marker."""
    s = text if isinstance(text, str) else str(text)
    if len(s) <= cap // 4 and s.isascii() and "\x00" not in s:
        return s  # the common case: nothing to do
    data = s.replace("\x00", "").encode("utf-8", "replace")
    if len(data) <= cap:
        return data.decode("utf-8")
    keep = max(0, (cap - 64) // 2)
    marker = _TRUNCATED.format(len(data) - 2 * keep)
    return data[:keep].decode("utf-8", "ignore") + marker + data[len(data) - keep:].decode("utf-8", "ignore")


class JobStore:
    """Plumbing, schema and the job table. :class:`Store` adds schedules, leases and nodes."""

    def __init__(self, url: str, *, table_prefix: str = "linger_", engine: sa.Engine | None = None) -> None:
        self.url = url
        # validated before anything connects: the prefix is part of every table, index and
        # NOTIFY channel name
        self.prefix = check_table_prefix(table_prefix)
        self.engine = engine if engine is not None else create_engine(url)
        self.dialect = Dialect(self.engine)
        self.metadata, self.t = build_metadata(table_prefix, partial_indexes=self.dialect.partial_indexes)
        self.channel = f"{table_prefix}jobs"  # NOTIFY channel (PostgreSQL), quoted by the dialect
        self._db_now: dict[float, sa.ColumnElement[Any]] = {}
        j = self.t.jobs
        self._claim_cols = (
            j.c.id, j.c.task, j.c.args, j.c.queue, j.c.priority, j.c.attempts,
            j.c.max_attempts, j.c.schedule_name, j.c.scheduled_for, j.c.run_at,
        )

    # -- plumbing -----------------------------------------------------------------------
    def _now(self, now: datetime | None, plus: float = 0.0) -> sa.ColumnElement[Any]:
        if now is None:
            # expression trees are immutable: build each "database now + plus" once
            expr = self._db_now.get(plus)
            if expr is None:
                expr = self._db_now[plus] = self.dialect.now(plus)
            return expr

        return sa.bindparam(None, now + timedelta(seconds=plus) if plus else now, UTCDateTime())

    @property
    def display_url(self) -> str:
        """The database URL as messages show it (password masked)."""
        return mask_url(self.engine.url.render_as_string(hide_password=True))

    def _tx(self, fn: Callable[[sa.Connection], T], *, retries: int = 8) -> T:
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
                detail = mask_url(str(exc.orig))
                if self.dialect.is_undefined_table(exc):
                    raise SchemaError(
                        f"linger-sched tables ({self.prefix}jobs, ...) are missing in {self.display_url} "
                        f"({detail}); run `linger-sched db init` (or app.install_schema())"
                    ) from exc
                if self.dialect.is_undefined_column(exc):
                    raise SchemaError(
                        f"the linger-sched tables in {self.display_url} are older than this version ({detail}); "
                        "run `linger-sched db upgrade`"
                    ) from exc
                raise StoreError(f"{self.dialect.name} error: {detail}") from exc
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(f"{self.dialect.name} error: {mask_url(str(exc))}") from exc
            except OverflowError as exc:  # sqlite3: a Python int beyond 64 bits
                raise StoreError(f"{self.dialect.name} error: value out of range: {exc}") from exc
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by a method of this store) may pass if the same call is
        retried later: a lost connection, a lock timeout, a deadlock. A value the database
        refuses (too long, invalid) is not: retrying the same write cannot succeed."""
        cause = exc.__cause__ if isinstance(exc, StoreError) else exc
        if cause is None or not isinstance(cause, sa.exc.DBAPIError):
            return False
        return self.dialect.is_retryable(cause) or self.dialect.is_disconnect(cause)

    def listen(self, on_notify: Callable[[], None], stop: threading.Event) -> bool:
        """Block, calling ``on_notify`` whenever jobs are enqueued by any process, until
        ``stop``; returns False at once on databases without notifications (poll instead)."""
        if not self.dialect.can_notify:
            return False
        self.dialect.listen(self.engine, self.channel, on_notify, stop)
        return True

    # -- schema -------------------------------------------------------------------------
    def install_schema(self) -> None:
        """Create every table and index that is missing and record the schema version.

        Idempotent, and safe when several nodes start at once."""

        def run(conn: sa.Connection) -> None:
            self.metadata.create_all(conn, checkfirst=True)
            conn.execute(
                self.dialect.insert_ignore(self.t.meta).values(key="schema_version", value=str(SCHEMA_VERSION))
            )

        try:
            self._tx(run)
        except StoreError:
            # two nodes creating the same table at once: the loser's CREATE fails; check again
            sleep(0.2)
            self._tx(run)

    def schema_version(self) -> int | None:
        """The installed schema version, or None when the tables are missing."""
        if self.dialect.database_missing(self.engine):
            return None  # do not create an empty SQLite file just to look
        try:
            if not sa.inspect(self.engine).has_table(self.t.meta.name):
                return None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self.dialect.name} error: {mask_url(str(getattr(exc, 'orig', exc)))}") from exc
        row = self._tx(lambda c: c.execute(sa.select(self.t.meta.c.value).where(self.t.meta.c.key == "schema_version")).first())
        return int(row[0]) if row else None

    def upgrade_schema(self) -> tuple[int | None, int]:
        """Move an older schema forward to :data:`SCHEMA_VERSION`; returns (from, to)."""
        before = self.schema_version()
        if before is not None and before > SCHEMA_VERSION:
            raise SchemaError(
                f"the database schema is version {before}, newer than this linger-sched ({SCHEMA_VERSION}); upgrade the package"
            )
        self.install_schema()  # tables that are missing, with their indexes
        self._tx(self._missing_columns)  # a column that cannot be added: SchemaError before any change
        # version 3: the job table's partial indexes, first: the job table is rebuilt (SQLite) or
        # changed by one ALTER TABLE with the columns it lacks (MySQL/MariaDB, atomic)
        self._tx(self._migrate_jobs)
        self._tx(self._add_missing_columns)  # columns added to tables that exist
        self._tx(self._add_missing_indexes)  # indexes added to tables that exist

        def bump(conn: sa.Connection) -> None:
            conn.execute(sa.update(self.t.meta).where(self.t.meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

        self._tx(bump)
        return before, SCHEMA_VERSION

    def _add_missing_columns(self, conn: sa.Connection) -> None:
        """Additive migrations: every column of the current tables that an older install
        lacks is added, and on MySQL/MariaDB a TEXT column that is LONGTEXT now is widened.
        A new column must be nullable or have a server default, since the table may hold
        rows: one that is neither raises :class:`SchemaError` before anything changes."""
        quote = conn.dialect.identifier_preparer.quote
        missing, widen = self._missing_columns(conn)
        for table, col in missing:
            ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {ddl}")
            log.info("schema upgrade: added column %s.%s", table.name, col.name)
        for table, col in widen:
            ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} MODIFY COLUMN {ddl}")
            log.info("schema upgrade: widened column %s.%s", table.name, col.name)

    def _missing_columns(
        self, conn: sa.Connection
    ) -> tuple[list[tuple[sa.Table, sa.Column[Any]]], list[tuple[sa.Table, sa.Column[Any]]]]:
        """(columns to add, TEXT columns to widen), or :class:`SchemaError` for a column that
        cannot be added to a table with rows."""
        insp = sa.inspect(conn)
        missing: list[tuple[sa.Table, sa.Column[Any]]] = []
        widen: list[tuple[sa.Table, sa.Column[Any]]] = []
        for table in self.metadata.sorted_tables:
            have = {c["name"]: c for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name not in have:
                    if not col.nullable and col.server_default is None and col.computed is None:
                        raise SchemaError(
                            f"cannot add column {table.name}.{col.name} to an existing table: it is NOT NULL "
                            "without a server default (a bug in this linger-sched version: give the column a "
                            "server_default or make it nullable)"
                        )
                    missing.append((table, col))
                elif self.dialect.is_mysql and self._narrower_text(have[col.name]["type"], col, conn.dialect):
                    widen.append((table, col))
        return missing, widen

    def _migrate_jobs(self, conn: sa.Connection) -> None:
        """Version 3: the job table's indexes of versions 0 to 2 (full indexes led by
        ``state``, unique constraints on (schedule_name, scheduled_for) and on the generated
        ``active_key``) give way to partial ones, and ``active_key`` goes where a partial
        unique index replaces it (see ``tables._job_indexes``). Every row is kept, and so is
        every unique guarantee: the new unique indexes are built, and checked, in the same
        transaction (one atomic ALTER TABLE on MySQL/MariaDB). Does nothing on a table that
        has none of the old names left (a fresh or an upgraded install)."""
        jobs, p = self.t.jobs, self.prefix
        insp = sa.inspect(conn)
        have = {i["name"] for i in insp.get_indexes(jobs.name)} | {u["name"] for u in insp.get_unique_constraints(jobs.name)}
        cols = {c["name"] for c in insp.get_columns(jobs.name)}
        old_ix = [p + n for n in LEGACY_JOB_INDEXES]
        old_uq = [p + n for n in LEGACY_JOB_CONSTRAINTS]
        drop_cols = [c for c in ("active_key",) if c in cols and c not in jobs.c]
        if not have & {*old_ix, *old_uq} and not drop_cols:
            return
        # MySQL/MariaDB keep full indexes: the old ones are the new ones under new names
        same = {"jobs_claim_ix": "jobs_queued_ix", "jobs_ready_ix": "jobs_next_ix", "jobs_lock_ix": "jobs_running_ix",
                "jobs_occurrence_uq": "jobs_occurrence_ux", "jobs_active_key_uq": "jobs_unique_key_ux"}
        rename = {} if self.dialect.partial_indexes else {p + old: p + new for old, new in same.items()}
        self.dialect.replace_job_table(conn, jobs, drop_indexes=old_ix, drop_constraints=old_uq,
                                       drop_columns=drop_cols, rename_indexes=rename)
        log.info("schema upgrade: %s moved to partial indexes", jobs.name)

    def _add_missing_indexes(self, conn: sa.Connection) -> None:
        """Every index of the current tables that an older install lacks is created."""
        insp = sa.inspect(conn)
        for table in self.metadata.sorted_tables:
            have_ix = {ix["name"] for ix in insp.get_indexes(table.name)}
            have_ix |= {uc["name"] for uc in insp.get_unique_constraints(table.name)}
            for ix in table.indexes:
                if ix.name not in have_ix:
                    ix.create(conn)
                    log.info("schema upgrade: added index %s", ix.name)

    @staticmethod
    def _narrower_text(have: Any, col: sa.Column[Any], dialect: sa.Dialect) -> bool:
        """MySQL/MariaDB: the installed column is TINYTEXT/TEXT/MEDIUMTEXT where the table
        definition says LONGTEXT."""
        from sqlalchemy.dialects import mysql

        want = col.type.dialect_impl(dialect)
        return isinstance(want, mysql.LONGTEXT) and isinstance(have, sa.Text) and not isinstance(have, mysql.LONGTEXT)

    def check_schema(self) -> None:
        version = self.schema_version()
        if version is None:
            raise SchemaError(
                f"linger-sched tables ({self.prefix}jobs, ...) are missing in {self.display_url}; "
                "run `linger-sched db init`"
            )
        if version != SCHEMA_VERSION:
            raise SchemaError(f"schema version {version}, expected {SCHEMA_VERSION}: run `linger-sched db upgrade`")

    def drop_schema(self) -> None:
        """Drop every linger-sched table of this prefix (tests and uninstall)."""
        self._tx(lambda c: self.metadata.drop_all(c, checkfirst=True))

    def db_now(self) -> datetime:
        """The database's current UTC time."""
        now: datetime = self._tx(lambda c: c.execute(sa.select(self.dialect.now())).scalar_one())
        return now

    # -- jobs: producers ----------------------------------------------------------------
    def enqueue(self, rows: list[dict[str, Any]], now: datetime | None = None) -> list[int]:
        """Insert jobs in one transaction; returns their ids in order.

        Each row has ``task, args (JSON text), queue, priority, max_attempts`` and optional
        ``run_at`` (aware) or ``delay`` (seconds from now), ``unique_key``. A row whose
        ``unique_key`` is held by a queued or running job inserts nothing and yields that
        job's id instead.
        """
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
            for extra in ("schedule_name", "scheduled_for", "reason"):
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

        return self._tx(run)

    def _insert_one(self, conn: sa.Connection, v: dict[str, Any], unique_key: str | None) -> int:
        j = self.t.jobs
        if not unique_key:
            if self.dialect.insert_returning:
                return int(conn.execute(sa.insert(j).values(v).returning(j.c.id)).scalar_one())
            pk = conn.execute(sa.insert(j).values(v)).inserted_primary_key
            assert pk is not None  # always set for a single-row INSERT
            return int(pk[0])
        for _ in range(5):
            stmt = self.dialect.insert_ignore(j).values(v)
            if self.dialect.insert_returning:
                got = conn.execute(stmt.returning(j.c.id)).first()
                if got is not None:
                    return int(got[0])
            else:
                res = conn.execute(stmt)
                if res.lastrowid:
                    return int(res.lastrowid)
            existing = conn.execute(sa.select(j.c.id).where(self._holds_key(unique_key))).first()
            if existing is not None:
                return int(existing[0])
        raise StoreError(f"could not enqueue job with unique_key {unique_key!r}")

    def _finished(self, *states: str) -> sa.ColumnElement[bool]:
        """The condition "the job is in one of the finished ``states``", in the form the
        history index (jobs_done_ix) serves: on ``state``, or on the generated
        ``finished_state`` column (MySQL/MariaDB)."""
        return state_is(self._finished_col, *states)

    @property
    def _finished_col(self) -> sa.ColumnElement[Any]:
        j = self.t.jobs
        return j.c.finished_state if "finished_state" in j.c else j.c.state

    def _holds_key(self, key: str) -> sa.ColumnElement[bool]:
        """The condition "a queued or running job with unique_key ``key``", as the unique index
        serves it: the partial one, or the generated ``active_key`` column (MySQL/MariaDB)."""
        j = self.t.jobs
        if "active_key" in j.c:
            return j.c.active_key == key
        return sa.and_(j.c.unique_key == key, state_is(j.c.state, *ACTIVE_STATES))

    # -- jobs: workers ------------------------------------------------------------------
    def claim(
        self, node: str, queues: Sequence[str] | None, limit: int, lease_ttl: float, now: datetime | None = None,
        *, ahead: float = 0.0,
    ) -> list[Claimed]:
        """Claim up to ``limit`` due jobs (``queued``, ``run_at <= now + ahead``, in ``queues`` or
        any queue when None) in order (priority, run_at, id); they become ``running``, locked by
        ``node`` until ``now + lease_ttl``, with ``attempts + 1`` and ``started_at = now``.
        Each comes back with ``claimed_at = now``: a job claimed ``ahead`` of its ``run_at``
        must not start before ``run_at - claimed_at`` has passed."""
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
            out = [Claimed(*r) for r in rows]
            out.sort(key=claim_order)
            return out

        return self._tx(run)

    def next_due(self, queues: Sequence[str] | None, now: datetime | None = None) -> tuple[datetime | None, datetime]:
        """(earliest run_at of a queued job in ``queues``, the store's now): how long to sleep.

        The claim indexes are in (priority, run_at) order, so the earliest run_at is the
        least of the first run_at of each priority: a loose index scan (a recursive query
        that seeks from one priority to the next) reads two index entries per distinct
        priority of the queued jobs, however many jobs are queued."""
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
        from datetime import timezone

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
        (only ``ids`` when given: a job the node has lost track of must be left to expire)."""
        stmt = self._held_by(node, ids)
        if stmt is None:
            return 0
        stmt = stmt.values(locked_until=self._now(now, lease_ttl))
        return self._tx(lambda c: c.execute(stmt).rowcount)

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
    ) -> tuple[list[int], list[int]]:
        """Record outcomes of jobs ``node`` still holds, in one transaction.

        ``succeeded``: ids that become ``succeeded``. ``failed``: ``(id, error, retry_in)``;
        with ``retry_in`` seconds the job goes back to ``queued`` at ``now + retry_in``,
        with None it becomes ``failed`` (terminal); ``error`` is stored through
        :func:`clean_text`. A job no longer locked by ``node`` (rescued after its lease
        expired), or, with ``attempts`` (id -> attempt), no longer at that attempt, is left
        alone. Returns the ids that were not recorded for that reason: (succeeded, failed).
        """
        j = self.t.jobs
        mine = (state_is(j.c.state, "running"), j.c.locked_by == node)

        def same_attempt(job_id: int) -> tuple[sa.ColumnElement[bool], ...]:
            if attempts is None or job_id not in attempts:
                return ()
            return (j.c.attempts == attempts[job_id],)

        def run(conn: sa.Connection) -> tuple[list[int], list[int]]:
            lost_ok: list[int] = []
            lost_failed: list[int] = []
            if succeeded:
                ids = list(succeeded)
                which: list[sa.ColumnElement[bool]] = [j.c.id.in_(ids)]  # the primary key finds the rows
                pinned = [(i, attempts[i]) for i in ids if attempts is not None and i in attempts]
                if pinned:
                    which.append(sa.or_(j.c.id.not_in([i for i, _ in pinned]),
                                        sa.tuple_(j.c.id, j.c.attempts).in_(pinned)))
                n = conn.execute(
                    sa.update(j)
                    .where(*which, *mine)
                    .values(state="succeeded", finished_at=self._now(now), locked_by=None, locked_until=None)
                ).rowcount
                if n != len(ids):
                    held = {r[0] for r in conn.execute(sa.select(j.c.id).where(j.c.id.in_(ids), j.c.state == "succeeded"))}
                    lost_ok = [i for i in ids if i not in held]
            for job_id, error, retry_in in failed:
                if retry_in is None:
                    v: dict[str, Any] = {"state": "failed", "finished_at": self._now(now)}
                else:
                    v = {"state": "queued", "run_at": self._now(now, retry_in)}
                v.update(locked_by=None, locked_until=None, last_error=clean_text(error))
                if conn.execute(sa.update(j).where(j.c.id == job_id, *mine, *same_attempt(job_id)).values(v)).rowcount != 1:
                    lost_failed.append(job_id)
            return lost_ok, lost_failed

        return self._tx(run)

    def hand_back(self, node: str, ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
        """Shutdown: put jobs ``node`` holds (all, or ``ids``) back to ``queued`` at once.

        The interrupted attempt is not counted (``attempts - 1``)."""
        j = self.t.jobs
        held = self._held_by(node, ids)
        if held is None:
            return 0
        stmt = held.values(
            state="queued",
            locked_by=None,
            locked_until=None,
            run_at=self._now(now),
            attempts=sa.case((j.c.attempts > 0, j.c.attempts - 1), else_=0),
            last_error=sa.literal(clean_text(f"handed back: node {node} shut down before the job finished")),
        )

        def run(conn: sa.Connection) -> int:
            n = conn.execute(stmt).rowcount
            if n:
                self.dialect.notify(conn, self.channel)
            return n

        return self._tx(run)

    def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[tuple[int, str | None, str]]:
        """Jobs ``running`` whose lease expired (their node died): back to ``queued`` at once,
        or ``failed`` when that was the last attempt. The lost attempt counts.

        Returns ``(id, dead node, new state)`` for each rescued job."""
        j = self.t.jobs
        expired = (state_is(j.c.state, "running"), j.c.locked_until < self._now(now))  # jobs_running_ix

        def run(conn: sa.Connection) -> list[tuple[int, str | None, str]]:
            pick = sa.select(j.c.id, j.c.locked_by, j.c.attempts, j.c.max_attempts).where(*expired).limit(limit)
            if not self.dialect.is_sqlite:
                pick = pick.with_for_update(skip_locked=True)
            rows = list(conn.execute(pick))
            out = []
            for job_id, holder, attempts, max_attempts in rows:
                last = attempts >= max_attempts
                state = "failed" if last else "queued"
                v: dict[str, Any] = {
                    "state": state,
                    "locked_by": None,
                    "locked_until": None,
                    "last_error": clean_text(f"lease expired: node {holder} stopped heartbeating during attempt {attempts}"),
                }
                if last:
                    v["finished_at"] = self._now(now)
                else:
                    v["run_at"] = self._now(now)
                if conn.execute(sa.update(j).where(j.c.id == job_id, *expired).values(v)).rowcount:
                    out.append((job_id, holder, state))
            if out:
                self.dialect.notify(conn, self.channel)
            return out

        return self._tx(run)

    # -- jobs: inspection and operator actions ------------------------------------------
    def _job(self, row: sa.Row[Any]) -> Job:
        m = row._mapping
        try:
            args, kwargs = decode_args(m["args"])
        except JobArgumentsError:  # a row written by hand: show what is stored, as it is
            args, kwargs = [m["args"]], {}
        return Job(
            id=m["id"], task=m["task"], args=args, kwargs=kwargs, queue=m["queue"], priority=m["priority"],
            state=m["state"], run_at=m["run_at"], attempts=m["attempts"], max_attempts=m["max_attempts"],
            locked_by=m["locked_by"], locked_until=m["locked_until"], last_error=m["last_error"],
            schedule_name=m["schedule_name"], scheduled_for=m["scheduled_for"], occurrences=m["occurrences"],
            reason=m["reason"], unique_key=m["unique_key"], created_at=m["created_at"],
            started_at=m["started_at"], finished_at=m["finished_at"],
        )

    def get_job(self, job_id: int) -> Job:
        if self._impossible_id(job_id):
            raise JobNotFoundError(job_id)
        j = self.t.jobs
        row = self._tx(lambda c: c.execute(sa.select(j).where(j.c.id == job_id)).first())
        if row is None:
            raise JobNotFoundError(job_id)
        return self._job(row)

    def list_jobs(
        self,
        state: str | None = None,
        limit: int = 50,
        *,
        task: str | None = None,
        schedule_name: str | None = None,
        queue: str | None = None,
        newest_first: bool = True,
    ) -> list[Job]:
        """Up to ``limit`` jobs (all with 0) matching every filter given, newest first (by id;
        oldest first with ``newest_first=False``). An unknown ``state`` matches nothing.

        Reads an index in id order for each shape: by state (``jobs_done_ix`` for a finished
        state; the running ones are few), by schedule (``jobs_schedule_ix``), by task or
        queue (``jobs_task_ix`` / ``jobs_queue_ix``; where those hold finished rows only, the
        finished rows through them and the queued and running ones apart, newest of both)."""
        j = self.t.jobs
        if state is not None and state not in JOB_STATES:
            return []
        filters: list[sa.ColumnElement[bool]] = []
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
        if limit and not state and not schedule_name and (task and self._finished_only("jobs_task_ix")
                                                          or queue and self._finished_only("jobs_queue_ix")):
            # the index holds finished rows only: read them through it, the queued and the
            # running ones apart (each in id order), and keep the first of the three
            arms = []
            for group in (FINISHED_STATES, ("queued",), ("running",)):
                sel, id_col = rows(*group)
                arms.append(ordered(sel.with_only_columns(id_col), id_col).subquery())
            union = sa.union_all(*[sa.select(a.c.id) for a in arms]).subquery("arms")
            first = ordered(sa.select(union.c.id), union.c.id).subquery("newest")
            # a join, not IN: MariaDB takes no LIMIT in an IN subquery
            stmt = sa.select(j).join(first, j.c.id == first.c.id).order_by(j.c.id.desc() if newest_first else j.c.id.asc())
        return [self._job(r) for r in self._tx(lambda c: list(c.execute(stmt)))]

    def _finished_only(self, index: str) -> bool:
        """Whether the job index ``index`` (its name after the prefix) holds finished rows only
        on this database (a partial index ``WHERE state = 'succeeded' OR ...``)."""
        for ix in self.t.jobs.indexes:
            if ix.name == self.prefix + index:
                return ix.dialect_kwargs.get(f"{self.dialect.name}_where") is not None
        return False

    def count_by_state(self) -> dict[str, int]:
        """``{state: number of jobs}`` for the states that have jobs: each count reads one
        index (``jobs_next_ix``, ``jobs_running_ix``, ``jobs_done_ix``), never the whole
        table (SQLite 3.40 also reads the rows of the queued and running jobs: it does not
        take a partial index as covering the ``state`` of its own WHERE)."""
        j = self.t.jobs
        stmt = sa.union_all(
            sa.select(sa.literal_column("'queued'", sa.String()), sa.func.count()).where(state_is(j.c.state, "queued")),
            sa.select(sa.literal_column("'running'", sa.String()), sa.func.count()).where(state_is(j.c.state, "running")),
            sa.select(self._finished_col, sa.func.count()).where(self._finished(*FINISHED_STATES)).group_by(self._finished_col),
        )
        return {s: n for s, n in self._tx(lambda c: list(c.execute(stmt))) if n}

    def count_by_queue_and_state(self) -> dict[tuple[str, str], int]:
        """``{(queue, state): number of jobs}`` for the pairs that have jobs: the queued ones
        through ``jobs_queued_ix`` (in queue order), the running ones through
        ``jobs_running_ix``, the finished ones through ``jobs_queue_ix`` (or ``jobs_done_ix``;
        MySQL/MariaDB: ``jobs_queued_ix``)."""
        j = self.t.jobs
        # OFFSET 0: a subquery of its own, so that SQLite reads jobs_running_ix, not the
        # whole table in queue order
        running = sa.select(j.c.queue).where(state_is(j.c.state, "running")).offset(0).subquery("running")
        stmt = sa.union_all(
            sa.select(j.c.queue, sa.literal_column("'queued'", sa.String()), sa.func.count())
            .where(state_is(j.c.state, "queued")).group_by(j.c.queue),
            sa.select(running.c.queue, sa.literal_column("'running'", sa.String()), sa.func.count()).group_by(running.c.queue),
            # on state, not finished_state: MySQL/MariaDB count these through jobs_queued_ix
            # (state, queue, ...), which holds every row there
            sa.select(j.c.queue, j.c.state, sa.func.count())
            .where(state_is(j.c.state, *FINISHED_STATES)).group_by(j.c.queue, j.c.state),
        )
        return {(q, s): n for q, s, n in self._tx(lambda c: list(c.execute(stmt)))}

    @staticmethod
    def _impossible_id(job_id: int) -> bool:
        """Ids are 64-bit: a larger number names no job (and no driver can bind it)."""
        return not -(2**63) <= job_id < 2**63

    def retry_job(self, job_id: int, now: datetime | None = None) -> Job:
        """A ``failed``, ``cancelled`` or ``skipped`` job goes back to ``queued``, due now,
        with a fresh set of attempts.

        Raises :class:`JobNotFoundError` for an unknown id, and :class:`JobStateError` for a
        job in another state or one whose ``unique_key`` another queued or running job holds
        now (the message names the key and that job); the row is then left unchanged."""
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
            row = conn.execute(sa.select(j.c.state, j.c.unique_key).where(j.c.id == job_id)).first()
            if row is None:
                raise JobNotFoundError(job_id)
            state, key = row
            if state not in ("failed", "cancelled", "skipped"):
                raise JobStateError(f"job {job_id} is {state}; only failed, cancelled or skipped jobs can be retried")
            if key is not None:
                holder = holder_of(conn, key)
                if holder is not None:
                    raise key_held(key, holder)
            try:
                conn.execute(
                    sa.update(j).where(j.c.id == job_id, j.c.state == state).values(
                        state="queued", attempts=0, run_at=self._now(now), finished_at=None, locked_by=None, locked_until=None
                    )
                )
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
        """A ``queued`` job becomes ``cancelled``. A running job cannot be cancelled."""
        if self._impossible_id(job_id):
            raise JobNotFoundError(job_id)
        j = self.t.jobs

        def run(conn: sa.Connection) -> None:
            n = conn.execute(
                sa.update(j).where(j.c.id == job_id, state_is(j.c.state, "queued")).values(
                    state="cancelled", finished_at=self._now(now))
            ).rowcount
            if n == 0:
                row = conn.execute(sa.select(j.c.state).where(j.c.id == job_id)).first()
                if row is None:
                    raise JobNotFoundError(job_id)
                raise JobStateError(f"job {job_id} is {row[0]}; only queued jobs can be cancelled")

        self._tx(run)
        return self.get_job(job_id)

    def prune(self, older_than: float, now: datetime | None = None, limit: int = 10000) -> int:
        """Delete finished jobs (succeeded, cancelled) that finished more than ``older_than``
        seconds ago, up to ``limit`` of each state per call. Failed and skipped rows are kept
        for inspection.

        Reads the ``limit`` oldest rows of each state (by id, through ``jobs_done_ix``) and
        deletes those among them that finished long enough ago, so a call costs O(limit)
        whatever the history holds; rows finish in about id order, and one that finished late
        is left for a later call."""
        j = self.t.jobs
        cutoff = self._now(now, -older_than)
        picks = []
        for state in ("succeeded", "cancelled"):
            oldest = sa.select(j.c.id, j.c.finished_at).where(self._finished(state)).order_by(j.c.id).limit(limit)
            sq = oldest.subquery()
            picks.append(sa.select(sq.c.id).where(sq.c.finished_at < cutoff))

        def run(conn: sa.Connection) -> int:
            ids = [r[0] for pick in picks for r in conn.execute(pick)]
            if not ids:
                return 0
            n = 0
            for i in range(0, len(ids), 1000):
                n += conn.execute(sa.delete(j).where(j.c.id.in_(ids[i:i + 1000]))).rowcount
            return n

        return self._tx(run)
