"""docs/upgrading.md, run as it is written: on a version-5 schema (the version-6 tables without
``jobs.trace_context``, recorded as 5; tests/integration/test_migration.py builds it the same
way), nodes refuse to start with the message the page shows; ``linger-sched db upgrade`` run
twice prints the page's two lines (URL masked as the CLI masks it, the test's prefix); the nodes
then start and ``status`` and ``health`` say so; a schema newer than the package is refused with
the page's message. The Flask command too, and the Django one (on SQLite: the example project
keeps the default prefix, so it gets a database file of its own). On every database."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import Cli, Outcome

from linger_sched.store import SCHEMA_VERSION, Store
from linger_sched.store.dialect import url_from_parts

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "upgrading.md"
MARKER = "<!-- sh: checked by tests/cli/test_docs_upgrade.py -->"
# the command blocks of the page under MARKER, in order: the tests below run these lines
UPGRADE = ["linger-sched db upgrade", "linger-sched db upgrade"]
AFTER = ["linger-sched status", "linger-sched health"]
FLASK = ["flask --app examples.flask_app.app linger db upgrade"]
DJANGO = ["python manage.py linger db upgrade"]
RECOUNT = ["linger-sched db recount"]
SHOWN_URL = "postgresql+psycopg://linger:***@db.internal/app"  # the URL in the page's output
SHOWN_PREFIX = "(prefix linger_)"
PASSWORD = "s3cret-pw"


# -- the page --------------------------------------------------------------------------------
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def checked_blocks(text: str) -> list[list[str]]:
    """The command lines (comments stripped) of each ```sh block under MARKER."""
    blocks = re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)^```", text, flags=re.M | re.S)
    return [[line.split("#")[0].strip() for line in b.splitlines() if line.split("#")[0].strip()] for b in blocks]


def text_after(text: str, anchor: str) -> list[str]:
    """The lines of the first ```text block after ``anchor``."""
    rest = text[text.index(anchor):]
    block = re.search(r"^```text\n(.*?)^```", rest, flags=re.M | re.S)
    assert block is not None, f"no text block after {anchor!r}"
    return block.group(1).splitlines()


def refusals(text: str) -> list[str]:
    """The error lines of the text blocks (what the CLI prints on stderr)."""
    blocks = re.findall(r"^```text\n(.*?)^```", text, flags=re.M | re.S)
    return [line for b in blocks for line in b.splitlines() if line.startswith("linger-sched: error:")]


def test_the_page_shows_the_commands_run_here_and_marks_every_shell_block() -> None:
    text = page()
    assert checked_blocks(text) == [UPGRADE, AFTER, FLASK, DJANGO, RECOUNT]
    fences = re.findall(r"^(.*)\n```sh$", text, flags=re.M)
    assert fences and all(re.fullmatch(r"<!-- sh: (run|serve|checked by tests/\S+\.py) -->", f) for f in fences), fences
    shown = text_after(text, "\n".join(["```sh", *UPGRADE[:1]]))
    assert len(shown) == 2 and all(SHOWN_URL in line and line.endswith(SHOWN_PREFIX) for line in shown), shown
    assert len(refusals(text)) == 2
    assert f"schema version **{SCHEMA_VERSION}**" in text


# -- a version-5 schema ----------------------------------------------------------------------
def with_password(url: str) -> str:
    """``url`` with a password when the server accepts one it does not need (PostgreSQL's trust
    authentication), so that the masking is seen; else ``url``."""
    u = sa.make_url(url)
    if u.get_backend_name() != "postgresql" or u.password:
        return url
    candidate = u.set(password=PASSWORD)
    engine = sa.create_engine(candidate)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return url
    finally:
        engine.dispose()
    return candidate.render_as_string(hide_password=False)


def make_version_5(store: Store) -> None:
    """The tables of schema version 5: today's without ``jobs.trace_context``, recorded as 5."""
    store.install_schema()
    with store.engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {quote(store.t.jobs.name)} DROP COLUMN {quote('trace_context')}")
    set_version(store, 5)
    assert "trace_context" not in {c["name"] for c in sa.inspect(store.engine).get_columns(store.t.jobs.name)}


def set_version(store: Store, version: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(store.t.meta).where(store.t.meta.c.key == "schema_version").values(value=str(version)))


def recorded_version(store: Store) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(sa.select(store.t.meta.c.value)).scalar_one())


@pytest.fixture
def old_install(db_url: str, prefix: str) -> Iterator[Store]:
    store = Store(with_password(db_url), table_prefix=prefix)
    make_version_5(store)
    yield store
    store.drop_schema()
    store.dispose()


def as_shown(line: str, store: Store) -> str:
    """A line of the page's output as this test's database and prefix make it."""
    return line.replace(SHOWN_URL, store.display_url).replace(SHOWN_PREFIX, f"(prefix {store.prefix})")


def run_line(cli: Cli, line: str) -> Outcome:
    words = shlex.split(line)
    assert words[0] == "linger-sched", line
    return cli.run(*words[1:], timeout=120)


