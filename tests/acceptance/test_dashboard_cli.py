"""``linger-sched dashboard`` for real: started as a subprocess on a free port, fetched with
urllib, on SQLite, PostgreSQL and MariaDB; and its refusals (an open address without auth,
tables that are not installed)."""

from __future__ import annotations

import base64
import os
import re
import select
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.message import Message
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

from linger_sched.store import Store

from .helpers import cli_cmd

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
URL_LINE = re.compile(r"linger-sched dashboard on (http://\S+/)")


def environment(db_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    return {**env, "LINGER_DATABASE_URL": db_url, "LINGER_TABLE_PREFIX": prefix, **extra}


@contextmanager
def dashboard(cwd: Path, env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A ``linger-sched dashboard --port 0`` process and its URL (from what it prints); ended
    by its own pid afterwards."""
    proc = subprocess.Popen(cli_cmd("dashboard", "--port", "0", *args), cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        deadline, seen = time.monotonic() + 30, ""
        url = None
        while url is None:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"no URL printed (exit {proc.poll()}):\n{seen}"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                line = proc.stdout.readline()
                seen += line
                m = URL_LINE.search(line)
                url = m.group(1) if m else None
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(NoRedirect(), *handlers)


def fetch(op: urllib.request.OpenerDirector, url: str, data: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    req = urllib.request.Request(url, data=urlencode(data).encode() if data is not None else None, headers=headers or {})
    try:
        with op.open(req, timeout=20) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def add_schedule(store: Store) -> None:
    store.save_schedules(inserts=[{
        "name": "nightly", "task": "reports.nightly", "spec": "0 3 * * *", "tz": "Europe/Berlin", "anchor": None,
        "args": "{}", "options": "{}", "next_run_at": T0, "paused": False, "enabled": True, "spec_hash": "h",
    }], now=T0)


def test_the_dashboard_serves_every_page_and_takes_actions_with_a_csrf_token(store: Store, db_url: str, prefix: str,
                                                                             tmp_path: Path) -> None:
    add_schedule(store)
    job = store.enqueue([{"task": "reports.build", "args": '{"args":["<script>alert(1)</script>"]}'}], now=T0)[0]
    jar = CookieJar()
    op = opener(urllib.request.HTTPCookieProcessor(jar))
    with dashboard(tmp_path, environment(db_url, prefix)) as (url, _):
        assert url.startswith("http://127.0.0.1:")
        for path in ["", "schedules", "schedule?name=nightly", "jobs", f"jobs/{job}", "queues", "static/dashboard.css",
                     "static/dashboard.js"]:
            status, headers, body = fetch(op, url + path)
            assert status == 200, (path, status, body[:500])
            assert headers["Content-Security-Policy"].startswith("default-src 'self'"), path
        status, _, body = fetch(op, url + f"jobs/{job}")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert" not in body
        status, _, body = fetch(op, url + "schedule?name=nightly")
        assert "At 03:00" in body and "Europe/Berlin" in body
        token = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert token
        status, _, _ = fetch(op, url + "schedule/pause", {"name": "nightly"})  # no token
        assert status == 403 and not store.get_schedule("nightly").paused
        status, headers, _ = fetch(op, url + "schedule/pause", {"name": "nightly", "csrf_token": token.group(1)})
        assert status == 303 and headers["Location"].endswith("/schedule?name=nightly&done=paused")
        assert store.get_schedule("nightly").paused
        status, _, body = fetch(op, url + "schedule?name=nightly")
        assert 'data-test="status">paused<' in body


def test_read_only_refuses_actions(store: Store, db_url: str, prefix: str, tmp_path: Path) -> None:
    add_schedule(store)
    jar = CookieJar()
    op = opener(urllib.request.HTTPCookieProcessor(jar))
    with dashboard(tmp_path, environment(db_url, prefix), "--read-only") as (url, _):
        status, _, body = fetch(op, url + "schedule?name=nightly")
        assert status == 200 and 'method="post"' not in body and 'data-test="read-only"' in body
        cookie = next(c.value for c in jar if c.name == "linger_csrf")
        status, _, body = fetch(op, url + "schedule/pause", {"name": "nightly", "csrf_token": cookie})
        assert status == 403 and "read-only" in body
    assert not store.get_schedule("nightly").paused


def test_an_open_address_needs_basic_auth(store: Store, db_url: str, prefix: str, tmp_path: Path) -> None:
    env = environment(db_url, prefix)
    proc = subprocess.run(cli_cmd("dashboard", "--host", "0.0.0.0", "--port", "0"), cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to serve the dashboard on '0.0.0.0' without authentication" in proc.stderr
    assert "LINGER_DASHBOARD_USER" in proc.stderr and "LINGER_DASHBOARD_PASSWORD" in proc.stderr and "auth=" in proc.stderr

    env = environment(db_url, prefix, LINGER_DASHBOARD_USER="ops", LINGER_DASHBOARD_PASSWORD="pa55 word")
    with dashboard(tmp_path, env, "--host", "0.0.0.0") as (url, _):
        assert url.startswith("http://0.0.0.0:")
        local = url.replace("0.0.0.0", "127.0.0.1")
        op = opener()
        status, headers, _ = fetch(op, local)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        bad = "Basic " + base64.b64encode(b"ops:wrong").decode()
        assert fetch(op, local, headers={"Authorization": bad})[0] == 401
        good = "Basic " + base64.b64encode(b"ops:pa55 word").decode()
        status, _, body = fetch(op, local, headers={"Authorization": good})
        assert status == 200 and "Overview" in body


def test_without_tables_it_says_what_to_run(db_url: str, prefix: str, tmp_path: Path) -> None:
    proc = subprocess.run(cli_cmd("dashboard", "--port", "0"), cwd=tmp_path, env=environment(db_url, prefix),
                          text=True, capture_output=True, timeout=60)
    assert proc.returncode == 1 and "linger-sched db init" in proc.stderr, proc.stdout + proc.stderr
    if db_url.startswith("sqlite"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()  # no empty database made to find out


@pytest.mark.parametrize("port", ["70000", "http"])
def test_a_bad_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    proc = subprocess.run(cli_cmd("dashboard", "--port", port), cwd=tmp_path, text=True, capture_output=True, timeout=60,
                          env=environment(f"sqlite:///{tmp_path / 'x.db'}", "p_"))
    assert proc.returncode == 2 and "--port" in proc.stderr
