"""``linger-sched``: a thin click front end over :class:`~linger_sched.Linger`.

Exit status: 0 ok, 1 runtime error, 2 usage or configuration error (the message names what).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import sqlalchemy.exc

from . import __version__
from .app import Linger, default_app
from .clock import UTC
from .config import MAX_CONCURRENCY, MAX_SECONDS
from .configfile import allow_user_modules, import_modules, read_config_file, schedules_from_config
from .errors import (
    ConfigError,
    JobArgumentsError,
    JobNotFoundError,
    JobStateError,
    LingerError,
    NaiveDatetimeError,
    ScheduleNotFoundError,
    ScheduleStateError,
    SchemaError,
    SpecError,
    UnknownTaskError,
)
from .registry import Registry
from .specs import parse_duration
from .store.dialect import mask_url
from .web.actions import BULK_STATES, JobFilter, bulk_state, count_matching, run_bulk

USAGE_ERRORS = (ConfigError, SpecError, JobArgumentsError, NaiveDatetimeError, UnknownTaskError)
DEFAULT_CONFIG = "schedules.yaml"


# the ranges the database columns hold: priority is a 32-bit INTEGER, ids and LIMIT 64-bit
PRIORITY = click.IntRange(-(2**31), 2**31 - 1)
ROW_LIMIT = click.IntRange(1, 2**63 - 1)
CONCURRENCY = click.IntRange(1, MAX_CONCURRENCY)


def fail(message: str, code: int) -> None:
    # any message may quote a database URL (a driver's error, a bad --database)
    click.echo(f"linger-sched: error: {mask_url(message)}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USAGE_ERRORS as exc:
            fail(str(exc), 2)
        except SchemaError as exc:
            fail(str(exc), 1)
        except (JobNotFoundError, ScheduleNotFoundError, JobStateError, ScheduleStateError) as exc:
            fail(str(exc), 1)
        except LingerError as exc:
            fail(f"{type(exc).__name__}: {exc}", 1)
        except sqlalchemy.exc.SQLAlchemyError as exc:  # a driver error that escaped the store's translation
            fail(f"database error: {getattr(exc, 'orig', None) or exc}", 1)

    return wrapper


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--database", "database", metavar="URL", help="Database URL (env LINGER_DATABASE_URL; default sqlite:///linger.db)."),
        click.option("--import", "imports", metavar="MODULE", multiple=True, help="Import MODULE so its tasks register (repeatable)."),
        click.option("--app", "app_path", metavar="MODULE:ATTR", help="Use the Linger app object MODULE:ATTR instead of the default app."),
        click.option("--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
                     help=f"schedules.yaml to load (default ./{DEFAULT_CONFIG} if present)."),
        click.option("-v", "--verbose", count=True, help="More logging (-v: debug)."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), help="Log level."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def setup_logging(verbose: int, level: str | None) -> None:
    if level:
        lvl = getattr(logging, level.upper())
    else:
        lvl = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(lvl)


# ctx.meta key: a front end that mounts these commands (``flask linger ...``) puts here a
# callable returning its Linger app, used when no --app is given
APP_PROVIDER = "linger_sched.app_provider"


def app_object(app_path: str | None) -> Linger:
    """The app named by --app MODULE:ATTR, else the front end's app (:data:`APP_PROVIDER`),
    else the default app."""
    if not app_path:
        ctx = click.get_current_context(silent=True)
        provider: Callable[[], Linger] | None = ctx.meta.get(APP_PROVIDER) if ctx is not None else None
        return provider() if provider is not None else default_app()
    mod, _, attr = app_path.partition(":")
    try:
        app = getattr(importlib.import_module(mod), attr or "app")
    except Exception as exc:
        raise ConfigError(f"cannot load app {app_path!r}: {type(exc).__name__}: {exc}", key="--app") from exc
    if not isinstance(app, Linger):
        raise ConfigError(f"{app_path!r} is not a linger_sched.Linger object", key="--app")
    return app


ROOT_OPTIONS = "linger_sched.root_options"


def with_root_options(
    database: str | None, imports: Sequence[str], app_path: str | None, config: str | None,
    verbose: int, log_level: str | None,
) -> tuple[str | None, tuple[str, ...], str | None, str | None, int, str | None]:
    """Fill in the common options given before the command (``linger-sched --database URL jobs``)."""
    ctx = click.get_current_context(silent=True)
    root: dict[str, Any] = ctx.meta.get(ROOT_OPTIONS, {}) if ctx is not None else {}
    return (
        database or root.get("database"), (*root.get("imports", ()), *imports), app_path or root.get("app_path"),
        config or root.get("config"), verbose or root.get("verbose") or 0, log_level or root.get("log_level"),
    )


def load_app(
    database: str | None, imports: Sequence[str], app_path: str | None, config: str | None,
    verbose: int = 0, log_level: str | None = None, *, cli_settings: dict[str, Any] | None = None,
) -> Linger:
    database, imports, app_path, config, verbose, log_level = with_root_options(
        database, imports, app_path, config, verbose, log_level)
    setup_logging(verbose, log_level)
    # --app names a module: found in the working directory, never in place of the stdlib or a driver
    allow_user_modules([app_path.partition(":")[0]] if app_path else [])
    try:
        import_modules(list(imports))
    except ConfigError as exc:
        raise ConfigError(exc.message, key="--import") from exc
    app = app_object(app_path)
    cli = dict(cli_settings or {})
    if database:
        cli["database_url"] = database
    path = config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if path is not None:
        app.load_config(path, cli=cli)
    else:
        import dataclasses

        from .config import resolve

        # the app's settings already hold the environment (or explicit arguments that beat it,
        # e.g. an --app built with Linger(database_url=...)): only the flags go on top
        s = resolve(cli=cli, code=dataclasses.asdict(app.settings), env={})
        app.configure(**{k: getattr(s, k) for k in ("database_url", "table_prefix", "concurrency", "queues")})
    # commands say what is missing (`db init`) instead of creating tables, or a SQLite file,
    # as a side effect: `run` and `db init` install explicitly
    app.configure(auto_install=False)
    return app


def parse_instant(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not an ISO 8601 date-time: {text!r} (e.g. 2026-12-01T18:00:00+01:00)", key=what) from None
    if value.tzinfo is None:
        raise ConfigError(f"{text!r} has no UTC offset; add one, e.g. {text}+00:00 or {text}Z", key=what)
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ConfigError(f"{text!r} is outside 0001-01-01 .. 9999-12-31 in UTC", key=what) from None
    return value


def fmt_time(value: datetime | None, tz: str | None = None) -> str:
    if value is None:
        return "-"
    if tz and tz != "UTC":
        from zoneinfo import ZoneInfo

        return value.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="linger-sched")
@common_options
@click.pass_context
def main(ctx: click.Context, /, **common: Any) -> None:
    """Background and recurring jobs out of a plain SQL table.

    The options below may be given before the command or after it (after wins)."""
    ctx.meta[ROOT_OPTIONS] = common


# -- db ---------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Create or upgrade the tables."""


