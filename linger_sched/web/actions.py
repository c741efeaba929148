"""Job filters and the bulk actions on them, shared by the dashboard and the CLI
(``linger-sched jobs retry|cancel --state ... --task ...``). No web framework here: the CLI
imports this module without the ``[web]`` extra.

A bulk action is the single-job action of the app (:meth:`Linger.retry`, :meth:`Linger.cancel`)
applied to every job that matches, oldest first, so that it writes exactly the rows the
single-job command writes (the counts of finished jobs, unique keys, a cancel request of a
running job); a job that changed state meanwhile is passed over and counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import ConfigError, JobNotFoundError, JobStateError
from ..store.tables import JOB_STATES

if TYPE_CHECKING:
    from ..app import Linger

# the states a bulk action applies to (the first is the default when the filter names none)
RETRYABLE = ("failed", "cancelled", "skipped")
CANCELLABLE = ("queued", "running")
BULK_STATES = {"retry": RETRYABLE, "cancel": CANCELLABLE}
BULK_LIMIT = 10_000  # jobs per bulk action of the dashboard (one request); run it again for more
PAGE = 500


@dataclass(frozen=True)
class JobFilter:
    """What the jobs page and the bulk commands select: every field given must match.
    ``created_from`` / ``created_to``: jobs created in ``[created_from, created_to)``, found as
    an id range (:meth:`Store.first_job_id_since`)."""

    state: str | None = None
    task: str | None = None
    queue: str | None = None
    schedule: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in JOB_STATES:
            raise ConfigError(f"unknown job state {self.state!r} (one of {', '.join(JOB_STATES)})", key="state")
        for name in ("created_from", "created_to"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ConfigError(f"{value.isoformat()} has no time zone", key=name)
        if self.created_from is not None and self.created_to is not None and self.created_to <= self.created_from:
            raise ConfigError(f"the end {self.created_to.isoformat()} is not after the start "
                              f"{self.created_from.isoformat()}", key="created_to")

    @property
    def empty(self) -> bool:
        return not any((self.state, self.task, self.queue, self.schedule, self.created_from, self.created_to))

    def id_bounds(self, app: Linger) -> tuple[int | None, int | None] | None:
        """``(after_id, before_id)`` of the time range (None each where open), or None when no
        job can match (no job created since ``created_from``)."""
        after_id = before_id = None
        if self.created_from is not None:
            first = app.store.first_job_id_since(self.created_from)
            if first is None:
                return None
            after_id = first - 1
        if self.created_to is not None:
            first = app.store.first_job_id_since(self.created_to)
            before_id = first  # None: every job was created before created_to
        return after_id, before_id


@dataclass
class BulkResult:
    """What a bulk action did: ``done`` jobs changed, ``passed_over`` had changed state
    meanwhile (or were gone), ``more``: jobs still match beyond the limit."""

    action: str
    state: str
    done: list[int] = field(default_factory=list)
    passed_over: list[int] = field(default_factory=list)
    more: bool = False


def bulk_state(action: str, state: str | None) -> str:
    """The state a bulk ``action`` applies to: ``state`` when it allows the action, the
    action's default (``failed`` for retry, ``queued`` for cancel) when None."""
    if action not in BULK_STATES:
        raise ConfigError(f"unknown bulk action {action!r} (retry or cancel)", key="action")
    allowed = BULK_STATES[action]
    if state is None:
        return allowed[0]
    if state not in allowed:
        raise ConfigError(f"{action} applies to jobs that are {' or '.join(allowed)}, not {state!r}", key="state")
    return state


def count_matching(app: Linger, flt: JobFilter) -> int:
    """How many jobs match ``flt`` (through :meth:`Store.count_jobs`)."""
    bounds = flt.id_bounds(app)
    if bounds is None:
        return 0
    after_id, before_id = bounds
    return app.store.count_jobs(flt.state, task=flt.task, queue=flt.queue, schedule_name=flt.schedule,
                                after_id=after_id, before_id=before_id)


def matching_ids(app: Linger, flt: JobFilter, limit: int | None) -> tuple[list[int], bool]:
    """The ids of the jobs matching ``flt``, oldest first, at most ``limit`` (None: all), and
    whether more match; read in keyset pages of :data:`PAGE`."""
    bounds = flt.id_bounds(app)
    if bounds is None:
        return [], False
    after_id, before_id = bounds
    ids: list[int] = []
    while True:
        page = app.store.list_jobs(flt.state, PAGE, task=flt.task, queue=flt.queue, schedule_name=flt.schedule,
                                   newest_first=False, after_id=after_id, before_id=before_id)
        for job in page:
            if limit is not None and len(ids) >= limit:
                return ids, True
            ids.append(job.id)
        if len(page) < PAGE:
            return ids, False
        after_id = page[-1].id


def run_bulk(app: Linger, action: str, flt: JobFilter, *, limit: int | None = BULK_LIMIT) -> BulkResult:
    """Apply ``action`` (``retry`` or ``cancel``) to every job matching ``flt`` in the state
    :func:`bulk_state` picks, oldest first, at most ``limit`` of them, one
    :meth:`Linger.retry` / :meth:`Linger.cancel` each."""
    state = bulk_state(action, flt.state)
    ids, more = matching_ids(app, replace(flt, state=state), limit)
    result = BulkResult(action, state, more=more)
    act = app.retry if action == "retry" else app.cancel
    for job_id in ids:
        try:
            act(job_id)
        except (JobStateError, JobNotFoundError):
            result.passed_over.append(job_id)
        else:
            result.done.append(job_id)
    return result
