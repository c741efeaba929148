"""The dashboard's ``/metrics`` (Prometheus): behind the dashboard's auth like every page, served
read-only too, and a clear answer naming the extra when prometheus-client is missing."""

from __future__ import annotations

import base64
import sys

import pytest

from linger_sched import FakeClock, Linger
from linger_sched.web import BasicAuth, make_app


def test_metrics_are_served_with_the_database_values(app: Linger, clock: FakeClock) -> None:
    @app.task(name="t")
    def t() -> None:
        pass

    t.enqueue()
    t.options(queue="mail").enqueue()
    with make_app(app).test_client() as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and r.content_type.startswith("text/plain")
        text = r.get_data(as_text=True)
        assert 'linger_queue_jobs{queue="default",state="queued"} 1.0' in text
        assert 'linger_queue_jobs{queue="mail",state="queued"} 1.0' in text
        assert "linger_scrape_error 0.0" in text
        r = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
        assert r.content_type.startswith("application/openmetrics-text")
        assert r.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_are_behind_the_dashboards_auth(app: Linger) -> None:
    web = make_app(app, auth=BasicAuth("ops", "s3cret-pass"), read_only=True)
    good = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret-pass").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ops:guess").decode()}
    with web.test_client() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bad).status_code == 401
        r = c.get("/metrics", headers=good)
        assert r.status_code == 200 and b"linger_build_info" in r.data  # read-only: GET still served
        assert c.post("/metrics", headers=good).status_code in (403, 405)


def test_without_prometheus_client_metrics_name_the_extra(app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with make_app(app).test_client() as c:
        r = c.get("/metrics")
        assert r.status_code == 501
        assert 'pip install "linger-sched[metrics]"' in r.get_data(as_text=True)
        assert c.get("/").status_code == 200  # the rest of the dashboard works
