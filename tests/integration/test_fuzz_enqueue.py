"""Property-based tests of enqueue(): any value of any option either stores exactly what was
given or raises one of the project's errors before anything is written (hardening, point 8)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linger_sched import FakeClock, Linger, LingerError

FUZZ = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300), st.binary(max_size=20),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.timedeltas(), st.datetimes(), st.datetimes(timezones=st.timezones()),
    st.sampled_from(["10m", "1h30m", "0", "-1s", "1e9", "nan", "", "\x00", "9" * 40, "1w", "1ms"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=10,
) | st.sets(st.integers(), max_size=2) | st.builds(object)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linger]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    app = Linger(f"sqlite:///{path}", table_prefix="fuzz_", clock=FakeClock())
    app.install_schema()

    @app.task(name="t")
    def t(*args: object, **kwargs: object) -> None: ...

    yield app
    app.store.drop_schema()
    app.store.dispose()


OPTIONS = ("run_at", "delay", "priority", "queue", "unique_key", "max_attempts")


@FUZZ
@given(options=st.dictionaries(st.sampled_from(OPTIONS), anything, max_size=3),
       args=st.lists(json_values, max_size=2), kwargs=st.dictionaries(st.text(max_size=5), json_values, max_size=2))
def test_enqueue_stores_what_it_is_given_or_raises_a_project_error(fuzz_app: Linger, options: dict, args: list, kwargs: dict) -> None:  # type: ignore[type-arg]
    kwargs = {k: v for k, v in kwargs.items() if k not in OPTIONS}
    before = sum(fuzz_app.store.count_by_state().values())
    try:
        job_id = fuzz_app.enqueue("t", *args, **options, **kwargs)
    except LingerError as exc:
        assert str(exc)  # says what was wrong
        assert sum(fuzz_app.store.count_by_state().values()) == before, "a refused job was stored"
        return
    job = fuzz_app.get_job(job_id)
    if options.get("unique_key") is None:
        assert job.args == list(args) and job.kwargs == kwargs
    if options.get("priority") is not None:
        assert job.priority == options["priority"]
    if options.get("queue") is not None:
        assert job.queue == options["queue"]
    if options.get("max_attempts") is not None:
        assert job.max_attempts == options["max_attempts"]
    if options.get("run_at") is not None:
        assert job.run_at == options["run_at"]
    if options.get("delay") is not None and isinstance(options["delay"], (int, float)) and options.get("unique_key") is None:
        assert math.isclose((job.run_at - fuzz_app.clock.now()).total_seconds(), options["delay"], abs_tol=1e-5)
    fuzz_app.cancel(job_id) if job.state == "queued" else None


def test_the_fuzz_covers_the_edge_values() -> None:
    """The strategies reach the values that broke enqueue before (a guard against a fuzz that
    silently stopped exploring)."""
    edges = [float("nan"), float("inf"), -5, 2**63, "", timedelta(days=-1),
             datetime(9999, 12, 31, tzinfo=timezone(timedelta(hours=-5)))]
    app_errors = 0
    for value in edges:
        for opt in ("delay", "priority", "unique_key", "run_at"):
            try:
                Linger("sqlite:////nonexistent/never.db", clock=FakeClock())._row("t", (), {}, {opt: value})
            except LingerError:
                app_errors += 1
    assert app_errors >= len(edges) * 3
