"""``linger-sched``: a thin click front end over :class:`~linger_sched.Linger`.

Exit status: 0 ok, 1 runtime error, 2 usage or configuration error (the message names what).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import sqlalchemy.exc

from . import __version__
from .app import Linger, default_app
from .clock import UTC, backoff, sleep
from .config import MAX_CONCURRENCY, MAX_SECONDS
from .configfile import allow_user_modules, import_modules, read_config_file, schedules_from_config
from .display import (
    Column,
    error_preview,
    fmt_duration,
    fmt_time,
    iso,
    plural,
    render_table,
    safe,
    terminal_width,
    truncate,
    wrap,
)
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
    StoreError,
    UnknownTaskError,
)
from .logs import FORMATS as LOG_FORMATS
from .logs import configure as configure_logging
from .registry import Registry
from .specs import parse_duration
from .store.dialect import mask_url
from .store.store import PRUNE_STATES
from .store.tables import FINISHED_STATES
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
            fail("\n".join([str(exc), *getattr(exc, "__notes__", ())]), 2)
        except SchemaError as exc:
            fail(as_typed(str(exc), kwargs), 1)
        except (JobNotFoundError, ScheduleNotFoundError, JobStateError, ScheduleStateError) as exc:
            fail(str(exc), 1)
        except LingerError as exc:
            fail(f"{type(exc).__name__}: {exc}", 1)
        except sqlalchemy.exc.SQLAlchemyError as exc:  # a driver error that escaped the store's translation
            fail(f"database error: {getattr(exc, 'orig', None) or exc}", 1)

    return wrapper


def as_typed(message: str, given: dict[str, Any]) -> str:
    """``message`` with each command it suggests (```linger-sched db init```) written as this one
    was: the same program (``flask linger``, ``manage.py linger``) and the options on its command
    line that choose the database (``--app``, ``--config``, ``--database``, ``--no-config``): run
    bare, it would act on another database. ``fail`` masks a password in a URL."""
    database, _, app_path, config, *_ = with_root_options(
        given.get("database"), (), given.get("app_path"), given.get("config"), 0, None)
    ctx = click.get_current_context(silent=True)
    while ctx is not None and getattr(ctx.command, "commands", None) is not main.commands:  # flask's group shares them
        ctx = ctx.parent
    prog = ctx.command_path if ctx is not None else "linger-sched"
    options = "".join(f" --{name} {shlex.quote(value)}" for name, value in
                      (("app", app_path), ("config", config), ("database", database)) if value)
    if ctx is not None and ctx.meta.get(NO_CONFIG):
        options += " --no-config"
    return message.replace("`linger-sched ", f"`{prog}{options} ")


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--database", "database", metavar="URL", help="Database URL (env LINGER_DATABASE_URL; default sqlite:///linger.db)."),
        click.option("--import", "imports", metavar="MODULE", multiple=True, help="Import MODULE so its tasks register (repeatable)."),
        click.option("--app", "app_path", metavar="MODULE:ATTR", help="Use the Linger app object MODULE:ATTR instead of the default app."),
        click.option("--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
                     help=f"schedules.yaml to load (default ./{DEFAULT_CONFIG} if present)."),
        click.option("--no-config", is_flag=True, expose_value=False, callback=_remember_no_config,
                     help=f"Read no schedules.yaml (not even ./{DEFAULT_CONFIG})."),
        click.option("-v", "--verbose", count=True, help="More logging (-v: debug)."),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), help="Log level."),
        click.option("--log-format", type=click.Choice(list(LOG_FORMATS), case_sensitive=False), expose_value=False,
                     callback=_remember_log_format,
                     help="Log lines as text (default) or one JSON object per line (env LINGER_LOG_FORMAT)."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


LOG_FORMAT = "linger_sched.log_format"  # ctx.meta key: the --log-format given (before or after the command)


def _remember_log_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # the command's own option comes after the root's: after wins
        ctx.meta[LOG_FORMAT] = value.lower()


NO_CONFIG = "linger_sched.no_config"  # ctx.meta key: --no-config given (before or after the command)


def _remember_no_config(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[NO_CONFIG] = True


def log_format() -> str:
    """``--log-format``, else ``LINGER_LOG_FORMAT``, else ``text``; :class:`ConfigError` for an
    unknown format in the environment."""
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(LOG_FORMAT) if ctx is not None else None
    if given:
        return str(given)
    env = os.environ.get("LINGER_LOG_FORMAT", "").strip().lower()
    if env and env not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {env!r}: use one of {', '.join(LOG_FORMATS)}", key="LINGER_LOG_FORMAT")
    return env or "text"


def setup_logging(verbose: int, level: str | None) -> None:
    if level:
        lvl = getattr(logging, level.upper())
    else:
        lvl = logging.DEBUG if verbose else logging.INFO
    configure_logging(lvl, log_format())


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
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(NO_CONFIG):
        if config:
            raise ConfigError(f"--config {config} and --no-config contradict each other: give one", key="--no-config")
        path = None
    else:
        path = config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if path is not None:
        try:
            app.load_config(path, cli=cli)
        except ConfigError as exc:
            if config is None:  # found, not named: say why it was read
                exc.add_note(f"(./{DEFAULT_CONFIG} was read because it is in the working directory: run the command "
                             "in your project's directory, name the file to read with --config PATH, or read none "
                             "with --no-config)")
            raise
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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else safe(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="linger-sched")
@common_options
@click.pass_context
def main(ctx: click.Context, /, **common: Any) -> None:
    """Background and recurring jobs out of a plain SQL table.

    The options below may be given before the command or after it (after wins; --import adds up)."""
    ctx.meta[ROOT_OPTIONS] = common


# -- db ---------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Create or upgrade the tables."""


