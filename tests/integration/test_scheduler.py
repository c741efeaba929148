"""The scheduler on every database, driven tick by tick with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from linger_sched import FakeClock, Linger, current_job
from linger_sched.scheduler import Scheduler


def occurrences(app: Linger, name: str) -> list[tuple[datetime, str, int, str | None]]:
    rows = app.store.list_jobs(schedule_name=name, limit=0, newest_first=False)
    return sorted((j.scheduled_for, j.state, j.occurrences, j.reason) for j in rows)


def scheduler(app: Linger) -> Scheduler:
    s = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    return s


def test_interval_fires_at_anchor_plus_k_every(app: Linger, clock: FakeClock) -> None:
    @app.task(name="beat", every="10s")
    def beat() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    for _ in range(6):
        s.tick()
        clock.advance(5)
    assert [o[0] for o in occurrences(app, "beat")] == [t0 + timedelta(seconds=10 * k) for k in range(3)]


def test_cron_monthly_billing_in_berlin(app: Linger, clock: FakeClock) -> None:
    billed = []

    @app.task(name="bill", cron="0 0 1 * *", tz="Europe/Berlin")
    def bill() -> None:
        billed.append(current_job().scheduled_for)

    clock.set(datetime(2030, 1, 31, 22, 59, tzinfo=UTC))
    s = scheduler(app)
    s.tick()
    assert occurrences(app, "bill") == []
    clock.set(datetime(2030, 1, 31, 23, 0, 0, 1, tzinfo=UTC))  # 00:00 Feb 1 in Berlin (CET)
    s.tick()
    app.work()
    assert billed == [datetime(2030, 1, 31, 23, 0, tzinfo=UTC)]
    assert app.store.get_schedule("bill").next_run_at == datetime(2030, 2, 28, 23, 0, tzinfo=UTC)


def test_each_occurrence_once_across_repeated_ticks(app: Linger, clock: FakeClock) -> None:
    @app.task(name="m", cron="* * * * *")
    def m() -> None: ...

    s = scheduler(app)
    for _ in range(10):
        s.tick()
        s.tick()
        clock.advance(30)
    times = [o[0] for o in occurrences(app, "m")]
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    assert times == [t0 + timedelta(minutes=k) for k in range(1, 5)]  # strictly after registration


def test_misfire_coalesce_makes_one_run_for_the_window(app: Linger, clock: FakeClock) -> None:
    @app.task(name="c", every="1m", overlap="allow")
    def c() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(minutes=10, seconds=30))  # the leader was down for 10 minutes
    s.tick()
    occ = occurrences(app, "c")
    assert occ[0][:3] == (t0, "queued", 1)
    assert occ[1][:3] == (t0 + timedelta(minutes=10), "queued", 10)
    assert "coalesced 10 occurrences" in (occ[1][3] or "")
    assert len(occ) == 2
    assert app.store.get_schedule("c").next_run_at == t0 + timedelta(minutes=11)


def test_misfire_all_runs_every_missed_occurrence_bounded(app: Linger, clock: FakeClock) -> None:
    @app.task(name="a", every="1m", misfire="all", max_catch_up=5, overlap="allow")
    def a() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(minutes=8))
    s.tick()
    occ = occurrences(app, "a")
    queued = [o[0] for o in occ if o[1] == "queued"]
    skipped = [o for o in occ if o[1] == "skipped"]
    assert queued == [t0] + [t0 + timedelta(minutes=k) for k in range(4, 9)]
    assert [(o[0], o[2]) for o in skipped] == [(t0 + timedelta(minutes=1), 3)]
    assert "max_catch_up" in (skipped[0][3] or "")
    # accounting: every fire time 0..8 is a job or inside a skipped row's count
    assert len(queued) + sum(o[2] for o in skipped) == 9


def test_misfire_skip_records_missed_and_keeps_cadence(app: Linger, clock: FakeClock) -> None:
    @app.task(name="k", every="1m", misfire="skip", overlap="allow")
    def k() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(minutes=5, seconds=10))
    s.tick()
    occ = occurrences(app, "k")
    # 00:01..00:04 are late by more than the threshold: skipped; 00:05 is 10 s late: on time
    assert [o[:3] for o in occ] == [
        (t0, "queued", 1), (t0 + timedelta(minutes=1), "skipped", 4), (t0 + timedelta(minutes=5), "queued", 1)
    ]
    assert app.store.get_schedule("k").next_run_at == t0 + timedelta(minutes=6)


def test_failover_lateness_is_not_a_misfire(app: Linger, clock: FakeClock) -> None:
    @app.task(name="f", every="5s", misfire="skip", overlap="allow")
    def f() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(20)  # shorter than lease TTL + 2 ticks: a fail-over, each occurrence still runs
    s.tick()
    assert [o[:2] for o in occurrences(app, "f")] == [(t0 + timedelta(seconds=5 * k), "queued") for k in range(5)]


def test_misfire_grace_drops_too_old_occurrences(app: Linger, clock: FakeClock) -> None:
    @app.task(name="g", every="1m", misfire="all", misfire_grace="150s", overlap="allow")
    def g() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(timedelta(minutes=5))
    s.tick()
    occ = occurrences(app, "g")
    assert (t0 + timedelta(minutes=1), "skipped", 2) == occ[1][:3]
    assert [o[0] for o in occ if o[1] == "queued"] == [t0] + [t0 + timedelta(minutes=k) for k in (3, 4, 5)]


def test_overlap_skip_records_a_skipped_occurrence(app: Linger, clock: FakeClock) -> None:
    @app.task(name="o", every="1m")
    def o() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    clock.advance(60)
    s.tick()  # the first job is still queued: this one is skipped
    assert [x[:2] for x in occurrences(app, "o")] == [(t0, "queued"), (t0 + timedelta(minutes=1), "skipped")]
    assert "overlap" in (occurrences(app, "o")[1][3] or "")
    app.work()
    clock.advance(60)
    s.tick()
    assert occurrences(app, "o")[-1][:2] == (t0 + timedelta(minutes=2), "queued")


def test_overlap_allow_queues_regardless(app: Linger, clock: FakeClock) -> None:
    @app.task(name="o2", every="1m", overlap="allow")
    def o2() -> None: ...

    s = scheduler(app)
    for _ in range(3):
        s.tick()
        clock.advance(60)
    assert [x[1] for x in occurrences(app, "o2")] == ["queued"] * 3


def test_changed_spec_recomputes_next_run_and_removed_is_disabled(db_url: str, prefix: str, clock: FakeClock) -> None:
    a = Linger(db_url, table_prefix=prefix, clock=clock)
    a.install_schema()
    try:
        @a.task(name="r", cron="0 * * * *")
        def r() -> None: ...

        @a.task(name="gone", every="1h")
        def gone() -> None: ...

        s = scheduler(a)
        assert a.store.get_schedule("r").next_run_at == clock.now() + timedelta(hours=1)
        s.tick()
        # a new deployment: r changed to every 15 minutes, gone removed
        b = Linger(db_url, table_prefix=prefix, clock=clock)

        @b.task(name="r", cron="*/15 * * * *")
        def r2() -> None: ...

        report = b.new_scheduler().sync(list(b.registry.schedules.values()))
        assert report["changed"] == ["r"] and report["disabled"] == ["gone"]
        b_report = b.new_scheduler().sync(list(b.registry.schedules.values()))
        assert b_report["changed"] == []
        assert a.store.get_schedule("r").next_run_at == clock.now() + timedelta(minutes=15)
        gone_row = a.store.get_schedule("gone")
        assert gone_row.enabled is False
        assert occurrences(a, "gone") != []  # history kept
        clock.advance(timedelta(hours=3))
        b.new_scheduler().tick()
        assert len(occurrences(a, "gone")) == 1
    finally:
        a.store.drop_schema()


def test_pause_resume_and_trigger(app: Linger, clock: FakeClock) -> None:
    @app.task(name="p", every="1m", overlap="allow")
    def p() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()
    app.pause("p")
    clock.advance(timedelta(minutes=5, seconds=1))
    s.tick()
    assert len(occurrences(app, "p")) == 1
    app.resume("p")
    assert app.store.get_schedule("p").next_run_at == t0 + timedelta(minutes=6)  # no catch-up of the pause
    job_id = app.trigger("p")
    job = app.get_job(job_id)
    assert (job.schedule_name, job.reason, job.scheduled_for) == ("p", "manual", clock.now())


def test_only_one_leader_materializes(db_url: str, prefix: str, clock: FakeClock) -> None:
    apps = [Linger(db_url, table_prefix=prefix, clock=clock) for _ in range(2)]
    apps[0].install_schema()
    try:
        for a in apps:
            a.task(name="x", every="1s", overlap="allow")(lambda: None)
        s1, s2 = scheduler(apps[0]), scheduler(apps[1])
        for _ in range(10):
            r1, r2 = s1.tick(), s2.tick()
            assert r1.leader != r2.leader
            clock.advance(1)
        times = [o[0] for o in occurrences(apps[0], "x")]
        assert len(times) == len(set(times)) == 10
        # the leader dies (stops ticking): after the TTL the other takes over with a new epoch
        leader, other = (s1, s2) if s1.is_leader() else (s2, s1)
        old_epoch = leader.lease.epoch
        clock.advance(apps[0].settings.lease_ttl + 1)
        report = other.tick()
        assert report.leader and report.epoch == old_epoch + 1
        # the deposed leader's next tick writes nothing and notices it lost the lease
        assert leader.tick().leader is False
        times = [o[0] for o in occurrences(apps[0], "x")]
        assert len(times) == len(set(times))
    finally:
        apps[0].store.drop_schema()


def test_resign_lets_a_peer_take_over_at_once(db_url: str, prefix: str, clock: FakeClock) -> None:
    apps = [Linger(db_url, table_prefix=prefix, clock=clock) for _ in range(2)]
    apps[0].install_schema()
    try:
        s1, s2 = apps[0].new_scheduler(), apps[1].new_scheduler()
        assert s1.tick().leader and not s2.tick().leader
        s1.resign()
        assert s2.tick().leader
    finally:
        apps[0].store.drop_schema()


def test_the_spec_column_holds_the_cron_expression_as_written(app: Linger) -> None:
    @app.task(name="b", cron="0 0 1 * *", tz="Europe/Berlin")
    def b() -> None: ...

    @app.task(name="e", every="15m")
    def e() -> None: ...

    scheduler(app)
    assert (app.store.get_schedule("b").spec, app.store.get_schedule("b").tz) == ("0 0 1 * *", "Europe/Berlin")
    assert app.store.get_schedule("e").spec == "every:900s"


def test_an_idle_tick_is_one_query_and_waits_for_the_next_fire_time(app: Linger, clock: FakeClock) -> None:
    import sqlalchemy as sa

    @app.task(name="later", every="10s")
    def later() -> None: ...

    s = scheduler(app)
    s.tick()  # takes the lease
    clock.advance(3)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(app.store.engine, "before_cursor_execute", count)
    try:
        report = s.tick()  # leader, nothing due, lease not yet up for renewal
    finally:
        sa.event.remove(app.store.engine, "before_cursor_execute", count)
    assert report.leader and report.jobs == 0
    queries = [q for q in statements if not q.startswith("BEGIN")]  # SQLite's explicit BEGIN IMMEDIATE
    assert len(queries) == 1, queries
    assert report.wait == min(app.settings.tick_interval, 7.0)
    clock.advance(6.75)
    assert abs(s.tick().wait - 0.25) < 1e-6  # sleeps until the next fire time, 10 s after registration


def test_a_schedule_that_cannot_be_planned_does_not_make_the_tick_spin(app: Linger, clock: FakeClock) -> None:
    import sqlalchemy as sa

    @app.task(name="ok", every="10s")
    def ok() -> None: ...

    @app.task(name="broken", every="10s")
    def broken() -> None: ...

    t0 = clock.now()
    s = scheduler(app)
    s.tick()  # both fire at their anchor
    sched = app.store.t.schedules
    with app.store.engine.begin() as conn:  # a row no version of the spec parser accepts
        conn.execute(sa.update(sched).where(sched.c.name == "broken").values(spec="not a spec"))
    clock.advance(10)
    report = s.tick()
    assert [o[0] for o in occurrences(app, "ok")] == [t0, t0 + timedelta(seconds=10)]
    assert [o[0] for o in occurrences(app, "broken")] == [t0]
    assert report.wait == app.settings.tick_interval  # not retried at once
    # marked in error and left alone until its backoff passes (tests/integration/test_hardening_scheduler.py)
    broken_row = app.store.get_schedule("broken")
    assert broken_row.error is not None and "not a spec" in broken_row.error
    assert broken_row.retry_from == t0 + timedelta(seconds=10)


def test_a_schedule_that_comes_due_during_a_slow_materialize_is_done_in_the_same_tick(
    app: Linger, clock: FakeClock
) -> None:
    @app.task(name="first", every="10s", overlap="allow")
    def first() -> None: ...

    t0 = clock.now()
    app.schedule("second", first, every="10s", anchor=t0 + timedelta(seconds=10.5), overlap="allow")
    s = scheduler(app)
    s.tick()  # "first" fires at its anchor
    clock.advance(10)  # "first" is due; "second" half a second later
    real = app.store.materialize

    def slow(*a, **kw):  # the transaction takes a second
        out = real(*a, **kw)
        clock.advance(1)
        return out

    app.store.materialize = slow  # type: ignore[method-assign]
    report = s.tick()
    assert report.jobs == 2, report  # not left for the next tick as if it were stuck
    assert [o[0] for o in occurrences(app, "second")] == [t0 + timedelta(seconds=10.5)]
