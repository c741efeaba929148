"""OpenTelemetry (issue 14) on every database, with the SDK and an in-memory exporter: a PRODUCER
span per enqueue whose traceparent is stored with the job, a CONSUMER span per attempt linked to
it (current while the task runs), the attempt's attributes, an error status with the exception
for a failed attempt; a schedule's occurrence has no link; without a tracer provider, or without
the package, nothing is made or stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402

from linger_sched import FakeClock, Linger, tracing  # noqa: E402
from linger_sched.scheduler import Scheduler  # noqa: E402


def _reset_global_provider() -> None:
    # the API sets its global provider once per process; tests set and unset it around each test
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset_global_provider()


def named(exporter: InMemorySpanExporter, prefix: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def test_a_job_span_is_linked_to_the_span_that_enqueued_it(app: Linger, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("the-web-app")

    @app.task(name="traced.work", queue="q1", max_attempts=4)
    def work(n: int) -> None:
        with tracer.start_as_current_span("inside the task"):
            pass

    with tracer.start_as_current_span("POST /orders") as request:
        job_id = work.enqueue(1)
    (producer,) = named(spans, "linger.enqueue")
    assert (producer.name, producer.kind) == ("linger.enqueue traced.work", SpanKind.PRODUCER)
    assert producer.parent is not None and producer.parent.span_id == request.get_span_context().span_id
    assert producer.attributes["linger.job.id"] == job_id and producer.attributes["linger.queue"] == "q1"
    stored = app.get_job(job_id).trace_context
    pc = producer.context
    assert stored == f"00-{pc.trace_id:032x}-{pc.span_id:016x}-{int(pc.trace_flags):02x}"

    app.work()
    (job_span,) = named(spans, "linger.job")
    assert (job_span.name, job_span.kind) == ("linger.job traced.work", SpanKind.CONSUMER)
    assert job_span.parent is None  # a trace of its own ...
    (link,) = job_span.links  # ... linked to the enqueue
    assert (link.context.trace_id, link.context.span_id) == (pc.trace_id, pc.span_id)
    assert dict(job_span.attributes) == {
        "linger.job.id": job_id, "linger.task": "traced.work", "linger.queue": "q1", "linger.attempt": 1,
        "linger.max_attempts": 4, "messaging.system": "linger", "messaging.operation.type": "process",
        "messaging.destination.name": "q1", "messaging.message.id": str(job_id),
    }
    assert job_span.status.status_code == StatusCode.UNSET
    (inner,) = named(spans, "inside the task")
    assert inner.parent is not None and inner.parent.span_id == job_span.context.span_id


def test_a_failed_attempt_has_an_error_status_and_the_exception(app: Linger, clock: FakeClock,
                                                             spans: InMemorySpanExporter) -> None:
    @app.task(name="traced.flaky", max_attempts=2, retry_backoff=1)
    def flaky() -> None:
        raise RuntimeError("payment provider down")

    flaky.enqueue()
    app.work()
    clock.advance(5)
    app.work()
    first, second = named(spans, "linger.job")
    assert [s.attributes["linger.attempt"] for s in (first, second)] == [1, 2]
    for s in (first, second):
        assert s.status.status_code == StatusCode.ERROR
        assert s.status.description == "RuntimeError: payment provider down"
        (exc_event,) = [e for e in s.events if e.name == "exception"]
        assert exc_event.attributes["exception.type"] == "RuntimeError"
        assert exc_event.attributes["exception.message"] == "payment provider down"


def test_an_async_task_runs_inside_its_span(app: Linger, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("the-web-app")

    @app.task(name="traced.async")
    async def coro() -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("awaited"):
            pass

    @app.task(name="traced.async_fail", max_attempts=1)
    async def coro_fail() -> None:
        raise KeyError("gone")

    coro.enqueue()
    coro_fail.enqueue()
    app.work()
    ok_span, fail_span = sorted(named(spans, "linger.job"), key=lambda s: s.attributes["linger.job.id"])
    (inner,) = named(spans, "awaited")
    assert inner.parent is not None and inner.parent.span_id == ok_span.context.span_id
    assert ok_span.status.status_code == StatusCode.UNSET and fail_span.status.status_code == StatusCode.ERROR


def test_a_schedule_occurrence_has_the_schedule_and_no_link(app: Linger, clock: FakeClock,
                                                           spans: InMemorySpanExporter) -> None:
    @app.task(name="traced.nightly", every="1h")
    def nightly() -> None: ...

    s: Scheduler = app.new_scheduler()
    s.sync(list(app.registry.schedules.values()))
    s.tick()
    app.work()
    (job_span,) = named(spans, "linger.job")
    assert job_span.attributes["linger.schedule"] == "traced.nightly"
    assert job_span.links == () or list(job_span.links) == []
    assert named(spans, "linger.enqueue") == []


def test_a_malformed_stored_traceparent_only_drops_the_link(app: Linger, spans: InMemorySpanExporter) -> None:
    @app.task(name="traced.hand")
    def hand() -> None: ...

    for bad in ("garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01", "x" * 300):
        app.store.enqueue([{"task": "traced.hand", "args": "{}", "trace_context": bad[:255]}])
    app.work()
    job_spans = named(spans, "linger.job")
    assert len(job_spans) == 4 and all(list(s.links) == [] for s in job_spans)
    assert all(app.get_job(int(s.attributes["linger.job.id"])).state == "succeeded" for s in job_spans)


def test_without_a_tracer_provider_nothing_is_made_or_stored(app: Linger) -> None:
    _reset_global_provider()

    @app.task(name="untraced")
    def untraced() -> None: ...

    assert tracing.tracer() is None
    job_id = untraced.enqueue()
    app.work()
    job = app.get_job(job_id)
    assert (job.state, job.trace_context) == ("succeeded", None)


def test_without_opentelemetry_installed_everything_works(app: Linger, monkeypatch: pytest.MonkeyPatch,
                                                          spans: InMemorySpanExporter, clock: FakeClock) -> None:
    monkeypatch.setattr(tracing, "_api", [None])  # as if `import opentelemetry` had failed

    @app.task(name="plain", max_attempts=1)
    def plain(fail: bool) -> None:
        if fail:
            raise RuntimeError("no")

    ok, bad = plain.enqueue(False), plain.enqueue(True, run_at=clock.now() - timedelta(seconds=1))
    app.work()
    assert [app.get_job(i).state for i in (ok, bad)] == ["succeeded", "failed"]
    assert app.get_job(ok).trace_context is None
    assert spans.get_finished_spans() == ()


class Raising(SpanProcessor):
    """A span processor (or an exporter behind one) that raises."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise RuntimeError("span processor broke in on_start")

    def on_end(self, span: Any) -> None:
        if self.where == "on_end":
            raise RuntimeError("span processor broke in on_end")


