"""Schedules, the leader lease and the node registry: the rows several nodes coordinate on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import LingerError, ScheduleNotFoundError, StoreError
from .store import JobStore, Lease
from .tables import ACTIVE_STATES, state_is


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    task: str
    spec: str
    tz: str
    anchor: datetime | None
    args: str
    options: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    paused: bool
    enabled: bool
    spec_hash: str
    updated_at: datetime
    # in error: the tick could not plan or write it; ``retry_from`` is its first fire time not
    # accounted for and ``next_run_at`` the instant it is retried (see Store.mark_schedule_error)
    error: str | None = None
    error_since: datetime | None = None
    retry_from: datetime | None = None
    disabled_reason: str | None = None  # "not declared" or "enabled: false"
    active: bool = False  # due_schedules only: a job of this schedule is queued or running


@dataclass
class Occurrence:
    """One row a schedule's tick writes: a job to run, or a ``skipped`` record with a reason."""

    scheduled_for: datetime
    state: str = "queued"  # or "skipped"
    occurrences: int = 1
    reason: str | None = None


@dataclass
class Plan:
    """What one due schedule materializes: compare-and-set ``next_run_at`` from ``expected``
    to ``next_run_at`` and insert ``occurrences`` (insert-if-absent on the occurrence key)."""

    name: str
    expected: datetime
    next_run_at: datetime | None
    occurrences: list[Occurrence]
    task: str
    args: str
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3


@dataclass(frozen=True)
class NodeRow:
    id: str
    host: str
    pid: int
    roles: str
    registry_hash: str | None
    version: str | None
    started_at: datetime
    heartbeat_at: datetime
    schedules: str | None = None  # JSON list of the schedule names the node declares (None: unknown)

    def declared(self) -> list[str] | None:
        """The schedule names this node declares, or None when it did not say (an older
        version, or a node without a scheduler)."""
        return _declared(self.schedules)