@db.command("init")
@common_options
@handle_errors
def db_init(**common: Any) -> None:
    """Create the tables (idempotent); an older or newer schema is an error that says what to do."""
    app = load_app(**common)
    app.install_schema()
    app.store.check_schema()  # tables of another version are there: say so, not "schema ready"
    click.echo(f"schema ready in {app.store.display_url} (prefix {app.settings.table_prefix})")


@db.command("upgrade")
@common_options
@handle_errors
def db_upgrade(**common: Any) -> None:
    """Move an older schema forward to this version."""
    app = load_app(**common)
    before, after = app.store.upgrade_schema()
    where = f"{app.store.display_url} (prefix {app.settings.table_prefix})"
    if before == after:
        click.echo(f"schema already up to date (version {after}) in {where}")
    elif before is None:
        click.echo(f"no tables were there: schema version {after} installed in {where}")
    else:
        click.echo(f"schema upgraded from version {before} to {after} in {where}")


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
def metrics_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST",
                      help="Address of the --metrics-port server (the metrics name tasks and queues: keep it private).")(fn)
    return click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT",
                        help="Serve Prometheus /metrics and /healthz on this port (needs the [metrics] extra).")(fn)


@contextlib.contextmanager
def serving_metrics(app: Linger, host: str, port: int | None) -> Iterator[None]:
    """Serve /metrics and /healthz on ``host:port`` while the node runs (nothing when ``port``
    is None); a port in use or a missing prometheus-client is a usage error, before the node
    starts."""
    if port is None:
        yield
        return
    from .metrics import serve

    server = serve(app, host=host, port=port)  # logs the URL (action metrics_serving)
    try:
        yield
    finally:
        server.stop()


def wait_db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--wait-db", "wait_db", metavar="DURATION", default="0", show_default=True,
        help="Wait this long for an unreachable database at start (e.g. 60s under docker-compose), "
             "trying again with back-off and logging each attempt; 0: fail at once.")(fn)