@db.command("init")
@common_options
@handle_errors
def db_init(**common: Any) -> None:
    """Create the tables (idempotent)."""
    app = load_app(**common)
    app.install_schema()
    click.echo(f"schema ready in {app.store.display_url} (prefix {app.settings.table_prefix})")


@db.command("upgrade")
@common_options
@handle_errors
def db_upgrade(**common: Any) -> None:
    """Move an older schema forward to this version."""
    app = load_app(**common)
    before, after = app.store.upgrade_schema()
    click.echo(f"schema version {before if before is not None else 'none'} -> {after}")


@db.command("recount")
@common_options
@handle_errors
def db_recount(**common: Any) -> None:
    """Count the finished jobs again from their rows (after rows were changed by hand)."""
    app = load_app(**common)
    app.store.check_schema()
    found = app.store.recount()
    total = sum(found.values())
    click.echo(f"{total} finished job{'s' if total != 1 else ''} counted in {len(found)} (queue, state) pair"
               f"{'s' if len(found) != 1 else ''}")


# -- worker and run ---------------------------------------------------------------------
def _exit_node(code: int) -> None:
    """Exit after a node stopped. A job thread still running past the grace period (its job
    was handed back) cannot be stopped, and the interpreter would wait for it at exit (the
    thread pool joins its threads): leave without waiting for it."""
    import threading

    if any(t.name.startswith("linger-job") and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


@main.command()
@click.option("--concurrency", "-c", type=CONCURRENCY, help="Jobs run at once (threads).")
@click.option("--queues", "-q", metavar="A,B", help="Only claim jobs of these queues.")
@click.option("--burst", is_flag=True, help="Exit 0 once no due job is left.")
@common_options
@handle_errors
def worker(concurrency: int | None, queues: str | None, burst: bool, **common: Any) -> None:
    """Run a worker (no scheduler) until SIGTERM/SIGINT."""
    app = load_app(**common, cli_settings={"concurrency": concurrency, "queues": queues})
    _warn_without_tasks(app)
    _exit_node(app.run(worker=True, scheduler=False, burst=burst))


def _warn_without_tasks(app: Linger) -> None:
    if not app.registry.tasks:
        click.echo("linger-sched: warning: no task is registered in this process, so every job claimed here fails "
                   "as an unknown task; pass --import MODULE or list modules under imports: in schedules.yaml", err=True)


@main.command()
@click.option("--concurrency", "-c", type=CONCURRENCY, help="Jobs run at once (threads).")
@click.option("--queues", "-q", metavar="A,B", help="Only claim jobs of these queues.")
@click.option("--no-worker", is_flag=True, help="Only schedule (no jobs run on this node).")
@click.option("--no-scheduler", is_flag=True, help="Only run jobs (never lead).")
@common_options
@handle_errors
def run(concurrency: int | None, queues: str | None, no_worker: bool, no_scheduler: bool, **common: Any) -> None:
    """Run a node: scheduler and worker, until SIGTERM/SIGINT (a second signal forces)."""
    if no_worker and no_scheduler:
        raise ConfigError("--no-worker and --no-scheduler together leave nothing to run", key="--no-worker")
    app = load_app(**common, cli_settings={"concurrency": concurrency, "queues": queues})
    app.install_schema()
    if not no_worker:
        _warn_without_tasks(app)
    _exit_node(app.run(worker=not no_worker, scheduler=not no_scheduler))


# -- enqueue ----------------------------------------------------------------------------
@main.command()
@click.argument("task")
@click.option("--args", "args_json", metavar="JSON", help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--run-at", metavar="ISO8601", help="When to run (with a UTC offset).")
@click.option("--in", "run_in", metavar="DURATION", help="Run after this long (30s, 10m, 2h).")
@click.option("--priority", type=PRIORITY, help="Lower runs first (default: the task's, else 0).")
@click.option("--queue", help="Queue name.")
@click.option("--unique-key", help="Do nothing if a queued or running job holds this key.")
@common_options
@handle_errors
def enqueue(task: str, args_json: str | None, kwargs_json: str | None, run_at: str | None, run_in: str | None,
            priority: int | None, queue: str | None, unique_key: str | None, **common: Any) -> None:
    """Queue one job of TASK and print its id."""
    if run_at and run_in:
        raise ConfigError("give --run-at or --in, not both", key="--run-at")
    args = _json_arg(args_json, "--args", list, "a JSON array, e.g. '[1, \"a\"]'") if args_json is not None else []
    kwargs = _json_arg(kwargs_json, "--kwargs", dict, "a JSON object, e.g. '{\"user_id\": 1}'") if kwargs_json is not None else {}
    when = parse_instant(run_at, "--run-at") if run_at else None
    try:
        delay = parse_duration(run_in, field="--in") if run_in else None
    except SpecError as exc:
        raise ConfigError(f"{exc.message}; got {run_in!r}", key="--in") from None
    if delay is not None and delay.total_seconds() > MAX_SECONDS:
        raise ConfigError(f"at most 100 years; got {run_in!r}", key="--in")
    app = load_app(**common)
    if task not in app.registry.tasks:
        if app.registry.tasks:
            raise UnknownTaskError(task, list(app.registry.tasks))
        click.echo(f"linger-sched: warning: task {task!r} is not registered in this process (use --import); queued by name", err=True)
    app.store.check_schema()
    job_id = app.enqueue(task, *args, run_at=when, delay=delay, priority=priority, queue=queue, unique_key=unique_key, **kwargs)
    click.echo(job_id)


def _json_arg(text: str, flag: str, kind: type, what: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg} at position {exc.pos}): must be {what}", key=flag) from None
    if not isinstance(value, kind):
        raise ConfigError(f"must be {what}, got {type(value).__name__}", key=flag)
    return value


# -- jobs -------------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "skipped"]), help="Only jobs in this state.")
@click.option("--limit", type=ROW_LIMIT, default=50, show_default=True)
@click.option("--task", "task_name", help="Only jobs of this task.")
@click.option("--schedule", "schedule_name", help="Only occurrences of this schedule.")
@common_options
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, state: str | None, limit: int, task_name: str | None, schedule_name: str | None, **common: Any) -> None:
    """List jobs, newest first (or: jobs show|retry|cancel ID)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = common
        return
    app = load_app(**common)
    app.store.check_schema()
    rows = app.jobs(state, limit, task=task_name, schedule_name=schedule_name)
    click.echo(table(
        ["ID", "TASK", "STATE", "QUEUE", "PRI", "ATTEMPTS", "RUN_AT", "SCHEDULE"],
        [[j.id, j.task, j.state, j.queue, j.priority, f"{j.attempts}/{j.max_attempts}", fmt_time(j.run_at), j.schedule_name] for j in rows],
    ))


def _merged(ctx: click.Context, common: dict[str, Any]) -> dict[str, Any]:
    parent = ctx.obj or {}
    out = dict(common)
    for k, v in parent.items():
        if out.get(k) in (None, (), 0):
            out[k] = v
    return out


@jobs.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@common_options
@click.pass_context
@handle_errors
def jobs_show(ctx: click.Context, job_id: int, as_json: bool, **common: Any) -> None:
    """Show every field of job JOB_ID."""
    app = load_app(**_merged(ctx, common))
    app.store.check_schema()
    job = app.get_job(_job_id(job_id))
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in job.__dict__.items()}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for k, v in data.items():
        if k == "last_error" and v:
            click.echo(f"{k.ljust(width)}  |")
            for line in str(v).splitlines():
                click.echo(f"  {line}")
            continue
        if k == "progress" and v is not None:
            message = data.get("progress_message")
            click.echo(f"{k.ljust(width)}  {v * 100:.4g}%{f' {message}' if message else ''}")
            continue
        click.echo(f"{k.ljust(width)}  {json.dumps(v) if isinstance(v, (list, dict)) else ('-' if v is None else v)}")


def _job_id(job_id: int) -> int:
    """A job id as given; a number outside the 64-bit range of ids names no job."""
    if not -(2**63) <= job_id < 2**63:
        raise JobNotFoundError(job_id)
    return job_id


def _job_action(action: str, done: str, doc: str) -> Callable[..., None]:
    @click.argument("job_id", type=int, required=False)
    @click.option("--state", "f_state", type=click.Choice(list(BULK_STATES[action])),
                  help=f"Every {action}able job in this state (default {BULK_STATES[action][0]}) matching the filters.")
    @click.option("--task", "f_task", metavar="NAME", help="Only jobs of this task.")
    @click.option("--queue", "f_queue", metavar="NAME", help="Only jobs of this queue.")
    @click.option("--schedule", "f_schedule", metavar="NAME", help="Only occurrences of this schedule.")
    @click.option("--from", "f_from", metavar="ISO8601", help="Only jobs created at or after (with a UTC offset).")
    @click.option("--to", "f_to", metavar="ISO8601", help="Only jobs created before (with a UTC offset).")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask before changing every matching job.")
    @common_options
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, job_id: int | None, f_state: str | None, f_task: str | None, f_queue: str | None,
                f_schedule: str | None, f_from: str | None, f_to: str | None, yes: bool, **common: Any) -> None:
        given = [f for f, v in (("--state", f_state), ("--task", f_task), ("--queue", f_queue), ("--schedule", f_schedule),
                                ("--from", f_from), ("--to", f_to)) if v]
        if job_id is not None and given:
            raise ConfigError(f"give a job ID or filters ({', '.join(given)}), not both", key="JOB_ID")
        if job_id is None:
            if not given:
                raise ConfigError(f"give a job ID, or filters (--state, --task, --queue, --schedule, --from, --to) to "
                                  f"{action} every matching job", key="JOB_ID")
            flt = JobFilter(f_state, f_task, f_queue, f_schedule, parse_instant(f_from, "--from") if f_from else None,
                            parse_instant(f_to, "--to") if f_to else None)
            app = load_app(**_merged(ctx, common))
            app.store.check_schema()
            _bulk_jobs(app, action, done, flt, yes)
            return
        app = load_app(**_merged(ctx, common))
        app.store.check_schema()
        job = getattr(app, action)(_job_id(job_id))
        if action == "cancel" and job.state == "running":
            click.echo(f"job {job.id} is running: cancel requested (its worker stops it if the task lets it; "
                       "a plain function must check current_job().cancel_requested)")
            return
        click.echo(f"job {job.id} {done}")

    command.__doc__ = doc
    return command


def _bulk_jobs(app: Linger, action: str, done: str, flt: JobFilter, yes: bool) -> None:
    """``jobs retry|cancel --state ... --task ...``: the job command applied to every match (the
    dashboard's bulk action, through the same code: :mod:`linger_sched.web.actions`)."""
    flt = dataclasses.replace(flt, state=bulk_state(action, flt.state))
    count = count_matching(app, flt)
    if count == 0:
        click.echo(f"no {flt.state} job matches: nothing to {action}")
        return
    if not yes:
        click.confirm(f"{action} {count} {flt.state} job(s)? (--yes skips this question)", abort=True)
    result = run_bulk(app, action, flt, limit=None)
    left = f"; {len(result.passed_over)} changed state meanwhile and were left alone" if result.passed_over else ""
    click.echo(f"{len(result.done)} job(s) {done}{left}")


jobs.command("retry")(_job_action("retry", "queued again", "Queue a failed, cancelled or skipped job again, due now."))
jobs.command("cancel")(_job_action("cancel", "cancelled", "Cancel a queued job, or ask a running one to stop."))


# -- schedules --------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--next", "next_n", type=click.IntRange(1, 1000), default=3, show_default=True, help="How many next fire times to show.")
@common_options
@click.pass_context
@handle_errors
def schedules(ctx: click.Context, next_n: int, **common: Any) -> None:
    """List schedules (or: schedules pause|resume|trigger|add|remove NAME)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = common
        return
    app = load_app(**common)
    app.store.check_schema()
    infos = app.schedules(next_n)
    if not infos:
        click.echo("no schedules (they are written when a node with a scheduler starts: linger-sched run)")
        return
    rows = []
    for s in infos:
        if not s.enabled:
            state = "disabled (not declared)" if s.disabled_reason == "not declared" else "disabled"
        elif s.paused:
            state = "paused"
        else:
            state = "error" if s.error is not None else "active"
        last = f"{fmt_time(s.last_run_at, s.tz)} {s.last_state or ''}".strip() if s.last_run_at else "-"
        nxt = ", ".join(fmt_time(t, s.tz) for t in s.next_runs) or "-"
        if s.error is not None and s.retry_at is not None:
            nxt = f"retry {fmt_time(s.retry_at, s.tz)}"
        rows.append([s.name, s.task, s.description, s.tz, nxt, last, s.source, state])
    click.echo(table(["NAME", "TASK", "WHEN", "TZ", "NEXT", "LAST", "SOURCE", "STATE"], rows))
    failing = [s for s in infos if s.error is not None]
    if failing:
        click.echo("")
        for s in failing:  # the others keep firing; a changed definition or pause + resume clears it
            click.echo(f"{s.name}: error since {fmt_time(s.error_since)}, retried at {fmt_time(s.retry_at)}: {s.error}")


def _schedule_action(action: str) -> Callable[..., None]:
    @common_options
    @click.argument("name")
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, name: str, **common: Any) -> None:
        app = load_app(**_merged(ctx, common))
        app.store.check_schema()
        if action == "trigger":
            job_id = app.trigger(name)
            click.echo(f"schedule {name} triggered: job {job_id}")
        elif getattr(app, action)(name) is False:  # resume of a schedule that is not paused
            click.echo(f"schedule {name} is not paused: nothing changed")
        else:
            click.echo(f"schedule {name} {action}d")

    command.__doc__ = {"pause": "Stop materializing NAME until resumed.",
                       "resume": "Resume NAME from its next fire time (the paused period is recorded as one skipped row).",
                       "trigger": "Run NAME now, outside its cadence (marked manual)."}[action]
    return command


for _action in ("pause", "resume", "trigger"):
    schedules.command(_action)(_schedule_action(_action))


@schedules.command("add")
@click.argument("name")
@click.option("--task", "task_name", required=True, help="The task's registered name (module.function).")
@click.option("--cron", metavar="EXPR", help="5-field cron expression (or --every).")
@click.option("--every", metavar="DURATION", help="Interval: 30s, 15m, 2h, 1d (or --cron).")
@click.option("--tz", metavar="ZONE", help="IANA zone of a cron schedule (default UTC).")
@click.option("--anchor", metavar="ISO8601", help="First fire time of an interval (with a UTC offset).")
@click.option("--args", "args_json", metavar="JSON", help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--queue", help="Queue of its jobs (default: the task's).")
@click.option("--priority", type=PRIORITY, help="Priority of its jobs (lower runs first).")
@click.option("--max-attempts", type=click.IntRange(1, 2**31 - 1), help="Attempts of each of its jobs.")
@click.option("--misfire", type=click.Choice(["coalesce", "all", "skip"]), help="Missed runs: coalesce (default), all, skip.")
@click.option("--misfire-grace", metavar="DURATION", help="Drop occurrences later than this.")
@click.option("--max-catch-up", type=click.IntRange(1, 100_000), help="With --misfire all: at most this many missed runs.")
@click.option("--overlap", type=click.Choice(["skip", "allow"]), help="While its previous job runs: skip (default) or allow.")
@click.option("--disabled", is_flag=True, help="Store it disabled.")
@common_options
@click.pass_context
@handle_errors
def schedules_add(ctx: click.Context, name: str, task_name: str, cron: str | None, every: str | None, tz: str | None,
                  anchor: str | None, args_json: str | None, kwargs_json: str | None, queue: str | None,
                  priority: int | None, max_attempts: int | None, misfire: str | None, misfire_grace: str | None,
                  max_catch_up: int | None, overlap: str | None, disabled: bool, **common: Any) -> None:
    """Create schedule NAME at runtime, stored in the database: it survives restarts and no
    node's start-up sync disables it (checked like a declared schedule)."""
    args = _json_arg(args_json, "--args", list, "a JSON array, e.g. '[1, \"a\"]'") if args_json is not None else None
    kwargs = _json_arg(kwargs_json, "--kwargs", dict, "a JSON object, e.g. '{\"user_id\": 1}'") if kwargs_json is not None else None
    when = parse_instant(anchor, "--anchor") if anchor else None
    app = load_app(**_merged(ctx, common))
    if task_name not in app.registry.tasks:
        click.echo(f"linger-sched: warning: task {task_name!r} is not registered in this process (use --import); "
                   "added by name: its jobs fail as an unknown task on nodes that do not register it", err=True)
    app.store.check_schema()
    info = app.add_schedule(name, task_name, cron=cron, every=every, tz=tz, anchor=when, args=args, kwargs=kwargs,
                            queue=queue, priority=priority, max_attempts=max_attempts, misfire=misfire,
                            misfire_grace=misfire_grace, max_catch_up=max_catch_up, overlap=overlap,
                            enabled=False if disabled else None)
    nxt = ", ".join(fmt_time(t, info.tz) for t in info.next_runs) or "-"
    click.echo(f"schedule {info.name} added (runtime): {info.task} {info.description}, next {nxt}")


@schedules.command("remove")
@click.argument("name")
@common_options
@click.pass_context
@handle_errors
def schedules_remove(ctx: click.Context, name: str, **common: Any) -> None:
    """Delete schedule NAME, created at runtime (schedules add); its jobs stay."""
    app = load_app(**_merged(ctx, common))
    app.store.check_schema()
    app.remove_schedule(name)
    click.echo(f"schedule {name} removed")


@main.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--no-import", "no_import", is_flag=True,
              help="Import nothing (for CI on files you do not trust): task names and arguments are then not checked.")