# -- linger-sched ----------------------------------------------------------------------------
def test_upgrade_from_5_to_6_as_the_page_shows_it(old_install: Store, workdir: Path) -> None:
    store = old_install
    text = page()
    refused, newer = refusals(text)
    cli = Cli(workdir, {"LINGER_DATABASE_URL": store.url, "LINGER_TABLE_PREFIX": store.prefix})
    ids = store.enqueue([{"task": "add", "args": json.dumps({"args": [1, 2]})}, {"task": "noop", "args": "{}"}])

    # before: a node of this version, and a command that reads the tables, refuse the old schema
    for args in (["run", "--import", "clijobs"], ["status"]):
        r = cli.run(*args, timeout=60)
        assert r.code == 1 and r.err.strip().splitlines()[-1] == refused, r
    assert recorded_version(store) == "5"

    # the commands of the page, and what they print
    outcomes = [run_line(cli, line) for line in UPGRADE]
    assert all(o.code == 0 for o in outcomes), outcomes
    shown = text_after(text, "\n".join(["```sh", UPGRADE[0]]))
    assert [o.out.strip() for o in outcomes] == [as_shown(line, store) for line in shown]
    if sa.make_url(store.url).password:
        assert "***" in outcomes[0].out and PASSWORD not in outcomes[0].out + outcomes[0].err
    assert f"schema upgrade: added column {store.prefix}jobs.trace_context" in outcomes[0].err
    assert recorded_version(store) == str(SCHEMA_VERSION)
    store.check_schema()
    assert [store.get_job(i).trace_context for i in ids] == [None, None]  # every row kept

    # the nodes start; status and health say so
    node = cli.popen("run", "--import", "clijobs")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert node.poll() is None, node.communicate()
            health = run_line(cli, AFTER[1])
            if health.code == 0:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        status = run_line(cli, AFTER[0])
        assert status.code == 0 and "nodes: 1" in status.out, status
        # the jobs enqueued before the upgrade run on the new node
        while {store.get_job(i).state for i in ids} != {"succeeded"}:
            assert time.monotonic() < deadline, [store.get_job(i) for i in ids]
            time.sleep(0.2)
        assert store.get_job(ids[0]).result == 3
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=60)
    assert node.returncode == 0

    # db recount, as the page shows it
    (line,) = RECOUNT
    r = run_line(cli, line)
    assert r.code == 0 and "counted" in r.out, r

    # a schema newer than this package: db upgrade refuses it, as the page says, and changes nothing
    set_version(store, SCHEMA_VERSION + 1)
    template = re.sub(r"version \d+, newer than this linger-sched \(\d+\)",
                      "version {newer}, newer than this linger-sched ({mine})", newer)
    assert template != newer
    r = run_line(cli, UPGRADE[0])
    assert r.code == 1, r
    assert r.err.strip().splitlines()[-1] == template.format(newer=SCHEMA_VERSION + 1, mine=SCHEMA_VERSION), r
    assert recorded_version(store) == str(SCHEMA_VERSION + 1)
    set_version(store, SCHEMA_VERSION)


# -- Flask and Django --------------------------------------------------------------------------
def without_linger_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("LINGER_", "FLASK_"))}, **extra}


def test_the_flask_command_upgrades_the_flask_apps_database(old_install: Store, tmp_path: Path) -> None:
    store = old_install
    (line,) = FLASK
    words = shlex.split(line)
    # outside the repository (its schedules.yaml names tasks the Flask app does not have),
    # with the example importable
    env = without_linger_env(PYTHONPATH=str(ROOT), FLASK_SQLALCHEMY_DATABASE_URI=store.url,
                             FLASK_LINGER_TABLE_PREFIX=store.prefix)
    r = subprocess.run([str(Path(sys.executable).with_name(words[0])), *words[1:]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r
    shown = text_after(page(), "\n".join(["```sh", UPGRADE[0]]))
    assert r.stdout.strip() == as_shown(shown[0], store), r
    assert recorded_version(store) == str(SCHEMA_VERSION)


def test_the_django_command_upgrades_the_projects_database(tmp_path: Path) -> None:
    """SQLite: the example project's default prefix on a database file of its own."""
    path = tmp_path / "shop.db"
    url = url_from_parts("sqlite", "sqlite3", database=str(path))
    store = Store(url.render_as_string(hide_password=False))
    try:
        make_version_5(store)
        (line,) = DJANGO
        words = shlex.split(line)
        assert words[0] == "python"
        databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}}
        r = subprocess.run([sys.executable, *words[1:]], cwd=ROOT / "examples" / "django_app",
                           env=without_linger_env(EXAMPLE_DATABASES=json.dumps(databases)),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r
        shown = text_after(page(), "\n".join(["```sh", UPGRADE[0]]))
        assert r.stdout.strip() == as_shown(shown[0], store), r
        assert recorded_version(store) == str(SCHEMA_VERSION)
    finally:
        store.drop_schema()
        store.dispose()
