"""Flask integration: settings from ``app.config``, the CLI as ``flask linger ...``, and an
opt-in node inside each web worker process (``pip install linger-sched[flask]``).

    from flask import Flask
    from linger_sched import Linger
    from linger_sched.contrib.flask import LingerFlask

    jobs = Linger()                  # your tasks register here: @jobs.task
    ext = LingerFlask(linger=jobs)   # or LingerFlask(app, jobs)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["LINGER_RUN_NODE"] = True
        ext.init_app(app)
        return app

Settings (``app.config``): ``LINGER_DATABASE_URL`` (else the ``LINGER_DATABASE_URL``
environment variable or a URL given to ``Linger(...)``, else ``SQLALCHEMY_DATABASE_URI``, a
relative SQLite path in it resolved in ``app.instance_path`` as Flask-SQLAlchemy does), every
other setting of :class:`linger_sched.config.Settings` as ``LINGER_<NAME>`` (``LINGER_CONCURRENCY``,
``LINGER_TABLE_PREFIX``, ``LINGER_SHUTDOWN_GRACE``, ...), and ``LINGER_RUN_NODE``. An unknown
``LINGER_*`` key, or a bad value, is a :class:`~linger_sched.errors.ConfigError` naming it. The
state of each Flask app is in ``app.extensions["linger_sched"]``; the extension keeps no app.

``LINGER_RUN_NODE = True`` runs a node (worker and scheduler) in each process that serves the
app: started by ``init_app`` in a serving process (a gunicorn/uWSGI/waitress worker, the
serving child of ``flask run``'s reloader), never in a process that only loads the app (``flask
linger ...``, ``flask shell``, the reloader's parent, a gunicorn master that preloads the app),
and otherwise at the first request. After a fork the child never uses its parent's node or
connections: it starts a node of its own (at once in a worker forked by a preloading gunicorn
master, else at its first request). The node stops gracefully at interpreter exit (gunicorn's
SIGTERM to a worker; SIGTERM to a server that leaves it to Python, like ``flask run``, exits
the same way). Keep ``LINGER_SHUTDOWN_GRACE`` below the server's own graceful timeout
(gunicorn: 30 s) so that running jobs are handed back before the server kills the worker.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import sys
import threading
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import make_url

from .. import cli as linger_cli
from ..app import Linger, default_app
from ..config import ENV_VARS, Settings, check_value, coerce_setting, parse_queues
from ..errors import ConfigError, LingerError, SpecError
from ..specs import parse_duration
from ..store.dialect import mask_url, normalize_url, relative_database_file

if TYPE_CHECKING:
    from types import FrameType

log = logging.getLogger(__name__)

EXTENSION_KEY = "linger_sched"
# app.config key -> Settings field: every setting, LINGER_<NAME>
SETTING_KEYS: dict[str, str] = {f"LINGER_{f.name.upper()}": f.name for f in dataclasses.fields(Settings)}
RUN_NODE_KEY = "LINGER_RUN_NODE"
KNOWN_KEYS = (*SETTING_KEYS, RUN_NODE_KEY)
_DURATIONS = {name for name, kind in ENV_VARS.values() if kind == "duration"}
_MAY_BE_NONE = ("misfire_threshold", "keep_finished", "auto_install")
RETRY_START_AFTER = 30.0  # seconds between two attempts to start a node at a request


def _where(key: str) -> str:
    return f"app.config[{key!r}]"


def _boolean(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"must be True or False, got {raw!r}", key=where)


def _database_url(raw: Any, where: str) -> str:
    if hasattr(raw, "render_as_string"):  # a sqlalchemy.URL
        raw = raw.render_as_string(hide_password=False)
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"must be a database URL, got {mask_url(repr(raw))}", key=where)
    try:
        normalize_url(raw)  # a bad URL is refused here, named by its key, not at the first enqueue
    except ConfigError as exc:
        raise ConfigError(exc.message, key=where) from None
    return raw


def setting_value(key: str, raw: Any) -> Any:
    """The value of setting ``key`` (``LINGER_CONCURRENCY``, ...) given in ``app.config`` as
    ``raw``: a Python value (``4``, ``timedelta(minutes=1)``, ``["mail"]``) or a string as in the
    environment (``"4"``, ``"1m"``, ``"mail,sms"``). :class:`ConfigError` naming the key otherwise."""
    name, where = SETTING_KEYS[key], _where(key)
    if raw is None:
        if name in _MAY_BE_NONE:
            return None
        raise ConfigError("must not be None (leave the key out for the default)", key=where)
    try:
        if name == "database_url":
            return _database_url(raw, where)
        if name == "table_prefix":
            value: Any = raw
        elif name == "queues":
            value = parse_queues(raw, where)
        elif name == "auto_install":
            value = _boolean(raw, where)
        elif name == "concurrency":
            if isinstance(raw, str) and raw.strip().isdigit():
                raw = int(raw)
            value = raw
        elif name in _DURATIONS or name == "clock_offset":
            if isinstance(raw, timedelta):
                value = raw.total_seconds()
            elif isinstance(raw, str):
                value = parse_duration(raw, field=where).total_seconds() if name != "clock_offset" else float(raw)
            else:
                value = raw
        else:  # the environment's parser (ENV_VARS): "25%" for a rate, "1048576" for a size, ...
            return coerce_setting(name, raw, where)
    except SpecError as exc:
        raise ConfigError(f"{exc}; got {raw!r}", key=where) from None
    except ValueError as exc:
        raise ConfigError(f"invalid value {raw!r}: {exc}", key=where) from None
    check_value(name, value, where)
    return value


def settings_from_config(config: Any, *, instance_path: str | None = None,
                         database_url_given: bool = False) -> tuple[dict[str, Any], bool]:
    """The settings ``LINGER_*`` keys of a Flask ``config`` give (field name -> value) and
    ``LINGER_RUN_NODE``. ``SQLALCHEMY_DATABASE_URI`` is the database when ``LINGER_DATABASE_URL``
    is not in the config and ``database_url_given`` is false (no environment variable, no URL
    given to ``Linger``). Raises :class:`ConfigError` naming the key that is unknown or wrong."""
    unknown = sorted(k for k in config if isinstance(k, str) and k.startswith("LINGER_") and k not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown linger-sched setting (known: {', '.join(KNOWN_KEYS)})", key=_where(unknown[0]))
    values = {SETTING_KEYS[k]: setting_value(k, config[k]) for k in SETTING_KEYS if k in config}
    if "database_url" in values and values["database_url"] is None:  # pragma: no cover - refused above
        del values["database_url"]
    sqlalchemy_uri = config.get("SQLALCHEMY_DATABASE_URI")
    if "database_url" not in values and not database_url_given and sqlalchemy_uri:
        url = _database_url(sqlalchemy_uri, _where("SQLALCHEMY_DATABASE_URI"))
        values["database_url"] = _in_instance_path(url, instance_path)
    run_node = _boolean(config[RUN_NODE_KEY], _where(RUN_NODE_KEY)) if config.get(RUN_NODE_KEY) is not None else False
    return values, run_node


def _in_instance_path(url: str, instance_path: str | None) -> str:
    """A relative database file resolved in the app's instance folder, where Flask-SQLAlchemy
    puts that file, so that both use one database."""
    path = relative_database_file(url)
    if path is None or instance_path is None:
        return url
    os.makedirs(instance_path, exist_ok=True)
    return make_url(url).set(database=os.path.join(instance_path, path)).render_as_string(hide_password=False)


@dataclass
class FlaskState:
    """What ``init_app`` stores in ``app.extensions["linger_sched"]``."""

    extension: LingerFlask
    linger: Linger
    run_node: bool
    settings: dict[str, Any]


class LingerFlask:
    """The Flask extension: ``LingerFlask(app, linger)`` or ``LingerFlask(linger=linger)`` and
    ``init_app(app)`` in an app factory. ``linger`` is the :class:`~linger_sched.Linger` app your
    tasks are registered on (default: :func:`linger_sched.default_app`, the one of ``@task``)."""

    def __init__(self, app: Flask | None = None, linger: Linger | None = None) -> None:
        self.linger = linger if linger is not None else default_app()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure the Linger app from ``app.config``, add ``flask linger ...``, and with
        ``LINGER_RUN_NODE`` run a node in the processes that serve ``app``."""
        if EXTENSION_KEY in app.extensions:
            raise LingerError(f"linger-sched is already initialized on Flask app {app.name!r}: call init_app once per app")
        linger = self.linger
        # a URL in the environment or given to Linger(...) beats SQLALCHEMY_DATABASE_URI; one an
        # earlier Flask app's config set does not
        given = bool(os.environ.get("LINGER_DATABASE_URL")) or (
            "database_url" in linger._explicit and "database_url" not in _flask_keys.get(linger, ()))
        values, run_node = settings_from_config(app.config, instance_path=app.instance_path, database_url_given=given)
        _configure(linger, values)
        app.extensions[EXTENSION_KEY] = FlaskState(self, linger, run_node, values)
        app.cli.add_command(cli_group())
        if run_node:
            runner = web_node(linger)
            app.before_request(runner.ensure_started_for_request)
            runner.start_if_serving()


