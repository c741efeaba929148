"""Prometheus metrics on every database: the database-wide gauges equal what the tables hold
(compared with plain SQL over every row), they are cached for the TTL, a database that goes
away never fails a scrape (the last values and ``linger_scrape_error 1``), and a real worker run
is counted by the event hooks."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

import linger_sched
from linger_sched import FakeClock, Linger
from linger_sched.metrics import METRICS, Metrics, instrument
from linger_sched.store import Store, encode_args

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(m: Metrics) -> Samples:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_labels(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(labels)[k] for k in keys): v for (n, labels), v in samples.items() if n == name}


def truth_jobs(store: Store) -> dict[tuple[str, str], int]:
    j = store.t.jobs
    with store.engine.connect() as c:
        return {(q, s): n for q, s, n in c.execute(sa.select(j.c.queue, j.c.state, sa.func.count()).group_by(j.c.queue, j.c.state))}


def truth_oldest_due(store: Store, now: datetime) -> dict[str, float]:
    j = store.t.jobs
    with store.engine.connect() as c:
        rows = list(c.execute(sa.select(j.c.queue, j.c.run_at).where(j.c.state == "queued")))
    out: dict[str, float] = {}
    for queue, run_at in rows:
        out[queue] = max(out.get(queue, 0.0), (now - run_at).total_seconds())
    return out


def job(queue: str, run_at: datetime) -> dict[str, Any]:
    return {"task": "t", "args": encode_args([], {}), "queue": queue, "run_at": run_at}


def fill(app: Linger, clock: FakeClock) -> None:
    """Jobs in four queues and every state, two schedules (one overdue, one paused), a leader
    lease and two nodes (one lost)."""
    store = app.store

    @app.task(name="t")
    def t() -> None:
        pass

    app.schedule("every-minute", t, every="1m")
    app.schedule("hourly-paused", t, cron="0 * * * *")
    app.sync_schedules()
    app.pause("hourly-paused")
    clock.advance(600)  # nobody ticked: every-minute is 10 minutes overdue
    now = clock.now()
    store.enqueue([job("a", now - timedelta(seconds=120)), job("a", now - timedelta(seconds=30)),
                   job("a", now + timedelta(hours=1)), job("b", now - timedelta(seconds=10)),
                   job("b", now - timedelta(seconds=5)), job("c", now + timedelta(seconds=60))]
                  + [job("d", now - timedelta(seconds=1)) for _ in range(4)], now=now)
    claimed = store.claim("node-x", ["b"], 1, 30, now=now)  # the older of b: 5 s is left waiting
    assert len(claimed) == 1
    d = store.claim("node-x", ["d"], 4, 30, now=now)
    ids = [c.id for c in d]
    store.finish("node-x", ids[:2], [(ids[2], "boom", None), (ids[3], "again", 60.0)], now=now,
                 queues={c.id: c.queue for c in d})
    store.acquire_lease("leader", "node-x", 30, now=now)
    for node, beat in (("node-x", now), ("node-gone", now - timedelta(seconds=100))):
        store.register_node(node, host="h", pid=1, roles="worker", registry_hash=None, version="0", now=beat)


def test_the_database_gauges_equal_the_database(app: Linger, clock: FakeClock) -> None:
    fill(app, clock)
    m = Metrics(app, multiprocess=False)
    samples = scrape(m)
    now = clock.now()
    jobs = truth_jobs(app.store)
    assert jobs[("d", "succeeded")] == 2 and jobs[("d", "failed")] == 1 and jobs[("b", "running")] == 1
    shown = by_labels(samples, "linger_queue_jobs", "queue", "state")
    # every (queue, state) the table has, and 0 for queued / running of every queue
    expected = {k: float(v) for k, v in jobs.items()}
    for q in ("a", "b", "c", "d"):
        for state in ("queued", "running"):
            expected.setdefault((q, state), 0.0)
    assert shown == expected
    oldest = by_labels(samples, "linger_queue_oldest_due_seconds", "queue")
    assert oldest == {(q,): pytest.approx(v) for q, v in truth_oldest_due(app.store, now).items()} | {("c",): 0.0}
    assert oldest[("a",)] == pytest.approx(120) and oldest[("b",)] == pytest.approx(5) and oldest[("c",)] == 0
    assert get(samples, "linger_schedules_overdue") == 1
    every_minute = app.store.get_schedule("every-minute")
    assert every_minute.next_run_at is not None
    assert get(samples, "linger_schedules_overdue_seconds") == pytest.approx((now - every_minute.next_run_at).total_seconds())
    assert by_labels(samples, "linger_schedules", "status") == {("active",): 1, ("paused",): 1, ("disabled",): 0, ("error",): 0}
    assert (get(samples, "linger_leader"), get(samples, "linger_leader_epoch")) == (1, 1)
    assert by_labels(samples, "linger_nodes", "status") == {("alive",): 1, ("lost",): 1}
    assert get(samples, "linger_scrape_error") == 0
    assert get(samples, "linger_node_leader") == 0  # this process runs no node
    assert get(samples, "linger_build_info", version=linger_sched.__version__) == 1
    # the lease runs out: no leader any more
    clock.advance(31)
    m.ttl = 0
    samples = scrape(m)
    assert (get(samples, "linger_leader"), get(samples, "linger_leader_epoch")) == (0, 1)


def test_every_documented_metric_is_in_a_scrape(app: Linger, clock: FakeClock) -> None:
    fill(app, clock)
    m = Metrics(app, multiprocess=False)
    from linger_sched.events import Event

    for name in ("job_started", "job_succeeded", "occurrence_created"):
        app.hooks.emit(Event(name, "n", task="t", queue="a", schedule="every-minute", duration=0.1, delay=0.1))
    body, _ = m.render()
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    for name, info in METRICS.items():
        family = name.removesuffix("_total") if info.kind == "counter" else name
        assert families.get(family) == info.kind, name


def test_the_database_values_are_read_once_per_ttl(app: Linger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(app, clock)
    m = Metrics(app, multiprocess=False, ttl=10)
    reads = []
    real = app.store.count_by_queue_and_state
    monkeypatch.setattr(app.store, "count_by_queue_and_state", lambda: reads.append(1) or real())
    first = scrape(m)
    app.store.enqueue([job("a", clock.now())], now=clock.now())
    for _ in range(20):
        assert by_labels(scrape(m), "linger_queue_jobs", "queue", "state") == by_labels(first, "linger_queue_jobs", "queue", "state")
    clock.advance(9.9)
    assert get(scrape(m), "linger_queue_jobs", queue="a", state="queued") == 3
    assert get(scrape(m), "linger_scrape_age_seconds") == pytest.approx(9.9)
    assert len(reads) == 1
    clock.advance(0.1)
    samples = scrape(m)
    assert get(samples, "linger_queue_jobs", queue="a", state="queued") == 4
    assert get(samples, "linger_scrape_age_seconds") == 0
    assert len(reads) == 2


def unreachable(db_url: str, tmp_path: Any) -> str:
    """A URL of the same kind whose server (or file's directory) is not there."""
    backend = sa.engine.make_url(db_url)
    if backend.get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'gone.db'}"
    return backend.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


