"""Event hooks: ``@app.on("job_succeeded")`` and the like.

The worker, the scheduler and the node emit an :class:`Event` at each step of a job's and a
schedule's life; the functions registered for that event name are called with it, in
registration order, synchronously on the thread that emitted it (as Oban's telemetry and
Python's ``logging`` handlers do). A hook should therefore be quick: hand slow work (an HTTP
call to an error tracker) to a queue or to a thread of its own. A hook that raises is logged
(``action=hook_error``) and never affects the job, the tick or the other hooks.

This module sits low in the layers (only ``errors`` below it) so that the worker and the
scheduler can emit without knowing who listens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from .errors import LingerError

log = logging.getLogger(__name__)

#: Every event name, with when it is emitted. The payload fields each one fills are listed in
#: docs/operations.md ("Event hooks").
EVENTS: Mapping[str, str] = {
    "job_started": "a worker starts an attempt of a job (on the job's thread, before the task runs)",
    "job_succeeded": "an attempt succeeded and its outcome is stored",
    "job_failed": "an attempt failed and the job will not be tried again (state failed)",
    "job_retried": "an attempt failed and the job is queued again for a later attempt",
    "job_rescued": "a job whose node stopped heartbeating was taken back (its lock expired)",
    "job_cancelled": "a running or queued job was cancelled",
    "occurrence_created": "the leader wrote a schedule's occurrence as a queued job",
    "occurrence_skipped": "the leader recorded a schedule's occurrence as skipped (overlap, misfire)",
    "leader_acquired": "this node became the leader",
    "leader_lost": "this node lost or released the leader lease",
    "node_started": "this node registered and started its threads",
    "node_stopped": "this node finished its shutdown",
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Event:
    """What happened. Fields that do not apply to an event are None (``job_id`` for a leader
    event, ``error`` for a success)."""

    name: str
    node_id: str
    at: datetime | None = None  # when it happened (UTC), as the emitting component saw it
    job_id: int | None = None
    task: str | None = None
    queue: str | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    schedule: str | None = None  # the schedule of an occurrence (jobs of a schedule carry it too)
    scheduled_for: datetime | None = None  # the occurrence's fire time
    duration: float | None = None  # seconds the attempt ran
    delay: float | None = None  # seconds from when the job was due (run_at) to when its attempt started
    error: str | None = None  # the failure (traceback text for a task that raised)
    reason: str | None = None  # why: skipped occurrence, rescue, cancel, lost lease
    retry_at: datetime | None = None  # job_retried: when the next attempt is due (None: as soon as possible)
    epoch: int | None = None  # leader events: the lease epoch
    data: Mapping[str, Any] = field(default_factory=dict)  # anything else worth knowing

    def as_dict(self) -> dict[str, Any]:
        """The payload as JSON-ready values (datetimes as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Mapping):
                value = dict(value)
            out[key] = value
        return out


class Hooks:
    """The hooks of one app, by event name. Thread-safe: hooks may be added while a node runs."""

    def __init__(self) -> None:
        self._hooks: dict[str, tuple[Callable[[Event], Any], ...]] = {}
        self._lock = threading.Lock()

    def on(self, *names: str) -> Callable[[F], F]:
        """Decorator: call the function with the :class:`Event` each time one of ``names``
        happens (``"*"``: every event)."""
        if not names:
            raise LingerError("on() needs at least one event name, e.g. on('job_failed')")
        for name in names:
            if name != "*" and name not in EVENTS:
                known = ", ".join(sorted(EVENTS))
                raise LingerError(f"unknown event {name!r}: the events are {known} (or '*' for every one)")

        def register(fn: F) -> F:
            if not callable(fn):
                raise LingerError(f"an event hook must be callable, not {type(fn).__name__}")
            with self._lock:
                for name in names:
                    self._hooks[name] = (*self._hooks.get(name, ()), fn)
            return fn

        return register

    def off(self, name: str, fn: Callable[[Event], Any]) -> None:
        """Remove a hook registered for ``name`` (no error when it is not there)."""
        with self._lock:
            self._hooks[name] = tuple(h for h in self._hooks.get(name, ()) if h is not fn)

    def wanted(self, name: str) -> bool:
        """Whether any hook listens to ``name``: emitters skip building events nobody reads."""
        hooks = self._hooks
        return bool(hooks.get(name) or hooks.get("*"))

    def emit(self, event: Event) -> None:
        """Call the hooks of ``event.name``, then the ``"*"`` hooks; a hook that raises is
        logged and the others still run."""
        hooks = self._hooks
        for fn in (*hooks.get(event.name, ()), *hooks.get("*", ())):
            try:
                fn(event)
            except BaseException as exc:
                log.error("event hook %s for %s failed: %s: %s", getattr(fn, "__qualname__", fn), event.name,
                          type(exc).__name__, exc, exc_info=True,
                          extra={"action": "hook_error", "event": event.name, "job_id": event.job_id,
                                 "task": event.task, "attempt": event.attempt})