# per Linger app: the settings that a Flask app's config gave it
_flask_keys: weakref.WeakKeyDictionary[Linger, set[str]] = weakref.WeakKeyDictionary()


def _configure(linger: Linger, values: dict[str, Any]) -> None:
    """Apply the settings of a Flask app's config (the others stay as they are)."""
    try:
        target = dataclasses.replace(linger.settings, **values)
    except ConfigError as exc:  # a check across settings (renew_interval < lease_ttl): name the key
        key = next((k for k, name in SETTING_KEYS.items() if name == exc.key), None)
        raise ConfigError(exc.message, key=_where(key) if key else exc.key) from None
    if target != linger.settings:
        if linger._node is not None:
            raise ConfigError(f"its node is running, so its settings cannot change ({', '.join(sorted(values))})",
                              key="LingerFlask.init_app")
        linger.configure(**{k: v for k, v in values.items() if v is not None})
        linger.settings = target  # None (misfire_threshold, keep_finished, auto_install) is a value here
    # Flask's config ranks with arguments given to Linger(...): above the environment and a
    # schedules.yaml that `flask linger ...` may read
    linger._explicit.update({k: v for k, v in values.items() if v is not None})
    _flask_keys.setdefault(linger, set()).update(values)


def linger_for(app: Flask | None = None) -> Linger:
    """The Linger app of Flask ``app`` (default: ``flask.current_app``)."""
    flask_app = app if app is not None else current_app
    state = flask_app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, FlaskState):
        raise LingerError(f"linger-sched is not initialized on Flask app {flask_app.name!r}: call LingerFlask(...).init_app(app)")
    return state.linger