def wait_for_database(app: Linger, text: str) -> None:
    """``--wait-db``: until the database answers a query, try again with back-off (0.5 s
    doubling to 5 s, never past the deadline), logging each failed attempt (action
    ``wait_db``); when the time is up, exit 1 naming the database and its last error.
    ``text``: the duration given; 0 tries once and lets the command fail as it would."""
    try:
        seconds = 0.0 if text.strip() in ("0", "0s") else parse_duration(text, field="--wait-db").total_seconds()
    except SpecError as exc:
        raise ConfigError(f"{exc.message}; got {text!r}", key="--wait-db") from None
    if seconds <= 0:
        return
    log = logging.getLogger(__name__)
    clock = app.clock
    deadline = clock.monotonic() + seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            app.store.db_now()
        except StoreError as exc:
            left = deadline - clock.monotonic()
            if left <= 0:
                fail(f"the database {app.store.display_url} is still unreachable after {seconds:g}s "
                     f"({plural(attempt, 'attempt')}; --wait-db): {exc}", 1)
            pause = min(backoff(attempt, base=0.5, cap=5.0), left)
            log.warning("database %s unreachable (attempt %d): %s; trying again in %.1fs (--wait-db: %.0fs left)",
                        app.store.display_url, attempt, exc, pause, left, extra={"action": "wait_db", "attempt": attempt})
            sleep(pause)
            continue
        if attempt > 1:
            log.info("database %s reachable (attempt %d)", app.store.display_url, attempt,
                     extra={"action": "db_reachable", "attempt": attempt})
        return


def announce(action: str, details: dict[str, Any]) -> None:
    """What a node tells its operator (see ``Linger.run``): a shutdown that waits for jobs and
    a forced one on stderr, a burst worker's summary on stdout."""
    if action == "shutdown_wait":
        jobs = details["jobs"]
        then = "go back to the queue" if details.get("hand_back") else "keep running under their lock"
        lines = [f"linger-sched: stopping: waiting up to {fmt_duration(details['grace'])} for "
                 f"{plural(len(jobs), 'running job')} to finish (after that, unfinished jobs {then}); "
                 "a second Ctrl-C or SIGTERM stops at once:"]
        lines += [f"  job {j['id']}  {safe(j['task'])}  running for {fmt_duration(j['running_for'])}" for j in jobs[:20]]
        if len(jobs) > 20:
            lines.append(f"  ... and {len(jobs) - 20} more")
        click.echo("\n".join(lines), err=True)
    elif action == "shutdown_forced":
        then = "handing the running jobs back to the queue" if details.get("hand_back") else "the running jobs keep their lock"
        click.echo(f"linger-sched: second signal: stopping now, {then}", err=True)
    elif action == "burst_summary":
        parts = [f"{details['succeeded']} succeeded", f"{details['failed']} failed"]
        parts += [f"{details[k]} {k}" for k in ("retried", "cancelled") if details.get(k)]
        click.echo(f"ran {plural(details['ran'], 'job')} in {fmt_duration(details['elapsed'])}: {', '.join(parts)}")


def node_announcer() -> Callable[[str, dict[str, Any]], None]:
    """:func:`announce` for the node of this command. With ``--log-format json`` stderr holds
    JSON lines only: the shutdown notices are left to their log records (``shutdown_wait``,
    ``shutdown_forced``, which carry the same details); the burst summary still goes to stdout."""
    if log_format() != "json":
        return announce

    def json_mode(action: str, details: dict[str, Any]) -> None:
        if action == "burst_summary":
            announce(action, details)

    return json_mode


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
@click.option("--burst", is_flag=True, help="Exit 0 once no due job is left, with a summary of the jobs run.")
@wait_db_option
@metrics_options
@common_options
@handle_errors
def worker(concurrency: int | None, queues: str | None, burst: bool, wait_db: str, metrics_host: str,
           metrics_port: int | None, **common: Any) -> None:
    """Run a worker (no scheduler) until SIGTERM/SIGINT (a second signal forces)."""
    app = load_app(**common, cli_settings={"concurrency": concurrency, "queues": queues})
    _warn_without_tasks(app)
    wait_for_database(app, wait_db)
    with serving_metrics(app, metrics_host, metrics_port):
        _exit_node(app.run(worker=True, scheduler=False, burst=burst, announce=node_announcer()))


