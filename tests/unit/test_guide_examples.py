"""The guides cannot lie: the examples of docs/tasks.md, docs/schedules.md ("Declaring
schedules") and docs/nodes.md (the files of examples/guide/, shown there verbatim) run here and do
what the pages say, and the test commands of docs/contributing.md run. SQLite (the pages' rules
hold on every database: the store's own suites check them there)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import linger_sched
import linger_sched.app
from examples.guide import explicit_app, invoices, mail, nodes, options, outcome, schedules
from linger_sched import (
    FakeClock,
    JobArgumentsError,
    JobOptionError,
    Linger,
    NaiveDatetimeError,
    current_job,
)
from linger_sched.testing import for_app, on_test_database

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2030, 1, 1, tzinfo=UTC)  # the linger_clock fixture's start

# @task registers on the default app: this is the docs' `for_app(linger_sched.default_app)`
linger_app = for_app(linger_sched.default_app)


@pytest.fixture(autouse=True)
def _the_default_app_of_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' @task functions are bound to the default app of the moment they were
    imported (at collection); a test that ran before may have replaced that app (the CLI tests
    start each command from a fresh default app): make it the default again for these tests."""
    monkeypatch.setattr(linger_sched.app, "_default", mail.send_email.app)


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def job_count(app: Linger) -> int:
    return sum(app.status().counts.values())


# -- docs/tasks.md ------------------------------------------------------------------------------------
def test_enqueue_now_later_at_a_time_and_once_per_unique_key(linger_app: Linger, linger_clock: FakeClock) -> None:
    now = linger_clock.now()
    ann, bob, cy, dee = mail.queue_mail()
    jobs = {i: linger_app.get_job(i) for i in (ann, bob, cy, dee)}
    assert len(jobs) == 4
    # the @task options are the jobs' defaults
    assert {(j.task, j.queue, j.max_attempts, j.priority) for j in jobs.values()} == {
        ("examples.guide.mail.send_email", "mail", 5, 0)}
    assert jobs[ann].run_at == now
    assert jobs[bob].run_at == now + timedelta(hours=1)
    assert jobs[cy].run_at == datetime(2030, 12, 1, 18, tzinfo=UTC)
    assert jobs[dee].unique_key == "digest:dee"
    # while a job with that key is queued or running, enqueueing another returns its id
    assert mail.send_email.enqueue("dee@example.com", "Digest", unique_key="digest:dee") == dee
    assert job_count(linger_app) == 4

    mail.outbox.clear()
    ran = linger_app.testing.run_pending()
    assert {j.id for j in ran.succeeded} == {ann, dee}
    assert sorted(mail.outbox) == [("ann@example.com", "Welcome"), ("dee@example.com", "Digest")]
    # finished: the key is free again
    again = mail.send_email.enqueue("dee@example.com", "Digest", unique_key="digest:dee")
    assert again != dee and linger_app.get_job(again).state == "queued"

    # still a plain function: runs in the caller, writes no job
    mail.outbox.clear()
    before = job_count(linger_app)
    mail.send_now()
    assert mail.outbox == [("now@example.com", "Direct call")]
    assert job_count(linger_app) == before


def test_every_option_is_checked_before_anything_is_written(linger_app: Linger) -> None:
    send = mail.send_email
    with pytest.raises(NaiveDatetimeError):
        send.enqueue("a@example.com", "x", run_at=datetime(2030, 12, 1, 18))
    bad: list[dict[str, object]] = [
        {"priority": 2**31}, {"priority": "1"}, {"max_attempts": 0}, {"max_attempts": 2**31},
        {"queue": ""}, {"queue": "q" * 65}, {"unique_key": ""}, {"unique_key": "k" * 192},
        {"delay": -1}, {"delay": float("inf")}, {"delay": timedelta(days=36526)}, {"delay": "soon"},
        {"run_at": START, "delay": 5},
    ]
    for opts in bad:
        with pytest.raises(JobOptionError) as caught:
            send.enqueue("a@example.com", "x", **opts)
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    # the limits themselves are fine, and so is a duration string or an int unique key
    ok = [send.enqueue("a@example.com", "x", priority=2**31 - 1, queue="q" * 64, unique_key="k" * 191),
          send.enqueue("a@example.com", "x", delay="10m", max_attempts=1),
          send.enqueue("a@example.com", "x", unique_key=7)]
    assert linger_app.get_job(ok[1]).run_at == linger_app.clock.now() + timedelta(minutes=10)
    assert linger_app.get_job(ok[2]).unique_key == "7"
    # arguments: JSON, and bound against the signature of a task registered here
    with pytest.raises(JobArgumentsError, match="examples.guide.mail.send_email"):
        send.enqueue("a@example.com", {1, 2})
    with pytest.raises(JobArgumentsError, match="subject"):
        send.enqueue("a@example.com")
    assert job_count(linger_app) == 3  # nothing of the refused calls was stored


