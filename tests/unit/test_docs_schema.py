"""docs/reference/schema.md cannot drift from the code: its tables come from the build hook
(docs/reference/_hooks.py, ``<!-- linger: schema -->``), which fails on an undocumented or
unknown table, column or index; what it shows is what ``linger-sched db init`` creates on
SQLite, and what ``install_schema`` creates on every database (indexes, their columns and their
WHERE); the SQL on the page runs on every database, and ``linger-sched db recount`` repairs the
counts after the hand edit it shows."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from mkdocs.exceptions import PluginError

from linger_sched.store import SCHEMA_VERSION, Store
from linger_sched.store.tables import build_metadata

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reference" / "schema.md"
DEFAULT_PREFIX = "linger_"
DATABASES = ("SQLite", "PostgreSQL", "MySQL/MariaDB")
DIALECT_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB", "mariadb": "MySQL/MariaDB"}


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("linger_docs_hooks", ROOT / "docs" / "reference" / "_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


# -- reading the generated text back -----------------------------------------------------------
def sections(text: str) -> dict[str, str]:
    """``{table name: its section}`` of the generated text."""
    parts = re.split(r"^### `(\w+)`$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def rows(section: str, first_header: str) -> list[list[str]]:
    """The cells of the rows of the table in ``section`` whose header starts with ``first_header``."""
    out: list[list[str]] = []
    inside = False
    for line in section.splitlines():
        if line.startswith(f"| {first_header} |"):
            inside = True
            continue
        if inside and line.startswith("| ---"):
            continue
        if inside and line.startswith("|"):
            out.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif inside:
            inside = False
    return out


def per_database(cell: str) -> dict[str, str]:
    """A cell that is the same everywhere, or ``Label, Label: text<br>Label: text``, by database."""
    if not any(f"{db}: " in cell or f"{db}, " in cell for db in DATABASES):
        return dict.fromkeys(DATABASES, cell)
    out: dict[str, str] = {}
    for part in cell.split("<br>"):
        labels, _, text = part.partition(": ")
        for label in labels.split(", "):
            assert label in DATABASES, (label, cell)
            out[label] = text
    assert set(out) == set(DATABASES), cell
    return out


def names_in(cell: str) -> list[str]:
    return re.findall(r"`(\w+)`", cell)


def bare(sql: str) -> str:
    """A WHERE clause without what a database adds when it gives it back (casts, parentheses,
    quoting, spaces), for comparing."""
    return re.sub(r"[\s()`\"]", "", sql.replace("::text", "")).lower()


def page_model(prefix: str) -> dict[str, Any]:
    """What the generated text says: per table, its columns (name -> (nullable, MySQL only)) and
    its indexes (name -> (unique, {database: key columns}, {database: WHERE or None}))."""
    model: dict[str, Any] = {}
    for table, section in sections(hooks.schema_tables(prefix)).items():
        columns = {}
        for cells in rows(section, "column"):
            (name,) = names_in(cells[0])
            columns[name] = (cells[2] == "yes", "MySQL/MariaDB only" in cells[0])
        indexes = {}
        for cells in rows(section, "index"):
            (name,) = names_in(cells[0])
            keys = {db: names_in(text.split(" INCLUDE ")[0]) for db, text in per_database(cells[2]).items()}
            where = {db: None if text == "all" else text.strip("`") for db, text in per_database(cells[3]).items()}
            indexes[name] = (cells[1] == "yes", keys, where)
        model[table] = {"columns": columns, "indexes": indexes}
    return model


# -- the hook --------------------------------------------------------------------------------
def test_every_table_column_and_index_of_the_code_is_on_the_page() -> None:
    text = hooks.schema_tables()
    model = page_model(DEFAULT_PREFIX)
    for partial in (True, False):
        md, _ = build_metadata(DEFAULT_PREFIX, partial_indexes=partial)
        assert list(model) == list(md.tables), "one section per table, in the code's order"
        for table in md.tables.values():
            for col in table.columns:
                assert col.name in model[table.name]["columns"], f"{table.name}.{col.name} is not on the page"
                nullable, mysql_only = model[table.name]["columns"][col.name]
                assert nullable == col.nullable, (table.name, col.name)
                assert mysql_only == (col.computed is not None)
            for ix in table.indexes:
                unique, keys, where = model[table.name]["indexes"][str(ix.name)]
                assert unique == ix.unique
                for db in (("MySQL/MariaDB",) if not partial else ("SQLite", "PostgreSQL")):
                    assert keys[db] == [c.name for c in ix.columns], (ix.name, db)
                    dialect = {"SQLite": "sqlite", "PostgreSQL": "postgresql", "MySQL/MariaDB": "mysql"}[db]
                    ddl = str(sa.schema.CreateIndex(ix).compile(dialect=_dialect(dialect)))
                    assert (where[db] is None) == (" WHERE " not in ddl), (ix.name, db)
                    if where[db] is not None:
                        assert bare(ddl.split(" WHERE ", 1)[1]) == bare(where[db]), (ix.name, db)
    # no more than the code has either
    names = {t for p in (True, False) for t in build_metadata(DEFAULT_PREFIX, partial_indexes=p)[0].tables}
    assert set(model) == names
    for word in ("row id", "timestamp", "text", "boolean"):
        assert f"| {word} |" in hooks.schema_types(), word
        assert f"| {word} |" in text, f"the type {word} is named in schema_types but used by no column"


def _dialect(name: str) -> sa.Dialect:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    return {"sqlite": sqlite, "postgresql": postgresql, "mysql": mysql}[name].dialect()  # type: ignore[no-any-return]


def test_every_name_fits_the_prefix_limit_the_page_states() -> None:
    """"every name is the prefix plus at most 31 characters"."""
    names = []
    for partial in (True, False):
        md, _ = build_metadata("p_", partial_indexes=partial)
        for table in md.tables.values():
            names.append(table.name)
            names += [str(ix.name) for ix in table.indexes]
            names += [str(c.name) for c in table.constraints if c.name is not None]
    assert max(len(n) - len("p_") for n in names) <= 31
    assert "jobs_active_schedule_ix" in {n[2:] for n in names}


def test_the_page_uses_the_markers_and_they_all_expand() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert "<!-- linger: schema -->" in page and "<!-- linger: schema_types -->" in page
    expanded = hooks.MARKER.sub(hooks._generate, page)
    assert "<!-- linger:" not in expanded
    assert "### `linger_jobs`" in expanded and "| `linger_jobs_queued_ix` |" in expanded
    assert f"**version {SCHEMA_VERSION}**" in page


@pytest.mark.parametrize("change", [
    ("SCHEMA_COLUMNS", "jobs", "trace_context", None, "no description for column jobs.trace_context"),
    ("SCHEMA_COLUMNS", "jobs", "finished_state", None, "no description for column jobs.finished_state"),
    ("SCHEMA_COLUMNS", "nodes", "not_a_column", "made up", "does not exist: nodes.not_a_column"),
    ("SCHEMA_TABLES", None, "counts", None, "no description for table counts"),
    ("SCHEMA_TABLES", None, "archive", "made up", "does not exist: archive"),
    ("SCHEMA_INDEXES", None, "jobs_claim_ix", "made up", "does not exist: jobs_claim_ix"),
    ("SCHEMA_INDEXES", None, "jobs_done_ix", None, "no description for index jobs_done_ix"),
], ids=lambda c: f"{c[0]}-{c[2]}-{'stale' if c[3] else 'missing'}")
def test_a_missing_or_stale_description_fails_the_build(monkeypatch: pytest.MonkeyPatch,
                                                         change: tuple[str, str | None, str, str | None, str]) -> None:
    attr, table, key, value, message = change
    described = {k: dict(v) if isinstance(v, dict) else v for k, v in getattr(hooks, attr).items()}
    target = described[table] if table is not None else described
    if value is None:
        del target[key]
    else:
        target[key] = value
    monkeypatch.setattr(hooks, attr, described)
    with pytest.raises(PluginError, match=re.escape(message)):
        hooks.schema_tables()
    with pytest.raises(PluginError):  # as mkdocs calls it: the page's marker
        hooks.MARKER.sub(hooks._generate, "<!-- linger: schema -->")


def test_a_column_type_without_a_name_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    types = dict(hooks.SCHEMA_TYPES)
    del types[("TEXT", "TEXT", "LONGTEXT")]
    monkeypatch.setattr(hooks, "SCHEMA_TYPES", types)
    with pytest.raises(PluginError, match="LONGTEXT"):
        hooks.schema_tables()


# -- the page against real databases ---------------------------------------------------------
def linger_sched(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real console script, without the caller's LINGER_* environment."""
    script = Path(sys.executable).with_name("linger-sched")
    base = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    return subprocess.run([str(script), *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_the_tables_on_the_page_are_those_db_init_creates_on_sqlite(tmp_path: Path) -> None:
    r = linger_sched("db", "init", cwd=tmp_path, env={"LINGER_DATABASE_URL": "sqlite:///linger.db"})
    assert r.returncode == 0 and "prefix linger_" in r.stdout, r
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'linger.db'}")
    try:
        check_installed(engine, DEFAULT_PREFIX, page_model(DEFAULT_PREFIX))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT * FROM linger_meta").all() == [("schema_version", str(SCHEMA_VERSION))]
    finally:
        engine.dispose()


def check_installed(engine: sa.Engine, prefix: str, model: dict[str, Any]) -> None:
    """The installed tables are the page's: names, columns (and NULL), indexes (unique, key
    columns, PostgreSQL's INCLUDE, and whether and on what rows they are partial)."""
    db = DIALECT_LABEL[engine.dialect.name]
    insp = sa.inspect(engine)
    installed = sorted(n for n in insp.get_table_names() if n.startswith(prefix))
    assert installed == sorted(model), "the tables on the page are not those installed"
    for table, shown in model.items():
        columns = {c["name"]: c for c in insp.get_columns(table)}
        expected = {name for name, (_, mysql_only) in shown["columns"].items() if db == "MySQL/MariaDB" or not mysql_only}
        assert set(columns) == expected, table
        for name in expected:
            assert bool(columns[name]["nullable"]) == shown["columns"][name][0], (table, name)
        indexes = {ix["name"]: ix for ix in insp.get_indexes(table)}
        assert set(indexes) == set(shown["indexes"]), f"{table}: the indexes on the page are not those installed"
        for name, (unique, keys, where) in shown["indexes"].items():
            ix = indexes[name]
            assert bool(ix["unique"]) == unique, name
            assert list(ix["column_names"]) == keys[db], name
            options = ix.get("dialect_options", {})
            got = options.get(f"{engine.dialect.name}_where")
            got_text = None if got is None else getattr(got, "text", got)
            assert (got_text is None) == (where[db] is None), (name, got_text)
            if got_text is not None:
                assert bare(got_text) == bare(where[db]), name
            if db == "PostgreSQL":
                include = "queue_ix" in name
                assert options.get("postgresql_include", []) == (["state"] if include else []), name


def test_the_indexes_named_on_the_page_exist_after_install(store: Store, prefix: str) -> None:
    model = page_model(prefix)
    assert model == {k.replace(DEFAULT_PREFIX, prefix, 1): {
        "columns": v["columns"],
        "indexes": {n.replace(DEFAULT_PREFIX, prefix, 1): i for n, i in v["indexes"].items()},
    } for k, v in page_model(DEFAULT_PREFIX).items()}, "the page depends on the prefix only by its names"
    check_installed(store.engine, prefix, model)


def sql_statements(page: str, prefix: str) -> list[str]:
    out = []
    for block in re.findall(r"^```sql\n(.*?)^```", page, flags=re.M | re.S):
        lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("--")]
        out += [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    return [s.replace(DEFAULT_PREFIX, prefix) for s in out]


def test_the_sql_on_the_page_runs_and_db_recount_repairs_the_counts(store: Store, db_url: str, prefix: str,
                                                                      tmp_path: Path) -> None:
    page = PAGE.read_text(encoding="utf-8")
    statements = sql_statements(page, prefix)
    assert len(statements) >= 7 and any(s.startswith("DELETE") for s in statements)
    # two jobs of the retired task failed for good, one of another task succeeded
    ids = store.enqueue([{"task": "shop.tasks.retired_task", "args": "{}", "max_attempts": 1},
                         {"task": "shop.tasks.retired_task", "args": "{}", "max_attempts": 1},
                         {"task": "shop.tasks.kept", "args": "{}"}])
    claimed = store.claim("node-a", None, 10, 30)
    assert sorted(c.id for c in claimed) == ids
    store.finish("node-a", succeeded=[ids[2]], failed=[(ids[0], "boom", None), (ids[1], "boom", None)])
    assert store.count_by_state() == {"failed": 2, "succeeded": 1}

    results: dict[str, Any] = {}
    with store.engine.begin() as conn:
        for stmt in statements:
            result = conn.exec_driver_sql(stmt)
            results[stmt] = result.all() if result.returns_rows else result.rowcount
    assert results[f"SELECT * FROM {prefix}meta"] == [("schema_version", str(SCHEMA_VERSION))]
    failures = next(v for k, v in results.items() if "WHERE state = 'failed'" in k)
    assert sorted(r[0] for r in failures) == ids[:2]
    counted = next(v for k, v in results.items() if k.startswith("SELECT queue, state, SUM(n)"))
    assert sorted((q, s, int(n)) for q, s, n in counted) == [("default", "failed", 2), ("default", "succeeded", 1)]
    assert next(v for k, v in results.items() if k.startswith("DELETE")) == 2

    # the hand edit left the counts wrong, as the page says; the command it shows repairs them
    assert store.count_by_state() == {"failed": 2, "succeeded": 1}
    r = linger_sched(*shlex.split("linger-sched db recount")[1:], cwd=tmp_path,
                     env={"LINGER_DATABASE_URL": db_url, "LINGER_TABLE_PREFIX": prefix})
    assert r.returncode == 0, r
    assert r.stdout.strip() == "1 finished job counted in 1 (queue, state) pair", r
    assert store.count_by_state() == {"succeeded": 1}
