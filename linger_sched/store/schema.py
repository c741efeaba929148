"""Installing and upgrading the tables: the steps behind :meth:`Store.install_schema
<linger_sched.store.Store.install_schema>` and :meth:`Store.upgrade_schema
<linger_sched.store.Store.upgrade_schema>`.

Each function runs inside the caller's transaction (``conn``) and takes what it works on (the
table definitions, the :class:`~.dialect.Dialect`) as arguments; the Store decides which
transactions to run them in.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from ..errors import SchemaError
from .dialect import Dialect
from .tables import LEGACY_JOB_CONSTRAINTS, LEGACY_JOB_INDEXES, SCHEMA_VERSION

log = logging.getLogger(__name__)

_Columns = list[tuple[sa.Table, sa.Column[Any]]]


def install(conn: sa.Connection, metadata: sa.MetaData, meta: sa.Table, dialect: Dialect) -> None:
    """Create the tables and indexes of ``metadata`` that are missing, and record
    :data:`SCHEMA_VERSION` in ``meta`` unless a version is recorded already."""
    metadata.create_all(conn, checkfirst=True)
    conn.execute(dialect.insert_ignore(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))


def recorded_version(conn: sa.Connection, meta: sa.Table) -> int | None:
    """The schema version recorded in ``meta`` (None: none is)."""
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else None


def record_version(conn: sa.Connection, meta: sa.Table) -> None:
    """Record :data:`SCHEMA_VERSION` as the installed version."""
    conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def missing_columns(conn: sa.Connection, metadata: sa.MetaData, dialect: Dialect) -> tuple[_Columns, _Columns]:
    """(columns to add, text columns to widen), or :class:`SchemaError` for a column that
    cannot be added to a table with rows (NOT NULL without a server default)."""
    insp = sa.inspect(conn)
    missing: _Columns = []
    widen: _Columns = []
    for table in metadata.sorted_tables:
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
            elif dialect.text_too_narrow(have[col.name]["type"], col):
                widen.append((table, col))
    return missing, widen


def add_missing_columns(conn: sa.Connection, metadata: sa.MetaData, dialect: Dialect) -> None:
    """Additive migrations: every column of the current tables that an older install lacks
    is added, and a text column narrower than its definition is widened (MySQL/MariaDB:
    LONGTEXT). A new column must be nullable or have a server default, since the table may
    hold rows: one that is neither raises :class:`SchemaError` before anything changes."""
    quote = conn.dialect.identifier_preparer.quote
    missing, widen = missing_columns(conn, metadata, dialect)
    for table, col in missing:
        ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {ddl}")
        log.info("schema upgrade: added column %s.%s", table.name, col.name,
                 extra={"action": "schema_upgrade", "table": table.name, "column": col.name})
    for table, col in widen:
        ddl = sa.schema.CreateColumn(col).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} MODIFY COLUMN {ddl}")
        log.info("schema upgrade: widened column %s.%s", table.name, col.name,
                 extra={"action": "schema_upgrade", "table": table.name, "column": col.name})


def migrate_jobs(conn: sa.Connection, jobs: sa.Table, prefix: str, dialect: Dialect) -> None:
    """Version 3: the job table's indexes of versions 0 to 2 (full indexes led by ``state``,
    unique constraints on (schedule_name, scheduled_for) and on the generated ``active_key``)
    give way to partial ones, and ``active_key`` goes where a partial unique index replaces
    it (see ``tables._job_indexes``). Every row is kept, and so is every unique guarantee:
    the new unique indexes are built, and checked, in the same transaction (one atomic
    ALTER TABLE on MySQL/MariaDB). Does nothing on a table that has none of the old names
    left (a fresh or an upgraded install)."""
    insp = sa.inspect(conn)
    have = {i["name"] for i in insp.get_indexes(jobs.name)} | {u["name"] for u in insp.get_unique_constraints(jobs.name)}
    cols = {c["name"] for c in insp.get_columns(jobs.name)}
    old_ix = [prefix + n for n in LEGACY_JOB_INDEXES]
    old_uq = [prefix + n for n in LEGACY_JOB_CONSTRAINTS]
    drop_cols = [c for c in ("active_key",) if c in cols and c not in jobs.c]
    if not have & {*old_ix, *old_uq} and not drop_cols:
        return
    # without partial indexes (MySQL/MariaDB) the old indexes are the new ones under new names
    same = {"jobs_claim_ix": "jobs_queued_ix", "jobs_ready_ix": "jobs_next_ix", "jobs_lock_ix": "jobs_running_ix",
            "jobs_occurrence_uq": "jobs_occurrence_ux", "jobs_active_key_uq": "jobs_unique_key_ux"}
    rename = {} if dialect.partial_indexes else {prefix + old: prefix + new for old, new in same.items()}
    dialect.replace_job_table(conn, jobs, drop_indexes=old_ix, drop_constraints=old_uq,
                              drop_columns=drop_cols, rename_indexes=rename)
    log.info("schema upgrade: %s moved to partial indexes", jobs.name, extra={"action": "schema_upgrade", "table": jobs.name})


def add_missing_indexes(conn: sa.Connection, metadata: sa.MetaData) -> None:
    """Every index of the current tables that an older install lacks is created."""
    insp = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have_ix = {ix["name"] for ix in insp.get_indexes(table.name)}
        have_ix |= {uc["name"] for uc in insp.get_unique_constraints(table.name)}
        for ix in table.indexes:
            if ix.name not in have_ix:
                ix.create(conn)
                log.info("schema upgrade: added index %s", ix.name, extra={"action": "schema_upgrade", "index": ix.name})


def rebuild_partial_indexes(conn: sa.Connection, table: sa.Table, names: list[str], dialect: Dialect) -> None:
    """Drop the indexes ``names`` of ``table`` that exist and are partial on this database, so
    that :func:`add_missing_indexes` creates them with their current WHERE (version 4:
    ``jobs_task_ix`` holds queued rows too)."""
    have = {ix["name"] for ix in sa.inspect(conn).get_indexes(table.name)}
    for ix in table.indexes:
        if ix.name in names and ix.name in have and dialect.index_is_partial(ix):
            ix.drop(conn)
            log.info("schema upgrade: dropped index %s, to be rebuilt", ix.name,
                     extra={"action": "schema_upgrade", "index": ix.name})
