"""The package's structure, checked so that it stays: imports point one way (down the layers,
and inside the store package), only ``clock`` reads time or sleeps, and only
``store/dialect.py`` knows which databases exist (issue: the store, "checks that keep the
layers honest")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "linger_sched"

# a module may import only modules of a lower layer (imports under TYPE_CHECKING are types only)
LAYERS = {
    "errors": 0, "clock": 1, "events": 1, "specs": 2, "registry": 3, "configfile": 4, "store": 4, "config": 5, "scheduler": 5,
    "worker": 5, "node": 6, "harness": 6, "app": 7, "__init__": 8, "cli": 9, "testing": 9,
    "web": 8,  # the dashboard: a front end over app; the CLI serves it and shares its bulk job actions
    "health": 5,  # health checks and the scheduler watch: read the store; the node and the app use them
    "metrics": 7,  # Prometheus metrics: hooks on an app (taken, not imported); served by the CLI and the dashboard
    "contrib": 10,  # framework integrations (flask, asgi, django): front ends over app and cli
    "display": 8,  # how the CLI shows times, durations, errors and tables (standard library only)
    "logs": 1,  # log formatters (--log-format json); standard library only, usable in any logging config
    "tracing": 1,  # OpenTelemetry spans of enqueues and job attempts (opentelemetry imported on first use)
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def top_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else path.stem


def imports_of(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time, by their top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for n in ast.walk(node))
    inside_store = path.parent.name == "store"
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        if inside_store and node.level == 1:
            continue  # the store package's own modules
        if node.module:
            out.add(node.module.split(".")[0])
        else:
            out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    me = top_name(path)
    bad = sorted(m for m in imports_of(path) if m in LAYERS and m != me and LAYERS[m] >= LAYERS[me])
    assert not bad, f"{path.name} ({me}, layer {LAYERS[me]}) imports {bad} of the same or a higher layer"


CLOCK_READS = {
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "sleep"),
    ("time", "time_ns"), ("time", "monotonic_ns"), ("datetime", "now"), ("datetime", "utcnow"),
    ("date", "today"),
}


@pytest.mark.parametrize("path", [p for p in modules() if p.name != "clock.py"], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_clock_reads_time(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in CLOCK_READS:
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            for alias in node.names:
                if (node.module, alias.name) in CLOCK_READS or alias.name in ("sleep", "monotonic", "time"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    assert not found, f"{path.name} reads time outside clock.py: {found}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The checks find what they look for (a guard against a scan that silently sees nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom ..app import Linger\nx = time.monotonic()\n", encoding="utf-8")
    assert "app" in imports_of(bad)
    tree = ast.parse(bad.read_text())
    assert any(isinstance(n, ast.Attribute) and n.attr == "monotonic" for n in ast.walk(tree))


# -- inside the store: rows, dialect, tables, schema, store, each importing only earlier ones --
STORE_LAYERS = {"rows": 0, "dialect": 1, "tables": 2, "schema": 3, "store": 4, "__init__": 5}


def store_imports_of(path: Path) -> set[str]:
    """The modules of the store package that ``path`` (one of them) imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in type_only:
            out.update([node.module.split(".")[0]] if node.module else [alias.name for alias in node.names])
    return out


@pytest.mark.parametrize("path", sorted((PACKAGE / "store").glob("*.py")), ids=lambda p: p.name)
def test_store_modules_import_one_way(path: Path) -> None:
    me = path.stem
    assert me in STORE_LAYERS, f"store/{path.name} is not placed in STORE_LAYERS"
    bad = sorted(m for m in store_imports_of(path) if STORE_LAYERS.get(m, 99) >= STORE_LAYERS[me])
    assert not bad, f"store/{path.name} (store layer {STORE_LAYERS[me]}) imports {bad} of the same or a higher layer"


# -- only store/dialect.py knows the databases ----------------------------------------------
# Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB is a Dialect method, a
# capability, or a column type / index option of dialect.py; no other module names a database
# or a driver, asks which dialect it runs on, or imports SQLAlchemy's dialect packages.
DIALECT_MODULE = "store/dialect.py"
DATABASE_WORDS = re.compile(r"sqlite|postgres|mysql|mariadb|psycopg|pymysql", re.IGNORECASE)
# text for people that names a database outside dialect.py (docstrings are text for people too,
# and are not checked): (module, the exact string)
ALLOWED_TEXT = {
    ("config.py", "sqlite:///linger.db"),  # DEFAULT_DATABASE_URL
    ("cli.py", "Database URL (env LINGER_DATABASE_URL; default sqlite:///linger.db)."),  # --database help
}
# attributes that say which dialect (or driver) a connection uses, or hold per-dialect options
DIALECT_IDENTITY = {"get_backend_name", "get_driver_name", "drivername", "dialect_kwargs", "dialect_options", "driver"}


