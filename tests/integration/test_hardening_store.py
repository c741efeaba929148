"""The store under hostile input, on every database: identifiers, secrets in URLs, the SQLite
file's mode, large texts, missing tables, out-of-range ids and retries that would break a
unique key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from linger_sched import Linger
from linger_sched.config import Settings, resolve
from linger_sched.errors import ConfigError, JobNotFoundError, JobStateError, SchemaError, StoreError
from linger_sched.store import SCHEMA_VERSION, Store, encode_args
from linger_sched.store.dialect import mask_url, normalize_url
from linger_sched.store.tables import TABLE_PREFIX_MAX, build_metadata

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
BAD_PREFIXES = ['x";drop table t;--', "x' or 1=1--", "1abc", "a-b", "a b", "", "a" * (TABLE_PREFIX_MAX + 1), "préfix_", "x.y"]


# -- 14: the table prefix ---------------------------------------------------------------------
def test_identifiers_stay_within_postgres_and_mysql_limits_with_the_longest_prefix() -> None:
    md, _ = build_metadata("p" * TABLE_PREFIX_MAX)
    names = [t.name for t in md.tables.values()]
    for t in md.tables.values():
        names += [ix.name for ix in t.indexes if isinstance(ix.name, str)]
        names += [c.name for c in t.constraints if isinstance(c.name, str)]
    assert len(names) > 10
    too_long = [n for n in names if len(n) > 63]
    assert too_long == []


@pytest.mark.parametrize("bad", BAD_PREFIXES)
def test_a_bad_table_prefix_is_rejected_on_every_path(tmp_path: Path, bad: str) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"

    def rejected(make: object) -> None:
        with pytest.raises(ConfigError) as info:
            make()  # type: ignore[operator]
        assert info.value.key is not None and "table_prefix" in info.value.key.lower(), info.value
        assert "table_prefix" in str(info.value).lower()

    rejected(lambda: Store(url, table_prefix=bad))
    rejected(lambda: Linger(url, table_prefix=bad))
    rejected(lambda: Linger(settings=Settings(database_url=url, table_prefix=bad)))
    if bad:  # an empty environment variable counts as unset
        rejected(lambda: resolve(env={"LINGER_TABLE_PREFIX": bad, "LINGER_DATABASE_URL": url}))
    app = Linger(url)
    rejected(lambda: app.configure(table_prefix=bad))
    assert app.settings.table_prefix == "linger_"  # unchanged
    assert not (tmp_path / "never.db").exists()


@pytest.fixture
def long_prefix_store(db_url: str, prefix: str) -> Iterator[Store]:
    s = Store(db_url, table_prefix=(prefix + "x" * TABLE_PREFIX_MAX)[:TABLE_PREFIX_MAX])
    s.install_schema()
    yield s
    s.drop_schema()
    s.dispose()


def test_the_longest_prefix_works(long_prefix_store: Store) -> None:
    s = long_prefix_store
    (i,) = s.enqueue([{"task": "t", "args": encode_args([1])}], now=T0)
    assert [c.id for c in s.claim("n", None, 5, 30, now=T0)] == [i]
    assert s.finish("n", succeeded=[i], now=T0) == ([], [])
    s.upgrade_schema()
    s.check_schema()


def test_listen_notify_wakes_with_a_mixed_case_prefix(db_url: str, db_name: str, prefix: str) -> None:
    if db_name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    s = Store(db_url, table_prefix="Mixed_" + prefix)
    other = Store(db_url, table_prefix="Mixed_" + prefix)
    s.install_schema()
    woke, stop = threading.Event(), threading.Event()
    calls: list[int] = []

    def on_notify() -> None:
        calls.append(1)
        if len(calls) > 1:  # the first call comes when listening starts
            woke.set()

    t = threading.Thread(target=s.listen, args=(on_notify, stop), daemon=True)
    t.start()
    try:
        deadline = 50
        while not calls and deadline:
            stop.wait(0.1)
            deadline -= 1
        assert calls, "the listener did not start"
        other.enqueue([{"task": "t", "args": "{}"}])
        assert woke.wait(5.0), "NOTIFY on the quoted channel did not wake the listener"
    finally:
        stop.set()
        t.join(5)
        s.drop_schema()
        s.dispose()
        other.dispose()


# -- 16: secrets in URLs; the SQLite file ----------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("postgresql://u:S3cr3t@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg://user:p%40ss@host:5432/db?x=1", "postgresql+psycopg://user:***@host:5432/db?x=1"),
    ("not a database URL: 'mysql://root:S3cr3t@127.0.0.1:notaport/db' (bad port)",
     "not a database URL: 'mysql://root:***@127.0.0.1:notaport/db' (bad port)"),
    ("two: a://x:1@h and b://y:2@k", "two: a://x:***@h and b://y:***@k"),
    ("pw with colon and at: pg://u:a:b@c@host/db", "pw with colon and at: pg://u:***@host/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("user:pass@host without a scheme stays", "user:pass@host without a scheme stays"),
])
def test_mask_url(text: str, expected: str) -> None:
    assert mask_url(text) == expected


@pytest.mark.parametrize("url", [
    "postgresql://u:S3cr3t@127.0.0.1:notaport/db", "nosql://u:S3cr3t@127.0.0.1/db",
    "sqlite://u:S3cr3t@/:memory:",
])
def test_url_errors_do_not_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_url(url)
    assert "S3cr3t" not in str(info.value)
    assert "S3cr3t" not in repr(info.value.__cause__ or "")


def test_store_errors_do_not_show_the_password() -> None:
    s = Store("postgresql://postgres:S3cr3t@127.0.0.1:1/test", table_prefix="t_")
    try:
        with pytest.raises(StoreError) as info:
            s.enqueue([{"task": "t", "args": "{}"}])
        assert "S3cr3t" not in str(info.value)
        with pytest.raises(StoreError) as info:
            s.check_schema()
        assert "S3cr3t" not in str(info.value)
    finally:
        s.dispose()


def _modes(directory: Path, name: str) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.name.startswith(name)}


def test_a_new_sqlite_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        app = Linger(f"sqlite:///{tmp_path / 'fresh.db'}", poll_interval=0.05)
        app.enqueue("t", 1)
        app.start(concurrency=1)  # a node: listener, heartbeat, worker connections
        try:
            modes = _modes(tmp_path, "fresh.db")
        finally:
            app.stop(grace=1)
            app.store.dispose()
    finally:
        os.umask(old)
    assert {"fresh.db", "fresh.db-wal", "fresh.db-shm"} <= set(modes), modes
    assert {n: oct(m) for n, m in modes.items() if m & 0o077} == {}


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    s = Store(f"sqlite:///{path}")
    s.install_schema()
    s.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- 18: large texts ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [200 * 1024, 1024 * 1024])
def test_large_args_round_trip(store: Store, size: int) -> None:
    big = "x" * (size - 10) + "é✓"
    (i,) = store.enqueue([{"task": "t", "args": encode_args([big], {"k": big[:1000]})}], now=T0)
    job = store.get_job(i)
    assert job.args == [big] and job.kwargs == {"k": big[:1000]}
    (claimed,) = store.claim("n", None, 1, 30, now=T0)
    assert claimed.args == encode_args([big], {"k": big[:1000]})


def test_long_last_error_is_stored_as_finish_wrote_it(store: Store) -> None:
    error = "Traceback (most recent call last):\n" + "  line\n" * 15_000 + "RuntimeError: the end"  # ~105 KB
    (i,) = store.enqueue([{"task": "t", "args": "{}"}], now=T0)
    store.claim("n", None, 1, 30, now=T0)
    assert store.finish("n", failed=[(i, error, None)], now=T0) == ([], [])
    stored = store.get_job(i).last_error
    assert stored is not None
    # finish may cap the text (head and tail kept); the database must not cut or refuse it
    assert stored == error or (stored[:1000] == error[:1000] and stored.endswith("RuntimeError: the end"))


def test_large_schedule_args_round_trip(store: Store) -> None:
    big = encode_args(["y" * 300_000])
    sc = store.t.schedules
    with store.engine.begin() as conn:
        conn.execute(sa.insert(sc).values(
            name="big", task="t", spec="every:60s", tz="UTC", args=big, options="{}", spec_hash="h", updated_at=T0,
        ))
    assert store.get_schedule("big").args == big


# -- 13: operator actions ---------------------------------------------------------------------------
def _failed_job(store: Store, **row: object) -> int:
    (i,) = store.enqueue([{"task": "t", "args": "{}", "max_attempts": 1, **row}], now=T0)
    store.claim("n", None, 1, 30, now=T0)
    store.finish("n", failed=[(i, "boom", None)], now=T0)
    return i


def test_retry_refuses_when_the_unique_key_is_held_by_an_active_job(store: Store) -> None:
    old = _failed_job(store, unique_key="report:7")
    before = store.get_job(old)
    (holder,) = store.enqueue([{"task": "t", "args": "{}", "unique_key": "report:7"}], now=T0)
    with pytest.raises(JobStateError) as info:
        store.retry_job(old, now=T0)
    msg = str(info.value)
    assert "report:7" in msg and f"job {holder}" in msg, msg
    assert store.get_job(old) == before  # untouched
    # once the holder is done, the retry goes through
    store.cancel_job(holder, now=T0)
    assert store.retry_job(old, now=T0).state == "queued"


@pytest.mark.parametrize("job_id", [2**63, -(2**63) - 1, 10**20])
def test_retry_and_cancel_of_an_impossible_id_are_not_found(store: Store, job_id: int) -> None:
    for action in (store.retry_job, store.cancel_job):
        with pytest.raises(JobNotFoundError) as info:
            action(job_id)
        assert str(info.value) == f"no job with id {job_id}"


# -- 20: missing tables --------------------------------------------------------------------------
@pytest.fixture
def bare_store(db_url: str, prefix: str) -> Iterator[Store]:
    """A Store whose tables were never installed."""
    s = Store(db_url, table_prefix=prefix)
    yield s
    s.drop_schema()
    s.dispose()


def test_missing_tables_raise_schema_error_naming_db_init(bare_store: Store) -> None:
    s = bare_store
    for call in (
        lambda: s.enqueue([{"task": "t", "args": "{}"}]),
        lambda: s.list_jobs(),
        lambda: s.claim("n", None, 5, 30),
        lambda: s.get_job(1),
        lambda: s.load_schedules(),
    ):
        with pytest.raises(SchemaError) as info:
            call()
        assert "linger-sched db init" in str(info.value), info.value


def test_linger_on_a_server_without_tables_says_db_init(db_url: str, db_name: str, prefix: str) -> None:
    if db_name == "sqlite":
        pytest.skip("SQLite creates its tables on first use")
    app = Linger(db_url, table_prefix=prefix)
    try:
        with pytest.raises(SchemaError) as info:
            app.enqueue("t", 1)
        assert "linger-sched db init" in str(info.value)
        assert app.store.schema_version() is None  # nothing was created
    finally:
        app.store.drop_schema()
        app.store.dispose()


def test_linger_on_a_fresh_sqlite_file_just_works(tmp_path: Path) -> None:
    app = Linger(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        job_id = app.enqueue("t", 1, a=2)
        job = app.get_job(job_id)
        assert (job.task, job.args, job.kwargs, job.state) == ("t", [1], {"a": 2}, "queued")
    finally:
        app.store.dispose()


def test_a_script_on_the_default_sqlite_database_just_works(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "from linger_sched import Linger\n"
        "app = Linger()\n"
        "@app.task(name='hello')\n"
        "def hello(name):\n"
        "    return name\n"
        "print(hello.enqueue('world'))\n"
        "print(app.get_job(1).state)\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout.split()) == (0, ["1", "queued"]), p.stderr
    assert p.stderr == ""
    assert (tmp_path / "linger.db").exists()


# -- 19: upgrades refuse what they cannot do on a table with rows ----------------------------------
def test_every_not_null_column_with_a_python_default_has_a_server_default() -> None:
    md, _ = build_metadata()
    missing = [f"{t.name}.{c.name}" for t in md.tables.values() for c in t.columns
               if not c.nullable and c.default is not None and c.server_default is None]
    assert missing == []


def test_upgrade_refuses_to_add_a_not_null_column_without_a_server_default(store: Store) -> None:
    store.enqueue([{"task": "t", "args": "{}"}], now=T0)
    newer = Store(store.url, table_prefix=store.prefix, engine=store.engine)
    newer.t.jobs.append_column(sa.Column("flavour", sa.String(16), nullable=False, default="plain"))
    with pytest.raises(SchemaError) as info:
        newer.upgrade_schema()
    assert f"{store.prefix}jobs.flavour" in str(info.value) and "server default" in str(info.value)
    cols = {c["name"] for c in sa.inspect(store.engine).get_columns(store.t.jobs.name)}
    assert "flavour" not in cols
    assert store.schema_version() == SCHEMA_VERSION


def test_upgrade_adds_not_null_columns_with_server_defaults_to_a_table_with_rows(store: Store) -> None:
    from linger_sched.store.tables import TextDefault

    (i,) = store.enqueue([{"task": "t", "args": "{}"}], now=T0)
    newer = Store(store.url, table_prefix=store.prefix, engine=store.engine)
    j = newer.t.jobs
    j.append_column(sa.Column("extra_text", sa.Text(), nullable=False, default="{}", server_default=TextDefault("{}")))
    j.append_column(sa.Column("extra_flag", sa.Boolean(), nullable=False, default=False, server_default=sa.false()))
    j.append_column(sa.Column("extra_count", sa.Integer(), nullable=False, default=1, server_default=sa.text("1")))
    newer.upgrade_schema()
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(j.c.extra_text, j.c.extra_flag, j.c.extra_count).where(j.c.id == i)).one()
    assert tuple(row) == ("{}", False, 1)
