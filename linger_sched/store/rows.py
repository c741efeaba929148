"""The rows the Store reads and writes, as plain dataclasses, and the pure helpers that shape
their values (argument encoding, storable text, claim order). No SQL and no database here.

Every row type that is read from a query is built by column *name*: ``from_row`` for one row
(a result row or any mapping), ``from_rows`` for a result, which looks the names up once per
result and then reads each row by position, so that a batch costs what ``cls(*row)`` costs.
A query may select the columns in any order, and more columns than the row type has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Self, cast

from ..errors import JobArgumentsError

if TYPE_CHECKING:
    import sqlalchemy as sa


# -- building rows by column name ---------------------------------------------------------
_Reader = Callable[[Sequence[Any]], Sequence[Any]]
_READERS: dict[tuple[type, tuple[str, ...]], _Reader] = {}


def _reader(cls: type, keys: tuple[str, ...]) -> _Reader:
    """For results whose columns are labelled ``keys``: a function from a row to the
    positional arguments of ``cls``, each field taken from the column of its name.

    Built once per (row type, result shape). A field whose column is missing keeps its
    default; such fields must come after every field that is read (they are left off the
    end of the arguments). Anything else missing, or a name two columns share, is an error."""
    got = _READERS.get((cls, keys))
    if got is not None:
        return got
    position: dict[str, int] = {}
    twice: set[str] = set()
    for i, key in enumerate(keys):
        if key in position:
            twice.add(key)
        position[key] = i
    taken: list[int] = []
    left_off: str | None = None
    for f in fields(cls):
        if f.name in twice:
            raise ValueError(f"{cls.__name__}: two columns are labelled {f.name!r} in {keys}")
        if f.name not in position:
            if f.default is MISSING and f.default_factory is MISSING:
                raise KeyError(f"{cls.__name__}: no column {f.name!r} in {keys}")
            left_off = left_off or f.name
            continue
        if left_off is not None:
            raise KeyError(f"{cls.__name__}: no column {left_off!r} in {keys} (only trailing fields may be missing)")
        taken.append(position[f.name])
    if len(taken) == 1:
        only = taken[0]
        got = lambda row: (row[only],)  # noqa: E731 - itemgetter of one index returns the item alone
    else:
        got = itemgetter(*taken)
    _READERS[(cls, keys)] = got
    return got


def _mapping(row: sa.Row[Any] | Mapping[str, Any]) -> Mapping[str, Any]:
    """A result row's mapping of column labels to values (a mapping as it is)."""
    return cast("Mapping[str, Any]", getattr(row, "_mapping", row))


class FromRow:
    """Mixin of the row dataclasses: build one from a query's row by column name."""

    __slots__ = ()

    @classmethod
    def from_row(cls, row: sa.Row[Any] | Mapping[str, Any]) -> Self:
        """The row type from one result row (or mapping), each field from the column of its
        name; columns the type has no field for are ignored, fields with a default may be
        missing."""
        m = _mapping(row)
        built: Self = cast(Any, cls)(**{f.name: m[f.name] for f in fields(cast(Any, cls)) if f.name in m})
        return built

    @classmethod
    def from_rows(cls, rows: Iterable[sa.Row[Any]]) -> list[Self]:
        """:meth:`from_row` of every row of a result: the column names are looked up once,
        from the first row's labels, and each row is then read by position."""
        make = cast(Any, cls)
        out: list[Self] = []
        read: _Reader | None = None
        for row in rows:
            if read is None:
                read = _reader(cls, tuple(row._fields))
            out.append(make(*read(row)))
        return out


