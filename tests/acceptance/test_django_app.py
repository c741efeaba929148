"""examples/django_app started for real, as docs/django.md says (``manage.py migrate``, then
``manage.py linger run`` and ``manage.py runserver``), on SQLite, PostgreSQL and MariaDB: an
order placed over HTTP gets its receipt mailed by the node, exactly once; an order the view
rolls back leaves no job. On a server, the project gets a database of its own for the run
(``linger_acc_<hex>``), dropped afterwards."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .helpers import PYTHON, wait_for

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_app"
ENGINES = {"postgresql": "django.db.backends.postgresql", "mariadb": "django.db.backends.mysql"}

pytestmark = pytest.mark.slow


@pytest.fixture
def project_databases(db_name: str, db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The example's DATABASES: a SQLite file in tmp_path, or a new database on the server."""
    if db_name == "sqlite":
        yield {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "shop.db")}}
        return
    name = f"linger_acc_{secrets.token_hex(4)}"
    server = sa.make_url(db_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    entry: dict[str, Any] = {"ENGINE": ENGINES[db_name], "NAME": name, "USER": server.username or "",
                             "PASSWORD": server.password or "", "HOST": server.host or "", "PORT": server.port or ""}
    if db_name == "mariadb":
        entry["OPTIONS"] = {"charset": "utf8mb4"}
    try:
        yield {"default": entry}
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}" + (" WITH (FORCE)" if db_name == "postgresql" else "")))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, data: dict[str, Any] | None = None) -> tuple[int, Any]:
    """The status and the JSON of a response (its text when it is not JSON: DEBUG's 404 page)."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_the_example_project_runs_a_job_enqueued_by_its_view(project_databases: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "EXAMPLE_DATABASES": json.dumps(project_databases), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def manage(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                              timeout=120, **kwargs)

    migrated = manage("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "Applying linger_sched.0001_initial... OK" in migrated.stdout

    port = free_port()
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("node", "web")}
    node = subprocess.Popen([PYTHON, "manage.py", "linger", "run"], cwd=PROJECT, env=env,
                            stdout=logs["node"], stderr=subprocess.STDOUT)
    web = subprocess.Popen([PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"], cwd=PROJECT, env=env,
                           stdout=logs["web"], stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return http("GET", f"{base}/orders/0")[0] == 404
            except OSError:
                return False

        wait_for(up, timeout=30, interval=0.2, what="runserver")
        status, placed = http("POST", f"{base}/orders", {"email": "ann@example.com", "total": 42})
        assert status == 201, placed
        status, refused = http("POST", f"{base}/orders", {"email": "bob@example.com", "total": 0})
        assert (status, refused) == (400, {"error": "an order must cost something"})

        wait_for(lambda: http("GET", f"{base}/orders/{placed['order']}")[1]["receipt_sent"], timeout=30,
                 interval=0.2, what="the receipt job to run")
        shown = manage("linger", "jobs", "show", str(placed["job"]), "--json")
        assert shown.returncode == 0, shown.stderr
        job = json.loads(shown.stdout)
        assert (job["task"], job["state"], job["attempts"], job["args"]) == (
            "shop.tasks.send_receipt", "succeeded", 1, [placed["order"]])
        counts = json.loads(manage("linger", "status", "--json").stdout)["jobs"]
        assert sum(counts.values()) == 1  # the rolled-back order left no job
    finally:
        node.send_signal(signal.SIGTERM)
        web.send_signal(signal.SIGTERM)
        node_status = node.wait(30)
        web.wait(30)
        for f in logs.values():
            f.close()
    node_log = (tmp_path / "node.log").read_text()
    assert node_status == 0, node_log
    assert node_log.count("receipt for order") == 1, node_log