def _warn_without_tasks(app: Linger) -> None:
    if not app.registry.tasks:
        click.echo("linger-sched: warning: no task is registered in this process, so every job claimed here fails "
                   "as an unknown task; pass --import MODULE or list modules under imports: in schedules.yaml", err=True)


@main.command()
@click.option("--concurrency", "-c", type=CONCURRENCY, help="Jobs run at once (threads).")
@click.option("--queues", "-q", metavar="A,B", help="Only claim jobs of these queues.")
@click.option("--no-worker", is_flag=True, help="Only schedule (no jobs run on this node).")
@click.option("--no-scheduler", is_flag=True, help="Only run jobs (never lead).")
@wait_db_option
@metrics_options
@common_options
@handle_errors
def run(concurrency: int | None, queues: str | None, no_worker: bool, no_scheduler: bool, wait_db: str,
        metrics_host: str, metrics_port: int | None, **common: Any) -> None:
    """Run a node: scheduler and worker, until SIGTERM/SIGINT (a second signal forces)."""
    if no_worker and no_scheduler:
        raise ConfigError("--no-worker and --no-scheduler together leave nothing to run", key="--no-worker")
    app = load_app(**common, cli_settings={"concurrency": concurrency, "queues": queues})
    wait_for_database(app, wait_db)
    app.install_schema()
    if not no_worker:
        _warn_without_tasks(app)
    with serving_metrics(app, metrics_host, metrics_port):
        _exit_node(app.run(worker=not no_worker, scheduler=not no_scheduler, announce=node_announcer()))


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
@click.option("--queue", "queue_name", metavar="NAME", help="Only jobs of this queue.")
@click.option("--schedule", "schedule_name", help="Only occurrences of this schedule.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of jobs (the keys of jobs show --json).")
@common_options
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, state: str | None, limit: int, task_name: str | None, queue_name: str | None,
         schedule_name: str | None, as_json: bool, **common: Any) -> None:
    """List jobs, newest first (or: jobs show|retry|cancel ID).

    DURATION is how long the last attempt ran (so far, for a running job). Below a job with
    an error, the line of it that says what went wrong (all of it: jobs show ID). Times are
    UTC."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = common
        return
    app = load_app(**common)
    app.store.check_schema()
    rows = app.jobs(state, limit, task=task_name, queue=queue_name, schedule_name=schedule_name)
    now = app.store.db_now() if any(j.state == "running" for j in rows) else None
    if as_json:
        click.echo(json.dumps([_job_json(j, now) for j in rows], indent=2))
        return
    width = terminal_width()
    columns = [Column("ID"), Column("TASK", shrink_to=16), Column("STATE"), Column("QUEUE", shrink_to=8), Column("ATTEMPTS"),
               Column("RUN_AT"), Column("DURATION")]
    details = []
    for j in rows:  # the line of its last error that says what went wrong; a skipped row's reason
        preview = error_preview(j.last_error)
        detail = f"last error: {preview}" if preview else f"reason: {j.reason}" if j.state == "skipped" and j.reason else None
        details.append(truncate(safe(detail), width - 2) if detail else None)
    click.echo(render_table(columns, [
        [str(j.id), j.task, j.state, j.queue, f"{j.attempts}/{j.max_attempts}", fmt_time(j.run_at),
         fmt_duration(_job_duration(j, now))] for j in rows], width=width, details=details))


def _job_duration(job: Any, now: datetime | None) -> float | None:
    """Seconds the job's last attempt ran: to its finish, or to ``now`` while it runs."""
    if job.started_at is None:
        return None
    end = job.finished_at if job.finished_at is not None else now if job.state == "running" else None
    return None if end is None else (end - job.started_at).total_seconds()


