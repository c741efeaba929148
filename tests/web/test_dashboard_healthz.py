"""The dashboard's ``/healthz``: answered without authentication (probes carry none), with the
report's statuses and messages only, 200 or 503."""

from __future__ import annotations

import json

from linger_sched import FakeClock, Linger
from linger_sched.web import BasicAuth, make_app


def test_healthz_needs_no_credentials_and_reveals_only_statuses_and_messages(app: Linger, clock: FakeClock) -> None:
    web = make_app(app, auth=BasicAuth("ops", "s3cret-pass"), read_only=True)
    app.store.register_node("host:1:aaa", host="host", pid=1, roles="worker", registry_hash="r", version="1", now=clock.now())
    with web.test_client() as c:
        assert c.get("/").status_code == 401  # every page still needs the password
        r = c.get("/healthz")
        assert r.status_code == 200 and r.mimetype == "application/json"
        doc = json.loads(r.get_data(as_text=True))
        assert doc["status"] == "healthy" and doc["exit_code"] == 0
        assert [sorted(check) for check in doc["checks"]] == [["message", "name", "status"]] * 6  # no details
        assert "Set-Cookie" not in r.headers and r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert c.post("/healthz").status_code == 401  # only GET is open

        app.task(name="beat", every="10s")(lambda: None)
        app.sync_schedules()
        clock.advance(40)  # the schedule is overdue, no node leads; past the 1 s reuse of an answer
        app.store.heartbeat_node("host:1:aaa", now=clock.now())
        r = c.get("/healthz")
        doc = json.loads(r.get_data(as_text=True))
        assert r.status_code == 503 and doc["status"] == "unhealthy"
        checks = {check["name"]: check for check in doc["checks"]}
        assert checks["schedules_overdue"]["message"].startswith("1 schedule overdue by more than 32s: beat (due 40s ago)")
