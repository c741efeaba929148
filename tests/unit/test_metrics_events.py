"""Prometheus metrics fed by event hooks (linger_sched.metrics), without a database: events are
emitted by hand (``app.hooks.emit``) and the counters and histograms read back; the options'
checks; the clear error without prometheus-client; and the docs' metric table and alerting
rules checked against the metrics the module defines (so neither can drift from the code)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from linger_sched import Linger
from linger_sched.errors import ConfigError
from linger_sched.events import EVENTS, Event
from linger_sched.metrics import HOOKED, METRICS, OTHER, Metrics, instrument, ttl_from

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture
def app(tmp_path: Path) -> Linger:
    # never connects: nothing here reads the database
    return Linger(f"sqlite:///{tmp_path / 'never.db'}")


def value(metric: Any, sample: str, **labels: str) -> float | None:
    """The value of ``sample`` with exactly ``labels`` in a prometheus-client metric object."""
    for family in metric.collect():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def emit(app: Linger, name: str, **fields: Any) -> None:
    app.hooks.emit(Event(name, "node-1", **fields))


def test_job_events_are_counted_by_task_queue_and_outcome(app: Linger) -> None:
    m = Metrics(app, multiprocess=False)
    emit(app, "job_started", job_id=1, task="mail", queue="default", attempt=1, delay=0.2)
    emit(app, "job_started", job_id=2, task="mail", queue="default", attempt=1, delay=3.0)
    emit(app, "job_succeeded", job_id=1, task="mail", queue="default", attempt=1, duration=0.05)
    emit(app, "job_retried", job_id=2, task="mail", queue="default", attempt=1, duration=1.5, error="boom")
    emit(app, "job_failed", job_id=3, task="report", queue="slow", attempt=3, duration=20.0, error="boom")
    emit(app, "job_cancelled", job_id=4, task="report", queue="slow")  # a queued job: no run time
    emit(app, "job_rescued", job_id=5, task="report", queue="slow", reason="lock expired")
    ev = m.events
    assert value(ev.started, "linger_jobs_started_total", task="mail", queue="default") == 2
    for task, queue, outcome in [("mail", "default", "succeeded"), ("mail", "default", "retried"),
                                 ("report", "slow", "failed"), ("report", "slow", "cancelled"),
                                 ("report", "slow", "rescued")]:
        assert value(ev.finished, "linger_jobs_finished_total", task=task, queue=queue, outcome=outcome) == 1, outcome
    assert value(ev.finished, "linger_jobs_finished_total", task="mail", queue="default", outcome="failed") is None
    # run time: the three attempts that ran; the delay: the two starts
    assert value(ev.duration, "linger_job_duration_seconds_count", task="mail", queue="default") == 2
    assert value(ev.duration, "linger_job_duration_seconds_sum", task="mail", queue="default") == pytest.approx(1.55)
    assert value(ev.duration, "linger_job_duration_seconds_bucket", task="mail", queue="default", le="0.1") == 1
    assert value(ev.duration, "linger_job_duration_seconds_count", task="report", queue="slow") == 1
    assert value(ev.delay, "linger_job_delay_seconds_count", task="mail", queue="default") == 2
    assert value(ev.delay, "linger_job_delay_seconds_sum", task="mail", queue="default") == pytest.approx(3.2)
    assert value(ev.delay, "linger_job_delay_seconds_bucket", task="mail", queue="default", le="0.25") == 1


def test_occurrences_and_leadership(app: Linger) -> None:
    m = Metrics(app, multiprocess=False)
    emit(app, "occurrence_created", schedule="nightly", task="report")
    emit(app, "occurrence_created", schedule="nightly", task="report")
    emit(app, "occurrence_skipped", schedule="nightly", task="report", reason="overlap")
    assert value(m.events.occurrences, "linger_occurrences_total", schedule="nightly", outcome="created") == 2
    assert value(m.events.occurrences, "linger_occurrences_total", schedule="nightly", outcome="skipped") == 1
    assert value(m.events.leader, "linger_node_leader") == 0
    emit(app, "leader_acquired", epoch=3)
    assert value(m.events.leader, "linger_node_leader") == 1
    emit(app, "leader_lost", epoch=3, reason="released")
    assert value(m.events.leader, "linger_node_leader") == 0


def test_every_job_outcome_event_is_hooked() -> None:
    """A job event the worker emits that the metrics ignore would be a hole in the counts."""
    assert {e for e in EVENTS if e.startswith(("job_", "occurrence_", "leader_"))} == set(HOOKED)


def test_odd_run_times_are_never_observed_as_nonsense(app: Linger) -> None:
    m = Metrics(app, multiprocess=False)
    for duration in (None, float("nan"), float("inf"), -5.0, "3"):
        emit(app, "job_succeeded", task="t", queue="q", duration=duration)
    assert value(m.events.finished, "linger_jobs_finished_total", task="t", queue="q", outcome="succeeded") == 5
    # only the negative one (a clock step) is kept, as 0
    assert value(m.events.duration, "linger_job_duration_seconds_count", task="t", queue="q") == 1
    assert value(m.events.duration, "linger_job_duration_seconds_sum", task="t", queue="q") == 0


def test_label_values_are_bounded(app: Linger) -> None:
    """Task names a client can make up (a job enqueued by name) cannot grow the series forever."""
    m = Metrics(app, multiprocess=False, max_label_values=3)
    for k in range(10):
        emit(app, "job_succeeded", task=f"task-{k}", queue="q")
    emit(app, "job_succeeded", task="task-0", queue="q")  # a name already seen keeps its series
    assert value(m.events.finished, "linger_jobs_finished_total", task="task-0", queue="q", outcome="succeeded") == 2
    assert value(m.events.finished, "linger_jobs_finished_total", task="task-2", queue="q", outcome="succeeded") == 1
    assert value(m.events.finished, "linger_jobs_finished_total", task=OTHER, queue="q", outcome="succeeded") == 7
    assert value(m.events.finished, "linger_jobs_finished_total", task="task-3", queue="q", outcome="succeeded") is None
    with pytest.raises(ConfigError, match="max_label_values"):
        Metrics(app, multiprocess=False, max_label_values=0)


def test_a_hook_of_another_kind_that_raises_does_not_stop_the_counting(app: Linger) -> None:
    m = Metrics(app, multiprocess=False)

    @app.on("job_succeeded")
    def broken(event: Event) -> None:
        raise RuntimeError("a user's hook")

    emit(app, "job_succeeded", task="t", queue="q")
    assert value(m.events.finished, "linger_jobs_finished_total", task="t", queue="q", outcome="succeeded") == 1


def test_instrument_is_once_per_app_and_close_stops_counting(app: Linger, tmp_path: Path) -> None:
    m = instrument(app, ttl=5)
    assert instrument(app) is m and m.ttl == 5
    assert instrument(app, ttl="1m").ttl == 60
    emit(app, "job_succeeded", task="t", queue="q")
    assert value(m.events.finished, "linger_jobs_finished_total", task="t", queue="q", outcome="succeeded") == 1  # once
    other = Linger(f"sqlite:///{tmp_path / 'other.db'}")
    assert instrument(other) is not m  # another app, its own metrics
    m.close()
    emit(app, "job_succeeded", task="t", queue="q")
    assert value(m.events.finished, "linger_jobs_finished_total", task="t", queue="q", outcome="succeeded") == 1
    assert instrument(app) is not m  # closed: a new one


def test_the_ttl_comes_from_the_argument_the_environment_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINGER_METRICS_TTL", raising=False)
    assert ttl_from(None) == 10.0
    assert ttl_from(0) == 0.0 and ttl_from("0") == 0.0 and ttl_from("30s") == 30.0 and ttl_from(2.5) == 2.5
    monkeypatch.setenv("LINGER_METRICS_TTL", "1m")
    assert ttl_from(None) == 60.0
    monkeypatch.setenv("LINGER_METRICS_TTL", "soon")
    with pytest.raises(ConfigError, match="LINGER_METRICS_TTL"):
        ttl_from(None)
    for bad in (-1, math.nan, math.inf, 3601, "2h", True, [1]):
        with pytest.raises(ConfigError):
            ttl_from(bad)


def test_without_prometheus_client_the_error_names_the_extra(app: Linger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=re.escape('pip install "linger-sched[metrics]"')):
        instrument(app)


def test_multiprocess_mode_needs_an_existing_directory(app: Linger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(app)


# -- the docs -------------------------------------------------------------------------------------
def docs_section(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"## {name}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def sample_names(family: str) -> set[str]:
    info = METRICS[family]
    if info.kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}


def test_the_docs_list_every_metric_with_its_type_and_labels() -> None:
    rows = {}
    for line in docs_section("Metrics").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("linger_"):
            rows[cells[0]] = (cells[1], cells[2])
    assert set(rows) == set(METRICS)
    for name, (kind, labels) in rows.items():
        assert kind == METRICS[name].kind, name
        assert sorted(re.findall(r"[a-z_]+", labels.replace("-", ""))) == sorted(METRICS[name].labels), name


def test_the_alerting_rules_load_and_use_only_metrics_that_exist() -> None:
    section = docs_section("Alerting rules")
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "one YAML block of rules"
    rules = yaml.safe_load(blocks[0])
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert {"LingerScheduleOverdue", "LingerQueueBacklog", "LingerJobFailures", "LingerNoLeader"} <= names
    known = set().union(*(sample_names(f) for f in METRICS))
    for rule in alerts:
        used = set(re.findall(r"\blinger_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= known, (rule["alert"], used - known)
        assert rule.get("for") is not None or "increase" in rule["expr"] or "rate" in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