# -- jobs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """A row of the job table, as the API and the CLI show it."""

    id: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    state: str
    run_at: datetime
    attempts: int
    max_attempts: int
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    schedule_name: str | None
    scheduled_for: datetime | None
    occurrences: int
    reason: str | None
    unique_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # schema 5
    result: Any = None  # the task's return value, decoded from JSON (None: none was kept)
    progress: float | None = None  # 0..1, as the task last reported it (current_job().set_progress)
    progress_message: str | None = None
    cancel_requested: bool = False  # app.cancel() / `jobs cancel` of the job while it ran
    # schema 6
    trace_context: str | None = None  # W3C traceparent of the span that enqueued it (OpenTelemetry)

    @classmethod
    def from_row(cls, row: sa.Row[Any] | Mapping[str, Any]) -> Job:
        """A job from a row of the job table (every column, any order), by column name; the
        ``args`` column is decoded into ``args`` and ``kwargs`` (a row written by hand that
        does not decode shows what is stored: ``args == [stored text]``), the ``result``
        column from JSON (text that is not JSON is shown as it is stored)."""
        m = _mapping(row)
        try:
            args, kwargs = decode_args(m["args"])
        except JobArgumentsError:
            args, kwargs = [m["args"]], {}
        return cls(
            id=m["id"], task=m["task"], args=args, kwargs=kwargs, queue=m["queue"], priority=m["priority"],
            state=m["state"], run_at=m["run_at"], attempts=m["attempts"], max_attempts=m["max_attempts"],
            locked_by=m["locked_by"], locked_until=m["locked_until"], last_error=m["last_error"],
            schedule_name=m["schedule_name"], scheduled_for=m["scheduled_for"], occurrences=m["occurrences"],
            reason=m["reason"], unique_key=m["unique_key"], created_at=m["created_at"],
            started_at=m["started_at"], finished_at=m["finished_at"], result=decode_result(m["result"]),
            progress=m["progress"], progress_message=m["progress_message"],
            cancel_requested=bool(m["cancel_requested"]), trace_context=m.get("trace_context"),
        )


@dataclass(frozen=True)
class Claimed(FromRow):
    """What a worker needs to run a claimed job."""

    id: int
    task: str
    args: str
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    schedule_name: str | None
    scheduled_for: datetime | None
    run_at: datetime
    claimed_at: datetime | None = None  # the database clock when it was claimed (a labelled column)
    trace_context: str | None = None  # schema 6: the W3C traceparent of the span that enqueued it


# the job columns a claim returns (with the claim's now, labelled ``claimed_at``)
CLAIMED_COLUMNS = tuple(f.name for f in fields(Claimed) if f.name != "claimed_at")


def claim_order(job: Claimed) -> tuple[int, float, int]:
    """(priority, run_at, id): the claim order, tolerant of a malformed row (a text priority
    stored by hand on SQLite) so that such a row is failed by the worker, not compared."""
    pri = job.priority if isinstance(job.priority, int) and not isinstance(job.priority, bool) else 0
    at = job.run_at.timestamp() if isinstance(job.run_at, datetime) else 0.0
    return (pri, at, job.id)


# one encoder for all jobs: json.dumps with options builds a new one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def encode_args(args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
    """The ``args`` column of a job: ``{"args": [...], "kwargs": {...}}`` as compact JSON with
    sorted keys (empty parts left out), so that equal arguments are equal text."""
    payload: dict[str, Any] = {}
    if args:
        payload["args"] = list(args)
    if kwargs:
        payload["kwargs"] = kwargs
    return _ENCODER.encode(payload)


