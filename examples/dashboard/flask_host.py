"""The dashboard inside a Flask site, under /linger, for the site's logged-in staff only.

    LINGER_DATABASE_URL=sqlite:///linger.db flask --app "examples.dashboard.flask_host:main()" run
"""

from __future__ import annotations

import os

from flask import Flask, session
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Request

from linger_sched import Linger
from linger_sched.web import make_app


def create_site(linger: Linger, secret_key: str) -> Flask:
    site = Flask(__name__)
    site.secret_key = secret_key  # signs the site's own session cookie

    @site.get("/")
    def home() -> str:
        return "the site"

    @site.post("/login")
    def login() -> str:  # stands for the site's real login view
        session["staff"] = True
        return "logged in"

    def staff_only(request: Request) -> bool:
        """The dashboard asks the site: is whoever sent this request logged in as staff?"""
        login_state = site.session_interface.open_session(site, request)
        return bool(login_state and login_state.get("staff"))

    # every URL under /linger is the dashboard's (it sees SCRIPT_NAME=/linger, so its links,
    # forms and cookie stay under the prefix); the rest is the site's
    site.wsgi_app = DispatcherMiddleware(site.wsgi_app, {
        "/linger": make_app(linger, auth=staff_only),
    })
    return site


def main() -> Flask:
    return create_site(Linger(), os.environ["SITE_SECRET_KEY"])
