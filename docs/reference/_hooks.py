"""MkDocs hooks (mkdocs.yml ``hooks:``) that keep the reference pages from drifting.

* ``<!-- linger: settings -->`` becomes the table of every field of
  :class:`linger_sched.config.Settings`, its environment variable, ``schedules.yaml`` key, CLI flag and
  default, read from the code. A field without a description below fails the build.
* ``<!-- linger: events -->`` and ``<!-- linger: metrics -->`` become the tables of
  ``linger_sched.events.EVENTS`` and ``linger_sched.metrics.METRICS``.
* ``<!-- linger: schema -->`` becomes a section per table of the database schema (columns, types,
  defaults, constraints, indexes on each database), from ``linger_sched.store.tables``; a table,
  column or index without a description below, or a description of one that does not exist,
  fails the build. ``<!-- linger: schema_types -->``: the column types that differ by database.
* A link to a file outside ``docs/`` (``../examples/jobs.py``, ``../README.md#cli``) points into the
  repository (``repo_url`` in mkdocs.yml) or, without one, is shown as its path; a link to a path that
  does not exist fails the build.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.linger")

ROOT = Path(__file__).resolve().parents[2]

# Settings field -> what it means. Defaults, environment variables and YAML keys come from the code.
DESCRIPTIONS: dict[str, str] = {
    "database_url": "The database (SQLAlchemy URL): `sqlite:///linger.db`, `postgresql://...`, `mysql+pymysql://...`.",
    "table_prefix": "Prefix of the table names (ASCII letters, digits and `_`, not starting with a digit, at most 32 "
                    "characters).",
    "concurrency": "Jobs a worker runs at once (threads), 1 to 10,000.",
    "queues": "The queues this worker claims (`a,b`).",
    "poll_interval": "Idle re-check of the table. A job enqueued in the same process wakes the worker at once; from "
                     "another process within milliseconds on PostgreSQL (LISTEN/NOTIFY) and within 50 ms on SQLite.",
    "tick_interval": "The scheduler's tick (it also wakes at the next fire time).",
    "lease_ttl": "How long the leader lease is valid without renewal.",
    "renew_interval": "How often the leader renews its lease (shorter than `lease_ttl`).",
    "job_lease_ttl": "A running job's lock; the job is rescued this long after its node died.",
    "rescue_interval": "How often a worker looks for expired job locks.",
    "shutdown_grace": "How long a stopping node waits for its running jobs.",
    "misfire_threshold": "Lateness that counts as a misfire ([misfire and overlap](../schedules.md)).",
    "keep_finished": "Succeeded and cancelled rows are pruned after this (failed and skipped rows are kept); "
                     "`None` keeps them.",
    "clock_offset": "Seconds added to this node's clock: simulates a node whose clock is off (tests, demos).",
    "auto_install": "Create missing tables when the app first uses the database. A server database otherwise "
                    "needs `linger-sched db init` (a missing table raises `SchemaError`).",
    "result_max_bytes": "A task's result (as JSON) larger than this is not kept (a WARNING says so; the job "
                        "succeeds).",
    "node_lost_after": "A node without a heartbeat this long is *lost* (`status`, `health`); also how long past its "
                       "lock a running job is *stuck*.",
    "health_window": "`health`'s failure rate is over the jobs finished this long back.",
    "health_max_failure_rate": "`health` is degraded when a larger share of those jobs failed (`0.25` or `25%`).",
    "health_max_queue_age": "`health` is degraded when a due job waited longer than this.",
}
# what a default of None means
NONE_DEFAULTS: dict[str, str] = {
    "queues": "all queues",
    "misfire_threshold": "`lease_ttl` + 2 × `tick_interval`",
    "keep_finished": "keep",
    "auto_install": "on SQLite only",
}
YAML_KEYS = {"database_url": "database", "table_prefix": "table_prefix", "concurrency": "concurrency",
             "queues": "queues"}  # the settings linger_sched.config.resolve() reads from schedules.yaml


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit} ({value:g} s)"
    return f"{value:g}s"


def _cli_flags() -> dict[str, str]:
    """Setting -> the ``linger-sched`` option that sets it (an option named like the setting)."""
    import click

    from linger_sched.cli import main

    flags: dict[str, set[str]] = {}

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name is not None:
                name = "database_url" if p.name == "database" else p.name
                flags.setdefault(name, set()).update(o for o in p.opts if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(main)
    return {k: ", ".join(f"`{o}`" for o in sorted(v)) for k, v in flags.items()}


def settings_table() -> str:
    from linger_sched.config import ENV_VARS, Settings

    names = [f.name for f in dataclasses.fields(Settings)]
    missing = [n for n in names if n not in DESCRIPTIONS]
    stale = [n for n in DESCRIPTIONS if n not in names]
    if missing or stale:
        raise PluginError(f"docs/reference/_hooks.py DESCRIPTIONS: no description for {missing}; not a setting: {stale}")
    env = {field: var for var, (field, _kind) in ENV_VARS.items()}
    kinds = {field: kind for _var, (field, kind) in ENV_VARS.items()}
    flags = _cli_flags()
    defaults = Settings()
    rows = ["| setting | environment | `schedules.yaml` | CLI | default | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        value = getattr(defaults, name)
        if value is None:
            if name not in NONE_DEFAULTS:
                raise PluginError(f"docs/reference/_hooks.py NONE_DEFAULTS: say what {name}=None means")
            shown = NONE_DEFAULTS[name]
        elif kinds.get(name) == "duration":
            shown = _seconds(float(value))
        else:
            shown = f"`{value}`"
        cells = [f"`{name}`", f"`{env[name]}`" if name in env else "-", f"`{YAML_KEYS[name]}`" if name in YAML_KEYS else "-",
                 flags.get(name, "-"), shown, DESCRIPTIONS[name]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def events_table() -> str:
    from linger_sched.events import EVENTS

    rows = ["| event | emitted when |", "| --- | --- |"]
    rows += [f"| `{name}` | {when} |" for name, when in EVENTS.items()]
    return "\n".join(rows)


def metrics_table() -> str:
    from linger_sched.metrics import METRICS

    rows = ["| metric | type | labels | source | meaning |", "| --- | --- | --- | --- | --- |"]
    for m in METRICS.values():
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        rows.append(f"| `{m.name}` | {m.kind} | {labels} | {m.source} | {m.help} |")
    return "\n".join(rows)


# -- the database schema (reference/schema.md) -------------------------------------------------
# ``<!-- linger: schema -->`` becomes a section per table of the current schema (columns with their
# type, NULL and default, constraints, indexes), read from linger_sched.store.tables.build_metadata
# for both index layouts: partial indexes (SQLite, PostgreSQL) and their MySQL/MariaDB equivalent.
# ``<!-- linger: schema_types -->`` becomes the table of the column types that differ by database.
# What each table, column and index is for is written here: one the code has and this does not,
# or one this describes and the code does not have, fails the build.
SCHEMA_DATABASES = (("SQLite", "sqlite"), ("PostgreSQL", "postgresql"), ("MySQL/MariaDB", "mysql"))

SCHEMA_TABLES: dict[str, str] = {
    "jobs": "One row per job: every job enqueued by code, the CLI or the dashboard, every occurrence of a "
            "schedule, and every fire time recorded as `skipped` instead of run. Queued and running rows are the "
            "work; finished rows (`succeeded`, `failed`, `cancelled`, `skipped`) are the history, pruned by "
            "`keep_finished` and `linger-sched prune`.",
    "schedules": "One row per schedule, declared in code or `schedules.yaml` (written by each node's start-up sync) "
                 "or added at runtime: its definition, and `next_run_at`, the first fire time not yet turned into a "
                 "row of `jobs`. The leader moves `next_run_at` forward in the transaction that writes the jobs.",
    "leases": "The leader lease: one row, named `leader`, held by the node whose scheduler leads. Only the holder "
              "writes occurrences, and only at the epoch it acquired.",
    "nodes": "One row per running node (`linger-sched run` or `worker`, `app.start()`, a web process's node): "
             "written when it starts, its `heartbeat_at` renewed every 10 s (a third of `node_lost_after` when "
             "that is shorter), deleted when it stops cleanly. The leader deletes the rows of nodes without a "
             "heartbeat for 10 minutes (20 × `lease_ttl` when that is longer).",
    "meta": "Facts about the installation, one per key. The only key is `schema_version`: the version of these "
            "tables, written by `db init` and moved forward by `db upgrade`.",
    "counts": "The finished jobs by queue and state, as signed deltas: every transaction that moves jobs into or "
              "out of a finished state, or deletes finished rows, inserts its own rows here, so that no two "
              "writers wait for one counter row. The leader folds them into one row per (queue, state) at each "
              "heartbeat. `status`, `health`, the dashboard and the metrics sum this table instead of counting "
              "the history; `linger-sched db recount` rebuilds it from the job rows.",
}

SCHEMA_COLUMNS: dict[str, dict[str, str]] = {
    "jobs": {
        "id": "The job's id, in insertion order: what `enqueue` returns and `linger-sched jobs show ID` takes.",
        "task": "The task's registered name (`@task(name=...)`, else `module.qualname`).",
        "args": "The arguments as JSON, `{\"args\": [...], \"kwargs\": {...}}` (an empty part left out).",
        "queue": "The queue; a worker claims from the queues it serves (`queues`, every queue by default).",
        "priority": "Lower runs first: a claim takes due jobs in (`priority`, `run_at`, `id`) order.",
        "state": "`queued`, `running`, `succeeded`, `failed`, `cancelled` or `skipped` "
                 "([job states](#job-states)).",
        "run_at": "When the job is due: its enqueue time, `run_at` or `delay`; a schedule's fire time; after a "
                  "failed attempt, the time of the next one (backoff).",
        "attempts": "Attempts started: one more at each claim. A hand-back at shutdown takes the interrupted one "
                    "back; a retry starts again from 0.",
        "max_attempts": "Attempts allowed; a failed attempt with none left ends the job `failed`.",
        "locked_by": "While `running`: the node that runs it (`nodes.id`).",
        "locked_until": "While `running`: the job's lease. The worker pushes it forward every third of "
                        "`job_lease_ttl`; once it is past, any worker rescues the job.",
        "last_error": "The last failed attempt's traceback, or why the job went back or ended (handed back, "
                      "lease expired, cancelled); at most 32 KiB (head and tail kept).",
        "schedule_name": "The schedule that made the row; NULL for a job enqueued by code, the CLI or the "
                         "dashboard.",
        "scheduled_for": "The fire time the row stands for; with `schedule_name`, the occurrence key. A manual "
                         "trigger's is the time of the trigger.",
        "occurrences": "How many fire times the row stands for: 1, or more for a coalesced job or a `skipped` row "
                       "that covers a gap.",
        "reason": "Why a scheduled row is as it is: a `skipped` row's cause (misfire, overlap, paused, disabled, "
                  "spec changed), a coalesced job's span, `manual` for a trigger; NULL otherwise.",
        "unique_key": "Given to `enqueue(..., unique_key=...)`: no two queued or running jobs have the same key.",
        "created_at": "When the row was inserted.",
        "started_at": "When the last attempt started (its claim).",
        "finished_at": "When the job reached its final state (a `skipped` row: when it was recorded); NULL while "
                       "queued or running.",
        "result": "A succeeded task's return value as JSON; NULL when it returned None or a value that is not "
                  "kept (not JSON, or larger than `result_max_bytes`).",
        "progress": "The last fraction (0 to 1) the task gave `current_job().set_progress()`, written at most "
                    "about once a second.",
        "progress_message": "The message of that progress report, at most 500 characters.",
        "cancel_requested": "Set by a cancel of a running job; its worker learns it at its next lease extension.",
        "trace_context": "The W3C `traceparent` of the span that enqueued the job when tracing was on "
                         "(OpenTelemetry); the worker's span links to it. NULL otherwise.",
        "active_key": "Generated: `unique_key` while the job is queued or running, else NULL; "
                      "`jobs_unique_key_ux` is on it.",
        "active_schedule": "Generated: `schedule_name` while the job is queued or running, else NULL; "
                           "`jobs_active_schedule_ix` is on it.",
        "finished_state": "Generated: `state` once it is final, else NULL; `jobs_done_ix` is on it.",
    },
    "schedules": {
        "name": "The schedule's name; the `schedule_name` of its jobs.",
        "task": "The task each occurrence runs.",
        "spec": "When it fires: a cron expression as written, or `every:<seconds>s` for an interval.",
        "tz": "The IANA time zone a cron expression is read in (`UTC` for an interval).",
        "anchor": "An interval's anchor: it fires at `anchor + k × every`; the time it was first registered "
                  "unless one was given. NULL for a cron expression.",
        "args": "The arguments of every occurrence, as JSON (as `jobs.args`).",
        "options": "JSON of `misfire`, `misfire_grace`, `max_catch_up`, `overlap`, `queue`, `priority` and "
                   "`max_attempts`.",
        "next_run_at": "The first fire time not yet accounted for; the leader plans from it and moves it forward "
                       "(compare-and-set). For a schedule in error, when the scheduler tries again.",
        "last_run_at": "The latest fire time the leader has written a row for (a job or a `skipped` row).",
        "paused": "Paused (`schedules pause`): nothing is written for it. A resume records the fire times missed "
                  "meanwhile as one `skipped` row and goes on from the next one.",
        "enabled": "False for a schedule that no live node declares any more, or whose declaration says "
                   "`enabled: false` (`disabled_reason`); a disabled schedule does not fire and keeps its history.",
        "spec_hash": "A digest of the spec, the time zone and an anchor that was given: the start-up sync compares "
                     "it to see a changed definition.",
        "updated_at": "When a sync, a runtime change, a pause, a resume or an error last wrote the row (moving "
                      "`next_run_at` forward does not).",
        "error": "Why the scheduler could not plan or write this schedule (a definition it cannot evaluate, a "
                 "value the job table refuses); NULL when it can. Cleared when a plan commits or the definition "
                 "changes.",
        "error_since": "When the error began.",
        "retry_from": "The first fire time the error left unaccounted for: the scheduler goes on from it.",
        "disabled_reason": "Why `enabled` is false: `not declared` or `enabled: false`.",
        "source": "`declared` (code or `schedules.yaml`) or `runtime` (`app.add_schedule`, `schedules add`, the "
                  "dashboard): a sync never disables a runtime schedule.",
    },
    "leases": {
        "name": "The lease's name: `leader`.",
        "holder": "The node (`nodes.id`) that holds it, or last held it.",
        "epoch": "One more at every change of holder (a renewal keeps it); the leader's writes apply only at "
                 "the epoch it acquired.",
        "acquired_at": "When the holder acquired it (kept across renewals); equal to `expires_at` once the "
                       "holder released it at a clean stop.",
        "expires_at": "The lease is valid until then, `lease_ttl` after the last renewal; another node may take "
                      "it over after that.",
    },
    "nodes": {
        "id": "The node's id, `host:pid:random`: the `locked_by` of its jobs, the `holder` of its lease.",
        "host": "The host it runs on.",
        "pid": "Its process id.",
        "roles": "`scheduler,worker`, `scheduler` or `worker`.",
        "registry_hash": "A digest of its task names and schedule definitions: live scheduler nodes with different "
                         "digests (a deploy half done) make `health` degraded.",
        "version": "The linger-sched version it runs.",
        "started_at": "When it started.",
        "heartbeat_at": "Its last heartbeat; older than `node_lost_after`, the node is lost.",
        "schedules": "JSON list of the schedule names it declares (NULL for a node without a scheduler): a sync "
                     "on another node never disables what a live node declares.",
    },
    "meta": {
        "key": "The fact's name (`schema_version`).",
        "value": "Its value, as text (`6`).",
    },
    "counts": {
        "id": "Insertion order: the fold takes the oldest rows first.",
        "queue": "The queue of the jobs counted.",
        "state": "Their finished state: `succeeded`, `failed`, `cancelled` or `skipped`.",
        "n": "How many jobs the writing transaction moved into that state (negative: out of it, or deleted); a "
             "count is the sum over the rows of its (queue, state).",
    },
}

# index (after the prefix) -> what reads it
SCHEMA_INDEXES: dict[str, str] = {
    "jobs_queued_ix": "The claim of named queues (one ordered read per queue); the next due time; queued jobs "
                      "counted by queue.",
    "jobs_next_ix": "The claim of a worker that serves every queue; the next due time.",
    "jobs_running_ix": "The rescue of jobs whose lease expired; `health`'s stuck jobs; running jobs counted.",
    "jobs_occurrence_ux": "One row per (schedule, fire time): the occurrence key.",
    "jobs_unique_key_ux": "One queued or running job per `unique_key`.",
    "jobs_active_schedule_ix": "`overlap: skip`: whether a schedule has a job queued or running.",
    "jobs_schedule_ix": "A schedule's history (`jobs --schedule`, the dashboard), its last outcome.",
    "jobs_done_ix": "The newest finished jobs of a state (`jobs --state failed`), the prune, `db recount`.",
    "jobs_task_ix": "The jobs of a task (`jobs --task`).",
    "jobs_queue_ix": "The jobs of a queue (`jobs --queue`).",
    "schedules_due_ix": "The leader's due schedules and its next wake-up (enabled, unpaused, by `next_run_at`).",
}

# the column types that differ by database: (SQLite, PostgreSQL, MySQL/MariaDB) -> the name the
# column tables show, and what it holds
SCHEMA_TYPES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("INTEGER", "BIGINT", "BIGINT"): (
        "row id", "A 64-bit auto-increment key (SQLite's `INTEGER PRIMARY KEY` is the 64-bit rowid; PostgreSQL "
                  "declares it `BIGSERIAL`)."),
    ("TEXT", "TEXT", "LONGTEXT"): ("text", "Text of any length (MySQL/MariaDB's `TEXT` holds 64 KB)."),
    ("DATETIME", "TIMESTAMP WITHOUT TIME ZONE", "DATETIME(6)"): (
        "timestamp", "UTC without a zone, to the microsecond; SQLite stores the text `YYYY-MM-DD HH:MM:SS.ffffff`."),
    ("BOOLEAN", "BOOLEAN", "BOOL"): ("boolean", "SQLite and MySQL/MariaDB store 0 or 1."),
}


def _schema_model(prefix: str) -> dict[str, Any]:
    """The tables of both index layouts, by short name: ``{"partial": {...}, "plain": {...}}``."""
    from linger_sched.store.tables import build_metadata

    def by_name(partial: bool) -> dict[str, Any]:
        md, _ = build_metadata(prefix, partial_indexes=partial)
        return {name[len(prefix):]: table for name, table in md.tables.items()}

    return {"partial": by_name(True), "plain": by_name(False)}


def check_schema_descriptions(prefix: str = "linger_") -> None:
    """PluginError naming every table, column or index without a description above, and every
    description of one the code does not have."""
    model = _schema_model(prefix)
    tables = list(model["partial"])
    problems = []
    for kind, described, have in (
        ("table", set(SCHEMA_TABLES), set(tables)),
        ("index", set(SCHEMA_INDEXES),
         {str(ix.name)[len(prefix):] for layout in model.values() for t in layout.values() for ix in t.indexes}),
        *(("column", {f"{t}.{c}" for c in SCHEMA_COLUMNS.get(t, {})},
           {f"{t}.{c.name}" for layout in model.values() for c in layout[t].columns}) for t in tables),
    ):
        if have - described:
            problems.append(f"no description for {kind} {', '.join(sorted(have - described))}")
        if described - have:
            problems.append(f"described {kind} that does not exist: {', '.join(sorted(described - have))}")
    stale_tables = set(SCHEMA_COLUMNS) - set(tables)
    if stale_tables:
        problems.append(f"columns described for tables that do not exist: {', '.join(sorted(stale_tables))}")
    differing = {names for layout in model.values() for t in layout.values() for c in t.columns
                 if len(set(names := _type_names(c))) > 1}
    if differing - set(SCHEMA_TYPES):
        problems.append(f"no name in SCHEMA_TYPES for the column types {sorted(differing - set(SCHEMA_TYPES))}")
    if set(SCHEMA_TYPES) - differing:
        problems.append(f"SCHEMA_TYPES names types no column has: {sorted(set(SCHEMA_TYPES) - differing)}")
    if problems:
        raise PluginError("docs/reference/_hooks.py SCHEMA_*: " + "; ".join(problems))


def _type_names(col: Any) -> tuple[str, str, str]:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    lite, pg, my = (col.type.compile(dialect=d.dialect()) for d in (sqlite, postgresql, mysql))
    return lite, pg, my


def _shown_type(col: Any) -> str:
    names = _type_names(col)
    if len(set(names)) == 1:
        return f"`{names[0]}`"
    if names not in SCHEMA_TYPES:
        raise PluginError(f"docs/reference/_hooks.py SCHEMA_TYPES: name the type of {col.table.name}.{col.name} "
                          f"(SQLite, PostgreSQL, MySQL/MariaDB: {names})")
    return SCHEMA_TYPES[names][0]


def _shown_default(col: Any) -> str:
    import sqlalchemy as sa

    if col.computed is not None:
        return f"generated, stored: `{col.computed.sqltext}`"
    if col.primary_key and col.autoincrement is True:
        return "auto-increment"
    if col.server_default is None:
        return "-"
    arg = col.server_default.arg
    if isinstance(arg, str):
        return f"`'{arg}'`"
    if isinstance(arg, (sa.sql.elements.True_, sa.sql.elements.False_)):
        return f"`{str(arg).lower()}`"
    if isinstance(arg, sa.sql.elements.TextClause):
        return f"`{arg.text}`"
    value = getattr(arg, "value", None)  # TextDefault
    if isinstance(value, str):
        return f"`'{value}'`"
    raise PluginError(f"docs/reference/_hooks.py: cannot show the default of {col.table.name}.{col.name}: {arg!r}")


def _where(index: Any, dialect_name: str) -> str | None:
    from sqlalchemy.dialects import postgresql, sqlite

    where = index.dialect_options[dialect_name]["where"] if dialect_name in ("sqlite", "postgresql") else None
    if where is None:
        return None
    d = {"sqlite": sqlite, "postgresql": postgresql}[dialect_name].dialect()
    return str(where.compile(dialect=d, compile_kwargs={"literal_binds": True, "include_table": False}))


def _by_database(values: dict[str, str]) -> str:
    """``{database label: text}`` as one cell: the text alone when every database has it, else
    each distinct text after the databases that have it."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    groups: dict[str, list[str]] = {}
    for label, text in values.items():
        groups.setdefault(text, []).append(label)
    return "<br>".join(f"{', '.join(labels)}: {text}" for text, labels in groups.items())


