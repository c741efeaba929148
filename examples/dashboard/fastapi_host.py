"""The dashboard inside a FastAPI app, under /linger, behind HTTP basic auth.

    DASHBOARD_PASSWORD=... LINGER_DATABASE_URL=sqlite:///linger.db \\
        uvicorn --factory examples.dashboard.fastapi_host:main
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from linger_sched import Linger
from linger_sched.web import BasicAuth, make_asgi_app


def create_api(linger: Linger, password: str) -> FastAPI:
    api = FastAPI()

    @api.get("/")
    def home() -> dict[str, str]:
        return {"site": "the API"}

    # the dashboard is a WSGI app; make_asgi_app runs it on a thread pool, under the prefix
    api.mount("/linger", make_asgi_app(linger, auth=BasicAuth("ops", password)))
    return api


def main() -> FastAPI:
    return create_api(Linger(), os.environ["DASHBOARD_PASSWORD"])
