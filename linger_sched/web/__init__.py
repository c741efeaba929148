"""The dashboard (``pip install 'linger-sched[web]'``): schedules, jobs, queues and nodes in
a browser. See docs/dashboard.md.

* :func:`make_app` returns a WSGI app (Flask) to mount in a host app (Flask with werkzeug's
  ``DispatcherMiddleware``, Django, gunicorn) under any path prefix;
* :func:`make_asgi_app` the same as an ASGI app for FastAPI / Starlette ``app.mount()``;
* :func:`serve` runs it on its own (``linger-sched dashboard``), refusing an address other
  than this machine's without authentication.

The web framework is imported only when an app is made: the CLI's bulk job commands use
:mod:`.actions` without the extra installed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SpecError
from ..specs import validate_tz
from .security import PASSWORD_ENV, SECRET_ENV, USER_ENV, BasicAuth, auth_from_env, is_loopback

if TYPE_CHECKING:
    from flask import Flask

    from ..app import Linger

__all__ = ["BasicAuth", "auth_from_env", "is_loopback", "make_app", "make_asgi_app", "serve"]

log = logging.getLogger(__name__)
EXTRA = "pip install 'linger-sched[web]'"


def make_app(
    app: Linger, *, auth: Callable[[Any], Any] | None = None, read_only: bool = False, title: str = "linger-sched",
    tz: str = "UTC", refresh: float = 5.0, secret_key: bytes | str | None = None,
) -> Flask:
    """The dashboard of ``app`` as a WSGI application (a Flask app); it works under any path
    prefix (``SCRIPT_NAME``).

    ``auth``: None (no check: for 127.0.0.1, or when the host app already guards the
    path), a :class:`BasicAuth`, or any callable that is given the request (a werkzeug
    ``Request``: ``.authorization``, ``.cookies``, ``.headers``, ``.environ``, ``.remote_addr``)
    and returns something truthy to let it through; a refusal is answered 403 (401 with a
    challenge for :class:`BasicAuth`). ``read_only``: no action buttons, and every POST is
    refused (403). ``tz``: the zone the pages show times in (a schedule's own fire times are
    shown in the schedule's zone). ``refresh``: seconds between live updates (0: none).
    ``secret_key``: signs the CSRF tokens (``LINGER_DASHBOARD_SECRET`` when not given; else
    random per process, so give one when several processes serve the same address)."""
    try:
        from .views import build
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs Flask ({exc}): {EXTRA}", key="dashboard") from exc
    if auth is not None and not callable(auth):
        raise ConfigError(f"auth must be a callable that takes the request (or None), got {type(auth).__name__}",
                          key="auth")
    try:
        validate_tz(tz)
    except SpecError as exc:
        raise ConfigError(str(exc), key="tz") from None
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not 0 <= refresh <= 3600:
        raise ConfigError(f"must be seconds from 0 (off) to 3600, got {refresh!r}", key="refresh")
    if secret_key is None:
        secret_key = os.environ.get(SECRET_ENV) or None
    return build(app, auth=auth, read_only=read_only, title=str(title), tz=tz, refresh=float(refresh),
                 secret_key=secret_key)


def make_asgi_app(app: Linger, **options: Any) -> Any:
    """:func:`make_app` as an ASGI application (a2wsgi's ``WSGIMiddleware``, which runs the
    WSGI app on a thread pool), for ``fastapi_app.mount("/linger", make_asgi_app(linger))``.
    Takes the options of :func:`make_app`."""
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError as exc:
        raise ConfigError(f"the ASGI dashboard needs a2wsgi ({exc}): {EXTRA}", key="dashboard") from exc
    return WSGIMiddleware(make_app(app, **options))  # type: ignore[arg-type]


def check_exposure(host: str, auth: Any) -> None:
    """Refuse to serve on an address other machines may reach without authentication: a
    :class:`ConfigError` that names the options."""
    if auth is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host!r} without authentication: anyone who can reach that "
            f"address could retry, cancel and trigger jobs. Set {USER_ENV} and {PASSWORD_ENV} (HTTP basic auth), "
            "or bind to 127.0.0.1 (the default) and put it behind your own login: mount "
            "linger_sched.web.make_app(app, auth=...) in your web app, with auth= a callable that checks the request",
            key="--host")


def serve(
    app: Linger, *, host: str = "127.0.0.1", port: int = 8765, read_only: bool = False, title: str = "linger-sched",
    tz: str = "UTC", environ: Mapping[str, str] | None = None, threads: int = 8,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard with waitress until interrupted. Basic auth comes from
    ``LINGER_DASHBOARD_USER`` / ``LINGER_DASHBOARD_PASSWORD`` (in ``environ``, default
    ``os.environ``); without them only a loopback ``host`` is accepted. ``port`` 0 picks a
    free port; ``announce`` is told the URL once the socket is bound."""
    env = os.environ if environ is None else environ
    auth = auth_from_env(env)
    check_exposure(host, auth)
    try:
        from waitress import create_server  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError(f"serving the dashboard needs waitress ({exc}): {EXTRA}", key="dashboard") from exc
    wsgi = make_app(app, auth=auth, read_only=read_only, title=title, tz=tz, secret_key=env.get(SECRET_ENV) or None)
    server: Any = create_server(wsgi, host=host, port=port, threads=threads, ident="linger-sched", clear_untrusted_proxy_headers=True)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.effective_port}/"
    modes = [m for m, on in (("read-only", read_only), ("basic auth", auth is not None)) if on]
    (announce or (lambda text: print(text, file=sys.stderr, flush=True)))(
        f"linger-sched dashboard on {url}" + (f" ({', '.join(modes)})" if modes else ""))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