def _job_json(job: Any, now: datetime | None) -> dict[str, Any]:
    """A job as JSON: every field of :class:`~linger_sched.store.Job` by name (times ISO 8601
    in UTC), and ``duration`` (seconds, as in ``jobs``; null before it ran)."""
    data = {f.name: iso(v) if isinstance(v := getattr(job, f.name), datetime) else v for f in dataclasses.fields(job)}
    duration = _job_duration(job, now)
    data["duration"] = None if duration is None else round(duration, 3)
    return data


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
    data = _job_json(job, app.store.db_now() if job.state == "running" else None)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for k, v in data.items():
        if k == "last_error" and v:
            click.echo(f"{k.ljust(width)}  |")
            for line in str(v).splitlines():
                click.echo(f"  {safe(line)}")
            continue
        if k == "progress" and v is not None:
            message = data.get("progress_message")
            click.echo(f"{k.ljust(width)}  {v * 100:.4g}%{f' {safe(message)}' if message else ''}")
            continue
        if isinstance(getattr(job, k, None), datetime):
            v = fmt_time(getattr(job, k))
        elif k == "duration":
            v = fmt_duration(v)
        click.echo(f"{k.ljust(width)}  {json.dumps(v) if isinstance(v, (list, dict)) else ('-' if v is None else safe(v))}")


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


# -- retention --------------------------------------------------------------------------
@main.command()
@click.option("--older-than", default="7d", show_default=True, metavar="DURATION",
              help="Only jobs that finished at least this long ago (30m, 12h, 7d, 4w).")
@click.option("--state", "states", multiple=True, type=click.Choice(list(FINISHED_STATES)),
              help="Only jobs in this state (repeatable; default succeeded and cancelled, as LINGER_KEEP_FINISHED).")
@click.option("--dry-run", is_flag=True, help="Count the jobs it would delete; delete nothing.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Rows deleted per transaction (short transactions: the table is never locked for long).")
@common_options
@handle_errors
def prune(older_than: str, states: Sequence[str], dry_run: bool, batch_size: int, **common: Any) -> None:
    """Delete finished jobs that finished --older-than ago or more (retention on demand,
    beside the automatic LINGER_KEEP_FINISHED), in batches; print how many.

    Queued and running jobs are never deleted; failed and skipped ones only when named with
    --state. The job counts (status, dashboard) stay exact."""
    try:
        age = parse_duration(older_than, field="--older-than").total_seconds()
    except SpecError as exc:
        raise ConfigError(f"{exc.message}; got {older_than!r}", key="--older-than") from None
    if age > MAX_SECONDS:
        raise ConfigError(f"at most 100 years; got {older_than!r}", key="--older-than")
    chosen = list(dict.fromkeys(states)) or list(PRUNE_STATES)
    app = load_app(**common)
    app.store.check_schema()
    now = app.store.db_now()  # one cutoff for every batch
    before = f"finished before {fmt_time(now - timedelta(seconds=age))}"
    found = {}
    for st in chosen:  # a batch at a time, in id order: each finished row of the state is read once
        found[st], after = 0, 0
        while True:
            n, last = app.store.prune_after(after, age, now=now, limit=batch_size, state=st, dry_run=dry_run)
            found[st] += n
            if last is None:
                break
            after = last
    per_state = ", ".join(f"{st} {n}" for st, n in found.items())
    if dry_run:
        click.echo(f"would delete {plural(sum(found.values()), 'job')} {before} ({per_state}); nothing deleted (--dry-run)")
        return
    logging.getLogger(__name__).info("pruned %d jobs: %s", sum(found.values()), per_state,
                                     extra={"action": "prune", "deleted": found})
    click.echo(f"deleted {plural(sum(found.values()), 'job')} {before} ({per_state})")


