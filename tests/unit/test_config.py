"""schedules.yaml validation (file:line:key errors) and settings precedence. No database."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from linger_sched import ConfigError, Linger
from linger_sched.config import DEFAULT_DATABASE_URL, Settings, resolve
from linger_sched.configfile import FileConfig, read_config_file, schedules_from_config
from linger_sched.registry import Registry, TaskDef


def _noop(*args: object, **kwargs: object) -> None:
    return None


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    for name in ("noop", "report"):
        reg.add_task(TaskDef(name=name, func=_noop))
    return reg


def write(tmp_path: Path, text: str, name: str = "schedules.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def load(path: str, registry: Registry) -> None:
    cfg = read_config_file(path)
    for d in schedules_from_config(cfg, registry):
        registry.add_schedule(d)


def assert_located(err: ConfigError, path: str, line: int, key: str) -> None:
    text = str(err)
    assert err.file == path, text
    assert err.line == line, text
    assert f"{path}:{line}:" in text, text
    assert key in text, text
    assert err.key is not None and key in err.key, text


# -- file, line and key of every bad-config case -----------------------------------------
BAD = {
    "unknown top-level key": (
        """
        imports: []
        colour: red
        schedules: {}
        """,
        2, "colour", "unknown key",
    ),
    "unknown schedule key": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            colour: red
        """,
        5, "schedules.nightly.colour", "unknown key",
    ),
    "both cron and every": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            every: 1h
        """,
        5, "schedules.nightly.every", "both",
    ),
    "neither cron nor every": (
        """
        schedules:
          first:
            task: noop
            every: 5m
          nightly:
            task: noop
            tz: UTC
        """,
        5, "schedules.nightly", "needs one of",
    ),
    "bad time zone": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            tz: Mars/Olympus_Mons
        """,
        5, "schedules.nightly.tz", "Mars/Olympus_Mons",
    ),
    "bad cron expression": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 25 * * *"
        """,
        4, "schedules.nightly.cron", "hour",
    ),
    "cron with too few fields": (
        """
        schedules:
          nightly:
            task: noop

            cron: "0 3 *"
        """,
        5, "schedules.nightly.cron", "0 3 *",
    ),
    "bad interval": (
        """
        schedules:
          often:
            every: 10 parsecs
            task: noop
        """,
        3, "schedules.often.every", "10 parsecs",
    ),
    "unknown task": (
        """
        schedules:
          nightly:
            cron: "0 3 * * *"
            task: nosuch.task
        """,
        4, "schedules.nightly.task", "nosuch.task",
    ),
    "missing task": (
        """
        schedules:
          nightly:
            cron: "0 3 * * *"
        """,
        2, "schedules.nightly.task", "task",
    ),
    "bad misfire policy": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            misfire: sometimes
        """,
        5, "schedules.nightly.misfire", "sometimes",
    ),
    "bad overlap policy": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            overlap: maybe
        """,
        5, "schedules.nightly.overlap", "maybe",
    ),
    "bad priority": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            priority: high
        """,
        5, "schedules.nightly.priority", "high",
    ),
    "args not a list": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            args: {a: 1}
        """,
        5, "schedules.nightly.args", "list",
    ),
    "bad default applied to a schedule": (
        """
        defaults:
          tz: Not/AZone
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
        """,
        2, "schedules.nightly.tz", "Not/AZone",
    ),
    "unknown default": (
        """
        defaults:
          misfire: skip
          colour: red
        schedules: {}
        """,
        3, "defaults.colour", "unknown",
    ),
    "schedule body not a mapping": (
        """
        schedules:
          nightly: "0 3 * * *"
        """,
        2, "schedules.nightly", "mapping",
    ),
    "schedules not a mapping": (
        """
        imports: []
        schedules:
          - nightly
        """,
        2, "schedules", "mapping",
    ),
    "duplicate key": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            cron: "0 4 * * *"
        """,
        5, "cron", "duplicate key",
    ),
    "duplicate schedule name in one file": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
          nightly:
            task: noop
            every: 1h
        """,
        5, "nightly", "duplicate key",
    ),
    "YAML syntax error (bad indentation)": (
        """
        schedules:
          nightly:
           task: noop
            cron: "0 3 * * *"
        """,
        4, "cron", "invalid YAML",
    ),
    "YAML syntax error (unclosed bracket)": (
        """
        schedules:
          nightly:
            task: noop
            args: [1, 2
            cron: "0 3 * * *"
        """,
        5, "cron", "flow sequence (started on line 4)",
    ),
    "YAML syntax error (unclosed bracket at the end)": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            args: [1, 2
        """,
        5, "args", "invalid YAML",
    ),
    "YAML syntax error (unclosed quote at the end)": (
        """
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *
        """,
        4, "cron", "invalid YAML",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_config_names_file_line_and_key(case: str, tmp_path: Path, registry: Registry) -> None:
    text, line, key, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, registry)
    assert_located(info.value, path, line, key)
    assert message in str(info.value)
    assert not registry.schedules  # nothing half-registered