@common_options
@handle_errors
def validate(path: str | None, no_import: bool, imports: Sequence[str], config: str | None, verbose: int,
             log_level: str | None, database: str | None, app_path: str | None) -> None:
    """Check a schedules.yaml (default ./schedules.yaml) without touching the database.

    Every problem is printed, one per line, as FILE:LINE: KEY: MESSAGE (exit status 2).

    validate IMPORTS the modules named by the file's imports:, --import and --app, so their
    code runs: that is how their tasks register and how task names and arguments are checked.
    On a file you do not trust, pass --no-import: nothing is imported, task names and arguments
    are not checked, everything else is.

    --database is accepted like on every command but not used."""
    database, imports, app_path, config, verbose, log_level = with_root_options(
        database, imports, app_path, config, verbose, log_level)
    path = path or config or DEFAULT_CONFIG
    setup_logging(verbose, log_level)
    errors: list[ConfigError] = []
    defs = []
    reg = Registry()
    try:
        if not no_import:
            # --app names a module: found in the working directory, never in place of the stdlib
            allow_user_modules([app_path.partition(":")[0]] if app_path else [])
            try:
                import_modules(list(imports))
            except ConfigError as exc:
                raise ConfigError(exc.message, key="--import") from exc
        cfg = read_config_file(path, errors=errors)
        if not no_import:
            import_modules(cfg.imports, file=cfg.path, line=cfg.lines.get("imports"))
        app = app_object(None if no_import else app_path)
        defs = schedules_from_config(cfg, app.registry, errors=errors, check_tasks=not no_import)
        reg.tasks = dict(app.registry.tasks)
        reg.schedules = {k: v for k, v in app.registry.schedules.items() if not v.source.startswith(cfg.path + ":")}
        for d in defs:
            try:
                reg.add_schedule(d)
            except ConfigError as exc:
                errors.append(exc)
    except ConfigError as exc:  # the file cannot be read or parsed, or a module not imported: stop here
        errors.append(exc)
    if errors:
        problems = [e for exc in errors for e in getattr(exc, "errors", [exc])]
        for e in problems:
            click.echo(mask_url(str(e)).replace("\n", "\\n"), err=True)  # one problem per line
        fail(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}", 2)
    click.echo(f"{path}: ok ({len(defs)} schedule(s), {len(reg.tasks)} task(s))")
    for d in reg.schedules.values():
        click.echo(f"  {d.name}: {d.task} {d.spec.describe()}")
    if no_import:
        click.echo("note: --no-import: no module was imported, so task names and arguments were not checked")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
