"""The scheduler: on the node holding the leader lease, turn due schedule occurrences into jobs.

:func:`plan` is the pure occurrence math (misfire, overlap) of one schedule at one instant.
:meth:`Scheduler.tick` renews the lease and commits the plans; :meth:`Scheduler.sync`
registers the declared schedules at start.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from .clock import Clock
from .errors import LingerError, SpecError
from .registry import ScheduleDef
from .specs import CronSpec, IntervalSpec, parse_spec
from .store import Lease, Occurrence, Plan, ScheduleRow, Store, encode_args

log = logging.getLogger(__name__)

LEADER = "leader"
MAX_ENUMERATED = 100_000  # due fire times enumerated per schedule per tick (a runaway bound)
_US = timedelta(microseconds=1)


@dataclass
class SchedulerSettings:
    tick_interval: float = 1.0
    lease_ttl: float = 30.0
    renew_interval: float = 10.0
    misfire_threshold: float | None = None  # default: lease_ttl + 2 ticks (a fail-over is not a misfire)
    # materialize occurrences due within this many seconds (with run_at = their fire time),
    # so that the workers' own lead_time timer, not this transaction, decides when they start
    # (real clock only; far below any misfire threshold or overlap window)
    lead_time: float = 0.05
    batch: int = 2000  # due schedules per transaction: fewer, larger round trips when many fire at once

    @property
    def threshold(self) -> float:
        if self.misfire_threshold is not None:
            return self.misfire_threshold
        return self.lease_ttl + 2 * self.tick_interval


@dataclass
class TickReport:
    leader: bool = False
    epoch: int | None = None
    due: int = 0
    applied: int = 0
    jobs: int = 0
    skipped: int = 0
    wait: float = 1.0


def stored_spec(spec: CronSpec | IntervalSpec) -> str:
    """What the ``spec`` column holds: a cron expression as written, or ``every:<seconds>s``."""
    return spec.expr if isinstance(spec, CronSpec) else spec.text()


def spec_from_row(row: ScheduleRow) -> CronSpec | IntervalSpec:
    text = row.spec
    if text.startswith("every:"):
        return parse_spec(every=text[len("every:"):], anchor=row.anchor)
    if text.startswith("cron:"):  # the canonical form, accepted too
        text = text[len("cron:"):]
    return parse_spec(cron=text, tz=row.tz)


def plan(
    row: ScheduleRow,
    spec: CronSpec | IntervalSpec,
    now: datetime,
    *,
    active: bool,
    threshold: float,
) -> Plan:
    """What schedule ``row`` must materialize at ``now`` (``row.next_run_at <= now``).

    * Every fire time in [next_run_at, now] is due. Those older than ``misfire_grace`` are
      recorded as one ``skipped`` row (reason misfire_grace).
    * If the earliest remaining one is late by more than ``threshold`` seconds, the misfire
      policy applies: ``coalesce`` makes one job (scheduled for the latest, standing for all),
      ``all`` one job each (the latest ``max_catch_up``; older ones skipped), ``skip`` records
      the late ones as skipped and runs those on time. Otherwise each due fire is one job.
    * ``overlap: skip`` with a queued or running job of this schedule turns every job of
      this tick into one ``skipped`` row (reason overlap).
    * The new ``next_run_at`` is the first fire time strictly after ``now``.
    """
    opts = json.loads(row.options or "{}")
    assert row.next_run_at is not None
    fires: list[datetime] = []
    f: datetime | None = row.next_run_at
    extra = 0
    while f is not None and f <= now:
        if len(fires) < MAX_ENUMERATED:
            fires.append(f)
        else:
            extra += 1
            if extra > MAX_ENUMERATED:  # give up counting: jump past now
                break
        f = spec.next_after(f)
    nxt = f if f is not None and f > now else spec.next_after(now)
    occ: list[Occurrence] = []

    grace = opts.get("misfire_grace")
    if grace is not None:
        old = [x for x in fires if (now - x).total_seconds() > grace]
        if old:
            occ.append(Occurrence(old[0], "skipped", len(old), f"misfire: older than misfire_grace ({grace:g}s)"))
            fires = fires[len(old):]
    runs: list[Occurrence] = []
    if fires:
        late = [x for x in fires if (now - x).total_seconds() > threshold]
        policy = opts.get("misfire", "coalesce")
        if not late:
            runs = [Occurrence(x) for x in fires]
        elif policy == "coalesce":
            n = len(fires) + extra
            why = f"coalesced {n} occurrences from {fires[0].isoformat()}" if n > 1 else None
            runs = [Occurrence(fires[-1], occurrences=n, reason=why)]
        elif policy == "all":
            keep = int(opts.get("max_catch_up") or 1000)
            if len(fires) > keep or extra:
                dropped = fires[: len(fires) - keep] if len(fires) > keep else []
                first = dropped[0] if dropped else fires[0]
                occ.append(Occurrence(first, "skipped", len(dropped) + extra, f"misfire: beyond max_catch_up ({keep})"))
                fires = fires[len(fires) - keep:] if len(fires) > keep else fires
            runs = [Occurrence(x) for x in fires]
        else:  # skip
            occ.append(Occurrence(late[0], "skipped", len(late) + extra, "misfire: missed while no scheduler ran"))
            runs = [Occurrence(x) for x in fires[len(late):]]
    if runs and active and opts.get("overlap", "skip") == "skip":
        n = sum(r.occurrences for r in runs)
        occ.append(Occurrence(runs[0].scheduled_for, "skipped", n, "overlap: previous occurrence still queued or running"))
        runs = []
    occ.extend(runs)
    return Plan(
        name=row.name,
        expected=row.next_run_at,
        next_run_at=nxt,
        occurrences=occ,
        task=row.task,
        args=row.args,
        queue=opts.get("queue") or "default",
        priority=opts.get("priority") or 0,
        max_attempts=opts.get("max_attempts") or 3,
    )


class Scheduler:
    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        clock: Clock | None = None,
        settings: SchedulerSettings | None = None,
        task_defaults: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.clock = clock or Clock()
        self.settings = settings or SchedulerSettings()
        self.task_defaults = task_defaults or (lambda name: {})
        self.lease: Lease | None = None
        self._trusted_until = -1e18  # monotonic: leadership is trusted until then
        self._last_renew = -1e18
        self._specs: dict[tuple[str, str, Any], CronSpec | IntervalSpec] = {}
        self.on_leadership: Callable[[bool, Lease | None], None] | None = None
        self.on_materialized: Callable[[int], None] | None = None  # wakes a worker in this process

    def _now(self) -> datetime:
        return self.clock.now() if self.clock.authoritative else self.store.db_now()

    def _spec(self, row: ScheduleRow) -> CronSpec | IntervalSpec:
        key = (row.spec, row.tz, row.anchor)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = spec_from_row(row)
        return spec

    # -- registration -------------------------------------------------------------------
    def sync(self, defs: list[ScheduleDef], *, disable_missing: bool = True) -> dict[str, list[str]]:
        """Upsert declared schedules by name; a changed spec or zone recomputes next_run_at;
        schedules no longer declared are disabled (kept, with their history)."""
        now = self._now()
        existing = {r.name: r for r in self.store.load_schedules()}
        inserts, updates = [], []
        report: dict[str, list[str]] = {"added": [], "changed": [], "disabled": [], "enabled": []}
        for d in defs:
            task_opts = self.task_defaults(d.task)
            options = d.options()
            for k in ("queue", "priority", "max_attempts"):
                if options.get(k) is None and task_opts.get(k) is not None:
                    options[k] = task_opts[k]
            args = encode_args(d.args, d.kwargs)
            options_text = json.dumps(options, sort_keys=True)
            old = existing.get(d.name)
            spec = d.spec
            if isinstance(spec, IntervalSpec) and spec.anchor is None:
                anchor = old.anchor if old is not None and old.anchor is not None else now
                spec = spec.with_anchor(anchor)
            base = {
                "task": d.task, "spec": stored_spec(d.spec), "tz": d.spec.tz,
                "anchor": getattr(spec, "anchor", None), "args": args, "options": options_text,
                "spec_hash": d.spec_hash,
            }
            # an interval fires at its anchor itself; a cron spec strictly after registration
            first = spec.next_after(now - _US) if isinstance(spec, IntervalSpec) else spec.next_after(now)
            if old is None:
                inserts.append({"name": d.name, **base, "next_run_at": first, "paused": False, "enabled": d.enabled})
                report["added"].append(d.name)
                continue
            change: dict[str, Any] = {k: v for k, v in base.items() if getattr(old, k) != v}
            if old.spec_hash != d.spec_hash or old.spec != base["spec"] or old.tz != base["tz"]:
                change["next_run_at"] = first
                report["changed"].append(d.name)
            if old.enabled != d.enabled:
                change["enabled"] = d.enabled
                if d.enabled:
                    change["next_run_at"] = first  # the disabled period is not caught up
                    report["enabled"].append(d.name)
                else:
                    report["disabled"].append(d.name)
            if change:
                updates.append({"name": d.name, **change})
        declared = {d.name for d in defs}
        disable = [n for n, r in existing.items() if r.enabled and n not in declared] if disable_missing else []
        report["disabled"].extend(disable)
        self.store.save_schedules(inserts, updates, disable, now=self.clock.store_now())
        for n in disable:
            log.warning("schedule %s is no longer declared: disabled (history kept)", n, extra={"action": "schedule_disabled"})
        return report

    # -- leadership ---------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.lease is not None and self.clock.monotonic() < self._trusted_until

    def _lead(self) -> bool:
        s = self.settings
        mono = self.clock.monotonic()
        if self.is_leader() and mono - self._last_renew < s.renew_interval:
            return True
        started = mono
        was = self.lease is not None
        try:
            lease = self.store.acquire_lease(LEADER, self.node_id, s.lease_ttl, now=self.clock.store_now())
        except LingerError as exc:
            log.warning("could not renew the leader lease: %s", exc, extra={"action": "lease_error"})
            return self.is_leader()
        self._last_renew = started
        if lease is None:
            if was:
                log.warning("lost the leader lease", extra={"action": "lease_lost"})
                self._set_lease(None)
            return False
        # Trust the lease until the renewal *started* + TTL, less a margin for clock rates.
        self._trusted_until = started + s.lease_ttl * 0.9
        if not was or (self.lease and self.lease.epoch != lease.epoch):
            log.info("became leader (epoch %s)", lease.epoch, extra={"action": "lease_acquired", "epoch": lease.epoch})
            self._set_lease(lease)
        self.lease = lease
        return True

    def _set_lease(self, lease: Lease | None) -> None:
        self.lease = lease
        if lease is None:
            self._trusted_until = -1e18
        if self.on_leadership:
            self.on_leadership(lease is not None, lease)

    def resign(self) -> None:
        """Release the lease so a peer takes over on its next tick (clean shutdown)."""
        if self.lease is not None:
            try:
                self.store.release_lease(LEADER, self.node_id, now=self.clock.store_now())
                log.info("released the leader lease", extra={"action": "lease_released"})
            except LingerError as exc:
                log.warning("could not release the leader lease: %s", exc)
            self._set_lease(None)

    # -- the tick -----------------------------------------------------------------------
    def tick(self) -> TickReport:
        """Renew or acquire the lease; if leader, materialize every due occurrence."""
        report = TickReport(wait=self.settings.tick_interval)
        if not self._lead():
            return report
        assert self.lease is not None
        report.leader, report.epoch = True, self.lease.epoch
        stuck = False
        debug = log.isEnabledFor(logging.DEBUG)
        lead = timedelta(seconds=self.clock.lead(self.settings.lead_time))
        while True:
            # one query when idle: the earliest fire time and the (database) clock together
            first, now = self.store.schedule_horizon(self.clock.store_now())
            if first is None or first > now + lead:
                break
            at = now + lead
            due = self.store.due_schedules(now=at, limit=self.settings.batch)
            report.due += len(due)
            if not due:
                break
            plans = []
            for row in due:
                try:
                    plans.append(plan(row, self._spec(row), at, active=row.active, threshold=self.settings.threshold))
                except SpecError as exc:
                    log.error("schedule %s has an invalid spec %r: %s", row.name, row.spec, exc)
            if not self.is_leader():
                break
            applied = set(self.store.materialize(plans, lease=LEADER, holder=self.node_id, epoch=self.lease.epoch, now=self.clock.store_now()))
            for p in plans:
                if p.name not in applied:
                    continue
                report.applied += 1
                for o in p.occurrences:
                    if o.state == "skipped":
                        report.skipped += 1
                        log.warning("schedule %s: %s skipped (%s)", p.name, o.scheduled_for.isoformat(), o.reason,
                                    extra={"action": "occurrence_skipped", "schedule": p.name})
                    else:
                        report.jobs += 1
                        if debug:
                            log.debug("schedule %s: occurrence %s materialized", p.name, o.scheduled_for.isoformat(),
                                      extra={"action": "materialized", "schedule": p.name})
            if report.jobs and self.on_materialized is not None:
                self.on_materialized(report.jobs)
            if not applied:
                # what is left (an invalid spec, a lost race) waits for the next tick, not a
                # busy loop; while batches make progress, the horizon query above decides
                # whether another schedule came due (or within lead_time) meanwhile
                first, now = self.store.schedule_horizon(self.clock.store_now())
                stuck = first is not None and first <= now + lead
                break
        if first is not None and not stuck:
            report.wait = max(0.0, min(self.settings.tick_interval, (first - now - lead).total_seconds()))
        return report

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; sleep until the next fire time or tick, whichever first."""
        failures = 0
        while not stop.is_set():
            try:
                report = self.tick()
                wait = report.wait
                failures = 0
            except LingerError as exc:
                # the lease is trusted only until its deadline, so a node that cannot reach the
                # database stops materializing on its own; here it only backs off and retries
                failures += 1
                wait = min(10.0, self.settings.tick_interval * 2 ** (failures - 1))
                log.error("scheduler tick failed: %s; retrying in %.1fs", exc, wait, extra={"action": "tick_error"})
            self.clock.wait(max(wait, 0.001), stop)
