"""The only code that branches on the database dialect.

SQLite, PostgreSQL and MySQL/MariaDB differ in: how an engine is set up, how times and long
text are stored, which indexes can be partial, how to read the database clock, how to add
seconds to it, how to insert (and insert-if-absent) and learn the new id, how to claim a batch
of rows under concurrency, how to change a table's definition, how to wake up other processes,
and which driver errors mean "try again" or "connection lost".

Every other module asks this one (the column types and index options below, the methods of
:class:`Dialect`) and never names a database or a driver: ``tests/unit/test_layers.py``
checks that.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles

from ..errors import ConfigError

MYSQL_NAMES = ("mysql", "mariadb")
log = logging.getLogger(__name__)


# -- column types and index options of the table definitions (tables.py) ------------------
class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, read back as the stored text: :class:`UTCDateTime` parses it with
    ``datetime.fromisoformat`` (C) instead of SQLAlchemy's regular expression, which is the
    larger part of reading a claimed batch."""

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetime in Python, naive UTC in the database (microsecond precision everywhere:
    DATETIME(6) on MySQL/MariaDB, text with a 6-digit fraction on SQLite)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[datetime]:
        if dialect.name in MYSQL_NAMES:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteDateTime())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; pass an aware one")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | str | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite: stored text, read as is (see _SQLiteDateTime)
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc)


class TextDefault(sa.sql.expression.ColumnElement[Any]):
    """The server default of a text column: ``DEFAULT '{}'``, and on MySQL/MariaDB the
    expression form ``DEFAULT ('{}')`` (MySQL 8 accepts no literal default on TEXT types).
    SQLite's ADD COLUMN needs the literal form."""

    inherit_cache = True

    def __init__(self, value: str) -> None:
        self.value = value


@compiles(TextDefault)
def _text_default(element: TextDefault, compiler: Any, **kw: Any) -> str:
    return str(compiler.render_literal_value(element.value, sa.String()))


@compiles(TextDefault, *MYSQL_NAMES)
def _text_default_mysql(element: TextDefault, compiler: Any, **kw: Any) -> str:
    return f"({compiler.render_literal_value(element.value, sa.String())})"


# MySQL/MariaDB's TEXT holds 64 KB; every text column is LONGTEXT there (args of any size)
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), *MYSQL_NAMES)