# -- schedules --------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--next", "next_n", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="How many next fire times to show (one per line).")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (stable keys; times ISO 8601 in each schedule's zone).")
@common_options
@click.pass_context
@handle_errors
def schedules(ctx: click.Context, next_n: int, as_json: bool, **common: Any) -> None:
    """List schedules (or: schedules pause|resume|trigger|add|remove NAME).

    One schedule per row: its state, next fire time(s) and the outcome of its last run, with
    a line below saying when it fires, when it last ran, its task (when not named like the
    schedule) and whether it was added at runtime. Times are in the schedule's zone."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = common
        return
    app = load_app(**common)
    app.store.check_schema()
    infos = app.schedules(next_n)
    if as_json:
        click.echo(json.dumps([_schedule_json(s) for s in infos], indent=2))
        return
    if not infos:
        click.echo("no schedules (they are written when a node with a scheduler starts: linger-sched run)")
        return
    width = terminal_width()
    rows, details = [], []
    for s in infos:
        nxt = [fmt_time(t, s.tz) for t in _next_runs(s)] or ["-"]
        if s.error is not None and s.retry_at is not None:
            nxt = [f"retry {fmt_time(s.retry_at, s.tz)}"]
        rows.append([s.name, _schedule_state(s), nxt, s.last_state or "-"])
        detail = [s.description]
        if s.last_run_at is not None:
            detail.append(f"last run {fmt_time(s.last_run_at, s.tz)}")
        if s.task != s.name:
            detail.append(f"task {s.task}")
        if s.source != "declared":
            detail.append(f"added at {s.source}")
        if not s.enabled and s.disabled_reason:
            detail.append("disabled: no live node declares it" if s.disabled_reason == "not declared"
                          else f"disabled ({s.disabled_reason})")
        details.append("; ".join(detail))
    columns = [Column("NAME", shrink_to=16, wrap=True), Column("STATE"), Column("NEXT"), Column("LAST", shrink_to=6)]
    click.echo(render_table(columns, rows, width=width, details=details))
    failing = [s for s in infos if s.error is not None]
    if failing:
        click.echo("")
        for s in failing:  # the others keep firing; a changed definition or pause + resume clears it
            text = (f"{s.name}: error since {fmt_time(s.error_since, s.tz)}, retried at {fmt_time(s.retry_at, s.tz)}: "
                    f"{error_preview(s.error)}")
            click.echo("\n  ".join(wrap(safe(text), width - 2)))


def _schedule_state(s: Any) -> str:
    """active, paused, error or disabled (a schedule no live node declares is disabled too)."""
    if not s.enabled:
        return "disabled"
    if s.paused:
        return "paused"
    return "error" if s.error is not None else "active"


def _next_runs(s: Any) -> list[datetime]:
    """The fire times to come: none while paused or disabled (a resumed schedule starts from
    its first fire time after the resume)."""
    return [] if s.paused or not s.enabled else list(s.next_runs)


def _schedule_json(s: Any) -> dict[str, Any]:
    return {
        "name": s.name, "task": s.task, "spec": s.spec, "description": s.description, "tz": s.tz, "source": s.source,
        "state": _schedule_state(s), "enabled": s.enabled, "paused": s.paused, "disabled_reason": s.disabled_reason,
        "next_runs": [iso(t, s.tz) for t in _next_runs(s)], "last_run_at": iso(s.last_run_at, s.tz),
        "last_state": s.last_state, "error": s.error, "error_since": iso(s.error_since, s.tz),
        "retry_at": iso(s.retry_at, s.tz),
    }


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
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable keys; times ISO 8601 with offset).")
@common_options
@handle_errors
def status(as_json: bool, **common: Any) -> None:
    """The leader, the nodes and their heartbeats (lost: none for node_lost_after), and job
    counts by state."""
    app = load_app(**common)
    app.store.check_schema()
    st = app.status()
    live = [n for n in st.nodes if not st.is_lost(n)]
    hashes = {n.registry_hash for n in live if "scheduler" in n.roles}
    states = ("queued", "running", "succeeded", "failed", "cancelled", "skipped")
    if as_json:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.astimezone(timezone.utc).isoformat()

        lease = st.leader
        click.echo(json.dumps({
            "db_now": iso(st.db_now),
            "leader": None if lease is None else {
                "node": lease.holder, "epoch": lease.epoch, "state": st.leader_state, "expires_at": iso(lease.expires_at),
                "valid": st.leader_state == "held"},
            "nodes": [{"id": n.id, "host": n.host, "pid": n.pid, "roles": n.roles, "registry": n.registry_hash,
                       "version": n.version, "started_at": iso(n.started_at), "heartbeat_at": iso(n.heartbeat_at),
                       "heartbeat_age": round((st.db_now - n.heartbeat_at).total_seconds(), 3), "lost": st.is_lost(n)}
                      for n in st.nodes],
            "node_lost_after": st.node_lost_after,
            "jobs": {k: st.counts.get(k, 0) for k in states}, "registries_differ": len(hashes) > 1,
            "schedule_errors": [{"name": r.name, "error": r.error, "since": iso(r.error_since), "retry_at": iso(r.next_run_at)}
                                for r in st.schedule_errors],
        }, indent=2))
        return
    lease = st.leader
    if lease is None:
        click.echo("leader: none yet")
    elif st.leader_state == "held":
        click.echo(f"leader: {lease.holder} (epoch {lease.epoch}, lease valid until {fmt_time(lease.expires_at)})")
    elif st.leader_state == "released":  # a clean shutdown: a peer with a scheduler takes over on its next tick
        click.echo(f"leader: none (last was {lease.holder}, epoch {lease.epoch}; it released the lease at "
                   f"{fmt_time(lease.expires_at)} when it stopped)")
    else:  # its node died or hangs: a peer takes over now that the lease expired
        click.echo(f"leader: none (last was {lease.holder}, epoch {lease.epoch}; its lease expired at "
                   f"{fmt_time(lease.expires_at)} without a renewal)")
    lost = len(st.nodes) - len(live)
    click.echo(f"nodes: {len(st.nodes)}" + (f" ({lost} lost: no heartbeat for more than {st.node_lost_after:g}s)" if lost else ""))
    if st.nodes:
        click.echo(table(["NODE", "ROLES", "STATE", "REGISTRY", "STARTED", "HEARTBEAT"],
                         [[n.id, n.roles, "LOST" if st.is_lost(n) else "live", n.registry_hash, fmt_time(n.started_at),
                           f"{(st.db_now - n.heartbeat_at).total_seconds():.0f}s ago"] for n in st.nodes]))
    if len(hashes) > 1:
        click.echo("warning: scheduler nodes run different task/schedule registries (see REGISTRY)")
    counts = ", ".join(f"{k} {st.counts.get(k, 0)}" for k in states)
    click.echo(f"jobs: {counts}")
    if st.schedule_errors:
        click.echo(f"schedules in error: {len(st.schedule_errors)} (the others keep firing; see linger-sched schedules)")
        for r in st.schedule_errors:
            first_line = (r.error or "").strip().splitlines()[0] if (r.error or "").strip() else ""
            click.echo(f"  {r.name}: since {fmt_time(r.error_since)}, retried at {fmt_time(r.next_run_at)}: {first_line[:200]}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="The report as JSON, with each check's details.")
@common_options
@handle_errors
def health(as_json: bool, **common: Any) -> None:
    """Check the whole installation: a leader, no overdue schedule, the nodes' heartbeats,
    stuck jobs, the failure rate and the queue age. Exit status 0 healthy, 1 degraded,
    2 unhealthy (also when the database cannot be read), 3 unknown: the check itself could
    not run (a bad setting), as monitoring plugins expect."""
    try:
        app = load_app(**common)
        report = app.health()
    except USAGE_ERRORS as exc:
        fail(f"UNKNOWN: cannot check health: {exc}", 3)
    if as_json:
        click.echo(json.dumps(report.as_dict(details=True), indent=2))
        sys.exit(report.exit_code)
    when = f" at {fmt_time(report.checked_at)}" if report.checked_at is not None else ""
    click.echo(f"{report.status.upper()}{when}")
    click.echo(table(["CHECK", "STATUS", "MESSAGE"],
                     [[c.name, c.status if c.status == "healthy" else c.status.upper(), c.message] for c in report.checks]))
    for c in report.checks:
        if c.details.get("error"):  # the driver's words: shown here, not on /healthz
            click.echo(f"{c.name}: {mask_url(str(c.details['error']))}", err=True)
    sys.exit(report.exit_code)


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
