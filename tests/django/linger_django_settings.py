"""Django settings of tests/django: one SQLite test database ("default") and one per selected
server ("postgresql", "mariadb"), plus "side", a second SQLite file for the on_commit tests.

Each run has test databases of its own (``test_linger_dj_<hex>`` on the servers, files in a
temporary directory), created by conftest.py and dropped at the end, and a table prefix of its
own; nothing of another run, or of the shared ``test`` database, is touched.
"""

from __future__ import annotations

import os
import secrets
import tempfile

import pymysql
import sqlalchemy as sa

# Django's MySQL backend on PyMySQL (mysqlclient would need a C compiler and client headers)
pymysql.install_as_MySQLdb()

RUN = secrets.token_hex(4)
TMP = tempfile.mkdtemp(prefix="linger-django-")
PREFIX = f"dj{RUN}_"

POSTGRES_URL = os.environ.get("LINGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("LINGER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _server(engine: str, url: str, **extra: object) -> dict[str, object]:
    u = sa.make_url(url)
    return {
        "ENGINE": engine, "NAME": u.database, "USER": u.username or "", "PASSWORD": u.password or "",
        "HOST": u.host or "", "PORT": u.port or "", "TEST": {"NAME": f"test_linger_dj_{RUN}", **extra.pop("TEST", {})},  # type: ignore[dict-item]
        **extra,
    }


def _sqlite(name: str) -> dict[str, object]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(TMP, f"{name}.sqlite3"),
            "TEST": {"NAME": os.path.join(TMP, f"test_{name}.sqlite3")}}


SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["linger_sched.contrib.django", "djtestapp"]
DATABASES = {
    "default": _sqlite("default"),
    "side": _sqlite("side"),
    "postgresql": _server("django.db.backends.postgresql", POSTGRES_URL),
    "mariadb": _server("django.db.backends.mysql", MYSQL_URL, OPTIONS={"charset": "utf8mb4"}, TEST={"CHARSET": "utf8mb4"}),
}
LINGER_SCHED = {"DATABASE": "default", "TABLE_PREFIX": PREFIX, "POLL_INTERVAL": 0.05}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