def _index_rows(short: str, model: dict[str, Any], prefix: str) -> list[str]:
    partial = {str(ix.name): ix for ix in model["partial"][short].indexes}
    plain = {str(ix.name): ix for ix in model["plain"][short].indexes}
    rows = []
    for name in sorted(partial.keys() | plain.keys(), key=lambda n: list(SCHEMA_INDEXES).index(n[len(prefix):])):
        keys: dict[str, str] = {}
        held: dict[str, str] = {}
        for label, dialect_name in SCHEMA_DATABASES:
            ix = (plain if dialect_name == "mysql" else partial)[name]
            cols = ", ".join(f"`{c.name}`" for c in ix.columns)
            include = ix.dialect_options["postgresql"]["include"] if dialect_name == "postgresql" else None
            keys[label] = f"({cols})" + (f" INCLUDE ({', '.join(f'`{c}`' for c in include)})" if include else "")
            where = _where(ix, dialect_name)
            held[label] = f"`{where}`" if where else "all"
        unique = "yes" if partial[name].unique else "no"
        rows.append(f"| `{name}` | {unique} | {_by_database(keys)} | {_by_database(held)} | "
                    f"{SCHEMA_INDEXES[name[len(prefix):]]} |")
    return rows


def schema_tables(prefix: str | None = None) -> str:
    """The section of every table (``### `linger_jobs```...): what it is for, its columns, its
    constraints and its indexes, for ``prefix`` (default: the setting's default)."""
    from linger_sched.config import Settings

    prefix = Settings().table_prefix if prefix is None else prefix
    check_schema_descriptions(prefix)
    model = _schema_model(prefix)
    out: list[str] = []
    for short, table in model["partial"].items():
        plain = model["plain"][short]
        out += [f"### `{table.name}`", "", SCHEMA_TABLES[short], "",
                "| column | type | null | default | meaning |", "| --- | --- | --- | --- | --- |"]
        for col in plain.columns:  # the MySQL/MariaDB layout: every column, generated ones too
            name = f"`{col.name}`" + (" (primary key)" if col.primary_key else "")
            if col.name not in table.c:
                name += " (MySQL/MariaDB only)"
            out.append(f"| {name} | {_shown_type(col)} | {'yes' if col.nullable else 'no'} | {_shown_default(col)} | "
                       f"{SCHEMA_COLUMNS[short][col.name]} |")
        checks = [c for c in table.constraints if c.__class__.__name__ == "CheckConstraint"]
        if checks:
            out.append("")
            out += [f"Check constraint `{c.name}`: `{c.sqltext}`." for c in checks]
        if table.indexes or plain.indexes:
            out += ["", "| index | unique | columns | rows it holds | read by |", "| --- | --- | --- | --- | --- |"]
            out += _index_rows(short, model, prefix)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def schema_types() -> str:
    """The column types that differ by database (the names the column tables show)."""
    rows = ["| type | SQLite | PostgreSQL | MySQL/MariaDB | holds |", "| --- | --- | --- | --- | --- |"]
    for (lite, pg, my), (name, holds) in SCHEMA_TYPES.items():
        rows.append(f"| {name} | `{lite}` | `{pg}` | `{my}` | {holds} |")
    return "\n".join(rows)