def test_a_parameter_named_like_a_job_option_needs_options(linger_app: Linger) -> None:
    with pytest.raises(JobOptionError, match="ambiguous"):
        options.notify.enqueue(7, queue="sms")
    job = linger_app.get_job(options.notify_by_sms(7))
    assert (job.queue, job.kwargs) == ("email", {"queue": "sms"})
    job = linger_app.get_job(linger_app.with_options(options.notify, queue="email").enqueue(8, queue="sms"))
    assert (job.queue, job.kwargs) == ("email", {"queue": "sms"})

    ids = options.notify_many()
    assert [(j.args, j.kwargs) for j in map(linger_app.get_job, ids)] == [
        ([1], {}), ([], {"user_id": 2}), ([3], {"queue": "sms"})]
    options.sent.clear()
    linger_app.testing.run_pending()
    assert sorted(options.sent) == [(1, "push"), (2, "push"), (3, "sms"), (7, "sms"), (8, "sms")]


def test_class_jobs_store_their_fields_and_run_perform(linger_app: Linger) -> None:
    ids = invoices.queue_invoices()
    jobs = [linger_app.get_job(i) for i in ids]
    assert [j.kwargs for j in jobs] == [{"invoice_id": n} for n in (42, 43, 1, 2)]
    assert {j.task for j in jobs} == {"examples.guide.invoices.SendInvoice"}
    invoices.sent.clear()
    assert len(linger_app.testing.run_pending().succeeded) == 4
    assert sorted(invoices.sent) == [1, 2, 42, 43]


def test_false_fails_an_attempt_and_a_result_is_kept(linger_app: Linger) -> None:
    outcome.stock["apple"] = 3
    outcome.seen.clear()
    ok = outcome.reserve.enqueue("apple", qty=2)
    short = outcome.reserve.enqueue("pear")
    linger_app.testing.run_pending()
    good, bad = linger_app.get_job(ok), linger_app.get_job(short)
    assert (good.state, good.result) == ("succeeded", True)
    # returned False: retried at once (retry_backoff=0), then failed at max_attempts
    assert (bad.state, bad.attempts, bad.last_error) == ("failed", 2, "task returned False")
    tried = [s for s in outcome.seen if s["id"] == short]
    assert [(s["attempt"], s["max_attempts"], s["args"]) for s in tried] == [(1, 2, ("pear",)), (2, 2, ("pear",))]


def test_async_tasks_run_and_see_their_job(linger_app: Linger) -> None:
    job_id = outcome.fetch_price.enqueue("apple")
    linger_app.testing.run_pending()
    job = linger_app.get_job(job_id)
    assert (job.state, job.result) == ("succeeded", 0.5)
    assert outcome.fetch_price.definition.timeout == 5


def test_an_explicit_app(tmp_path: Path) -> None:
    app = explicit_app.app
    assert (app.settings.concurrency, app.settings.database_url) == (16, "postgresql://postgres@127.0.0.1/app")
    assert "examples.guide.explicit_app.cleanup" in app.registry.tasks
    assert "examples.guide.explicit_app.cleanup" not in linger_sched.default_app().registry.tasks
    with on_test_database(app, f"sqlite:///{tmp_path / 'app.db'}", clock=FakeClock()) as a:
        explicit_app.cleanup.enqueue()
        assert a.testing.run_pending().succeeded
    assert explicit_app.cleaned == ["tmp"]


# generic rules of the page, on an app of this test's own
scratch = Linger()
calls: list[str] = []


@scratch.task(retry_backoff=30, max_attempts=3)
def flaky() -> None:
    raise ConnectionError("smtp down")


@scratch.task(max_attempts=1)
def noisy() -> None:
    raise RuntimeError("x\x00" + "y" * 100_000)