def _declared(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


_SCHEDULE_FIELDS = [f.name for f in fields(ScheduleRow) if f.name != "active"]
_NODE_FIELDS = [f.name for f in fields(NodeRow)]
ERROR_CAP = 2000  # characters of a schedule's error message kept


def _clean_error(text: str) -> str:
    """A storable error message: no NUL, valid UTF-8, at most ERROR_CAP characters."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= ERROR_CAP else text[: ERROR_CAP - 1] + "\u2026"


class Store(JobStore):
    """All persistence of one linger-sched installation (one database, one table prefix)."""

    @property
    def _advance_stmt(self) -> sa.Update:
        s = self.t.schedules
        from .tables import UTCDateTime

        return (
            sa.update(s)
            .where(s.c.name == sa.bindparam("b_name"))
            .values(
                next_run_at=sa.bindparam("b_next", type_=UTCDateTime()),
                last_run_at=sa.func.coalesce(sa.bindparam("b_last", type_=UTCDateTime()), s.c.last_run_at),
                # a plan that commits ends an error state (literal NULLs: no per-row parameters)
                error=sa.null(), error_since=sa.null(), retry_from=sa.null(),
            )
        )

    def _next_run_at_is(self, conn: sa.Connection, name: str, expected: datetime | None) -> bool | None:
        """Compare-and-set support: whether schedule ``name``'s next_run_at equals ``expected``
        (None: there is no such schedule), read under a row lock. Compared in Python, as in
        :meth:`materialize`: SQLite keeps times as text whose form varies."""
        s = self.t.schedules
        row = conn.execute(sa.select(s.c.next_run_at).where(s.c.name == name).with_for_update()).first()
        return None if row is None else row[0] == expected

    def _schedule_cols(self) -> list[sa.Column[Any]]:
        """The columns a ScheduleRow holds, in its field order (whatever else the table has)."""
        s = self.t.schedules
        return [s.c[name] for name in _SCHEDULE_FIELDS]

    # -- leader lease -------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float, now: datetime | None = None) -> Lease | None:
        """Acquire or renew lease ``name`` for ``holder`` until ``now + ttl``.

        Succeeds when the row is absent, already ``holder``'s, or expired; the epoch grows by
        one on every change of holder. Returns the lease when ``holder`` holds it, else None."""
        ls = self.t.leases

        def run(conn: sa.Connection) -> Lease | None:
            # MySQL applies SET clauses left to right on the *new* values: epoch and
            # acquired_at must be computed before holder changes.
            n = conn.execute(
                sa.update(ls)
                .where(ls.c.name == name, sa.or_(ls.c.holder == holder, ls.c.expires_at <= self._now(now)))
                .ordered_values(
                    (ls.c.epoch, sa.case((ls.c.holder == holder, ls.c.epoch), else_=ls.c.epoch + 1)),
                    (ls.c.acquired_at, sa.case((ls.c.holder == holder, ls.c.acquired_at), else_=self._now(now))),
                    (ls.c.holder, holder),
                    (ls.c.expires_at, self._now(now, ttl)),
                )
            ).rowcount
            if n == 0:
                conn.execute(
                    self.dialect.insert_ignore(ls).values(
                        name=name, holder=holder, epoch=1, acquired_at=self._now(now), expires_at=self._now(now, ttl)
                    )
                )
            row = conn.execute(sa.select(ls).where(ls.c.name == name)).first()
            if row is None or row.holder != holder:
                return None
            return Lease(row.name, row.holder, row.epoch, row.expires_at)

        return self._tx(run)

    def release_lease(self, name: str, holder: str, now: datetime | None = None) -> bool:
        """Expire ``holder``'s lease at once so a peer takes over on its next tick."""
        ls = self.t.leases
        stmt = sa.update(ls).where(ls.c.name == name, ls.c.holder == holder).values(expires_at=self._now(now))
        return bool(self._tx(lambda c: c.execute(stmt).rowcount))

    def get_lease(self, name: str) -> Lease | None:
        ls = self.t.leases
        row = self._tx(lambda c: c.execute(sa.select(ls).where(ls.c.name == name)).first())
        return None if row is None else Lease(row.name, row.holder, row.epoch, row.expires_at)

    # -- nodes --------------------------------------------------------------------------
    def register_node(
        self, node: str, *, host: str, pid: int, roles: str, registry_hash: str | None, version: str,
        now: datetime | None = None, schedules: Sequence[str] | None = None,
    ) -> None:
        """Record a starting node. ``schedules``: the names of the schedules it declares (a
        node with a scheduler); a sync elsewhere never disables what a live node declares."""
        n = self.t.nodes
        declared = None if schedules is None else json.dumps(sorted(set(schedules)))

        def run(conn: sa.Connection) -> None:
            conn.execute(sa.delete(n).where(n.c.id == node))
            conn.execute(
                sa.insert(n).values(
                    id=node, host=host, pid=pid, roles=roles, registry_hash=registry_hash, version=version,
                    started_at=self._now(now), heartbeat_at=self._now(now), schedules=declared,
                )
            )

        self._tx(run)

    def heartbeat_node(self, node: str, now: datetime | None = None) -> None:
        n = self.t.nodes
        self._tx(lambda c: c.execute(sa.update(n).where(n.c.id == node).values(heartbeat_at=self._now(now))))

    def remove_node(self, node: str) -> None:
        n = self.t.nodes
        self._tx(lambda c: c.execute(sa.delete(n).where(n.c.id == node)))

    def list_nodes(self) -> list[NodeRow]:
        n = self.t.nodes
        stmt = sa.select(*[n.c[f] for f in _NODE_FIELDS]).order_by(n.c.started_at)
        rows = self._tx(lambda c: list(c.execute(stmt)))
        return [NodeRow(*r) for r in rows]

    def live_declarations(self, within: float, now: datetime | None = None) -> dict[str, list[str]]:
        """``{node id: declared schedule names}`` of the nodes whose last heartbeat is at most
        ``within`` seconds old and that recorded what they declare."""
        n = self.t.nodes
        stmt = sa.select(n.c.id, n.c.schedules).where(
            n.c.heartbeat_at >= self._now(now, -within), n.c.schedules.is_not(None)
        )
        out: dict[str, list[str]] = {}
        for node, text in self._tx(lambda c: list(c.execute(stmt))):
            names = _declared(text)
            if names is not None:
                out[node] = names
        return out

    def prune_nodes(self, older_than: float, now: datetime | None = None) -> int:
        """Forget nodes whose last heartbeat is older than ``older_than`` seconds."""
        n = self.t.nodes
        stmt = sa.delete(n).where(n.c.heartbeat_at < self._now(now, -older_than))
        return self._tx(lambda c: c.execute(stmt).rowcount)

    # -- schedules ----------------------------------------------------------------------
    def load_schedules(self, names: Iterable[str] | None = None) -> list[ScheduleRow]:
        s = self.t.schedules
        stmt = sa.select(*self._schedule_cols()).order_by(s.c.name)
        if names is not None:
            stmt = stmt.where(s.c.name.in_(list(names)))
        return [ScheduleRow(*r) for r in self._tx(lambda c: list(c.execute(stmt)))]

    def schedule_errors(self) -> list[ScheduleRow]:
        """The schedules in error (see :meth:`mark_schedule_error`), by name."""
        s = self.t.schedules
        stmt = sa.select(*self._schedule_cols()).where(s.c.error.is_not(None)).order_by(s.c.name)
        return [ScheduleRow(*r) for r in self._tx(lambda c: list(c.execute(stmt)))]

    def get_schedule(self, name: str) -> ScheduleRow:
        rows = self.load_schedules([name])
        if not rows:
            raise ScheduleNotFoundError(name)
        return rows[0]

    def save_schedules(
        self,
        inserts: Sequence[dict[str, Any]] = (),
        updates: Sequence[dict[str, Any]] = (),
        disable: Sequence[str] = (),
        now: datetime | None = None,
        *,
        plans: Sequence[Plan] = (),
        disabled_reason: str = "not declared",
    ) -> list[str]:
        """Registration sync in one transaction: insert new schedules (if absent), update
        changed ones by name (each dict has ``name`` and the columns to set), disable
        vanished ones (``enabled = false`` with ``disabled_reason``; their history stays).

        An update whose schedule has a plan in ``plans`` (the due occurrences of its old spec,
        recorded as the spec is replaced) applies only if ``next_run_at`` still equals
        ``plan.expected`` (compare-and-set, as in :meth:`materialize`), together with the
        plan's occurrences. Returns the names whose compare-and-set failed: nothing was
        written for them; read them again and retry."""
        s = self.t.schedules
        by_name = {p.name: p for p in plans}

        def run(conn: sa.Connection) -> list[str]:
            conflicts: list[str] = []
            for row in inserts:
                conn.execute(self.dialect.insert_ignore(s).values(**row, updated_at=self._now(now)))
            for row in updates:
                values = {k: v for k, v in row.items() if k != "name"}
                p = by_name.get(row["name"])
                if p is not None and not self._next_run_at_is(conn, p.name, p.expected):
                    conflicts.append(p.name)
                    continue
                conn.execute(sa.update(s).where(s.c.name == row["name"]).values(**values, updated_at=self._now(now)))
                if p is not None:
                    self._insert_occurrences(conn, self._occurrence_rows([p], now), now)
            if disable:
                self._disable(conn, disable, disabled_reason, now)
            return conflicts

        return self._tx(run)

    def _disable(self, conn: sa.Connection, names: Sequence[str], reason: str, now: datetime | None) -> list[str]:
        s = self.t.schedules
        enabled = [r[0] for r in conn.execute(
            sa.select(s.c.name).where(s.c.name.in_(list(names)), s.c.enabled == sa.true()).with_for_update()
        )]
        if enabled:
            conn.execute(
                sa.update(s).where(s.c.name.in_(enabled), s.c.enabled == sa.true()).values(
                    enabled=False, disabled_reason=reason, updated_at=self._now(now)
                )
            )
        return enabled

    def disable_schedules(self, names: Sequence[str], reason: str = "not declared", now: datetime | None = None) -> list[str]:
        """Disable the enabled schedules among ``names`` (history kept); returns those it disabled."""
        if not names:
            return []
        return self._tx(lambda c: self._disable(c, names, reason, now))

    def mark_schedule_error(
        self, name: str, error: str, *, expected: datetime, retry_at: datetime, now: datetime | None = None
    ) -> bool:
        """The tick could not plan or write schedule ``name``: store ``error``, keep its first
        unaccounted fire time in ``retry_from`` (set by the first failure only), and move
        ``next_run_at`` to ``retry_at`` so that the tick leaves it alone until then instead of
        failing on it every tick; ``error_since`` keeps the first failure's time.
        Compare-and-set on ``next_run_at == expected``; returns whether it applied. A plan
        that commits (:meth:`materialize`) or a sync of a changed definition clears the error."""
        s = self.t.schedules
        from .tables import UTCDateTime

        stmt = (
            sa.update(s)
            .where(s.c.name == name)
            # MySQL applies SET clauses left to right on the new values: retry_from first
            .ordered_values(
                (s.c.retry_from, sa.func.coalesce(s.c.retry_from, s.c.next_run_at, type_=UTCDateTime())),
                (s.c.error_since, sa.func.coalesce(s.c.error_since, self._now(now), type_=UTCDateTime())),
                (s.c.error, _clean_error(error)),
                (s.c.next_run_at, sa.bindparam(None, retry_at, UTCDateTime())),
                (s.c.updated_at, self._now(now)),
            )
        )

        def run(conn: sa.Connection) -> bool:
            return bool(self._next_run_at_is(conn, name, expected)) and bool(conn.execute(stmt).rowcount)

        return self._tx(run)

    def due_schedules(self, now: datetime | None = None, limit: int = 1000) -> list[ScheduleRow]:
        """Enabled, unpaused schedules with ``next_run_at <= now``, oldest first (index scan),
        each with ``active``: whether a job of it is queued or running (for ``overlap: skip``),
        found by a correlated EXISTS on ``jobs_active_schedule_ix`` in the same query."""
        s, j = self.t.schedules, self.t.jobs
        if "active_schedule" in j.c:  # MySQL/MariaDB: the generated column (see tables._job_indexes)
            active = sa.exists().where(j.c.active_schedule == s.c.name)
        else:
            active = sa.exists().where(j.c.schedule_name == s.c.name, state_is(j.c.state, *ACTIVE_STATES))
        stmt = (
            sa.select(*self._schedule_cols(), active)
            .where(s.c.enabled == sa.true(), s.c.paused == sa.false(), s.c.next_run_at <= self._now(now))
            .order_by(s.c.next_run_at)
            .limit(limit)
        )
        rows = self._tx(lambda c: list(c.execute(stmt)))
        return [ScheduleRow(*r[:-1], active=bool(r[-1])) for r in rows]  # type: ignore[misc]

    def next_schedule_at(self) -> datetime | None:
        """The earliest ``next_run_at`` of an enabled, unpaused schedule."""
        return self.schedule_horizon()[0]

    def schedule_horizon(self, now: datetime | None = None) -> tuple[datetime | None, datetime]:
        """``(earliest next_run_at of an enabled, unpaused schedule, now)`` in one round trip:
        an idle scheduler tick costs this one query. ``now`` is the database clock unless given."""
        s = self.t.schedules
        first = sa.select(s.c.next_run_at).where(
            s.c.enabled == sa.true(), s.c.paused == sa.false(), s.c.next_run_at.is_not(None)
        ).order_by(s.c.next_run_at).limit(1).scalar_subquery()
        if now is not None:
            return self._tx(lambda c: c.execute(sa.select(first)).scalar()), now
        row = self._tx(lambda c: c.execute(sa.select(first, self._now(None))).one())
        return row[0], row[1]

    def materialize(
        self, plans: Sequence[Plan], *, lease: str, holder: str, epoch: int, now: datetime | None = None
    ) -> list[str]:
        """Commit due occurrences, fenced by the leader lease, in one transaction.

        Nothing is written unless ``holder`` still holds ``lease`` at ``epoch`` and it has not
        expired. Each plan is applied only if the schedule's ``next_run_at`` still equals
        ``plan.expected`` (compare-and-set), so a deposed or concurrent leader cannot create
        an occurrence twice; the unique (schedule_name, scheduled_for) key is the last line of
        defence. Returns the names of the schedules whose plans were applied."""
        if not plans:
            return []
        s, ls = self.t.schedules, self.t.leases

        def run(conn: sa.Connection) -> list[str]:
            fence = (
                sa.select(ls.c.name)
                .where(ls.c.name == lease, ls.c.holder == holder, ls.c.epoch == epoch, ls.c.expires_at > self._now(now))
                .with_for_update(read=True)
            )
            if conn.execute(fence).first() is None:
                return []
            # compare-and-set for the whole batch: read the current next_run_at under a row
            # lock (SQLite: the transaction already holds the write lock), keep the plans that
            # still start from it, and advance them with one executemany
            names = [p.name for p in plans]
            current = {
                name: value
                for name, value in conn.execute(
                    sa.select(s.c.name, s.c.next_run_at).where(s.c.name.in_(names)).with_for_update()
                )
            }
            fresh = [p for p in plans if p.expected is not None and current.get(p.name) == p.expected]
            if not fresh:
                return []
            self.dialect.executemany(conn, self._advance_stmt, [
                {"b_name": p.name, "b_next": p.next_run_at,
                 "b_last": max((o.scheduled_for for o in p.occurrences), default=None)}
                for p in fresh
            ])
            applied = [p.name for p in fresh]
            rows = self._occurrence_rows(fresh, now)
            if rows:
                self._insert_occurrences(conn, rows, now)
                self.dialect.notify(conn, self.channel)
            return applied

        return self._tx(run)

    def rejects_values(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by a write such as :meth:`materialize`, is the database or
        its driver refusing the values written (out of range, too long, a constraint, a
        parameter that does not convert), which one row can cause; not a lost connection or a
        failure of the schema, permissions or disk, which no single row causes."""
        cause = exc.__cause__ if isinstance(exc, StoreError) else exc
        if cause is None:
            return False
        if isinstance(cause, sa.exc.DBAPIError):
            if self.dialect.is_disconnect(cause):
                return False
            return isinstance(cause, (sa.exc.DataError, sa.exc.IntegrityError))
        if isinstance(cause, sa.exc.SQLAlchemyError):
            return isinstance(cause, sa.exc.StatementError)  # a parameter that failed to convert
        return not isinstance(cause, LingerError)  # the driver's own OverflowError, TypeError, ...

    @staticmethod
    def _occurrence_rows(plans: Sequence[Plan], now: datetime | None) -> list[dict[str, Any]]:
        return [
            {
                "task": p.task, "args": p.args, "queue": p.queue, "priority": p.priority,
                "max_attempts": p.max_attempts, "state": o.state, "attempts": 0,
                "schedule_name": p.name, "scheduled_for": o.scheduled_for,
                "occurrences": o.occurrences, "reason": o.reason, "unique_key": None,
                "run_at": o.scheduled_for, "created_at": now,
                "finished_at": now if o.state == "skipped" else None,
            }
            for p in plans
            for o in p.occurrences
        ]

    def _insert_occurrences(self, conn: sa.Connection, rows: list[dict[str, Any]], now: datetime | None) -> None:
        j = self.t.jobs
        if now is None:
            db_now = conn.execute(sa.select(self.dialect.now())).scalar_one()
            for r in rows:
                r["created_at"] = db_now
                if r["finished_at"] is None and r["state"] == "skipped":
                    r["finished_at"] = db_now
        for r in rows:
            if r["state"] == "skipped":
                r["finished_at"] = r["created_at"]
        self.dialect.executemany(conn, self.dialect.insert_ignore(j), rows)

    def resume_schedule(
        self, name: str, *, expected: datetime | None, next_run_at: datetime | None, plan: Plan | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Unpause ``name`` if it is paused and its ``next_run_at`` still equals ``expected``:
        set ``next_run_at`` (when given), clear an error state, and insert ``plan``'s
        occurrences (the fire times missed while paused) in the same transaction. Returns
        False when it is not paused or the compare-and-set failed (nothing written);
        :class:`ScheduleNotFoundError` when there is no such schedule."""
        s = self.t.schedules
        values: dict[str, Any] = {
            "paused": False, "error": None, "error_since": None, "retry_from": None, "updated_at": self._now(now),
        }
        if next_run_at is not None:
            values["next_run_at"] = next_run_at

        def run(conn: sa.Connection) -> bool:
            same = self._next_run_at_is(conn, name, expected)
            if same is None:
                raise ScheduleNotFoundError(name)
            if not same or not conn.execute(
                sa.update(s).where(s.c.name == name, s.c.paused == sa.true()).values(values)
            ).rowcount:
                return False
            if plan is not None and plan.occurrences:
                self._insert_occurrences(conn, self._occurrence_rows([plan], now), now)
            return True

        return self._tx(run)

    def set_paused(self, name: str, paused: bool, next_run_at: datetime | None = None, now: datetime | None = None) -> None:
        s = self.t.schedules
        values: dict[str, Any] = {"paused": paused, "updated_at": self._now(now)}
        if next_run_at is not None:
            values["next_run_at"] = next_run_at

        def run(conn: sa.Connection) -> None:
            if conn.execute(sa.update(s).where(s.c.name == name).values(values)).rowcount == 0:
                raise ScheduleNotFoundError(name)

        self._tx(run)

    def last_outcomes(self, names: Sequence[str]) -> dict[str, tuple[datetime | None, str]]:
        """For each schedule of ``names``, (scheduled_for, state) of its newest occurrence row
        (the one with the highest id): one seek per schedule into ``jobs_schedule_ix``."""
        if not names:
            return {}
        s, j = self.t.schedules, self.t.jobs
        # ORDER BY id DESC LIMIT 1, not max(id): MariaDB reads one index entry for it in a
        # correlated subquery, and every entry of the schedule for max()
        newest = (
            sa.select(j.c.id).where(j.c.schedule_name == s.c.name).order_by(j.c.id.desc()).limit(1)
            .correlate(s).scalar_subquery()
        )
        ids = sa.select(newest.label("id")).where(s.c.name.in_(list(names))).subquery("newest")
        stmt = sa.select(j.c.schedule_name, j.c.scheduled_for, j.c.state).join(ids, j.c.id == ids.c.id)
        return {r[0]: (r[1], r[2]) for r in self._tx(lambda c: list(c.execute(stmt)))}