def decode_args(text: str) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` of a stored ``args`` column; :class:`JobArgumentsError` when the
    stored text is not what :func:`encode_args` writes (a row written by hand, say)."""
    try:
        payload = json.loads(text) if text else {}
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        if isinstance(args, list) and isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs):
            return list(args), dict(kwargs)
    except (ValueError, TypeError, AttributeError, RecursionError):
        pass
    shown = text[:200] + "..." if isinstance(text, str) and len(text) > 200 else text
    raise JobArgumentsError(f"stored arguments are not a JSON object with 'args' (a list) and 'kwargs' (an object): {shown!r}")


# -- results and progress (schema 5) ----------------------------------------------------
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_result(value: Any) -> str:
    """The ``result`` column of a job whose task returned ``value``: compact JSON (ASCII, so
    that any database stores it as it is); ``TypeError``/``ValueError`` (or ``RecursionError``)
    when ``value`` is not JSON-serializable (a datetime, a set, NaN, ...)."""
    return _RESULT_ENCODER.encode(value)


def decode_result(text: str | None) -> Any:
    """A stored ``result`` decoded (None for NULL); text that is not JSON (written by hand) is
    returned as it is stored."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


TRACE_CONTEXT_CAP = 255  # characters of jobs.trace_context (a traceparent is 55)
PROGRESS_MESSAGE_CAP = 500  # characters of a progress message kept (jobs.progress_message)


def progress_value(fraction: object, message: object) -> tuple[float, str | None]:
    """``(fraction, message)`` as stored: a real number from 0 to 1 (``TypeError`` or
    ``ValueError`` naming ``fraction`` otherwise), and a message of at most
    :data:`PROGRESS_MESSAGE_CAP` characters with no NUL (longer ones are cut; ``TypeError`` for
    anything but a string or None)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"set_progress(): fraction must be a number from 0 to 1, got {fraction!r}")
    value = float(fraction)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ValueError(f"set_progress(): fraction must be a number from 0 to 1, got {fraction!r}")
    if message is None:
        return value, None
    if not isinstance(message, str):
        raise TypeError(f"set_progress(): message must be a string or None, got {type(message).__name__}")
    text = message.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if len(text) > PROGRESS_MESSAGE_CAP:
        text = text[: PROGRESS_MESSAGE_CAP - 1] + "\u2026"
    return value, text


# Stored text (last_error, reasons) is cut to this many bytes of UTF-8: a task may raise an
# exception of any size, and no database may refuse to store its outcome.
TEXT_CAP = 32 * 1024
_TRUNCATED = "\n[... {} bytes truncated ...]\n"


def clean_text(text: object, cap: int = TEXT_CAP) -> str:
    """``text`` as every supported database stores it: NUL characters removed, valid UTF-8
    (lone surrogates replaced by ``?``), at most ``cap`` bytes — the head and the tail of a
    longer text (a traceback's last line is its message) around a truncation marker."""
    s = text if isinstance(text, str) else str(text)
    if len(s) <= cap // 4 and s.isascii() and "\x00" not in s:
        return s  # the common case: nothing to do
    data = s.replace("\x00", "").encode("utf-8", "replace")
    if len(data) <= cap:
        return data.decode("utf-8")
    keep = max(0, (cap - 64) // 2)
    marker = _TRUNCATED.format(len(data) - 2 * keep)
    return data[:keep].decode("utf-8", "ignore") + marker + data[len(data) - keep:].decode("utf-8", "ignore")


# -- leases ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Lease(FromRow):
    """A named lease (the leader's): who holds it, since which change of holder (``epoch``),
    until when (database clock)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
    # since when ``holder`` holds it; a release sets it to the release instant, equal to
    # ``expires_at`` (see Store.release_lease): that is how a release differs from an expiry
    acquired_at: datetime | None = None

    @property
    def released(self) -> bool:
        """Whether its holder gave it back (a clean shutdown) rather than let it expire: a
        lease that lapses always expires after it was acquired (its TTL is > 0)."""
        return self.acquired_at is not None and self.expires_at <= self.acquired_at


@dataclass(frozen=True)
class Rescued:
    """A job :meth:`Store.rescue_jobs <linger_sched.store.Store.rescue_jobs>` took back from a
    node that stopped heartbeating: the lost attempt (``attempts``) and the state it is now in
    (``queued`` again, ``failed`` after its last attempt, ``cancelled`` when that was asked)."""

    id: int
    node: str | None  # the node that held its lock
    state: str
    task: str
    queue: str
    attempts: int
    max_attempts: int
    schedule_name: str | None
    error: str  # the last_error written


@dataclass(frozen=True)
class LockedJob(FromRow):
    """A running job as the lock index sees it (Store.expired_locks): who holds it, until when."""

    id: int
    task: str
    queue: str
    attempts: int
    locked_by: str | None
    locked_until: datetime | None


# -- schedules ------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleRow(FromRow):
    """A row of the schedule table."""

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
    source: str = "declared"  # or "runtime" (app.add_schedule): a sync never disables it
    # due_schedules only (a column labelled "active"): a job of this schedule is queued or running
    active: bool = False


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


def occurrence_rows(plans: Sequence[Plan], now: datetime | None) -> list[dict[str, Any]]:
    """The job rows of ``plans``' occurrences, as the job table's columns (``created_at``:
    ``now``, filled in from the database clock when None)."""
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


ERROR_CAP = 2000  # characters of a schedule's error message kept


def clean_error(text: str) -> str:
    """A storable schedule error message: no NUL, valid UTF-8, at most ERROR_CAP characters."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= ERROR_CAP else text[: ERROR_CAP - 1] + "\u2026"


# -- nodes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeRow(FromRow):
    """A row of the node table: one running linger-sched process."""

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
        return declared_names(self.schedules)


def declared_names(text: str | None) -> list[str] | None:
    """The schedule names of a node's ``schedules`` column, or None (not recorded, or not a
    JSON list)."""
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None