GENERATED = {"settings": settings_table, "events": events_table, "metrics": metrics_table,
             "schema": schema_tables, "schema_types": schema_types}
MARKER = re.compile(r"<!-- linger: (\w+) -->")
# an inline link or image target: ](target) or ](target "title")
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _generate(match: re.Match[str]) -> str:
    fn = GENERATED.get(match.group(1))
    if fn is None:
        raise PluginError(f"unknown generated table {match.group(0)!r} (known: {', '.join(GENERATED)})")
    return fn()


def _outside_links(markdown: str, page: Any, config: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    here = (docs_dir / page.file.src_uri).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def fix(match: re.Match[str]) -> str:
        target = match.group("target")
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        full = Path(posixpath.normpath((here / path).as_posix()))
        try:
            full.relative_to(docs_dir)
            return match.group(0)  # a page or file of the site: mkdocs checks it
        except ValueError:
            pass
        try:
            rel = full.relative_to(ROOT).as_posix()
        except ValueError:
            log.warning("%s: link %r leaves the repository", page.file.src_uri, target)
            return match.group(0)
        if not full.exists():
            log.warning("%s: link %r: no such file in the repository", page.file.src_uri, target)
            return match.group(0)
        if repo_url:
            kind = "tree" if full.is_dir() else "blob"
            return f"[{match.group('text')}]({repo_url}/{kind}/HEAD/{rel}{'#' + anchor if anchor else ''})"
        return match.group("text")  # without a repo_url: its text, which names the path

    # leave code blocks alone
    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out.append(LINK.sub(fix, markdown[last:fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(fix, markdown[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = MARKER.sub(_generate, markdown)
    return _outside_links(markdown, page, config)


# Docstrings use Sphinx roles (:class:`Linger`); mkdocstrings shows them as written. Drop the role,
# keep the name in code (``~a.b.C`` shows as ``C``, as Sphinx does).
ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):(<code>)(~(?:\w+\.)*)?")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(r"\1", html)