def docstring_ids(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def is_dialect_name(node: ast.AST) -> bool:
    """``<...>.dialect.name`` or ``<...>.engine.name`` (an engine's name is its dialect's)."""
    if not (isinstance(node, ast.Attribute) and node.attr == "name"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Name) and owner.id in ("dialect", "engine")) or (
        isinstance(owner, ast.Attribute) and owner.attr in ("dialect", "engine"))


def dialect_branches(source: str, module: str) -> list[str]:
    """What in ``source`` (the module ``module``, relative to the package) names a database
    or asks which one it runs on."""
    tree = ast.parse(source)
    docstrings = docstring_ids(tree)
    # the dialect's name may appear in a message (an f-string's value), nowhere else
    in_message = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FormattedValue) for n in ast.walk(f.value)}
    found = []
    for node in ast.walk(tree):
        at = f"line {getattr(node, 'lineno', '?')}"
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.keyword) and node.arg:
            names = [node.arg]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        found += [f"{at}: names a database: {name}" for name in names if DATABASE_WORDS.search(name)]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"{at}: imports {m}" for m in modules if m.startswith("sqlalchemy.dialects")]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if DATABASE_WORDS.search(node.value) and (module, node.value) not in ALLOWED_TEXT:
                found.append(f"{at}: names a database in text: {node.value[:80]!r}")
        if isinstance(node, ast.Attribute) and node.attr in DIALECT_IDENTITY:
            found.append(f"{at}: reads .{node.attr}")
        if is_dialect_name(node) and id(node) not in in_message:
            found.append(f"{at}: reads the dialect's name ({ast.unparse(node)}) outside a message")
    return found


@pytest.mark.parametrize(
    "path", [p for p in modules() if p.relative_to(PACKAGE).as_posix() != DIALECT_MODULE],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_dialect_module_knows_the_databases(path: Path) -> None:
    module = path.relative_to(PACKAGE).as_posix()
    found = dialect_branches(path.read_text(encoding="utf-8"), module)
    assert not found, (
        f"{module} branches on the database outside {DIALECT_MODULE} (make it a Dialect method or "
        f"capability, or a type or index option there): {found}"
    )


def test_the_allowed_database_texts_are_still_needed() -> None:
    """Each allow-listed text is still in its module (a stale entry would allow it anywhere)."""
    for module, text in ALLOWED_TEXT:
        tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(tree)), (module, text)


def test_the_dialect_check_can_fail() -> None:
    """Each kind of dialect branch is found (a guard against a scan that silently sees nothing)."""
    bad = (
        '"""A docstring may say SQLite."""\n'
        "from sqlalchemy.dialects import postgresql\n"
        "import psycopg\n"
        "def install(store, engine, ix):\n"
        "    if store.dialect.is_sqlite:\n"
        "        pass\n"
        "    if store.dialect.name == 'x':\n"
        "        pass\n"
        "    if engine.url.get_backend_name() in NAMES:\n"
        "        pass\n"
        "    key = ix.dialect_kwargs.get('where')\n"
        "    kw = dict(mysql_length=10)\n"
        "    url = 'mariadb://db'\n"
        "    return f'{store.dialect.name} error'\n"
    )
    found = dialect_branches(bad, "app.py")
    expected = {
        "line 2: imports sqlalchemy.dialects", "line 2: names a database: postgresql", "line 3: names a database: psycopg",
        "line 5: names a database: is_sqlite", "line 7: reads the dialect's name (store.dialect.name) outside a message",
        "line 9: reads .get_backend_name", "line 11: reads .dialect_kwargs", "line 12: names a database: mysql_length",
        "line 13: names a database in text: 'mariadb://db'",
    }
    assert expected <= set(found), sorted(expected - set(found))
    assert not [f for f in found if f.startswith(("line 1:", "line 14:"))], found  # docstring, message
    assert dialect_branches("DEFAULT = 'sqlite:///linger.db'\n", "config.py") == []
    assert dialect_branches("DEFAULT = 'sqlite:///linger.db'\n", "app.py") != []