@scratch.task
def context_of(tag: str, *, level: int = 0) -> dict[str, object]:
    job = current_job()
    assert job is not None
    return {"id": job.id, "task": job.task, "attempt": job.attempt, "max_attempts": job.max_attempts,
            "queue": job.queue, "priority": job.priority, "schedule_name": job.schedule_name,
            "scheduled_for": job.scheduled_for, "args": list(job.args), "kwargs": job.kwargs,
            "cancel_requested": job.cancel_requested, "set_progress": callable(job.set_progress)}


@pytest.fixture
def scratch_app(tmp_path: Path) -> Linger:
    with on_test_database(scratch, f"sqlite:///{tmp_path / 'scratch.db'}", clock=FakeClock()) as app:
        yield app


def test_backoff_is_exponential_with_jitter(scratch_app: Linger) -> None:
    job_id = flaky.enqueue()
    for attempt, base in ((1, 30), (2, 60)):
        scratch_app.testing.run_pending()
        job = scratch_app.get_job(job_id)
        delay = (job.run_at - scratch_app.clock.now()).total_seconds()
        assert job.state == "queued" and job.attempts == attempt
        assert base * 0.75 <= delay <= base * 1.25, delay  # base x 2^(attempt-1), +-25 %
        assert "ConnectionError: smtp down" in (job.last_error or "")
        scratch_app.testing.advance(timedelta(seconds=delay), run=False)
    scratch_app.testing.run_pending()
    assert scratch_app.get_job(job_id).state == "failed"


def test_last_error_is_clean_and_bounded(scratch_app: Linger) -> None:
    job_id = noisy.enqueue()
    scratch_app.testing.run_pending()
    error = scratch_app.get_job(job_id).last_error or ""
    assert "\x00" not in error
    assert len(error.encode()) <= 32 * 1024
    assert re.search(r"\[\.\.\. \d+ bytes truncated \.\.\.\]", error)
    assert error.startswith("Traceback") and error.rstrip().endswith("y")  # head and tail


def test_an_unknown_task_fails_at_once_and_can_be_retried(scratch_app: Linger) -> None:
    job_id = scratch_app.enqueue("examples.guide.not_deployed")
    scratch_app.testing.run_pending()
    job = scratch_app.get_job(job_id)
    assert job.state == "failed" and job.attempts == 1
    assert "unknown task 'examples.guide.not_deployed'" in (job.last_error or "")
    assert scratch_app.retry(job_id).state == "queued"


def test_current_job_fields(scratch_app: Linger) -> None:
    job_id = context_of.enqueue("a", level=2)
    scratch_app.testing.run_pending()
    seen = scratch_app.get_job(job_id).result
    assert seen["id"] == job_id and seen["task"].endswith(".context_of")
    assert (seen["attempt"], seen["max_attempts"], seen["queue"], seen["priority"]) == (1, 3, "default", 0)
    assert (seen["schedule_name"], seen["scheduled_for"], seen["args"], seen["kwargs"]) == (None, None, ["a"], {"level": 2})
    assert seen["cancel_requested"] is False and seen["set_progress"] is True


def test_a_task_defined_in_main_warns() -> None:
    def job() -> None: ...

    job.__module__ = "__main__"
    app = Linger()
    with pytest.warns(UserWarning, match="__main__"):
        app.task(job)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert app.task(name="reports.job")(job).name == "reports.job"  # name=: no warning


def test_tasks_page_shows_every_example_file() -> None:
    text = page("tasks.md")
    for name in ("mail", "explicit_app", "options", "invoices", "outcome"):
        assert f"<!-- example: examples/guide/{name}.py -->" in text, name