# -- flask linger ... ---------------------------------------------------------------------
def cli_group() -> click.Group:
    """The ``linger-sched`` commands as ``flask linger ...``, on the Flask app's Linger app and
    settings (``--app MODULE:ATTR`` and ``--database`` still override them)."""

    main = linger_cli.main

    @click.pass_context
    def callback(ctx: click.Context, /, **common: Any) -> None:
        linger = linger_for()
        ctx.meta[linger_cli.APP_PROVIDER] = lambda: linger
        if main.callback is not None:
            ctx.invoke(main.callback, **common)  # linger-sched's own group: the options given before the command

    return click.Group(
        "linger", commands=main.commands, params=list(main.params),
        callback=with_appcontext(callback), context_settings=dict(main.context_settings),
        help="linger-sched's commands on this Flask app's jobs (settings from app.config).",
    )


# -- a node in each web process -----------------------------------------------------------
class WebNode:
    """The node of one Linger app inside the processes that serve it: at most one per process,
    never shared across a fork, stopped at exit."""

    def __init__(self, linger: Linger) -> None:
        self.linger = linger
        self.pid: int | None = None  # the process whose node is running
        self.start_in_children = False  # set in a gunicorn master that preloads the app
        self.retry_at: float | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    @property
    def running(self) -> bool:
        return self.pid == os.getpid() and self.linger._node is not None

    def start_if_serving(self) -> None:
        """At ``init_app``: start now in a process that serves requests; in a preloading
        gunicorn master, let each forked worker start its own."""
        if _preloading_gunicorn_master():
            self.start_in_children = True
            log.info("app preloaded by the gunicorn master: each worker starts a node after the fork",
                     extra={"action": "web_node_deferred"})
            return
        if _serving_process():
            self.start()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self.linger.start()
            self.pid = os.getpid()
            self.retry_at = None
            # after Linger.start's own exit hook, so that this one runs first (atexit is LIFO)
            atexit.unregister(self.stop)
            atexit.register(self.stop)
        _stop_on_sigterm()
        log.info("node %s started in web process %d", self.linger.node_id, os.getpid(), extra={"action": "web_node_started"})

    def ensure_started_for_request(self) -> None:
        """``before_request``: a process without its node (forked after the app was loaded, or
        one that was not recognised as serving) starts it; a failure is logged, the request goes
        on, and the start is tried again later."""
        if self.pid == os.getpid():
            return
        now = self.linger.clock.monotonic()
        if self.retry_at is not None and now < self.retry_at:
            return
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - a request must not fail because the node cannot start
            self.retry_at = now + RETRY_START_AFTER
            log.error("could not start the linger-sched node in web process %d: %s (tried again in %gs)",
                      os.getpid(), mask_url(str(exc)), RETRY_START_AFTER, extra={"action": "web_node_error"})

    def stop(self) -> None:
        """Graceful stop of this process's node (at exit): running jobs get the shutdown grace,
        the rest is handed back, the leader lease released."""
        with self._lock:  # after a start in progress
            if self.running:
                self.linger.stop(hand_back_running=True)  # the process exits right after

    def _after_fork_in_child(self) -> None:
        # The parent's node has no threads here, and its connections are the parent's: forget
        # both (never stop or close them, that would end the parent's lease and jobs).
        self._lock = threading.Lock()
        linger = self.linger
        if self.pid is not None:
            linger._node = None
            self.pid = None
        # a store of its own: new engine, pool and statement cache (a lock of the parent's,
        # held by one of its threads at the fork, would never be released here)
        linger._store_lock = threading.Lock()
        linger._store, linger._store_pid = None, os.getpid()
        self.retry_at = None
        if self.start_in_children:
            self.start_in_children = False  # a worker's own forks start nothing
            # on a thread: the worker boots (and installs its signal handlers) at once
            threading.Thread(target=self._start_after_fork, name="linger-web-start", daemon=True).start()

    def _start_after_fork(self) -> None:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - the worker serves on; its first request tries again
            log.error("could not start the linger-sched node after the fork: %s", mask_url(str(exc)),
                      extra={"action": "web_node_error"})


