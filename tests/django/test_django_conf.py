"""LINGER_SCHED and DATABASES as linger-sched settings: the job table's URL is built from the
alias's DATABASES entry (through the driver Django uses), every key of LINGER_SCHED is a
setting, and every bad key, value or ENGINE is an ImproperlyConfigured that names it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import override_settings

from linger_sched.contrib.django import DjangoLinger, app, conf, get_app
from linger_sched.store import Store


@contextmanager
def extra_alias(alias: str, entry: dict[str, Any]) -> Iterator[str]:
    """``DATABASES[alias] = entry`` for the block (never connected to)."""
    settings.DATABASES[alias] = entry
    try:
        yield alias
    finally:
        with contextlib.suppress(AttributeError):  # the wrapper made for this thread, if any
            del connections[alias]
        del settings.DATABASES[alias]


def test_the_job_tables_url_is_the_aliases_database_through_djangos_driver(db_alias: str) -> None:
    entry = connections[db_alias].settings_dict
    url = sa.make_url(conf.database_url(db_alias))
    expected_driver = {"default": "sqlite+pysqlite", "postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}
    assert url.drivername == expected_driver[db_alias]
    assert url.database == str(entry["NAME"])  # the test database: what the connection uses now
    if db_alias != "default":
        assert (url.host, url.port, url.username) == (entry["HOST"] or None, int(entry["PORT"]), entry["USER"])
    if db_alias == "mariadb":
        assert url.query["charset"] == "utf8mb4"  # OPTIONS are the driver's connect arguments
    # and it is the same database Django's connection reaches
    store = Store(str(url.render_as_string(hide_password=False)), table_prefix="never_")
    try:
        assert store.schema_version() is None or db_alias == "default"
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE linger_probe_t (x INTEGER)"))
            conn.commit()
        try:
            with connections[db_alias].cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM linger_probe_t")
                assert cur.fetchone()[0] == 0
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text("DROP TABLE linger_probe_t"))
                conn.commit()
            engine.dispose()
    finally:
        store.dispose()


def test_every_linger_sched_key_is_a_setting_durations_as_numbers_timedeltas_or_strings() -> None:
    d = conf.read({
        "DATABASE": "side", "TABLE_PREFIX": "shop_", "CONCURRENCY": 4, "QUEUES": ["mail", "default"],
        "POLL_INTERVAL": 0.5, "TICK_INTERVAL": "2s", "LEASE_TTL": timedelta(minutes=1), "renew_interval": "20s",
        "KEEP_FINISHED": "30d", "MISFIRE_THRESHOLD": None, "AUTO_INSTALL": True,
    })
    s = d.settings
    assert d.alias == "side"
    assert s.database_url == conf.database_url("side")
    assert (s.table_prefix, s.concurrency, s.queues) == ("shop_", 4, ("mail", "default"))
    assert (s.poll_interval, s.tick_interval, s.lease_ttl, s.renew_interval) == (0.5, 2.0, 60.0, 20.0)
    assert (s.keep_finished, s.misfire_threshold, s.auto_install) == (30 * 86400.0, None, True)


@pytest.mark.parametrize("rate", ["25%", "0.25", 0.25])
def test_a_rate_and_a_size_in_the_environments_forms(rate: Any) -> None:
    """HEALTH_MAX_FAILURE_RATE as documented ("25%" or "0.25") and RESULT_MAX_BYTES as a string
    go through the environment's parsers (they used to be refused)."""
    s = conf.read({"HEALTH_MAX_FAILURE_RATE": rate, "RESULT_MAX_BYTES": "4096"}).settings
    assert (s.health_max_failure_rate, s.result_max_bytes) == (0.25, 4096)


def test_without_linger_sched_the_defaults_on_the_default_database_and_no_table_creation_on_first_use() -> None:
    d = conf.read({})
    assert d.alias == "default"
    assert d.settings.table_prefix == "linger_"
    assert d.settings.auto_install is False  # the tables come from manage.py migrate


def test_the_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINGER_DATABASE_URL", "postgresql://elsewhere/prod")
    monkeypatch.setenv("LINGER_CONCURRENCY", "99")
    a = DjangoLinger({"CONCURRENCY": 3})
    assert a.settings.database_url == conf.database_url("default")
    assert a.settings.concurrency == 3