# -- docs/schedules.md, "Declaring schedules" ---------------------------------------------------------
def test_schedules_declared_in_code(tmp_path: Path) -> None:
    app = schedules.app
    assert set(app.registry.schedules) == {"examples.guide.schedules.bill_customers", "nightly-cleanup"}
    clock = FakeClock(datetime(2030, 1, 31, 12, tzinfo=BERLIN))
    with on_test_database(app, f"sqlite:///{tmp_path / 's.db'}", clock=clock) as a:
        a.testing.advance("1d")  # through midnight of Feb 1 in Berlin, and 03:00 UTC
        bill = a.testing.assert_enqueued(schedules.bill_customers)
        assert bill.scheduled_for == datetime(2030, 2, 1, tzinfo=BERLIN)
        cleanup = a.testing.assert_enqueued(schedules.cleanup)
        assert (cleanup.schedule_name, cleanup.kwargs) == ("nightly-cleanup", {"older_than": "30d"})
        assert cleanup.scheduled_for == datetime(2030, 2, 1, 3, tzinfo=UTC)
        a.testing.run_pending()
    assert schedules.billed == ["2030-01-31T23:00:00+00:00"] and schedules.cleaned == ["30d"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    return subprocess.run([sys.executable, "-m", "linger_sched.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_schedules_yaml_of_the_page(tmp_path: Path) -> None:
    # `linger-sched validate examples/guide/schedules.yaml` (the page's block) and --no-import
    checked = run_cli("validate", "examples/guide/schedules.yaml", cwd=ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok (4 schedule(s), 3 task(s))" in checked.stdout
    unchecked = run_cli("validate", "--no-import", "examples/guide/schedules.yaml", cwd=ROOT)
    assert unchecked.returncode == 0 and "not checked" in unchecked.stdout + unchecked.stderr
    # what it declares, read by an app (in a process of its own: the default app registers the tasks)
    script = (
        "import json, sys\n"
        "from linger_sched import default_app\n"
        "app = default_app()\n"
        "app.load_config('examples/guide/schedules.yaml')\n"
        "print(json.dumps({n: [s.task, s.spec.text(), s.spec.tz, s.args, s.kwargs, s.priority, s.queue,\n"
        "                      s.max_attempts, s.misfire, s.overlap] for n, s in app.registry.schedules.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    r = "examples.guide.reports."
    assert got["morning-digest"] == [r + "send_digest", "cron:30 8 * * MON-FRI", "Europe/Berlin", ["team@example.com"], {},
                                     -1, None, 5, "coalesce", "skip"]
    assert got["report-eu"] == [r + "weekly_report", "cron:0 7 * * MON", "Europe/Berlin", ["eu"], {}, None, None, 5,
                                "coalesce", "skip"]
    assert got["report-us"] == [r + "weekly_report", "cron:0 7 * * MON", "America/New_York", ["us"], {"fmt": "html"},
                                None, None, 5, "coalesce", "skip"]
    assert got["sync-ledger"] == [r + "sync_ledger", "every:900s", "UTC", [], {}, None, None, None, "skip", "skip"]

    # the error the page shows: a misspelt zone, named with file, line and key; exit 2
    text = (ROOT / "examples/guide/schedules.yaml").read_text(encoding="utf-8")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "schedules.yaml").write_text(text.replace("tz: Europe/Berlin", "tz: Europe/Berln", 1), encoding="utf-8")
    bad = run_cli("validate", cwd=tmp_path)
    assert bad.returncode == 2
    shown = re.search(r"<!-- validate: misspelt zone -->\n```text\n(.*?)\n```", page("schedules.md"), re.S)
    assert shown, "docs/schedules.md: the validate error block is missing"
    assert shown.group(1) in (bad.stdout + bad.stderr).splitlines()


# -- docs/nodes.md -------------------------------------------------------------------------------------
def test_a_node_inside_a_web_process(tmp_path: Path) -> None:
    app = nodes.app
    with on_test_database(app, f"sqlite:///{tmp_path / 'node.db'}"):
        nodes.start_background_node()
        try:
            deadline = time.monotonic() + 15
            while not nodes.leads():
                assert time.monotonic() < deadline, "the node did not take the leader lease"
                time.sleep(0.05)
            job_id = nodes.resize.enqueue("cat.png")
            assert app.wait(job_id, timeout=15).result == "cat.png resized"
            assert nodes.flushed == []
        finally:
            nodes.stop_background_node()
        assert nodes.flushed == ["metrics"]  # on_halt ran, once
        assert not nodes.leads()
        assert app.status().leader_state == "released"  # a peer takes over at once


# -- docs/contributing.md ------------------------------------------------------------------------------
# The page's test commands, verbatim; each runs here on one small test file (the whole suite would
# run this test again), with this interpreter for .venv/bin/python.
TEST_COMMANDS = [
    ".venv/bin/python -m pytest -q",
    "LINGER_TEST_DATABASES=sqlite .venv/bin/python -m pytest -q",
    '.venv/bin/python -m pytest -q -m "not slow"',
]


@pytest.mark.parametrize("command", TEST_COMMANDS)
def test_the_test_commands_of_the_contributing_page(command: str) -> None:
    assert command in page("contributing.md")
    line = command.replace(".venv/bin/python", sys.executable) + " -p no:cacheprovider tests/unit/test_backoff.py"
    proc = subprocess.run(["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b\d+ passed\b", proc.stdout), proc.stdout
