"""The dashboard's security, on SQLite, PostgreSQL and MariaDB: CSRF on every POST, GET never
changes anything, read-only mode, basic auth and auth callables, the response headers (a
strict CSP, no inline script or style anywhere), and stored values shown escaped, never as
HTML, wherever a page shows them."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from dashboard_support import HOSTILE, assert_escaped, get, post, text, token
from flask.testing import FlaskClient

from linger_sched import FakeClock, Linger
from linger_sched.errors import ConfigError
from linger_sched.web import BasicAuth, auth_from_env, is_loopback, make_app
from linger_sched.web.security import CSP, Csrf

PAGES = ["/", "/queues", "/schedules", "/jobs", "/schedule/new"]


def scheduled(app: Linger) -> None:
    @app.task(name="nightly", cron="0 3 * * *")
    def nightly() -> None: ...

    app.sync_schedules()


@pytest.mark.parametrize("how", ["no token", "no cookie", "wrong token", "token of another secret", "tampered"])
def test_a_post_without_the_right_csrf_token_is_refused_and_changes_nothing(app: Linger, client: FlaskClient,
                                                                             how: str) -> None:
    scheduled(app)
    good = token(client, "/schedule?name=nightly")
    data = {"name": "nightly"}
    if how == "no token":
        pass
    elif how == "no cookie":
        client.delete_cookie("linger_csrf")
        data["csrf_token"] = good
    elif how == "wrong token":
        data["csrf_token"] = Csrf().new_token()
        client.set_cookie("linger_csrf", good)
    elif how == "token of another secret":  # both match, but we did not sign them
        forged = Csrf(b"another secret, sixteen bytes+").new_token()
        client.set_cookie("linger_csrf", forged)
        data["csrf_token"] = forged
    else:
        nonce, signature = good.split(".")
        forged = f"{nonce}x.{signature}"
        client.set_cookie("linger_csrf", forged)
        data["csrf_token"] = forged
    r = client.post("/schedule/pause", data=data)
    assert r.status_code == 403 and "CSRF" in text(r)
    assert not app.store.get_schedule("nightly").paused
    job = app.enqueue("t", delay=60)
    assert client.post(f"/jobs/{job}/cancel", data=data).status_code == 403
    assert client.post("/jobs/bulk", data={**data, "action": "cancel"}).status_code == 403
    assert app.get_job(job).state == "queued"
    # the same request with the page's token passes
    post(client, "/schedule/pause", {"name": "nightly"}, page="/schedule?name=nightly")
    assert app.store.get_schedule("nightly").paused


def test_the_csrf_cookie_is_http_only_same_site_strict(client: FlaskClient) -> None:
    r = client.get("/")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("linger_csrf=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Set-Cookie" not in client.get("/jobs").headers  # one token per browser, kept


def test_get_never_changes_anything(app: Linger, client: FlaskClient) -> None:
    scheduled(app)
    job = app.enqueue("t", delay=60)
    for url in ["/schedule/pause?name=nightly", "/schedule/trigger?name=nightly", f"/jobs/{job}/cancel",
                "/schedule/remove?name=nightly"]:
        assert client.get(url).status_code == 405, url
    get(client, "/jobs/bulk?action=cancel")  # the confirmation page, not the action
    assert not app.store.get_schedule("nightly").paused and app.get_job(job).state == "queued"
    assert app.jobs(schedule_name="nightly") == []


def test_read_only_hides_every_action_and_refuses_every_post(app: Linger, clock: FakeClock) -> None:
    scheduled(app)
    failed = app.enqueue("nowhere.task", max_attempts=1)
    app.testing.run_pending()
    queued = app.enqueue("t", delay=60)
    web = make_app(app, read_only=True)
    with web.test_client() as c:
        pages = [*PAGES[:4], "/schedule?name=nightly", f"/jobs/{failed}", f"/jobs/{queued}",
                 "/jobs/bulk?action=retry"]
        for url in pages:
            page = get(c, url)
            assert 'method="post"' not in page and not re.search(r'data-test="(retry|cancel|pause|resume|trigger)', page), url
            assert 'data-test="read-only"' in page
        assert 'data-test="bulk-links"' not in get(c, "/jobs") and 'data-test="add-schedule"' not in get(c, "/schedules")
        get(c, "/")
        tok = c.get_cookie("linger_csrf")
        assert tok is not None
        for url, data in [("/schedule/pause", {"name": "nightly"}), (f"/jobs/{failed}/retry", {}),
                          (f"/jobs/{queued}/cancel", {}), ("/jobs/bulk", {"action": "retry"}),
                          ("/schedule/new", {"step": "save"})]:
            r = c.post(url, data={**data, "csrf_token": tok.value})
            assert r.status_code == 403 and "read-only" in text(r), url
    assert not app.store.get_schedule("nightly").paused
    assert app.get_job(failed).state == "failed" and app.get_job(queued).state == "queued"


def test_every_response_carries_the_security_headers_and_no_page_inlines_script_or_style(
        app: Linger, client: FlaskClient) -> None:
    scheduled(app)
    job = app.enqueue("t")
    for url in [*PAGES, "/schedule?name=nightly", f"/jobs/{job}", "/jobs/bulk?action=retry", "/jobs/999999",
                "/static/dashboard.css", "/static/dashboard.js"]:
        r = client.get(url)
        assert r.headers["Content-Security-Policy"] == CSP, url
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "same-origin"
        assert r.headers["X-Frame-Options"] == "DENY"
        page = text(r)
        if url.startswith("/static"):
            continue
        assert r.headers["Cache-Control"] == "no-store"
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == [], url  # every script is a file of ours
        assert "<style" not in page and not re.search(r"\sstyle=", page) and not re.search(r"\son\w+=", page), url
        assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page, url
    assert CSP == ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                   "frame-ancestors 'none'; form-action 'self'")


def test_hostile_values_are_shown_escaped_on_every_page(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    evil = " ".join(HOSTILE)
    # a task, a queue and a schedule named with markup; arguments, a result, an error, a progress message
    name = "<b>sched</b>\"'{{7*7}}"
    base = {"task": HOSTILE[0], "spec": "every:60s", "tz": "UTC", "anchor": clock.now(), "args": "{}",
            "options": '{"queue": "q<i>"}', "next_run_at": clock.now(), "paused": False, "enabled": True, "spec_hash": "h"}
    app.store.save_schedules(inserts=[{**base, "name": name}], now=clock.now())
    app.store.mark_schedule_error(name, f"boom {evil}", expected=clock.now(), retry_at=clock.now(), now=clock.now())
    failed = app.enqueue(HOSTILE[0], HOSTILE[1], note=HOSTILE[2], queue=HOSTILE[1], max_attempts=1)
    app.testing.run_pending()  # unknown task: fails with the task's name in the error
    with app.store.engine.begin() as conn:
        j = app.store.t.jobs
        conn.execute(j.update().where(j.c.id == failed).values(
            last_error=f"Traceback:\n  {evil}", result='{"html": "' + HOSTILE[0].replace('"', '\\"') + '"}',
            progress=0.5, progress_message=HOSTILE[1], schedule_name=name, reason=HOSTILE[1]))
    trig = app.trigger(name)

    pages: dict[str, Any] = {
        "/": [HOSTILE[1], "boom <script>"],
        "/queues": [HOSTILE[1]],
        "/schedules": [name, HOSTILE[0]],
        "/schedule?name=" + name: [name, HOSTILE[0], f"boom {evil}"],
        "/jobs": [HOSTILE[0], HOSTILE[1], name],
        f"/jobs/{failed}": [HOSTILE[0], HOSTILE[1], HOSTILE[2], evil, name],
        f"/jobs?task={HOSTILE[0]}": [HOSTILE[0]],
        f"/jobs/bulk?action=retry&task={HOSTILE[0]}": [HOSTILE[0]],
        f"/jobs?schedule={name}&queue={HOSTILE[1]}": [HOSTILE[1], name],
        f"/jobs/{trig}": [name],
    }
    for url, values in pages.items():
        page = get(client, url)
        for value in values:
            if value.startswith("boom <script>"):
                assert "boom &lt;script&gt;" in page, url
                continue
            assert_escaped(page, value)
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>sched</b>" not in page, url
        assert ">49<" not in page and " 49 " not in page, url


def test_basic_auth_protects_every_url_and_compares_in_constant_time(app: Linger) -> None:
    web = make_app(app, auth=BasicAuth("ops", "s3cret-pass"))

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with web.test_client() as c:
        for url in ["/", "/jobs", "/static/dashboard.css"]:
            r = c.get(url)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith('Basic realm="linger-sched'), url
            assert "Content-Security-Policy" in r.headers
        for user, password in [("ops", "wrong"), ("admin", "s3cret-pass"), ("ops", "s3cret-pass "), ("", "")]:
            assert c.get("/", headers=basic(user, password)).status_code == 401, (user, password)
        assert c.get("/", headers={"Authorization": "Bearer s3cret-pass"}).status_code == 401
        assert c.get("/", headers=basic("ops", "s3cret-pass")).status_code == 200
        assert c.get("/static/dashboard.js", headers=basic("ops", "s3cret-pass")).status_code == 200
        r = c.post("/schedule/pause", data={"name": "x"})
        assert r.status_code == 401  # auth comes before anything else
    auth = BasicAuth("ops", "s3cret-pass")
    assert auth.check("ops", "s3cret-pass") and not auth.check("ops", None) and not auth.check(None, None)
    assert "s3cret" not in repr(auth)


def test_an_auth_callable_gets_the_request_and_decides(app: Linger) -> None:
    seen: list[Any] = []

    def staff(request: Any) -> bool:
        seen.append(request)
        return request.headers.get("X-Staff") == "yes"

    web = make_app(app, auth=staff)
    with web.test_client() as c:
        r = c.get("/jobs")
        assert r.status_code == 403 and "WWW-Authenticate" not in r.headers
        assert c.get("/jobs", headers={"X-Staff": "yes"}).status_code == 200
    from werkzeug.wrappers import Request

    assert seen and all(isinstance(r, Request) for r in seen) and seen[-1].path == "/jobs"


@pytest.mark.parametrize(("env", "missing"), [
    ({"LINGER_DASHBOARD_USER": "ops"}, "LINGER_DASHBOARD_PASSWORD"),
    ({"LINGER_DASHBOARD_PASSWORD": "x"}, "LINGER_DASHBOARD_USER"),
])
def test_basic_auth_from_the_environment_needs_both(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError) as info:
        auth_from_env(env)
    assert str(info.value).startswith(f"{missing}: ")


def test_make_app_checks_its_options(app: Linger) -> None:
    for kwargs, key in [({"auth": "ops:pw"}, "auth"), ({"tz": "Mars/Olympus"}, "tz"), ({"refresh": -1}, "refresh"),
                        ({"secret_key": "short"}, "secret_key")]:
        with pytest.raises(ConfigError) as info:
            make_app(app, **kwargs)
        assert str(info.value).startswith(f"{key}: "), str(info.value)
    with pytest.raises(ConfigError) as info:
        BasicAuth("a:b", "pw")
    assert "LINGER_DASHBOARD_USER" in str(info.value)
    with pytest.raises(ConfigError):
        BasicAuth("ops", "")
    assert auth_from_env({}) is None
    assert auth_from_env({"LINGER_DASHBOARD_USER": "ops", "LINGER_DASHBOARD_PASSWORD": "pw"}) is not None


def test_which_addresses_are_this_machine_only() -> None:
    assert all(is_loopback(h) for h in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "192.168.1.5", "example.com", "", "localhost.evil.com"])


def test_a_secret_key_shared_by_two_processes_accepts_each_others_tokens(app: Linger) -> None:
    scheduled(app)
    one = make_app(app, secret_key="the same secret for both")
    two = make_app(app, secret_key="the same secret for both")
    with one.test_client() as c1, two.test_client() as c2:
        tok = token(c1, "/schedule?name=nightly")
        c2.set_cookie("linger_csrf", tok)
        assert c2.post("/schedule/pause", data={"name": "nightly", "csrf_token": tok}).status_code == 303
    assert app.store.get_schedule("nightly").paused