# A 64-bit auto-increment primary key; SQLite's must be INTEGER to be the rowid (and so
# auto-increment at all)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def partial_index(where: sa.ColumnElement[bool], *, stable_columns: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``sa.Index`` that make it partial (``CREATE INDEX ... WHERE``) on
    the databases that have partial indexes (SQLite, PostgreSQL).

    ``stable_columns``: the index's columns never change after the insert. SQLite leaves an
    index alone when an UPDATE changes none of its columns, so such an index costs one entry
    per insert there and stays full (a partial one would be written whenever a row enters its
    WHERE); PostgreSQL writes an entry into every index whose WHERE the new row version
    satisfies on an UPDATE that is not HOT, so it is partial there all the same."""
    if stable_columns:
        return {"postgresql_where": where}
    return {"postgresql_where": where, "sqlite_where": where}


def index_include(*columns: str) -> dict[str, Any]:
    """Keyword arguments of ``sa.Index`` for non-key columns stored in the index
    (PostgreSQL's INCLUDE, so that a count over them is an index-only scan); nothing elsewhere."""
    return {"postgresql_include": list(columns)}


# scheme://user:password@ -- the password runs to the last "@" before the next blank, so a
# password holding ":" or "@" is masked whole, whether or not the rest of the URL parses
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*):[^\s]*@")


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``
    (``postgresql://app:***@db/prod``). Works on any text: an error message, a URL that does
    not parse. Every message that may hold a database URL goes through it."""
    return _URL_PASSWORD.sub(r"\1:***@", str(text))


def normalize_url(url: str) -> sa.URL:
    """Pick the drivers linger-sched installs when the URL names none."""
    try:
        u = make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:  # ValueError: e.g. a port that is not a number
        # not chained: the driver's message repeats the URL, password included
        raise ConfigError(mask_url(f"not a database URL: {url!r} ({exc})"), key="database") from None
    backend, _, driver = u.drivername.partition("+")
    if backend in ("postgres", "postgresql") and not driver:
        u = u.set(drivername="postgresql+psycopg")
    elif backend == "postgres":
        u = u.set(drivername=f"postgresql+{driver}")
    elif backend in MYSQL_NAMES and not driver:
        if importlib.util.find_spec("MySQLdb") is None:
            u = u.set(drivername=f"{backend}+pymysql")
    elif backend not in ("sqlite", "postgresql", *MYSQL_NAMES):
        raise ConfigError(
            mask_url(f"unsupported database {backend!r} in {url!r}: use sqlite:///, postgresql:// or mysql:// (mariadb://)"),
            key="database",
        )
    if backend == "sqlite" and u.database in (None, "", ":memory:"):
        raise ConfigError(
            "in-memory SQLite cannot be shared by worker threads and processes; "
            "use a file, e.g. sqlite:///linger.db",
            key="database",
        )
    return u


_LOOPBACK = ("", "localhost", "127.0.0.1", "::1")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def relative_database_file(url: str) -> str | None:
    """The relative path of the database file ``url`` names (SQLite, ``sqlite:///app.db``),
    or None: a server database, an absolute path, in memory, a ``file:`` URI. (Flask-SQLAlchemy
    resolves such a path in the app's instance folder; contrib.flask does the same.)"""
    u = normalize_url(url)
    if u.get_backend_name() != "sqlite" or u.query.get("uri"):
        return None
    path = u.database or ""
    if path in ("", ":memory:") or path.startswith("file:") or os.path.isabs(path):
        return None
    return path


def same_database(a: sa.URL, b: sa.URL) -> bool:
    """Whether URLs ``a`` and ``b`` name the same database, whatever their drivers: the same
    SQLite file (paths resolved), or the same backend, host (loopback names alike), port
    (defaults filled in) and database name. From the URLs alone (no database access)."""
    backend_a, backend_b = (u.get_backend_name().replace("mariadb", "mysql") for u in (a, b))
    if backend_a != backend_b:
        return False
    if backend_a == "sqlite":
        def where(u: sa.URL) -> str:
            path = u.database or ""
            return path if path in ("", ":memory:") or path.startswith("file:") else os.path.realpath(path)
        return where(a) == where(b)

    def server(u: sa.URL) -> tuple[str, int | None, str | None]:
        host = str(u.query.get("host") or u.host or "")
        host = "localhost" if host in _LOOPBACK else host.lower()
        return host, u.port or _DEFAULT_PORTS.get(backend_a), u.database
    return server(a) == server(b)


# the top-level name of a DB-API module -> SQLAlchemy's driver name for it
_DBAPI_DRIVERS = {"sqlite3": "pysqlite", "psycopg": "psycopg", "psycopg2": "psycopg2", "pymysql": "pymysql", "MySQLdb": "mysqldb"}


def url_from_parts(
    backend: str, dbapi: str, *, database: str | None, username: str | None = None, password: str | None = None,
    host: str | None = None, port: int | str | None = None, options: dict[str, Any] | None = None,
) -> sa.URL:
    """The URL of a database given as a framework holds its connection settings (Django's
    ``DATABASES`` entries): ``backend`` is ``sqlite``, ``postgresql`` or ``mysql`` (MariaDB
    too), ``dbapi`` the DB-API module the framework connects with (``sqlite3``, ``psycopg``,
    ``psycopg2``, ``pymysql``, ``MySQLdb``: the URL names the same driver).

    SQLite: ``database`` is the file; ``options`` are ignored (linger-sched sets its own
    pragmas). PostgreSQL: a ``host`` that starts with ``/`` is a socket directory; ``options``
    are libpq parameters (``sslmode``, ``options``, ``service``, ...). MySQL/MariaDB: a ``host``
    that starts with ``/`` is a socket file; ``options`` are the driver's connect arguments, a
    mapping one (``ssl={"ca": PATH}``) as ``ssl_ca=PATH``. :class:`ConfigError` (keyed by the
    setting) for a backend, driver or value that cannot be expressed."""
    driver = _DBAPI_DRIVERS.get(dbapi.split(".")[0])
    if backend not in ("sqlite", "postgresql", *MYSQL_NAMES):
        raise ConfigError(f"unsupported database {backend!r}: use SQLite, PostgreSQL or MySQL/MariaDB", key="ENGINE")
    if driver is None:
        raise ConfigError(f"unsupported driver module {dbapi!r} (supported: {', '.join(sorted(_DBAPI_DRIVERS))})", key="ENGINE")
    if backend == "sqlite":
        if not database or database == ":memory:" or "mode=memory" in database:
            raise ConfigError(f"an in-memory SQLite database ({database!r}) cannot be shared with a worker; use a file",
                              key="NAME")
        return sa.URL.create(f"sqlite+{driver}", database=database)
    query: dict[str, str] = {}
    for key, value in (options or {}).items():
        if isinstance(value, dict) and backend != "postgresql":
            query.update({f"{key}_{k}": str(v) for k, v in value.items() if v is not None})
        elif isinstance(value, (str, int, float)) and value is not None:
            query[key] = str(value)
        else:
            raise ConfigError(f"{key!r}: {value!r} cannot be passed in a database URL", key="OPTIONS")
    if host and host.startswith("/"):
        query["host" if backend == "postgresql" else "unix_socket"] = host
        host = None
    try:
        port_number = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        raise ConfigError(f"not a port number: {port!r}", key="PORT") from None
    return sa.URL.create(
        f"{backend}+{driver}", username=username or None, password=password or None, host=host or None,
        port=port_number, database=database or None, query=query,
    )


def create_engine(url: str, *, echo: bool = False) -> sa.Engine:
    u = normalize_url(url)
    name = u.get_backend_name()
    if name == "sqlite":
        # ?synchronous=full trades speed for durability across power loss (default NORMAL:
        # with WAL, safe against process crashes; the last commits can be lost on power loss)
        synchronous = str(u.query.get("synchronous", "normal")).upper()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"synchronous must be normal or full, got {synchronous.lower()!r}", key="database")
        u = u.difference_update_query(["synchronous"])
        engine = sa.create_engine(
            u, echo=echo, connect_args={"check_same_thread": False, "timeout": 30.0}, pool_size=8, max_overflow=8
        )
        path = u.database if not u.query.get("uri") else None

        @event.listens_for(engine, "do_connect")
        def _sqlite_private_file(*_args: Any) -> None:
            # sqlite3 creates a missing file with mode 0644 (under the usual umask), and its
            # -wal and -shm files with the mode of the main file: create it 0600 first
            if path and not os.path.exists(path):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except OSError:
                    pass  # created by a peer meanwhile, or no such directory: sqlite3 says so

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # We issue BEGIN ourselves: pysqlite's implicit transactions would defer the write
            # lock to the first write, where a busy peer can only be answered with "locked".
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the write lock up front, so a transaction waits (busy_timeout)
            # instead of failing when it later upgrades from read to write.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if name in MYSQL_NAMES:
        engine = sa.create_engine(
            u, echo=echo, pool_pre_ping=True, isolation_level="READ COMMITTED", pool_recycle=3600
        )

        @event.listens_for(engine, "connect")
        def _mysql_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET time_zone = '+00:00'")
            cur.close()

        return engine
    return sa.create_engine(u, echo=echo, pool_pre_ping=True)


def _last_value_cache(fn: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """``fn`` remembering its last argument: bulk rows often share one value (a batch's
    created_at), and converting it once is cheaper than once per row."""
    if fn is None:
        return None
    last: list[Any] = [object(), None]

    def cached(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, fn(value)
        return last[1]

    return cached


class Dialect:
    """Dialect-specific SQL fragments for one engine.

    ``is_sqlite``, ``is_postgres``, ``is_mysql`` and ``name`` say which database it is; no
    module but this one branches on them: the others call a method (or read a capability)
    named for what differs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.name = engine.dialect.name
        self.is_sqlite = self.name == "sqlite"
        self.is_postgres = self.name == "postgresql"
        self.is_mysql = self.name in MYSQL_NAMES
        self.server_version = ""
        self._sa_dialect = engine.dialect

    # -- capabilities -------------------------------------------------------------------
    @property
    def partial_indexes(self) -> bool:
        """Whether the database has partial indexes (``CREATE INDEX ... WHERE``): SQLite and
        PostgreSQL. MySQL/MariaDB get the closest equivalent (see ``tables._job_indexes``)."""
        return not self.is_mysql

    @property
    def embedded(self) -> bool:
        """Whether the database is a file this process opens itself (SQLite) rather than a
        server: nobody else is there to create its tables, so an app creates them on first
        use unless told otherwise (``auto_install``)."""
        return self.is_sqlite

    def index_is_partial(self, index: sa.Index) -> bool:
        """Whether ``index`` (of the table definitions) has a WHERE on this database."""
        return index.dialect_kwargs.get(f"{self.name}_where") is not None

    def database_missing(self, engine: sa.Engine) -> bool:
        """True for a SQLite file that does not exist yet (connecting would create it)."""
        if not self.is_sqlite:
            return False
        import os

        path = engine.url.database
        if not path:
            return False
        return not os.path.exists(path)

    def missing_directory(self, engine: sa.Engine, *, tables: bool = False) -> str | None:
        """When the directory of a SQLite file does not exist (the file cannot be created
        there): what to say, naming both; else None. ``tables``: said to a command that
        needs the tables (run ``db init`` once the directory exists)."""
        if not self.is_sqlite or engine.url.query.get("uri"):
            return None
        import os

        path = engine.url.database
        if not path or path == ":memory:":
            return None
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(directory):
            return None
        if tables:
            return (f"the SQLite database {path} does not exist, nor its directory {directory}: create the "
                    "directory, then run `linger-sched db init` (or fix the database URL)")
        return f"cannot open the SQLite database {path}: its directory {directory} does not exist; create it, or fix the database URL"

    # -- the database clock -------------------------------------------------------------
    def now(self, plus_seconds: float = 0.0) -> sa.ColumnElement[Any]:
        """The database's current UTC time (plus some seconds), as a SQL expression."""
        expr: sa.ColumnElement[Any]
        if self.is_sqlite:
            args: list[Any] = ["%Y-%m-%d %H:%M:%f", "now"]
            if plus_seconds:
                args.append(f"{plus_seconds:+.6f} seconds")
            # pad to the 6-digit fraction SQLAlchemy stores, so text comparison is time order
            expr = sa.func.strftime(*args).op("||")(sa.literal_column("'000'"))
        elif self.is_postgres:
            expr = sa.literal_column("(clock_timestamp() AT TIME ZONE 'UTC')")
            if plus_seconds:
                expr = expr + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam(None, float(plus_seconds), sa.Float))
        else:
            expr = sa.func.utc_timestamp(6)
            if plus_seconds:
                expr = sa.func.timestampadd(sa.literal_column("MICROSECOND"), int(plus_seconds * 1_000_000), expr)
        return sa.type_coerce(expr, UTCDateTime())

    # -- insert-if-absent ---------------------------------------------------------------
    def insert_ignore(self, table: sa.Table) -> Any:
        """INSERT that does nothing when a unique key already holds the row.

        On MySQL the no-op update sets LAST_INSERT_ID to the existing row's id, so
        ``lastrowid`` names the row that won, inserted or not.
        """
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        if self.is_postgres:
            return postgresql.insert(table).on_conflict_do_nothing()
        pk = list(table.primary_key.columns)[0]
        if "id" in table.c:
            return mysql.insert(table).on_duplicate_key_update({pk.name: sa.func.last_insert_id(pk)})
        return mysql.insert(table).on_duplicate_key_update({pk.name: pk})

    def greatest(self, a: sa.ColumnElement[Any], b: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """The later of two times (SQLite's scalar ``max``; GREATEST elsewhere)."""
        if self.is_sqlite:
            return sa.func.max(a, b, type_=UTCDateTime())
        return sa.func.greatest(a, b, type_=UTCDateTime())

    def executemany(self, conn: sa.Connection, stmt: sa.Insert | sa.Update, rows: Sequence[dict[str, Any]]) -> int:
        """Run ``stmt`` once per row (all rows with the same keys) in one driver executemany;
        returns the rows it matched, summed over the rows given (every driver here sums them).

        The same SQL and the same bound values as ``conn.execute(stmt, rows)``, without
        SQLAlchemy's per-row parameter machinery, which costs more than the database does for
        thousands of small rows: the statement is compiled once, and each column's bind
        processor (e.g. aware datetime to naive UTC text on SQLite) is applied directly."""
        if not rows:
            return 0
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]), for_executemany=True)
        names = list(compiled.positiontup or ()) if compiled.positional else list(compiled.binds)
        missing = [n for n in names if n not in rows[0]]
        if missing:  # columns with a Python-side default: constants are filled in here
            table = getattr(stmt, "table", None)
            defaults = {}
            for n in missing:
                default = table.c[n].default if table is not None and n in table.c else None
                if default is None or not default.is_scalar:
                    return int(conn.execute(stmt, list(rows)).rowcount)
                defaults[n] = default.arg
            rows = [{**defaults, **r} for r in rows]
        procs = [(n, _last_value_cache(compiled.binds[n].type.bind_processor(conn.dialect))) for n in names]
        if self.is_postgres and isinstance(stmt, sa.Insert):
            sql = self._unnest_insert(compiled.string, names)
            if sql is not None:
                return int(conn.exec_driver_sql(
                    sql, {n: [p(r[n]) for r in rows] if p else [r[n] for r in rows] for n, p in procs}).rowcount)
        processed = [(i, p) for i, (_, p) in enumerate(procs) if p is not None]
        values = [[r[n] for n in names] for r in rows]
        for v in values:
            for i, p in processed:
                v[i] = p(v[i])
        params: list[Any] = [tuple(v) for v in values] if compiled.positional else [dict(zip(names, v)) for v in values]
        return int(conn.exec_driver_sql(compiled.string, params).rowcount)

    @staticmethod
    def _unnest_insert(sql: str, names: Sequence[str]) -> str | None:
        """PostgreSQL: ``INSERT ... VALUES (%(a)s::T, ...)`` as ``INSERT ... SELECT * FROM
        unnest(%(a)s::T[], ...)``, one statement for all rows with one array per column, instead
        of one pipelined statement per row. None when the statement is not of that shape."""
        m = re.fullmatch(r"(INSERT INTO .*?) VALUES \(((?:%\(\w+\)s::[A-Z ]+(?:, )?)+)\)(.*)", sql, re.S)
        if m is None:
            return None
        head, inner, tail = m.groups()
        items = inner.split(", ")
        if [item[2 : item.index(")")] for item in items] != list(names):
            return None
        return f"{head} SELECT * FROM unnest({', '.join(item + '[]' for item in items)}){tail}"

    @property
    def insert_returning(self) -> bool:
        """Whether INSERT ... RETURNING gives the new rows' ids (all but MySQL/MariaDB)."""
        return not self.is_mysql

    def insert_one(self, conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> int:
        """Insert one row into ``table`` (auto-increment ``id``) and return its id: INSERT ...
        RETURNING where the database has it, the driver's last insert id elsewhere."""
        if self.insert_returning:
            return int(conn.execute(sa.insert(table).values(values).returning(table.c.id)).scalar_one())
        pk = conn.execute(sa.insert(table).values(values)).inserted_primary_key
        assert pk is not None  # always set for a single-row INSERT
        return int(pk[0])

    def insert_one_if_absent(self, conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> int | None:
        """Insert one row into ``table`` unless a unique key already holds one (see
        :meth:`insert_ignore`). Returns the new row's id, or on MySQL/MariaDB the id of the row
        that holds the key (LAST_INSERT_ID); None when nothing was inserted and the database
        does not say which row holds the key (look it up)."""
        stmt = self.insert_ignore(table).values(values)
        if self.insert_returning:
            got = conn.execute(stmt.returning(table.c.id)).first()
            return None if got is None else int(got[0])
        res = conn.execute(stmt)
        return int(res.lastrowid) if res.lastrowid else None

    def insert_many(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], chunk: int = 1000) -> list[int]:
        """Insert ``rows`` (all with the same keys) and return their ids in order, inside the
        caller's transaction, in as few statements as the database allows.

        SQLite: one executemany; the transaction holds the write lock (BEGIN IMMEDIATE) and an
        INTEGER PRIMARY KEY takes max(id) + 1 for each row, so the ids are the last n ids.
        MySQL/MariaDB: multi-row INSERTs; a simple insert gets consecutive auto-increment ids
        in every lock mode, and LAST_INSERT_ID() is the first of them.
        PostgreSQL: INSERT ... RETURNING, matched to the rows by SQLAlchemy's sentinel."""
        pk = table.c.id
        if self.is_sqlite:
            self.executemany(conn, sa.insert(table), rows)
            last = conn.execute(sa.select(sa.func.max(pk))).scalar_one()
            return list(range(last - len(rows) + 1, last + 1))
        if self.is_mysql:
            ids: list[int] = []
            for i in range(0, len(rows), chunk):
                part = rows[i : i + chunk]
                first = conn.execute(sa.insert(table).values(part)).lastrowid
                ids.extend(range(first, first + len(part)))
            return ids
        got = conn.execute(sa.insert(table).returning(pk, sort_by_parameter_order=True), rows)
        return [r[0] for r in got]

    # -- claiming -----------------------------------------------------------------------
    def skip_locked(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """``select`` locking the rows it reads and skipping those another transaction has
        locked (FOR UPDATE SKIP LOCKED), so that concurrent callers take disjoint rows without
        waiting; on SQLite as it is (a transaction holds the database's write lock from its
        BEGIN IMMEDIATE, so there are no concurrent callers to skip)."""
        if self.is_sqlite:
            return select
        return select.with_for_update(skip_locked=True)

    def claim(
        self,
        conn: sa.Connection,
        jobs: sa.Table,
        picks: Sequence[sa.Select[Any]],
        order_by: Callable[[Any], Sequence[sa.ColumnElement[Any]]],
        limit: int,
        values: dict[str, Any],
        returning: Sequence[sa.ColumnElement[Any]],
    ) -> list[sa.Row[*tuple[Any, ...]]]:
        """Mark up to ``limit`` rows with ``values``: the first ``limit`` in ``order_by`` of the
        rows that ``picks`` select.

        Each pick selects ``id`` and the columns of ``order_by`` (called with a column
        collection: the pick's own, or a union's), ordered by them and limited to ``limit``:
        one pick per named queue, so that each reads its queue's claim index in order and
        a claim of several queues merges k rows per queue instead of sorting every queued row.

        Runs inside the caller's transaction and returns the claimed rows *after* the update.
        SQLite serializes writers, so one UPDATE ... RETURNING is race-free; PostgreSQL and
        MySQL/MariaDB lock the candidates with FOR UPDATE SKIP LOCKED so that concurrent
        claimers take disjoint batches without waiting on each other (with several picks,
        candidates beyond the first ``limit`` stay locked until the claim commits).
        """
        if self.is_mysql:
            # the ids first (MySQL/MariaDB cannot UPDATE a table it reads in a subquery, nor
            # take LIMIT in an IN subquery): one locking SELECT per pick, merged here
            rows: list[Any] = []
            if len(picks) == 1:  # the id alone: pymysql converts each value in Python
                rows.extend(conn.execute(picks[0].with_only_columns(jobs.c.id).with_for_update(skip_locked=True)))
            else:
                for pick in picks:
                    rows.extend(conn.execute(pick.with_for_update(skip_locked=True)))
                rows.sort(key=lambda r: tuple(order_by(r)))
            ids = [r[0] for r in rows[:limit]]
            if not ids:
                return []
            conn.execute(sa.update(jobs).where(jobs.c.id.in_(ids)).values(values))
            return list(conn.execute(sa.select(*returning).where(jobs.c.id.in_(ids))))
        lock = self.is_postgres
        if len(picks) == 1:
            chosen = picks[0].with_only_columns(jobs.c.id)
            if lock:
                chosen = chosen.with_for_update(skip_locked=True)
        else:
            arms = [(p.with_for_update(skip_locked=True) if lock else p).subquery() for p in picks]
            union = sa.union_all(*[sa.select(*a.c) for a in arms]).subquery("picked_all")
            chosen = sa.select(union.c.id).order_by(*order_by(union.c)).limit(limit)
        if self.is_sqlite:
            stmt = sa.update(jobs).where(jobs.c.id.in_(chosen.scalar_subquery())).values(values).returning(*returning)
            return list(conn.execute(stmt))
        cte = chosen.cte("picked")
        stmt = sa.update(jobs).where(jobs.c.id == cte.c.id).values(values).returning(*returning)
        return list(conn.execute(stmt))

    # -- schema changes -----------------------------------------------------------------
    def replace_job_table(
        self, conn: sa.Connection, table: sa.Table, *, drop_indexes: Sequence[str], drop_constraints: Sequence[str],
        drop_columns: Sequence[str], rename_indexes: dict[str, str],
    ) -> None:
        """Move an existing job table to the definition of ``table`` (same name) inside the
        caller's transaction, keeping every row: the indexes and unique constraints named in
        ``drop_*`` (those that exist) and the columns in ``drop_columns`` go; the indexes of
        ``table`` that are missing are created (unique ones are checked against the rows; a
        duplicate fails the whole change), with the columns of ``table`` that are missing. ``rename_indexes`` (old -> new): where the
        database keeps an index as it is under a new name (MySQL/MariaDB, whose unique keys
        do not change).

        SQLite cannot drop a column that a UNIQUE constraint of the table uses, nor the
        constraint: the table is rebuilt (create the new one, copy every row, drop the old
        one, rename), all in the transaction. PostgreSQL: DROP CONSTRAINT / INDEX / COLUMN,
        CREATE INDEX, transactional. MySQL/MariaDB: one ALTER TABLE with every change, which
        InnoDB applies atomically (DDL commits by itself there)."""
        insp = sa.inspect(conn)
        name = table.name
        quote = conn.dialect.identifier_preparer.quote
        have_cols = {c["name"] for c in insp.get_columns(name)}
        have_ix = {i["name"] for i in insp.get_indexes(name)}
        have_uq = {u["name"] for u in insp.get_unique_constraints(name)}
        if self.is_sqlite:
            self._rebuild_sqlite_table(conn, table, have_cols)
            return
        if self.is_postgres:
            for con in drop_constraints:
                if con in have_uq or con in have_ix:
                    conn.exec_driver_sql(f"ALTER TABLE {quote(name)} DROP CONSTRAINT IF EXISTS {quote(con)}")
            for ix in drop_indexes:
                if ix in have_ix:
                    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {quote(ix)}")
            for col in drop_columns:
                if col in have_cols:
                    conn.exec_driver_sql(f"ALTER TABLE {quote(name)} DROP COLUMN {quote(col)}")
            have_ix = {i["name"] for i in sa.inspect(conn).get_indexes(name)}
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                if index.name not in have_ix:
                    index.create(conn)
            return
        # MySQL/MariaDB: one atomic ALTER TABLE, with the columns the new indexes need
        parts: list[str] = []
        for col in drop_columns:
            if col in have_cols:
                parts.append(f"DROP COLUMN {quote(col)}")
        for column in table.columns:
            if column.name not in have_cols:
                parts.append(f"ADD COLUMN {sa.schema.CreateColumn(column).compile(dialect=conn.dialect)}")
        renamed = set()
        for old, new in rename_indexes.items():
            if (old in have_ix or old in have_uq) and new not in have_ix:
                parts.append(f"RENAME INDEX {quote(old)} TO {quote(new)}")
                renamed.add(new)
        for ix in (*drop_indexes, *drop_constraints):
            if (ix in have_ix or ix in have_uq) and ix not in rename_indexes:
                parts.append(f"DROP INDEX {quote(ix)}")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name in have_ix or index.name in renamed:
                continue
            cols = ", ".join(quote(c.name) for c in index.columns)
            parts.append(f"ADD {'UNIQUE ' if index.unique else ''}INDEX {quote(str(index.name))} ({cols})")
        if parts:
            conn.exec_driver_sql(f"ALTER TABLE {quote(name)} " + ", ".join(parts))

    def text_too_narrow(self, installed: Any, column: sa.Column[Any]) -> bool:
        """Whether an installed text column, of the reflected type ``installed``, holds less
        than the table definition's ``column``: TINYTEXT, TEXT or MEDIUMTEXT where LONGTEXT is
        wanted (MySQL/MariaDB, where every text column is LONGTEXT). False elsewhere."""
        if not self.is_mysql:
            return False
        want = column.type.dialect_impl(self._sa_dialect)
        return isinstance(want, mysql.LONGTEXT) and isinstance(installed, sa.Text) and not isinstance(installed, mysql.LONGTEXT)

    def _rebuild_sqlite_table(self, conn: sa.Connection, table: sa.Table, have_cols: set[str]) -> None:
        name = table.name
        quote = conn.dialect.identifier_preparer.quote
        temp = f"{name}__rebuild"
        md = sa.MetaData()
        new = sa.Table(temp, md, *[c._copy() for c in table.columns],
                       *[con._copy() for con in table.constraints if isinstance(con, sa.CheckConstraint)])
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(temp)}")
        new.create(conn)
        cols = ", ".join(quote(c.name) for c in table.columns if c.name in have_cols and c.computed is None)
        conn.exec_driver_sql(f"INSERT INTO {quote(temp)} ({cols}) SELECT {cols} FROM {quote(name)}")
        before = conn.exec_driver_sql(f"SELECT count(*) FROM {quote(name)}").scalar_one()
        after = conn.exec_driver_sql(f"SELECT count(*) FROM {quote(temp)}").scalar_one()
        if before != after:  # cannot happen; never drop a row on the strength of "cannot happen"
            raise RuntimeError(f"rebuilding {name}: copied {after} of {before} rows")
        conn.exec_driver_sql(f"DROP TABLE {quote(name)}")
        conn.exec_driver_sql(f"ALTER TABLE {quote(temp)} RENAME TO {quote(name)}")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            index.create(conn)

    # -- wake-ups across processes (PostgreSQL LISTEN/NOTIFY) ---------------------------
    @property
    def can_notify(self) -> bool:
        return self.is_postgres or self.is_sqlite

    @property
    def sends_notify(self) -> bool:
        """Whether :meth:`notify` sends anything (PostgreSQL); SQLite's listeners watch the
        file instead, and MySQL/MariaDB's poll."""
        return self.is_postgres

    def notify(self, conn: sa.Connection, channel: str) -> None:
        """Tell listeners of ``channel`` (in the same transaction, so only on commit) that jobs
        were added, or finished. The driver's own statement, one per call: a finish batch sends
        one, and SQLAlchemy's statement machinery would cost more CPU than the round trip."""
        if self.is_postgres:
            conn.exec_driver_sql("SELECT pg_notify(%(channel)s, '')", {"channel": channel})

    def listen(self, engine: sa.Engine, channel: str, on_notify: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_notify`` for every NOTIFY on ``channel`` until ``stop`` is set.

        Runs on its own connection (taken out of the pool) and reconnects with backoff after
        a connection loss; polling stays the fallback while it is down."""
        if self.is_sqlite:
            self._watch_sqlite(engine, on_notify, stop)
            return
        if not self.is_postgres:
            return
        delay = 0.5
        while not stop.is_set():
            conn: Any = None  # the DBAPI (psycopg) connection
            try:
                fairy = engine.raw_connection()
                conn = fairy.driver_connection
                fairy.detach()  # ours alone: never handed back to the pool
                conn.rollback()  # the pool's pre-ping may have opened a transaction
                conn.autocommit = True
                from psycopg import sql

                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                on_notify()  # anything enqueued while we were not listening
                delay = 0.5
                while not stop.is_set():
                    for _ in conn.notifies(timeout=0.5):
                        on_notify()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a pause
                log.warning("LISTEN on %s failed (%s); retrying in %.1fs", channel, mask_url(str(exc)), delay,
                            extra={"action": "listen_error", "channel": channel})
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _watch_sqlite(self, engine: sa.Engine, on_change: Callable[[], None], stop: threading.Event, every: float = 0.05) -> None:
        """SQLite has no NOTIFY; ``PRAGMA data_version`` on a connection of our own changes
        whenever another connection (any process) commits. Reading it takes microseconds and
        no lock, so checking it every 50 ms wakes an idle worker promptly at no real cost."""
        import sqlite3

        # normalize_url rejects SQLite URLs without a database file
        path = cast(str, engine.url.database)
        conn = None
        try:
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = sqlite3.connect(path, timeout=1.0, check_same_thread=False)
                        last = conn.execute("PRAGMA data_version").fetchone()[0]
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != last:
                        last = version
                        on_change()
                except sqlite3.Error as exc:
                    log.warning("watching %s failed: %s", path, mask_url(str(exc)), extra={"action": "watch_file_error"})
                    conn = None
                    stop.wait(1.0)
                stop.wait(every)
        finally:
            if conn is not None:
                conn.close()

    # -- errors -------------------------------------------------------------------------
    def is_undefined_table(self, exc: BaseException) -> bool:
        """The statement names a table that does not exist (the schema was never installed)."""
        orig = getattr(exc, "orig", exc)
        if self.is_sqlite:
            return "no such table" in str(orig)
        if self.is_postgres:
            return getattr(orig, "sqlstate", None) == "42P01"
        return bool(getattr(orig, "args", None)) and orig.args[0] == 1146

    def is_undefined_column(self, exc: BaseException) -> bool:
        """The statement names a column that an older schema lacks."""
        orig = getattr(exc, "orig", exc)
        if self.is_sqlite:
            text = str(orig)
            return "no such column" in text or "has no column named" in text
        if self.is_postgres:
            return getattr(orig, "sqlstate", None) == "42703"
        return bool(getattr(orig, "args", None)) and orig.args[0] == 1054

    def is_retryable(self, exc: BaseException) -> bool:
        """Deadlocks, lock timeouts and serialization failures: the transaction may be retried."""
        orig = getattr(exc, "orig", exc)
        text = str(orig).lower()
        if self.is_sqlite:
            return "database is locked" in text or "database is busy" in text
        if self.is_postgres:
            code = getattr(orig, "sqlstate", None)
            return code in ("40001", "40P01", "55P03")
        code = orig.args[0] if getattr(orig, "args", None) else None
        return code in (1205, 1213)

    def is_disconnect(self, exc: BaseException) -> bool:
        return bool(getattr(exc, "connection_invalidated", False)) or isinstance(
            exc, (sa.exc.OperationalError, sa.exc.InterfaceError)
        ) and not self.is_retryable(exc)