def test_yaml_tab_indentation_names_line(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "schedules:\n  nightly:\n\ttask: noop\n")
    with pytest.raises(ConfigError) as info:
        load(path, registry)
    assert info.value.file == path and info.value.line == 3
    assert f"{path}:3:" in str(info.value) and "invalid YAML" in str(info.value)


def test_top_level_not_a_mapping(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load(path, registry)
    assert f"{path}:1:" in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert info.value.file == path and path in str(info.value)


def test_empty_file_is_valid(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "# nothing yet\n")
    cfg = read_config_file(path)
    assert schedules_from_config(cfg, registry) == []


def test_unimportable_module_names_imports_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        database: sqlite:///x.db
        imports: [linger_test_no_such_module_xyz]
        """)
    app = Linger(f"sqlite:///{tmp_path / 'unused.db'}")
    with pytest.raises(ConfigError) as info:
        app.load_config(path)
    assert_located(info.value, path, 2, "imports")
    assert "linger_test_no_such_module_xyz" in str(info.value)
    assert not (tmp_path / "unused.db").exists() and not (tmp_path / "x.db").exists()


def test_duplicate_schedule_yaml_vs_task_decorator(tmp_path: Path) -> None:
    app = Linger(f"sqlite:///{tmp_path / 'unused.db'}")

    @app.task(name="report", cron="0 6 * * *")
    def report() -> None:
        return None

    path = write(tmp_path, """
        schedules:
          other:
            task: report
            every: 1h
          report:
            task: report
            every: 1h
        """)
    with pytest.raises(ConfigError) as info:
        app.load_config(path)
    assert_located(info.value, path, 5, "report")
    assert "declared twice" in str(info.value)
    assert "@task" in str(info.value)  # names the other source too
    assert app.registry.schedules["report"].source.startswith("@task")
    assert not (tmp_path / "unused.db").exists()  # nothing written


def test_good_config_parses_everything(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, """
        database: sqlite:///from-file.db
        table_prefix: filep_
        concurrency: 3
        queues: [a, b]
        imports: []
        defaults:
          tz: Europe/Berlin
          misfire: skip
        schedules:
          nightly:
            task: noop
            cron: "0 3 * * *"
            args: [1, "x"]
            kwargs: {k: v}
            priority: -5
            queue: reports
            max_attempts: 2
            misfire_grace: 10m
            max_catch_up: 4
            overlap: allow
            enabled: false
          often:
            task: report
            every: 15m
            tz: UTC
            misfire: all
        """)
    cfg = read_config_file(path)
    assert (cfg.database, cfg.table_prefix, cfg.concurrency, cfg.queues) == ("sqlite:///from-file.db", "filep_", 3, ["a", "b"])
    defs = {d.name: d for d in schedules_from_config(cfg, registry)}
    n = defs["nightly"]
    assert (n.task, n.spec.tz, n.args, n.kwargs, n.priority, n.queue, n.max_attempts) == (
        "noop", "Europe/Berlin", [1, "x"], {"k": "v"}, -5, "reports", 2)
    assert (n.misfire, n.misfire_grace, n.max_catch_up, n.overlap, n.enabled) == ("skip", 600.0, 4, "allow", False)
    assert n.source == f"{path}:10"
    o = defs["often"]
    assert (o.spec.tz, o.misfire, o.enabled) == ("UTC", "all", True)


# -- precedence: CLI flags > environment > schedules.yaml > defaults ----------------------
def file_config(**values: object) -> FileConfig:
    return FileConfig(path="schedules.yaml", **values)  # type: ignore[arg-type]


FILE = dict(database="sqlite:///file.db", table_prefix="file_", concurrency=3, queues=["fa", "fb"])
ENV = {"LINGER_DATABASE_URL": "sqlite:///env.db", "LINGER_TABLE_PREFIX": "env_", "LINGER_CONCURRENCY": "5", "LINGER_QUEUES": "ea,eb"}
CLI = {"database_url": "sqlite:///cli.db", "table_prefix": "cli_", "concurrency": 7, "queues": "ca,cb"}


def test_defaults_when_nothing_is_given() -> None:
    s = resolve(env={})
    assert s == Settings()
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite:///linger.db"
    assert (s.table_prefix, s.concurrency, s.queues) == ("linger_", 8, None)


def test_file_beats_defaults() -> None:
    s = resolve(file=file_config(**FILE), env={})
    assert (s.database_url, s.table_prefix, s.concurrency, s.queues) == ("sqlite:///file.db", "file_", 3, ("fa", "fb"))
    assert s.poll_interval == Settings().poll_interval  # untouched fields keep their defaults


def test_env_beats_file() -> None:
    s = resolve(file=file_config(**FILE), env=ENV)
    assert (s.database_url, s.table_prefix, s.concurrency, s.queues) == ("sqlite:///env.db", "env_", 5, ("ea", "eb"))


def test_cli_beats_env_and_file() -> None:
    s = resolve(cli=CLI, file=file_config(**FILE), env=ENV)
    assert (s.database_url, s.table_prefix, s.concurrency, s.queues) == ("sqlite:///cli.db", "cli_", 7, ("ca", "cb"))


def test_each_setting_falls_through_independently() -> None:
    s = resolve(cli={"concurrency": 9, "database_url": None, "queues": None},
                file=file_config(database="sqlite:///file.db", table_prefix="file_"),
                env={"LINGER_TABLE_PREFIX": "env_", "LINGER_DATABASE_URL": ""})
    assert s.concurrency == 9  # cli
    assert s.table_prefix == "env_"  # env over file
    assert s.database_url == "sqlite:///file.db"  # empty env var and None flag do not count
    assert s.queues is None  # default


def test_code_is_under_file_and_env() -> None:
    code = {"database_url": "sqlite:///code.db", "concurrency": 2}
    assert resolve(code=code, env={}).database_url == "sqlite:///code.db"
    assert resolve(code=code, file=file_config(database="sqlite:///file.db"), env={}).database_url == "sqlite:///file.db"
    assert resolve(code=code, env={"LINGER_CONCURRENCY": "4"}).concurrency == 4


def test_env_durations_and_bad_env_values() -> None:
    s = resolve(env={"LINGER_LEASE_TTL": "1m", "LINGER_RENEW_INTERVAL": "20", "LINGER_POLL_INTERVAL": "0.25"})
    assert (s.lease_ttl, s.renew_interval, s.poll_interval) == (60.0, 20.0, 0.25)
    with pytest.raises(ConfigError, match="LINGER_CONCURRENCY"):
        resolve(env={"LINGER_CONCURRENCY": "lots"})
    with pytest.raises(ConfigError, match="LINGER_CONCURRENCY"):
        resolve(env={"LINGER_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match="LINGER_LEASE_TTL"):
        resolve(env={"LINGER_LEASE_TTL": "forever"})
    with pytest.raises(ConfigError, match="renew_interval"):
        resolve(env={"LINGER_LEASE_TTL": "10", "LINGER_RENEW_INTERVAL": "10"})
    with pytest.raises(ConfigError, match="table_prefix"):
        resolve(cli={"table_prefix": "bad-prefix;"}, env={})
    with pytest.raises(ConfigError, match="queue"):
        resolve(cli={"queues": " , "}, env={})


def test_precedence_through_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
        database: sqlite:///file.db
        concurrency: 3
        queues: fa, fb
        """)
    cfg = read_config_file(path)
    assert cfg.queues == ["fa", "fb"]
    assert resolve(file=cfg, env={}).database_url == "sqlite:///file.db"
    assert resolve(file=cfg, env={"LINGER_DATABASE_URL": "sqlite:///env.db"}).database_url == "sqlite:///env.db"
    assert resolve(cli={"database_url": "sqlite:///cli.db"}, file=cfg, env={"LINGER_DATABASE_URL": "sqlite:///env.db"}).database_url == "sqlite:///cli.db"


