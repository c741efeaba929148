"""The dashboard's Flask app: routes, guards (auth, CSRF, read-only), headers and error pages.
Pages are Jinja2 templates with autoescape on; nothing stored is ever marked safe.

Every state-changing request is a POST with the CSRF token, answered by a redirect to the page
that shows the change (so a reload never repeats it); GET never changes anything."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from .. import health, metrics
from ..errors import ConfigError, JobNotFoundError, LingerError, ScheduleNotFoundError, StoreError
from ..registry import build_schedule
from ..store.dialect import mask_url
from ..store.tables import JOB_STATES
from . import queries
from .actions import BULK_LIMIT, BULK_STATES, JobFilter, bulk_state, count_matching, run_bulk
from .security import HEADERS, BasicAuth, Csrf

if TYPE_CHECKING:
    from ..app import Linger
    from ..metrics import Metrics

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PAGE_SIZE = 50
NEXT_FIRES_LIST = 3  # fire times per schedule on the Schedules page
NEXT_FIRES_PAGE = 10  # on a schedule's page and in a preview
FRAGMENT_HEADER = "X-Linger-Fragment"
MAX_FIELD = 10_000  # characters of one form field or query argument

# what the page says after a redirect (?done=CODE): fixed texts, never text from the URL
NOTICES = {
    "paused": "Schedule paused.",
    "resumed": "Schedule resumed from its next fire time.",
    "not-paused": "The schedule was not paused: nothing changed.",
    "triggered": "Schedule triggered: job #{n} queued.",
    "retried": "Job queued again.",
    "cancelled": "Job cancelled.",
    "cancel-requested": "Cancellation requested: the running job is told at its next heartbeat.",
    "bulk-retry": "{n} job(s) queued again.",
    "bulk-cancel": "{n} job(s) cancelled (or their cancellation requested).",
    "added": "Schedule added.",
    "updated": "Schedule updated.",
    "removed": "Schedule removed (its jobs stay).",
}


class Problem(Exception):
    """A request the dashboard refuses, with its status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def build(
    linger: Linger, *, auth: Callable[[Any], Any] | None, read_only: bool, title: str, tz: str,
    refresh: float, secret_key: bytes | str | None,
) -> Flask:
    """The dashboard of ``linger`` as a Flask app (see :func:`linger_sched.web.make_app`)."""
    zone = ZoneInfo(tz)
    csrf = Csrf(secret_key)
    web = Flask("linger_sched.web", root_path=str(HERE), template_folder="templates", static_folder="static")
    web.config.update(MAX_CONTENT_LENGTH=256 * 1024, TEMPLATES_AUTO_RELOAD=False, JSON_SORT_KEYS=False)
    web.jinja_env.autoescape = True
    web.jinja_env.trim_blocks = True
    web.jinja_env.lstrip_blocks = True
    web.extensions["linger"] = linger
    runtime = all(hasattr(linger, m) for m in ("add_schedule", "update_schedule", "remove_schedule"))
    charts = queries.ChartCache()

    # -- formatting helpers for the templates -------------------------------------------
    def fmt(value: datetime | None, zone_name: str | None = None, seconds: bool = True) -> str:
        if value is None:
            return "-"
        try:
            where = ZoneInfo(zone_name) if zone_name else zone
        except (ValueError, KeyError):  # a zone a stored row names that this machine lacks
            where = zone
        local = value.astimezone(where)
        return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + f" {local.tzname()}"

    def clock(value: datetime) -> str:
        return value.astimezone(zone).strftime("%H:%M:%S")

    def ago(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        s = abs(seconds)
        text = f"{s:.1f}s" if s < 10 else f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else (
            f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.1f}d")
        return text

    def since(value: datetime | None) -> float | None:
        return None if value is None else (g.now - value).total_seconds()

    def query(**changes: Any) -> str:
        """The current query string with ``changes`` (None removes a key)."""
        args = {k: v for k, v in request.args.items() if k not in ("done", "n")}
        for k, v in changes.items():
            if v is None:
                args.pop(k, None)
            else:
                args[k] = str(v)
        return "?" + urlencode(args) if args else ""

    def notice() -> str | None:
        text = NOTICES.get(request.args.get("done", ""))
        if text is None:
            return None
        n = request.args.get("n", "")
        return text.format(n=int(n) if n.isdigit() else "?")

    web.jinja_env.globals.update(
        fmt=fmt, clock=clock, ago=ago, since=since, query=query, notice=notice, title=title, read_only=read_only, states=JOB_STATES,
        zone_name=tz, refresh=refresh, runtime=runtime, outcome=queries.outcome, pretty=queries.pretty,
        bulk_states=BULK_STATES,
    )

    # -- guards and headers ---------------------------------------------------------------
    @web.before_request
    def guard() -> Any:
        if request.endpoint == "healthz":
            # probes carry no credentials; the answer holds statuses and messages only (no
            # details, no stored text), is read-only, and is computed at most once a second
            return None
        if auth is not None and not auth(request._get_current_object()):  # type: ignore[attr-defined]
            challenge = getattr(auth, "challenge", None)
            if isinstance(auth, BasicAuth) or challenge:
                return Response("authentication required\n", 401, {"WWW-Authenticate": challenge or BasicAuth.challenge},
                                mimetype="text/plain")
            return Response("forbidden\n", 403, mimetype="text/plain")
        token = request.cookies.get(csrf.cookie)
        g.new_csrf = None if csrf.valid(token) else csrf.new_token()
        g.csrf_token = g.new_csrf or token
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if read_only:
                return Response("read-only dashboard: actions are refused\n", 403, mimetype="text/plain")
            if not csrf.accepts(token, request.form.get(csrf.field)):
                return Response("CSRF token missing or wrong: reload the page and try again\n", 403,
                                mimetype="text/plain")
        return None

    @web.after_request
    def headers(response: Response) -> Response:
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        new = getattr(g, "new_csrf", None)
        if new is not None:
            response.set_cookie(csrf.cookie, new, path=request.script_root or "/", httponly=True, samesite="Strict",
                                secure=request.is_secure)
        return response

    web.jinja_env.globals["csrf_field"] = csrf.field
    web.jinja_env.globals["csrf_token"] = lambda: g.csrf_token

    # -- errors -------------------------------------------------------------------------
    def error_page(status: int, message: str) -> tuple[str, int]:
        return render_template("error.html", layout=layout(), now=g.get("now"), status=status, message=message), status

    @web.errorhandler(Problem)
    def on_problem(exc: Problem) -> tuple[str, int]:
        return error_page(exc.status, exc.message)

    @web.errorhandler(JobNotFoundError)
    @web.errorhandler(ScheduleNotFoundError)
    def on_missing(exc: LingerError) -> tuple[str, int]:
        return error_page(404, str(exc))

    @web.errorhandler(ConfigError)
    def on_bad_input(exc: ConfigError) -> tuple[str, int]:
        return error_page(400, str(exc))

    @web.errorhandler(StoreError)
    def on_store(exc: StoreError) -> tuple[str, int]:
        log.error("dashboard: %s", exc, extra={"action": "dashboard_store_error"})
        return error_page(503, f"the database could not be read: {mask_url(str(exc))}")

    @web.errorhandler(LingerError)
    def on_refused(exc: LingerError) -> tuple[str, int]:
        return error_page(409, str(exc))

    @web.errorhandler(HTTPException)
    def on_http(exc: HTTPException) -> Any:
        if exc.code is None or exc.code < 400:
            return exc
        return error_page(exc.code, exc.description or exc.name)

    # -- helpers ------------------------------------------------------------------------
    def layout() -> str:
        return "_fragment.html" if request.headers.get(FRAGMENT_HEADER) == "live" else "_base.html"

    def page(template: str, **context: Any) -> str:
        return render_template(template, layout=layout(), now=g.now, **context)

    @web.before_request
    def read_time() -> None:
        if request.endpoint != "static":
            g.now = queries.read_now(linger)

    def arg(name: str, source: Any = None) -> str | None:
        value = (request.args if source is None else source).get(name)
        if value is None or not value.strip():
            return None
        if len(value) > MAX_FIELD:
            raise ConfigError(f"longer than {MAX_FIELD} characters", key=name)
        return value.strip()

    def int_arg(name: str, source: Any = None) -> int | None:
        value = arg(name, source)
        if value is None:
            return None
        if not value.isdigit() or len(value) > 19:
            raise ConfigError(f"must be a job id (a whole number), got {value!r}", key=name)
        return int(value)

    def time_arg(name: str, source: Any = None) -> datetime | None:
        value = arg(name, source)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"not a date and time: {value!r} (e.g. 2030-01-01T09:30, read in {tz}, "
                              "or with an offset: 2030-01-01T09:30+01:00)", key=name) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        try:
            return parsed.astimezone(timezone.utc)
        except OverflowError:
            raise ConfigError(f"out of range: {value!r}", key=name) from None

    def job_filter(source: Any = None) -> JobFilter:
        return JobFilter(state=arg("state", source), task=arg("task", source), queue=arg("queue", source),
                         schedule=arg("schedule", source), created_from=time_arg("from", source),
                         created_to=time_arg("to", source))

    def filter_args(flt: JobFilter) -> dict[str, str]:
        out = {k: v for k, v in (("state", flt.state), ("task", flt.task), ("queue", flt.queue),
                                 ("schedule", flt.schedule)) if v}
        src = request.form if request.method == "POST" else request.args
        for key in ("from", "to"):
            value = arg(key, src)
            if value:
                out[key] = value
        return out

    def back(endpoint: str, done: str, n: int | None = None, **values: Any) -> Any:
        params: dict[str, Any] = {**values, "done": done}
        if n is not None:
            params["n"] = n
        return redirect(url_for(endpoint, **params), code=303)

    def require_runtime() -> None:
        if not runtime:
            raise Problem(404, "schedules created at runtime need a linger-sched with app.add_schedule()")

    # -- pages ----------------------------------------------------------------------------
    @web.get("/")
    def overview() -> str:
        return page("overview.html", o=queries.overview(linger, g.now, zone, charts))

    @web.get("/queues")
    def queues() -> str:
        return page("queues.html", queues=queries.queue_page(linger, g.now))

    @web.get("/schedules")
    def schedules() -> str:
        after = arg("after")
        views, more = queries.schedule_page(linger, after, PAGE_SIZE, g.now, NEXT_FIRES_LIST)
        return page("schedules.html", schedules=views, more=more, after=after,
                    counts=linger.store.schedule_counts())

    @web.get("/schedule")
    def schedule() -> str:
        name = arg("name")
        if name is None:
            raise ConfigError("which schedule? (?name=...)", key="name")
        row = linger.store.get_schedule(name)
        last = linger.store.last_outcomes([name]).get(name)
        view = queries.schedule_view(row, last, g.now, NEXT_FIRES_PAGE)
        history = queries.job_page(linger, JobFilter(schedule=name), PAGE_SIZE, before_id=int_arg("before"),
                                   after_id=int_arg("after"))
        return page("schedule.html", s=view, ledger=history, strip=list(reversed(history.jobs)))

    @web.get("/jobs")
    def jobs() -> str:
        flt = job_filter()
        listing = queries.job_page(linger, flt, PAGE_SIZE, before_id=int_arg("before"), after_id=int_arg("after"))
        return page("jobs.html", listing=listing, flt=flt, filters=filter_args(flt))

    @web.get("/jobs/<int:job_id>")
    def job(job_id: int) -> str:
        j = linger.get_job(job_id)
        return page("job.html", j=j, durations=queries.durations(j))

    @web.get("/jobs/bulk")
    def bulk_confirm() -> str:
        action = arg("action") or ""
        flt = job_filter()
        state = bulk_state(action, flt.state)
        target = JobFilter(state, flt.task, flt.queue, flt.schedule, flt.created_from, flt.created_to)
        count = count_matching(linger, target)
        return page("bulk.html", action=action, flt=target, filters=filter_args(target), count=count,
                    limit=BULK_LIMIT)

    # -- actions (POST, CSRF-checked in guard()) ------------------------------------------
    @web.post("/jobs/<int:job_id>/retry")
    def job_retry(job_id: int) -> Any:
        linger.retry(job_id)
        return back("job", "retried", job_id=job_id)

    @web.post("/jobs/<int:job_id>/cancel")
    def job_cancel(job_id: int) -> Any:
        j = linger.cancel(job_id)
        return back("job", "cancel-requested" if j.state == "running" else "cancelled", job_id=job_id)

    @web.post("/jobs/bulk")
    def bulk_run() -> Any:
        action = arg("action", request.form) or ""
        flt = job_filter(request.form)
        result = run_bulk(linger, action, flt)
        where: dict[str, Any] = filter_args(JobFilter(result.state, flt.task, flt.queue, flt.schedule,
                                                      flt.created_from, flt.created_to))
        return redirect(url_for("jobs", **where, done=f"bulk-{action}", n=len(result.done)), code=303)

    @web.post("/schedule/<any(pause, resume, trigger):action>")
    def schedule_action(action: str) -> Any:
        name = arg("name", request.form)
        if name is None:
            raise ConfigError("which schedule?", key="name")
        if action == "pause":
            linger.pause(name)
            return back("schedule", "paused", name=name)
        if action == "resume":
            return back("schedule", "resumed" if linger.resume(name) else "not-paused", name=name)
        job_id = linger.trigger(name)
        return back("schedule", "triggered", job_id, name=name)

    # -- schedules created at runtime -------------------------------------------------------
    def form_values(source: Any) -> dict[str, str]:
        keys = ("name", "task", "kind", "expression", "tz", "args", "kwargs", "queue", "priority", "misfire", "overlap")
        return {k: (arg(k, source) or "") for k in keys}

    def parsed_form(values: dict[str, str]) -> dict[str, Any]:
        """The options of add_schedule/update_schedule from the form (JSON read, numbers
        converted); :class:`ConfigError` naming the field."""
        out: dict[str, Any] = {}
        kind = values["kind"] or "cron"
        if kind not in ("cron", "every"):
            raise ConfigError(f"must be cron or every, got {kind!r}", key="kind")
        if not values["expression"]:
            raise ConfigError("an expression is needed (e.g. 0 9 * * MON-FRI, or 15m)", key=kind)
        out[kind] = values["expression"]
        if kind == "cron":
            out["tz"] = values["tz"] or "UTC"
        for key, kind_of, example in (("args", list, "[1, \"a\"]"), ("kwargs", dict, "{\"user\": 1}")):
            if values[key]:
                try:
                    value = json.loads(values[key])
                except ValueError as exc:
                    raise ConfigError(f"not JSON ({exc}): must be a JSON {kind_of.__name__}, e.g. {example}", key=key) from None
                if not isinstance(value, kind_of):
                    raise ConfigError(f"must be a JSON {'array' if kind_of is list else 'object'}, e.g. {example}",
                                      key=key)
                out[key] = value
        if values["queue"]:
            out["queue"] = values["queue"]
        if values["priority"]:
            try:
                out["priority"] = int(values["priority"])
            except ValueError:
                raise ConfigError(f"must be a whole number, got {values['priority']!r}", key="priority") from None
        for key in ("misfire", "overlap"):
            if values[key]:
                out[key] = values[key]
        return out

    def preview(values: dict[str, str]) -> list[queries.Fire]:
        """Validate the form as add_schedule would (through the same build_schedule) and
        return the next fire times it would have."""
        options = parsed_form(values)
        name = values["name"] or "preview"
        task = values["task"]
        if not task:
            raise ConfigError("a task name is needed", key="task")
        definition = build_schedule(name, task, task_def=linger.registry.tasks.get(task), **options)
        spec = definition.spec
        anchor = getattr(spec, "anchor", "none")
        if anchor is None:  # an interval is anchored at its first registration: now
            spec = spec.with_anchor(g.now)  # type: ignore[union-attr]
        first = g.now if anchor is None else spec.next_after(g.now)
        return queries.fire_times(spec, first, NEXT_FIRES_PAGE, since=g.now)

    def edit_page(values: dict[str, str], *, editing: bool, fires: list[queries.Fire] | None = None,
                  error: str | None = None, status: int = 200) -> tuple[str, int]:
        return page("schedule_form.html", values=values, editing=editing, fires=fires, error=error), status

    @web.get("/schedule/new")
    def schedule_new() -> Any:
        require_runtime()
        return edit_page({"kind": "cron", "tz": "UTC", "misfire": "coalesce", "overlap": "skip"}, editing=False)

    @web.get("/schedule/edit")
    def schedule_edit() -> Any:
        require_runtime()
        name = arg("name")
        if name is None:
            raise ConfigError("which schedule?", key="name")
        row = linger.store.get_schedule(name)
        if getattr(row, "source", "declared") != "runtime":
            raise Problem(409, f"schedule {name!r} is declared in code or schedules.yaml: change it there")
        view = queries.schedule_view(row, None, g.now, 1)
        args = view.arguments
        values = {
            "name": row.name, "task": row.task, "kind": "every" if row.spec.startswith("every:") else "cron",
            "expression": view.expression.removeprefix("every "), "tz": row.tz,
            "args": json.dumps(args["args"]) if args.get("args") else "",
            "kwargs": json.dumps(args["kwargs"]) if args.get("kwargs") else "",
            "queue": str(view.options.get("queue") or ""), "priority": str(view.options.get("priority") or ""),
            "misfire": str(view.options.get("misfire") or "coalesce"), "overlap": str(view.options.get("overlap") or "skip"),
        }
        return edit_page(values, editing=True)

    @web.post("/schedule/<any(new, edit):mode>")
    def schedule_save(mode: str) -> Any:
        require_runtime()
        values = form_values(request.form)
        editing = mode == "edit"
        try:
            fires = preview(values)
            if request.form.get("step") != "save":  # the first submit only previews
                return edit_page(values, editing=editing, fires=fires)
            options = parsed_form(values)
            if editing:
                linger.update_schedule(values["name"], **options)
            else:
                linger.add_schedule(values["name"], values["task"], **options)
        except (ConfigError, LingerError, ValueError, TypeError) as exc:
            if isinstance(exc, ScheduleNotFoundError):
                raise
            return edit_page(values, editing=editing, error=str(exc), status=400)
        return back("schedule", "updated" if editing else "added", name=values["name"])

    @web.post("/schedule/remove")
    def schedule_remove() -> Any:
        require_runtime()
        name = arg("name", request.form)
        if name is None:
            raise ConfigError("which schedule?", key="name")
        linger.remove_schedule(name)
        return redirect(url_for("schedules", done="removed"), code=303)

    @web.get("/favicon.ico")
    def favicon() -> Any:
        return web.send_static_file("favicon.svg")

    @web.get("/healthz")
    def healthz() -> Any:
        """linger_sched.health.healthz: 200 healthy or degraded, 503 unhealthy; no auth."""
        code, body = health.healthz(linger)
        return Response(body, code, mimetype="application/json")

    # Prometheus metrics, behind the dashboard's auth like every page. Instrumented now, when
    # the dashboard is made (at start-up), so that this process's jobs are counted from then on.
    metrics_of: Metrics | None = None
    metrics_missing = ""
    try:
        metrics_of = metrics.instrument(linger)
    except ConfigError as exc:  # prometheus-client is not installed: /metrics says what to install
        metrics_missing = str(exc)

    @web.get("/metrics")
    def prometheus_metrics() -> Any:
        if metrics_of is None:
            return Response(metrics_missing + "\n", 501, mimetype="text/plain")
        body, content_type = metrics_of.render(request.headers.get("Accept"))
        return Response(body, 200, content_type=content_type)

    return web
