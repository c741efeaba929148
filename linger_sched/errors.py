"""Every error linger-sched raises: one base class, subclasses with structured fields.

Driver errors are translated once, at the storage boundary, into :class:`StoreError`
(raised ``from`` the original), so callers never need to import a database driver.
"""

from __future__ import annotations

from collections.abc import Sequence


class LingerError(Exception):
    """Base class of every error raised by linger-sched."""


class ConfigError(LingerError):
    """A configuration problem, located as precisely as we know: file, line, key."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ConfigErrors(ConfigError):
    """Several configuration problems at once (every error of a schedules.yaml). It is a
    :class:`ConfigError` whose ``file``, ``line``, ``key`` and ``message`` are those of the first
    problem; ``errors`` lists them all and ``str()`` gives one ``file:line: key: message`` per line."""

    errors: list[ConfigError]

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        flat: list[ConfigError] = []
        for e in errors:
            flat.extend(e.errors if isinstance(e, ConfigErrors) else [e])
        if not flat:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = flat
        first = flat[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class SpecError(LingerError, ValueError):
    """An invalid cron expression, interval, duration or time zone.

    ``expr`` is the text that was rejected and ``field`` names the part of it that is wrong
    (``"minute"``, ``"day of month"``, ``"tz"``, ``"every"``, ...).
    """

    def __init__(self, message: str, *, expr: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.expr = expr
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = []
        if self.expr is not None:
            parts.append(f"{self.expr!r}")
        if self.field:
            parts.append(f"field {self.field}")
        prefix = (" ".join(parts) + ": ") if parts else ""
        return f"{prefix}{self.message}"


class UnknownTaskError(LingerError, LookupError):
    """A task name that no ``@task`` registered."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known or [])
        hint = ""
        if self.known:
            shown = ", ".join(self.known[:10]) + (" ..." if len(self.known) > 10 else "")
            hint = f" (registered: {shown})"
        else:
            hint = " (no task is registered: pass --import MODULE or list it under imports:)"
        super().__init__(f"unknown task {name!r}{hint}")


class JobArgumentsError(LingerError, TypeError):
    """Arguments that cannot be stored as JSON, or that do not fit the task."""


class JobOptionError(JobArgumentsError, ValueError):
    """A job option (``priority``, ``queue``, ``delay``, ...) of the wrong type or out of range,
    or a call where a job option and a task parameter share a name. Nothing was stored."""


class NaiveDatetimeError(LingerError, ValueError):
    """A naive datetime was passed where an aware one is required."""

    def __init__(self, what: str, value: object) -> None:
        self.what = what
        super().__init__(
            f"{what} must be a timezone-aware datetime, got naive {value!r}; "
            "pass e.g. datetime(..., tzinfo=timezone.utc) or a ZoneInfo"
        )


class JobNotFoundError(LingerError, LookupError):
    """No job with that id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class JobStateError(LingerError):
    """The job is in a state that does not allow the requested change."""


class JobCancelled(LingerError):
    """Raised by a task to end its job as ``cancelled`` (not retried): what a plain function
    does once ``current_job().cancel_requested`` turns True (``linger-sched jobs cancel ID`` or
    ``app.cancel(id)`` on a running job), e.g. through ``current_job().raise_if_cancelled()``."""


class WaitTimeout(LingerError, TimeoutError):
    """``app.wait(job_id, timeout=...)`` gave up: the job had not finished. ``job_id`` and
    ``state`` (its state when the wait ended) say where it stood."""

    def __init__(self, job_id: int, state: str, timeout: float) -> None:
        self.job_id = job_id
        self.state = state
        self.timeout = timeout
        super().__init__(f"job {job_id} did not finish within {timeout:g}s: it is {state}")


class ScheduleStateError(LingerError):
    """A schedule cannot be changed that way: ``add_schedule`` of a name that exists,
    ``update_schedule``/``remove_schedule`` of a schedule declared in code or schedules.yaml."""


class ScheduleNotFoundError(LingerError, LookupError):
    """No schedule with that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no schedule named {name!r}")


class StoreError(LingerError):
    """The database failed; the driver's exception is the ``__cause__``."""


class SchemaError(StoreError):
    """The schema is missing or older/newer than this version of linger-sched expects."""


class FakeClockRequiredError(LingerError, TypeError):
    """A testing helper that moves time (``app.testing.advance()``) on an app whose clock is not
    a :class:`~linger_sched.clock.FakeClock`."""


class RunLimitError(LingerError):
    """A testing helper stopped at its limit with work still due: ``run_pending()`` after
    ``limit`` attempts (a task that enqueues itself, retries with no backoff), ``advance()``
    after ``max_steps`` steps (a schedule firing very often)."""


class JobFailedError(LingerError):
    """In inline mode (``app.testing.inline()``), a job that the enqueue ran failed; ``job`` is
    its row as recorded (``state``, ``attempts``, ``last_error`` with the traceback)."""

    def __init__(self, message: str, job: object) -> None:
        self.job = job
        super().__init__(message)
