"""The shop's web app. Development server, or gunicorn with a node in each worker:

    flask --app examples.flask_app.app run
    gunicorn -w 2 -b 127.0.0.1:8000 'examples.flask_app.app:create_app()'
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from examples.flask_app.tasks import jobs, send_welcome
from linger_sched.contrib.flask import LingerFlask

linger = LingerFlask(linger=jobs)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI="sqlite:///shop.db",  # the app's database: the jobs live there too
        LINGER_RUN_NODE=True,  # a node in each process that serves the app: no worker to deploy
        LINGER_AUTO_INSTALL=True,  # create the job tables at first use (or: flask linger db init)
        LINGER_SHUTDOWN_GRACE="20s",  # less than gunicorn's graceful_timeout (30s)
    )
    app.config.from_prefixed_env()  # FLASK_SQLALCHEMY_DATABASE_URI=postgresql://..., FLASK_LINGER_CONCURRENCY=4
    app.config.update(config or {})
    linger.init_app(app)

    @app.post("/signup/<int:user_id>")
    def signup(user_id: int) -> Any:
        job_id = send_welcome.enqueue(user_id)  # runs on a node of this app, in the background
        return jsonify(job=job_id), 202

    @app.get("/jobs/<int:job_id>")
    def job_status(job_id: int) -> Any:
        job = jobs.get_job(job_id)
        return jsonify(id=job.id, state=job.state, attempts=job.attempts)

    return app