def test_bad_typed_top_level_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
        database: sqlite:///x.db
        concurrency: many
        """)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert_located(info.value, path, 2, "concurrency")


def test_explicit_database_url_beats_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINGER_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("LINGER_TABLE_PREFIX", "envp_")
    assert Linger().settings.database_url == "sqlite:///from-env.db"
    assert Linger().settings.table_prefix == "envp_"
    explicit = f"sqlite:///{tmp_path / 'explicit.db'}"
    app = Linger(database_url=explicit, table_prefix="argp_")
    assert app.settings.database_url == explicit
    assert app.settings.table_prefix == "argp_"
    monkeypatch.delenv("LINGER_DATABASE_URL")
    assert Linger().settings.database_url == DEFAULT_DATABASE_URL


def test_load_config_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, """
        database: sqlite:///file.db
        concurrency: 3
        """)
    monkeypatch.delenv("LINGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("LINGER_CONCURRENCY", raising=False)
    app = Linger()
    app.load_config(path)
    assert (app.settings.database_url, app.settings.concurrency) == ("sqlite:///file.db", 3)  # file > defaults

    monkeypatch.setenv("LINGER_DATABASE_URL", "sqlite:///env.db")
    app = Linger()
    app.load_config(path)
    assert app.settings.database_url == "sqlite:///env.db"  # env > file
    assert app.settings.concurrency == 3

    app = Linger()
    app.load_config(path, cli={"database_url": "sqlite:///cli.db", "concurrency": 6})
    assert (app.settings.database_url, app.settings.concurrency) == ("sqlite:///cli.db", 6)  # cli > env


def test_explicit_database_url_still_beats_environment_after_load_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "schedules: {}\n")
    monkeypatch.setenv("LINGER_DATABASE_URL", "sqlite:///from-env.db")
    explicit = f"sqlite:///{tmp_path / 'explicit.db'}"
    app = Linger(database_url=explicit)
    app.load_config(path)
    assert app.settings.database_url == explicit


def test_keyword_arguments_rank_the_same_with_or_without_a_config_file(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """docs/reference/settings.md: defaults < Linger(...) keywords < schedules.yaml < environment < CLI,
    an explicit database URL or prefix above the environment. Loading a schedules.yaml used to lift
    every keyword above the environment and the file (found while documenting the settings)."""
    monkeypatch.setenv("LINGER_CONCURRENCY", "4")
    app = Linger(concurrency=16, poll_interval=0.5)
    assert app.settings.concurrency == 4  # the environment beats the keyword
    app.load_config(write(tmp_path, "schedules: {}\n"))
    assert (app.settings.concurrency, app.settings.poll_interval) == (4, 0.5)  # still, after a file
    monkeypatch.delenv("LINGER_CONCURRENCY")
    app = Linger(concurrency=16)
    app.load_config(write(tmp_path, "concurrency: 6\nschedules: {}\n"))
    assert app.settings.concurrency == 6  # the file beats the keyword
    app = Linger(concurrency=16)
    app.load_config(write(tmp_path, "schedules: {}\n"))
    assert app.settings.concurrency == 16  # nothing above it: the keyword holds


def test_imports_resolve_next_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tasks_beside_config.py").write_text("from linger_sched import task\n\n@task\ndef beside():\n    pass\n")
    path = write(conf, "imports: [tasks_beside_config]\nschedules: {}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(elsewhere))])
    app = Linger(f"sqlite:///{tmp_path / 'x.db'}")
    app.load_config(path)
    import tasks_beside_config  # noqa: F401  (imported by load_config)