@handle_errors
def status(as_json: bool, **common: Any) -> None:
    """The leader, the nodes and their heartbeats, and job counts by state."""
    app = load_app(**common)
    app.store.check_schema()
    st = app.status()
    hashes = {n.registry_hash for n in st.nodes if "scheduler" in n.roles}
    if as_json:
        click.echo(json.dumps({
            "leader": None if st.leader is None else {"node": st.leader.holder, "epoch": st.leader.epoch,
                                                      "expires_at": st.leader.expires_at.isoformat(), "valid": st.leader.expires_at > st.db_now},
            "nodes": [{"id": n.id, "host": n.host, "pid": n.pid, "roles": n.roles, "registry": n.registry_hash,
                       "heartbeat_at": n.heartbeat_at.isoformat()} for n in st.nodes],
            "jobs": st.counts, "registries_differ": len(hashes) > 1,
            "schedule_errors": [{"name": r.name, "error": r.error, "since": r.error_since and r.error_since.isoformat(),
                                 "retry_at": r.next_run_at and r.next_run_at.isoformat()} for r in st.schedule_errors],
        }, indent=2))
        return
    if st.leader is None:
        click.echo("leader: none yet")
    elif st.leader.expires_at > st.db_now:
        click.echo(f"leader: {st.leader.holder} (epoch {st.leader.epoch}, lease valid until {fmt_time(st.leader.expires_at)})")
    else:  # released at a clean shutdown, or its node died: nobody leads until a scheduler takes over
        click.echo(f"leader: none (last was {st.leader.holder}, epoch {st.leader.epoch}; "
                   f"its lease EXPIRED at {fmt_time(st.leader.expires_at)})")
    click.echo(f"nodes: {len(st.nodes)}")
    if st.nodes:
        click.echo(table(["NODE", "ROLES", "REGISTRY", "STARTED", "HEARTBEAT"],
                         [[n.id, n.roles, n.registry_hash, fmt_time(n.started_at), f"{(st.db_now - n.heartbeat_at).total_seconds():.0f}s ago"] for n in st.nodes]))
    if len(hashes) > 1:
        click.echo("warning: scheduler nodes run different task/schedule registries (see REGISTRY)")
    counts = ", ".join(f"{k} {st.counts.get(k, 0)}" for k in ("queued", "running", "succeeded", "failed", "cancelled", "skipped"))
    click.echo(f"jobs: {counts}")
    if st.schedule_errors:
        click.echo(f"schedules in error: {len(st.schedule_errors)} (the others keep firing; see linger-sched schedules)")
        for r in st.schedule_errors:
            first_line = (r.error or "").strip().splitlines()[0] if (r.error or "").strip() else ""
            click.echo(f"  {r.name}: since {fmt_time(r.error_since)}, retried at {fmt_time(r.next_run_at)}: {first_line[:200]}")


# -- dashboard --------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than this machine's (127.0.0.1, ::1, localhost) needs "
                   "LINGER_DASHBOARD_USER and LINGER_DASHBOARD_PASSWORD (HTTP basic auth).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--read-only", is_flag=True, help="Hide every action and refuse every POST.")
@click.option("--tz", "display_tz", default="UTC", show_default=True, metavar="ZONE", help="The zone pages show times in.")
@common_options
@handle_errors
def dashboard(host: str, port: int, read_only: bool, display_tz: str, **common: Any) -> None:
    """Serve the dashboard (the [web] extra) until Ctrl-C: schedules, jobs, queues and nodes."""
    from .web import auth_from_env, check_exposure, serve

    check_exposure(host, auth_from_env(os.environ))  # before anything is read or bound
    app = load_app(**common)
    app.store.check_schema()

    def announce(text: str) -> None:
        click.echo(text)
        sys.stdout.flush()

    serve(app, host=host, port=port, read_only=read_only, tz=display_tz, announce=announce)


if __name__ == "__main__":  # pragma: no cover
    main()
