"""Fixtures of the dashboard tests: the dashboard of the ``app`` fixture (a fresh schema on
each database, a FakeClock) and a Flask test client that keeps its cookies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from linger_sched import Linger
from linger_sched.web import make_app


@pytest.fixture
def web(app: Linger) -> Flask:
    return make_app(app, refresh=5)


@pytest.fixture
def client(web: Flask) -> Iterator[FlaskClient]:
    with web.test_client() as c:
        yield c