@pytest.fixture(params=["on_start", "on_end"])
def broken(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], None]]:
    """Call it to install a tracer provider whose span processor raises (in on_start or on_end)."""
    provider = TracerProvider()
    provider.add_span_processor(Raising(request.param))
    caplog.set_level(logging.ERROR, logger="linger_sched")

    def install() -> None:
        _reset_global_provider()
        trace.set_tracer_provider(provider)

    yield install
    provider.shutdown()
    _reset_global_provider()


def tracing_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == "tracing_error"]


def test_a_raising_span_processor_changes_no_sync_job(app: Linger, broken: Callable[[], None],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    @app.task(name="traced.sync", max_attempts=3, retry_backoff=0)  # a retry would be due at once
    def sync(n: int) -> int:
        runs.append(n)
        return n * 2

    job_id = sync.enqueue(21)
    broken()
    app.work()  # used to record the attempt as failed ("internal error in the worker") and run it again
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.result, runs) == ("succeeded", 1, 42, [21])
    assert len(tracing_errors(caplog)) == 1  # logged once, not raised
    assert all("span processor broke" in r.getMessage() for r in tracing_errors(caplog))


@pytest.mark.timeout(30)
def test_a_raising_span_processor_changes_no_async_job(app: Linger, broken: Callable[[], None],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    @app.task(name="traced.coro", max_attempts=3, retry_backoff=0)
    async def coro(n: int) -> int:
        await asyncio.sleep(0)
        runs.append(n)
        return n + 1

    @app.task(name="traced.coro_fail", max_attempts=1)
    async def coro_fail() -> None:
        raise KeyError("gone")

    ok, bad = coro.enqueue(1), coro_fail.enqueue()
    broken()
    app.work()  # used to wait forever: the outcome was never reported, the job stayed running
    job = app.get_job(ok)
    assert (job.state, job.attempts, job.result, runs) == ("succeeded", 1, 2, [1])
    failed = app.get_job(bad)
    assert failed.state == "failed" and "KeyError" in (failed.last_error or "")
    assert len(tracing_errors(caplog)) == 2  # one per attempt


def test_a_raising_span_processor_changes_no_enqueue(app: Linger, broken: Callable[[], None],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="traced.enq")
    def enq(n: int) -> None: ...

    broken()
    job_id = enq.enqueue(1)  # returns the id: a caller that retries on error would duplicate the job
    ids = enq.enqueue_many([(2,), (3,)])
    assert isinstance(job_id, int) and app.get_job(job_id).state == "queued" and len(ids) == 2
    assert sorted(j.id for j in app.store.list_jobs(limit=0)) == sorted([job_id, *ids])
    assert len(tracing_errors(caplog)) == 2  # one per enqueue


@pytest.mark.timeout(30)
def test_an_async_outcome_is_reported_even_when_ending_its_span_raises(
    app: Linger, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The coroutine's done-callback reports its outcome in a ``finally``: never a job left
    ``running`` forever, its lock renewed by the heartbeat."""
    @app.task(name="traced.coro_bug", max_attempts=1)
    async def coro() -> int:
        return 7

    def broken_end_job(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("a bug in end_job")

    monkeypatch.setattr(tracing, "end_job", broken_end_job)
    job_id = coro.enqueue()
    app.work()
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.locked_by) == ("succeeded", 1, None)
    assert [r for r in caplog.records if getattr(r, "action", None) == "internal_error"]
