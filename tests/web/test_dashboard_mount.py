"""The dashboard mounted under a path prefix: in a Flask site through werkzeug's
DispatcherMiddleware (examples/dashboard/flask_host.py) and in a FastAPI app through
make_asgi_app (examples/dashboard/fastapi_host.py), on SQLite, PostgreSQL and MariaDB. Links,
assets, forms and the CSRF cookie stay under the prefix; the host decides who may see it."""

from __future__ import annotations

import base64
import re

from fastapi.testclient import TestClient
from dashboard_support import TOKEN

from examples.dashboard.fastapi_host import create_api
from examples.dashboard.flask_host import create_site
from linger_sched import Linger


def hrefs(page: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]+)"', page)


def test_mounted_in_a_flask_site_under_a_prefix_for_its_staff(app: Linger) -> None:
    @app.task(name="nightly", cron="0 3 * * *")
    def nightly() -> None: ...

    app.sync_schedules()
    site = create_site(app, "a secret of the site, for its tests")
    with site.test_client() as c:
        assert c.get("/").get_data(as_text=True) == "the site"
        assert c.get("/linger/").status_code == 403  # not logged in: the site's check says no
        assert c.post("/login").status_code == 200
        r = c.get("/linger/")
        assert r.status_code == 200
        page = r.get_data(as_text=True)
        links = [h for h in hrefs(page) if h.startswith("/")]
        assert links and all(h.startswith("/linger/") for h in links), links
        assert "/linger/static/dashboard.css" in links and "/linger/static/dashboard.js" in links
        css = c.get("/linger/static/dashboard.css")
        assert css.status_code == 200 and css.mimetype == "text/css" and b"figure.chart" in css.data
        assert c.get("/linger/schedules").status_code == 200
        cookie = c.get_cookie("linger_csrf", path="/linger")
        assert cookie is not None and cookie.path == "/linger"

        page = c.get("/linger/schedule?name=nightly").get_data(as_text=True)
        assert 'action="/linger/schedule/pause"' in page
        token = TOKEN.search(page)
        assert token
        r = c.post("/linger/schedule/pause", data={"name": "nightly", "csrf_token": token.group(1)})
        assert r.status_code == 303 and r.headers["Location"] == "/linger/schedule?name=nightly&done=paused"
        assert app.store.get_schedule("nightly").paused


def test_mounted_in_fastapi_as_asgi_under_a_prefix_with_basic_auth(app: Linger) -> None:
    @app.task(name="nightly", cron="0 3 * * *")
    def nightly() -> None: ...

    app.sync_schedules()
    api = create_api(app, "pa55-w0rd")
    good = {"Authorization": "Basic " + base64.b64encode(b"ops:pa55-w0rd").decode()}
    with TestClient(api, base_url="http://testserver") as c:
        assert c.get("/").json() == {"site": "the API"}
        refused = c.get("/linger/")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
        r = c.get("/linger/", headers=good)
        assert r.status_code == 200 and "Content-Security-Policy" in r.headers
        links = [h for h in hrefs(r.text) if h.startswith("/")]
        assert links and all(h.startswith("/linger/") for h in links), links
        assert c.get("/linger/static/dashboard.js", headers=good).status_code == 200
        page = c.get("/linger/schedule?name=nightly", headers=good).text
        token = TOKEN.search(page)
        assert token and 'action="/linger/schedule/pause"' in page
        r = c.post("/linger/schedule/pause", data={"name": "nightly", "csrf_token": token.group(1)}, headers=good,
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/linger/schedule?name=nightly&done=paused"
        assert app.store.get_schedule("nightly").paused
        r = c.post("/linger/schedule/resume", data={"name": "nightly"}, headers=good, follow_redirects=False)
        assert r.status_code == 403 and app.store.get_schedule("nightly").paused  # no token: refused