_web_nodes: weakref.WeakKeyDictionary[Linger, WebNode] = weakref.WeakKeyDictionary()
_web_nodes_lock = threading.Lock()


def web_node(linger: Linger) -> WebNode:
    """The :class:`WebNode` of ``linger`` (one per Linger app, whatever the Flask apps)."""
    with _web_nodes_lock:
        node = _web_nodes.get(linger)
        if node is None:
            node = _web_nodes[linger] = WebNode(linger)
        return node


def _preloading_gunicorn_master() -> bool:
    """Whether a gunicorn master is loading the app before it forks its workers (preload_app)."""
    if "gunicorn.arbiter" not in sys.modules:
        return False
    arbiter, worker = os.path.join("gunicorn", "arbiter.py"), os.path.join("gunicorn", "workers", "")
    frame: FrameType | None = sys._getframe(1)
    preloading = False
    while frame is not None:
        code = frame.f_code
        if worker in code.co_filename:
            return False  # a worker loading the app after its fork (its stack starts in the arbiter too)
        preloading = preloading or (code.co_filename.endswith(arbiter) and code.co_name == "setup")
        frame = frame.f_back
    return preloading


def _serving_process() -> bool:
    """False while the ``flask`` command loads the app for anything but serving it (``flask
    linger``, ``flask shell``, ...) or in the parent of ``flask run``'s reloader."""
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return True  # gunicorn, uWSGI, waitress, a script: whoever imports the app serves it
    from flask.cli import run_command
    from flask.helpers import get_debug_flag

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command is not run_command:
        return False
    reload = ctx.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    return not reload or os.environ.get("WERKZEUG_RUN_MAIN") == "true"


def _stop_on_sigterm() -> None:
    """A server that leaves SIGTERM to Python (``flask run``, waitress) would die without
    running ``atexit``: exit through Python instead, so the node stops gracefully. A server
    with its own handler (gunicorn) keeps it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)
