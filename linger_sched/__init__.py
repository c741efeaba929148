"""linger-sched: background and recurring jobs for web apps, out of a plain SQL table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

__version__ = "0.1.0"

from .app import (
    JobOptions,
    Linger,
    ScheduleInfo,
    Status,
    Task,
    _TaskDecorator,
    default_app,
)
from .clock import Clock, FakeClock
from .errors import (
    ConfigError,
    ConfigErrors,
    JobArgumentsError,
    JobCancelled,
    JobNotFoundError,
    JobOptionError,
    JobStateError,
    LingerError,
    NaiveDatetimeError,
    ScheduleNotFoundError,
    ScheduleStateError,
    SchemaError,
    SpecError,
    StoreError,
    UnknownTaskError,
    WaitTimeout,
)
from .events import EVENTS, Event
from .store import Job
from .worker import JobContext, current_job

_C = TypeVar("_C", bound=type)
_P = ParamSpec("_P")
_R = TypeVar("_R")


@overload
def task(fn: _C) -> _C: ...  # type: ignore[overload-overlap]
@overload
def task(fn: Callable[_P, _R]) -> Task[_P, _R]: ...
@overload
def task(fn: None = None, **options: Any) -> _TaskDecorator: ...


def task(fn: Any = None, **options: Any) -> Any:
    """``@task`` / ``@task(...)`` on the default app (see :meth:`Linger.task`)."""
    return default_app().task(fn, **options)


def enqueue(task: Any, *args: Any, **kwargs: Any) -> int:
    """``enqueue`` on the default app."""
    return default_app().enqueue(task, *args, **kwargs)


__all__ = [
    "EVENTS", "Clock", "ConfigError", "Event", "ConfigErrors", "FakeClock", "Job", "JobArgumentsError", "JobCancelled", "JobContext",
    "JobNotFoundError", "ScheduleStateError", "WaitTimeout",
    "JobOptionError", "JobOptions",
    "JobStateError", "Linger", "LingerError", "NaiveDatetimeError", "ScheduleInfo", "ScheduleNotFoundError",
    "SchemaError", "SpecError", "Status", "StoreError", "Task", "UnknownTaskError", "current_job",
    "default_app", "enqueue", "task", "__version__",
]
