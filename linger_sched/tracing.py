"""OpenTelemetry spans: one per job attempt, linked to the span that enqueued the job.

Optional (``pip install "linger-sched[otel]"``, opentelemetry-api): without the package, or
while no tracer provider is configured (the API's default), every function here returns at
once and nothing is recorded or stored. The import is made on first use, never at import time.

- :func:`enqueue_span`: around an enqueue, a ``PRODUCER`` span ``linger.enqueue <task>`` (a
  child of the caller's current span); its W3C ``traceparent`` is stored with the jobs
  (``jobs.trace_context``).
- :func:`start_job` / :func:`end_job`: around an attempt, a ``CONSUMER`` span ``linger.job
  <task>``, the current span while the task runs (the task's own spans are its children),
  linked to the producer span when the job has one (a schedule's occurrence has none), with
  the attributes of :data:`ATTRIBUTES` and, when the attempt fails, status ``ERROR`` and the
  exception recorded.

Tracing never changes a job or an enqueue: an exception from OpenTelemetry (a span processor
or an exporter that raises) is logged once, at ERROR with ``action=tracing_error``, and the
job runs, or the enqueue returns, as it would without tracing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the span attributes of a job attempt (``linger.schedule`` only for a schedule's occurrence)
ATTRIBUTES = ("linger.job.id", "linger.task", "linger.queue", "linger.attempt", "linger.max_attempts",
              "linger.schedule", "messaging.system", "messaging.operation.type", "messaging.destination.name",
              "messaging.message.id")

TRACEPARENT_MAX = 55  # "00-" + 32 + "-" + 16 + "-" + 2
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

log = logging.getLogger(__name__)

_api: list[Any] = []  # [the opentelemetry.trace module, or None when it is not installed]
_tracers: dict[int, tuple[Any, Any]] = {}  # id(provider) -> (provider, tracer)


def _failed(what: str, exc: BaseException, **extra: Any) -> None:
    """Log an exception OpenTelemetry raised while ``what`` (it is swallowed: tracing never
    changes a job or an enqueue)."""
    try:
        log.error("tracing failed while %s (ignored): %s: %s", what, type(exc).__name__, exc, exc_info=exc,
                  extra={"action": "tracing_error", **extra})
    except Exception:  # noqa: BLE001 - an exception whose formatting fails
        log.error("tracing failed while %s (ignored)", what, extra={"action": "tracing_error", **extra})


def _trace() -> Any:
    if not _api:
        try:
            from opentelemetry import trace as module
        except ImportError:
            module = None  # type: ignore[assignment]
        _api.append(module)
    return _api[0]


def tracer() -> Any | None:
    """This package's tracer, or None when opentelemetry is not installed or no tracer
    provider is configured (then spans would be dropped anyway: none is made)."""
    try:
        return _tracer()
    except Exception as exc:  # noqa: BLE001 - a provider that raises: no spans
        _failed("getting the tracer", exc)
        return None


def _tracer() -> Any | None:
    trace = _trace()
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    got = _tracers.get(id(provider))
    if got is None or got[0] is not provider:
        from . import __version__

        got = _tracers[id(provider)] = (provider, provider.get_tracer("linger_sched", __version__))
    return got[1]


def traceparent(span: Any) -> str | None:
    """The W3C ``traceparent`` of ``span`` (None for an invalid span context, or when the
    span raises)."""
    try:
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"
    except Exception as exc:  # noqa: BLE001
        _failed("reading the enqueue span's context", exc)
        return None


def set_attribute(span: Any, key: str, value: Any) -> None:
    """``span.set_attribute(key, value)``; an exception is logged (``tracing_error``), not raised."""
    try:
        span.set_attribute(key, value)
    except Exception as exc:  # noqa: BLE001
        _failed(f"setting {key} on a span", exc)


def parse_traceparent(text: Any) -> Any | None:
    """The remote ``SpanContext`` of a stored ``traceparent``, or None when there is none or
    it is malformed (a row written by hand: never an error, the span just has no link)."""
    if not isinstance(text, str) or len(text) > TRACEPARENT_MAX:
        return None
    m = _TRACEPARENT.fullmatch(text)
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    trace = _trace()
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(int(m.group(4), 16)))


@contextmanager
def enqueue_span(task: str, queue: str | None, count: int) -> Iterator[Any]:
    """A ``PRODUCER`` span around the insert of ``count`` jobs of ``task`` (the first task of
    a mixed batch), current while it lasts; yields the span, or None when tracing is off.
    Store :func:`traceparent` of it with the jobs; set ``linger.job.id`` when known.

    An exception of the body (the insert) is recorded on the span and raised as it is; one
    that OpenTelemetry raises, starting or ending the span, is logged and swallowed."""
    t = tracer()
    if t is None:
        yield None
        return
    span = token = None
    try:
        trace = _trace()
        from opentelemetry import context

        attributes: dict[str, Any] = {"linger.task": task, "messaging.system": "linger",
                                      "messaging.operation.type": "send", "messaging.batch.message_count": count}
        if queue is not None:
            attributes["linger.queue"] = attributes["messaging.destination.name"] = queue
        span = t.start_span(f"linger.enqueue {task}", kind=trace.SpanKind.PRODUCER, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
    except Exception as exc:  # noqa: BLE001 - e.g. a span processor's on_start
        _failed(f"starting the span of an enqueue of {task}", exc, task=task)
        if span is not None:
            _end_quietly(span)
        span = token = None
    failure: BaseException | None = None
    try:
        yield span
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if span is not None:
            try:
                if token is not None:
                    context.detach(token)
                if failure is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.record_exception(failure)
                    span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"[:500]))
                span.end()
            except Exception as exc:  # noqa: BLE001 - e.g. a span processor's on_end
                _failed(f"ending the span of an enqueue of {task}", exc, task=task)


def _end_quietly(span: Any) -> None:
    """End ``span`` (after a failure already logged); a second exception is ignored."""
    try:
        span.end()
    except Exception:  # noqa: BLE001
        pass


def start_job(job: Any, t: Any) -> tuple[Any, Any] | None:
    """Start the span of an attempt of ``job`` (a claimed row: id, task, queue, attempts,
    max_attempts, schedule_name, trace_context) with tracer ``t`` (:func:`tracer`, which a
    worker reads once per batch: it costs a microsecond or two, a drain's job some tens) and
    make it current on this thread; returns a handle for :func:`end_job`, or None when ``t``
    is None (tracing is off, or OpenTelemetry raised: logged, and the job runs without a span)."""
    if t is None:
        return None
    try:
        return _start_job(job, t)
    except Exception as exc:  # noqa: BLE001 - e.g. a span processor's on_start
        _failed(f"starting the span of job {getattr(job, 'id', None)}", exc, **_about(job))
        return None


def _about(job: Any) -> dict[str, Any]:
    return {"job_id": getattr(job, "id", None), "task": getattr(job, "task", None),
            "attempt": getattr(job, "attempts", None)}


def _start_job(job: Any, t: Any) -> tuple[Any, Any]:
    trace = _trace()
    from opentelemetry import context

    attributes: dict[str, Any] = {
        "linger.job.id": job.id, "linger.task": job.task, "linger.queue": job.queue,
        "linger.attempt": job.attempts, "linger.max_attempts": job.max_attempts,
        "messaging.system": "linger", "messaging.operation.type": "process",
        "messaging.destination.name": job.queue, "messaging.message.id": str(job.id),
    }
    if job.schedule_name is not None:
        attributes["linger.schedule"] = job.schedule_name
    attributes = {k: v for k, v in attributes.items() if isinstance(v, (str, int, float, bool))}  # a malformed row
    producer = parse_traceparent(getattr(job, "trace_context", None))
    links = [trace.Link(producer)] if producer is not None else []
    # a root span (a trace of its own, as for any message consumed later): never the child of
    # whatever happens to be current on this thread (inline mode runs jobs inside enqueue)
    span = t.start_span(f"linger.job {job.task}", context=context.Context(), kind=trace.SpanKind.CONSUMER,
                        attributes=attributes, links=links)
    try:
        token = context.attach(trace.set_span_in_context(span))
    except BaseException:
        _end_quietly(span)
        raise
    return span, token


def use_span(handle: tuple[Any, Any] | None) -> None:
    """Make the span of ``handle`` current in the calling context (an ``async def`` task's
    own context, on the worker's event loop); left there: that context ends with the task."""
    if handle is not None:
        try:
            from opentelemetry import context

            context.attach(_trace().set_span_in_context(handle[0]))
        except Exception as exc:  # noqa: BLE001
            _failed("making a job's span current in its coroutine", exc)


def detach(handle: tuple[Any, Any] | None) -> None:
    """Stop making the span of ``handle`` current on this thread (it stays open)."""
    if handle is not None and handle[1] is not None:
        try:
            from opentelemetry import context

            context.detach(handle[1])
        except Exception as exc:  # noqa: BLE001
            _failed("detaching a job's span", exc)


def end_job(handle: tuple[Any, Any] | None, ok: bool, error: str | None = None,
            exc: BaseException | None = None, *, detached: bool = False) -> None:
    """End the span of ``handle``: status ``ERROR`` with the first line of ``error`` (and
    ``exc`` recorded) when the attempt failed. ``detached``: :func:`detach` was called.
    Never raises: an exception of OpenTelemetry (e.g. a span processor's on_end) is logged."""
    if handle is None:
        return
    span, token = handle
    try:
        try:
            if not detached and token is not None:
                from opentelemetry import context

                context.detach(token)
            if not ok:
                from opentelemetry.trace import Status, StatusCode

                if exc is not None:
                    span.record_exception(exc)
                lines = (error or "failed").strip().splitlines()
                span.set_status(Status(StatusCode.ERROR, lines[-1][:500] if lines else "failed"))
        finally:
            span.end()
    except Exception as exc2:  # noqa: BLE001
        _failed("ending a job's span", exc2)
