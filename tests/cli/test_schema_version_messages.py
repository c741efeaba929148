"""What a schema of another version is told, whichever way the versions differ (found while
documenting upgrades, issue 15): a schema newer than the package asks to upgrade the package
(``db upgrade`` refuses it), an older one to run ``db upgrade``; ``db init`` says so too instead
of "schema ready". Once per database."""

from __future__ import annotations

import sqlalchemy as sa
from cli_support import Cli

from linger_sched.store import Store
from linger_sched.store.schema import SCHEMA_VERSION


def record(store: Store, version: int) -> None:
    meta = store.t.meta
    with store.engine.begin() as conn:
        conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=str(version)))


def test_a_newer_schema_asks_for_a_newer_package(cli: Cli, empty_db: Store) -> None:
    empty_db.install_schema()
    record(empty_db, SCHEMA_VERSION + 1)
    for command in (["status"], ["jobs"], ["db", "init"]):
        r = cli.invoke(*command)
        assert r.code == 1, r
        assert f"schema version {SCHEMA_VERSION + 1}" in r.err and "upgrade the package" in r.err, r
        assert "db upgrade" not in r.err, r  # which would refuse it
    assert empty_db.schema_version() == SCHEMA_VERSION + 1  # nothing written


def test_an_older_schema_asks_for_db_upgrade_even_from_db_init(cli: Cli, empty_db: Store) -> None:
    empty_db.install_schema()
    record(empty_db, SCHEMA_VERSION - 1)
    r = cli.invoke("db", "init")
    assert r.code == 1 and "schema ready" not in r.out, r
    assert f"schema version {SCHEMA_VERSION - 1}, expected {SCHEMA_VERSION}" in r.err and "db upgrade" in r.err, r
    r = cli.invoke("db", "upgrade")
    assert r.code == 0, r
    r = cli.invoke("db", "init")
    assert r.code == 0 and "schema ready" in r.out, r


def test_health_is_unhealthy_on_a_schema_of_another_version(cli: Cli, empty_db: Store) -> None:
    empty_db.install_schema()
    for version, advice in ((SCHEMA_VERSION - 1, "db upgrade"), (SCHEMA_VERSION + 1, "upgrade the package")):
        record(empty_db, version)
        r = cli.invoke("health")
        assert r.code == 2, r
        assert f"schema version {version}, expected {SCHEMA_VERSION}" in r.out and advice in r.out, r
    record(empty_db, SCHEMA_VERSION)
    assert cli.invoke("health").code in (0, 1)  # no node: degraded, but the schema is right


def test_an_implicit_schedules_yaml_that_fails_says_where_it_came_from(cli: Cli) -> None:
    """A schedules.yaml in the working directory is read by every command; when it names tasks
    the app does not have (a command pasted in another project's directory), the error says that
    the file was read because it is there, and how to name another (found by a new-user review)."""
    (cli.cwd / "schedules.yaml").write_text("schedules:\n  nightly:\n    task: shop.cleanup\n    cron: '0 3 * * *'\n")
    r = cli.invoke("jobs")
    assert r.code == 2, r
    assert "schedules.yaml:3" in r.err and "unknown task 'shop.cleanup'" in r.err, r
    assert "read because it is in the working directory" in r.err and "--config PATH" in r.err, r
    r = cli.invoke("jobs", "--config", "schedules.yaml")  # named: no such note
    assert r.code == 2 and "working directory" not in r.err, r


def test_the_suggested_command_repeats_the_options_that_chose_the_database(nodb_cli: Cli, tmp_path) -> None:
    """`--database URL jobs` on missing tables said "run `linger-sched db init`": run as written,
    that initialised ./linger.db (or the environment's database), not URL (found by a new-user review)."""
    other = tmp_path / "other.db"
    for args in (["--database", f"sqlite:///{other}", "jobs"], ["jobs", "--database", f"sqlite:///{other}"]):
        r = nodb_cli.invoke(*args)
        assert r.code == 1, r
        assert f"run `linger-sched --database sqlite:///{other} db init`" in r.err, r
    nodb_cli.write("elsewhere.py", f"""
        from linger_sched import Linger
        app = Linger("sqlite:///{other}", auto_install=False)
        """)
    r = nodb_cli.invoke("--app", "elsewhere:app", "status")
    assert r.code == 1 and "run `linger-sched --app elsewhere:app db init`" in r.err, r
    r = nodb_cli.invoke("jobs")  # the environment chose it: a bare command uses it too
    assert r.code == 1 and "run `linger-sched db init`" in r.err, r
    assert not other.exists()


def test_a_suggested_command_never_shows_a_password(nodb_cli: Cli) -> None:
    r = nodb_cli.invoke("--database", "postgresql://ann:s3cret@127.0.0.1:1/nowhere", "jobs")
    assert r.code == 1 and "s3cret" not in r.out + r.err, r


def test_no_config_skips_the_schedules_yaml_of_the_working_directory(cli: Cli) -> None:
    """A command run in a directory holding another project's schedules.yaml (the repository root)
    had no way to skip it but to cd elsewhere: --no-config, before or after the command."""
    (cli.cwd / "schedules.yaml").write_text("schedules:\n  nightly:\n    task: shop.cleanup\n    cron: '0 3 * * *'\n")
    r = cli.invoke("db", "init")
    assert r.code == 2 and "--no-config" in r.err, r  # the note names the way out
    for args in (["--no-config", "db", "init"], ["db", "init", "--no-config"], ["--no-config", "jobs"]):
        r = cli.invoke(*args)
        assert r.code == 0, r
    r = cli.invoke("--no-config", "schedules")
    assert r.code == 0 and "nightly" not in r.out, r
    r = cli.invoke("jobs", "--config", "schedules.yaml", "--no-config")
    assert r.code == 2 and "--config" in r.err and "--no-config" in r.err, r
    r = cli.invoke("--no-config", "--database", "sqlite:///elsewhere.db", "jobs")
    assert r.code == 1 and "run `linger-sched --database sqlite:///elsewhere.db --no-config db init`" in r.err, r