@pytest.mark.parametrize(("value", "message"), [
    ({"CONCURENCY": 4}, "LINGER_SCHED has an unknown key 'CONCURENCY' (known: DATABASE, TABLE_PREFIX, CONCURRENCY"),
    ({"DATABASE_URL": "sqlite:///x.db"}, "LINGER_SCHED['DATABASE_URL']: the job table's database comes from DATABASES"),
    ({"DATABASE": "nope"}, "LINGER_SCHED['DATABASE'] = 'nope' is not an alias of DATABASES (aliases: default, side"),
    ({"DATABASE": 3}, "LINGER_SCHED['DATABASE'] must name an alias of DATABASES, got 3"),
    ({"CONCURRENCY": 0}, "LINGER_SCHED['CONCURRENCY']: must be an integer from 1 to 10000, got 0"),
    ({"CONCURRENCY": "8"}, "LINGER_SCHED['CONCURRENCY']: must be an integer, got '8'"),
    ({"TABLE_PREFIX": "1bad"}, "LINGER_SCHED['TABLE_PREFIX']: "),
    ({"POLL_INTERVAL": "soon"}, "LINGER_SCHED['POLL_INTERVAL']: "),
    ({"LEASE_TTL": -1}, "LINGER_SCHED['LEASE_TTL']: must be > 0, got -1.0"),
    ({"RENEW_INTERVAL": 60}, "LINGER_SCHED['RENEW_INTERVAL']: renew_interval (60s) must be shorter than lease_ttl (30s)"),
    ({"QUEUES": []}, "LINGER_SCHED['QUEUES']: "),
    ({"HEALTH_MAX_FAILURE_RATE": "lots"}, "LINGER_SCHED['HEALTH_MAX_FAILURE_RATE']: must be a share from 0 to 1"),
    ({"HEALTH_MAX_FAILURE_RATE": "150%"}, "LINGER_SCHED['HEALTH_MAX_FAILURE_RATE']: must be a share from 0 to 1"),
    ({"AUTO_INSTALL": "yes"}, "LINGER_SCHED['AUTO_INSTALL']: must be true, false or None, got 'yes'"),
    (["CONCURRENCY"], "LINGER_SCHED must be a dict, got list"),
])
def test_a_bad_setting_is_improperly_configured_naming_it(value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        conf.read(value)
    assert message in str(raised.value)


def test_an_unsupported_engine_is_improperly_configured_naming_it() -> None:
    with extra_alias("dummy", {"ENGINE": "django.db.backends.dummy"}), pytest.raises(ImproperlyConfigured) as raised:
        conf.read({"DATABASE": "dummy"})
    assert "DATABASES['dummy']['ENGINE'] is not set" in str(raised.value)
    with extra_alias("cockroach", {"ENGINE": "djtestapp.otherdb", "NAME": "x"}), pytest.raises(ImproperlyConfigured) as raised:
        conf.read({"DATABASE": "cockroach"})
    assert ("DATABASES['cockroach']['ENGINE'] (ENGINE 'djtestapp.otherdb'): unsupported database 'cockroachdb': "
            "use SQLite, PostgreSQL or MySQL/MariaDB") in str(raised.value)
    with extra_alias("oracle", {"ENGINE": "django.db.backends.oracle", "NAME": "x"}), pytest.raises(ImproperlyConfigured) as raised:
        conf.read({"DATABASE": "oracle"})
    assert str(raised.value).startswith("DATABASES['oracle']['ENGINE'] = 'django.db.backends.oracle' cannot be loaded: ")


def test_connection_settings_that_cannot_be_a_url_are_improperly_configured_naming_them() -> None:
    entry = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "HOST": "db", "PORT": "54x32"}
    with extra_alias("pg", entry), pytest.raises(ImproperlyConfigured) as raised:
        conf.read({"DATABASE": "pg"})
    assert "DATABASES['pg']['PORT'] (ENGINE 'django.db.backends.postgresql'): not a port number: '54x32'" in str(raised.value)
    entry = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    with extra_alias("mem", entry), pytest.raises(ImproperlyConfigured) as raised:
        conf.read({"DATABASE": "mem"})
    assert "DATABASES['mem']['NAME']" in str(raised.value) and "in-memory SQLite" in str(raised.value)


def test_sockets_options_and_passwords_of_server_entries() -> None:
    pg = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "app", "PASSWORD": "s3cr:t@x",
          "HOST": "/var/run/postgresql", "PORT": 5433,
          "OPTIONS": {"sslmode": "require", "isolation_level": 1, "server_side_binding": True}}
    with extra_alias("pg", pg):
        url = sa.make_url(conf.database_url("pg"))
    assert (url.host, url.port, url.database, url.username, url.password) == (None, 5433, "shop", "app", "s3cr:t@x")
    assert dict(url.query) == {"host": "/var/run/postgresql", "sslmode": "require"}  # Django's own options dropped
    maria = {"ENGINE": "django.db.backends.mysql", "NAME": "shop", "HOST": "/run/mysqld/mysqld.sock",
             "OPTIONS": {"charset": "utf8mb4", "ssl": {"ca": "/etc/ca.pem"}, "init_command": "SET x=1"}}
    with extra_alias("maria", maria):
        url = sa.make_url(conf.database_url("maria"))
    assert dict(url.query) == {"unix_socket": "/run/mysqld/mysqld.sock", "charset": "utf8mb4", "ssl_ca": "/etc/ca.pem"}


def test_the_app_is_one_object_made_from_settings_and_follows_override_settings() -> None:
    assert app is get_app()
    assert (app.alias, app.settings.table_prefix) == ("default", settings.LINGER_SCHED["TABLE_PREFIX"])
    with override_settings(LINGER_SCHED={"DATABASE": "side", "TABLE_PREFIX": "other_", "CONCURRENCY": 2}):
        assert get_app() is app
        assert (app.alias, app.settings.table_prefix, app.settings.concurrency) == ("side", "other_", 2)
        assert app.store.url == conf.database_url("side") and app.store.prefix == "other_"
        assert "djtestapp.tasks.record" in app.registry.tasks  # the tasks stay
    assert (app.alias, app.settings.table_prefix) == ("default", settings.LINGER_SCHED["TABLE_PREFIX"])


def test_tasks_are_discovered_from_each_installed_apps_tasks_module() -> None:
    from djtestapp import tasks

    assert app.registry.tasks["djtestapp.tasks.record"].func is tasks.record.definition.func
    assert tasks.record.app is app
