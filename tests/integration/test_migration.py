"""`db upgrade` brings an older install to the current schema: afterwards it equals a fresh one."""

from __future__ import annotations

import sqlalchemy as sa

from linger_sched.store import Store


def shape(store: Store) -> dict[str, tuple[set[tuple[str, bool]], set[str]]]:
    insp = sa.inspect(store.engine)
    out = {}
    for table in store.metadata.sorted_tables:
        cols = {(c["name"], bool(c["nullable"])) for c in insp.get_columns(table.name)}
        ixs = {i["name"] for i in insp.get_indexes(table.name)} | {u["name"] for u in insp.get_unique_constraints(table.name)}
        out[table.name] = (cols, {i for i in ixs if i})
    return out


def test_upgrade_of_an_older_install_equals_a_fresh_install(db_url: str, prefix: str) -> None:
    fresh = Store(db_url, table_prefix=prefix + "f_")
    old = Store(db_url, table_prefix=prefix + "o_")
    try:
        fresh.install_schema()
        # An older install: the jobs table without the columns and the index added since
        # (occurrences, reason, the (schedule_name, state) index) and schema version 0.
        j = old.t.jobs
        with old.engine.begin() as conn:
            old.metadata.create_all(conn, tables=[t for t in old.metadata.sorted_tables if t is not j])
            legacy = sa.MetaData()
            sa.Table(j.name, legacy, *[c._copy() for c in j.columns if c.name not in ("occurrences", "reason")],
                     *[sa.UniqueConstraint(*[col.name for col in c.columns], name=c.name)
                       for c in list(j.constraints) if isinstance(c, sa.UniqueConstraint)])
            legacy.create_all(conn)
            conn.execute(sa.insert(old.t.meta).values(key="schema_version", value="0"))
        assert old.schema_version() == 0
        before, after = old.upgrade_schema()
        assert (before, after) == (0, 1)
        rename = lambda name: name.replace(prefix + "o_", prefix + "f_")  # noqa: E731
        got = {rename(t): (cols, {rename(i) for i in ixs}) for t, (cols, ixs) in shape(old).items()}
        assert got == shape(fresh)
        old.check_schema()
        old.upgrade_schema()  # idempotent
    finally:
        for s in (fresh, old):
            s.drop_schema()
            s.dispose()
