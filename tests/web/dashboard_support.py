"""Helpers of the dashboard tests: CSRF tokens read from a page, POSTs with them, pages read
as text, and a small set of tasks."""

from __future__ import annotations

import html
import re
from typing import Any

import markupsafe
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>', "{{7*7}}"]


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def get(client: FlaskClient, url: str, status: int = 200, **kw: Any) -> str:
    r = client.get(url, **kw)
    assert r.status_code == status, (url, r.status_code, text(r)[:2000])
    return text(r)


def token(client: FlaskClient, url: str | None = None) -> str:
    """The CSRF token the dashboard puts in the forms of page ``url`` (its cookie is kept by
    the client); without ``url``, the token of the cookie the overview sets (a page without
    forms carries none)."""
    if url is None:
        get(client, "/")
        cookie = client.get_cookie("linger_csrf")
        assert cookie is not None, "the dashboard set no CSRF cookie"
        return cookie.value
    page = get(client, url)
    found = TOKEN.search(page)
    assert found, f"no CSRF token in {url}"
    return html.unescape(found.group(1))


def post(client: FlaskClient, url: str, data: dict[str, Any] | None = None, *, page: str | None = None,
         status: int = 303, **kw: Any) -> TestResponse:
    """POST ``data`` with the CSRF token of ``page`` (default: of the cookie); asserts the
    status (a redirect by default)."""
    r = client.post(url, data={**(data or {}), "csrf_token": token(client, page)}, **kw)
    assert r.status_code == status, (url, r.status_code, text(r)[:2000])
    return r


def rows(page: str, test: str) -> list[str]:
    """The opening tags of the rows ``data-test=test`` of a page."""
    return re.findall(rf'<tr data-test="{test}"[^>]*>', page)


def attr(tags: list[str], name: str) -> list[str]:
    return [html.unescape(m.group(1)) for t in tags if (m := re.search(rf'{name}="([^"]*)"', t))]


def assert_escaped(page: str, value: str) -> None:
    """``value`` appears in ``page``, and only escaped as HTML text (never as markup)."""
    escaped = str(markupsafe.escape(value))
    assert escaped in page, f"{value!r} is not shown (escaped: {escaped!r})"
    if escaped != value:
        assert value not in page, f"{value!r} is in the page unescaped"
    assert "<script>alert" not in page and "<img src=x" not in page