def test_a_database_that_goes_away_never_fails_a_scrape(
    app: Linger, clock: FakeClock, db_url: str, prefix: str, tmp_path: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    fill(app, clock)
    m = Metrics(app, multiprocess=False, ttl=10)
    good = scrape(m)
    working = app._store
    dead = Store(unreachable(db_url, tmp_path), table_prefix=prefix)
    app._store = dead
    try:
        with caplog.at_level(logging.INFO, logger="linger_sched.metrics"):
            for _ in range(3):  # three failed reads, one TTL apart
                clock.advance(10)
                samples = scrape(m)
                assert get(samples, "linger_scrape_error") == 1
                # the last values are still served, and say how old they are
                assert by_labels(samples, "linger_queue_jobs", "queue", "state") == by_labels(good, "linger_queue_jobs", "queue", "state")
                assert get(samples, "linger_leader") == 1
            assert get(samples, "linger_scrape_age_seconds") == pytest.approx(30)
            errors = [r for r in caplog.records if getattr(r, "action", None) == "metrics_error"]
            assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once per incident
            assert "password" not in errors[0].getMessage()
            app._store = working
            clock.advance(10)
            samples = scrape(m)
            assert get(samples, "linger_scrape_error") == 0 and get(samples, "linger_scrape_age_seconds") == 0
            assert [r for r in caplog.records if getattr(r, "action", None) == "metrics_recovered"]
    finally:
        app._store = working
        dead.dispose()


def test_a_first_scrape_without_a_database_says_so(app: Linger, db_url: str, prefix: str, tmp_path: Any) -> None:
    working = app._store
    dead = Store(unreachable(db_url, tmp_path), table_prefix=prefix)
    app._store = dead
    try:
        samples = scrape(Metrics(app, multiprocess=False))
        assert get(samples, "linger_scrape_error") == 1
        assert not by_labels(samples, "linger_queue_jobs", "queue", "state")
        assert get(samples, "linger_leader") is None
    finally:
        app._store = working
        dead.dispose()


def test_a_real_worker_run_is_counted(app: Linger, clock: FakeClock) -> None:
    """The worker emits the job events (issue 14, helper B's wiring); the metrics count them."""
    m = instrument(app, ttl=0)

    @app.task(name="ok")
    def ok() -> None:
        pass

    @app.task(name="bad", max_attempts=1)
    def bad() -> None:
        raise RuntimeError("boom")

    @app.task(name="flaky", max_attempts=2, retry_backoff=10)
    def flaky() -> None:
        raise RuntimeError("again")

    for _ in range(3):
        ok.enqueue()
    ok.options(queue="other").enqueue()
    bad.enqueue()
    flaky.enqueue()
    clock.advance(2)  # every job waited 2 s before it started
    app.work()
    samples = scrape(m)

    def finished(task: str, queue: str, outcome: str) -> float | None:
        return get(samples, "linger_jobs_finished_total", task=task, queue=queue, outcome=outcome)

    assert finished("ok", "default", "succeeded") == 3 and finished("ok", "other", "succeeded") == 1
    assert finished("bad", "default", "failed") == 1
    assert finished("flaky", "default", "retried") == 1 and finished("flaky", "default", "failed") is None
    assert get(samples, "linger_jobs_started_total", task="ok", queue="default") == 3
    assert get(samples, "linger_job_duration_seconds_count", task="ok", queue="default") == 3
    assert get(samples, "linger_job_delay_seconds_count", task="ok", queue="default") == 3
    assert get(samples, "linger_job_delay_seconds_sum", task="ok", queue="default") == pytest.approx(6, abs=0.5)
    # the database agrees: the gauges are the table's numbers
    assert get(samples, "linger_queue_jobs", queue="default", state="succeeded") == 3
    assert get(samples, "linger_queue_jobs", queue="default", state="queued") == 1  # flaky, waiting for its retry
    clock.advance(30)
    app.work()
    samples = scrape(m)
    assert get(samples, "linger_jobs_finished_total", task="flaky", queue="default", outcome="failed") == 1
    assert get(samples, "linger_jobs_started_total", task="flaky", queue="default") == 2


def test_earliest_queued_reads_the_first_run_at_of_each_queue(store: Store) -> None:
    """Store.earliest_queued: the least run_at of the queued jobs of each queue, whatever their
    priorities (the earliest may be in any priority; past max_priorities the queue is read
    whole), ignoring running and finished jobs."""
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    rows = [
        {**job("few", at(50)), "priority": 0}, {**job("few", at(10)), "priority": 5}, {**job("few", at(30)), "priority": -3},
        {**job("late", at(900)), "priority": 1},
        *({**job("many", at(100 + p)), "priority": p} for p in range(40)),
        {**job("many", at(5)), "priority": 39},
        {**job("taken", at(1)), "priority": 0},
    ]
    store.enqueue(rows, now=t0)
    assert len(store.claim("n", ["taken"], 1, 30, now=at(2))) == 1  # running: not queued any more
    found, now = store.earliest_queued(["few", "late", "many", "taken", "empty"], now=at(20))
    assert now == at(20)
    assert found == {"few": at(10), "late": at(900), "many": at(5)}
    # the same with a small max_priorities (the queue read whole) and with the database's clock
    found, now = store.earliest_queued(["few", "many"], max_priorities=2)
    assert found == {"few": at(10), "many": at(5)} and now.tzinfo is not None
    assert store.earliest_queued([])[0] == {}


def test_the_wsgi_app_and_the_server_answer_metrics_and_health(app: Linger) -> None:
    import json
    import socket
    import urllib.request

    from werkzeug.test import Client

    from linger_sched.errors import ConfigError
    from linger_sched.metrics import make_wsgi_app, serve

    client = Client(make_wsgi_app(app, ttl=0))
    r = client.get("/metrics")
    assert r.status_code == 200 and b"linger_scrape_error 0.0" in r.data
    r = client.get("/healthz")
    assert r.status_code in (200, 503) and json.loads(r.data)["status"] in ("healthy", "degraded", "unhealthy")
    assert client.get("/elsewhere").status_code == 404
    assert client.post("/metrics").status_code == 405
    assert client.head("/metrics").data == b""

    server = serve(app, port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200 and b"linger_build_info" in resp.read()
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1"):
            serve(app, port=server.port)  # in use
    finally:
        server.stop()
    for port in (-1, 65536, True, "9100"):
        with pytest.raises(ConfigError, match="port"):
            serve(app, port=port)  # type: ignore[arg-type]
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # stop() closed the socket
        s.connect(("127.0.0.1", server.port))


def leading(m: Metrics) -> float:
    return next(s.value for f in m.events.leader.collect() for s in f.samples if s.name == "linger_node_leader")


def test_a_real_scheduler_is_counted(app: Linger, clock: FakeClock) -> None:
    """The scheduler emits occurrence and leadership events (issue 14's wiring); the metrics
    count the occurrences, and the process's leadership gauge follows the lease."""
    m = Metrics(app, multiprocess=False, ttl=0)

    @app.task(name="t")
    def t() -> None:
        pass

    app.schedule("every-minute", t, every="1m")
    app.sync_schedules()
    scheduler = app.new_scheduler()
    scheduler.tick()
    assert leading(m) == 1  # leader_acquired (read before a scrape sets it from this process's node)
    for _ in range(3):
        clock.advance(60)
        scheduler.tick()
    samples = scrape(m)
    # the first occurrence waits (nobody works it): overlap skip records the next three as skipped
    for outcome, state, n in (("created", "queued", 1), ("skipped", "skipped", 3)):
        counted = get(samples, "linger_occurrences_total", schedule="every-minute", outcome=outcome)
        assert counted == app.store.count_jobs(state, schedule_name="every-minute") == n, outcome
    assert (get(samples, "linger_leader"), get(samples, "linger_schedules_overdue")) == (1, 0)
    scheduler.resign()
    assert leading(m) == 0  # leader_lost
