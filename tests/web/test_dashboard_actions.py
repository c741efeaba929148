"""Every action of the dashboard, on SQLite, PostgreSQL and MariaDB: a POST with the CSRF token
that writes what the CLI command writes, answered by a redirect to a page that shows it at once;
and the CLI's bulk job commands, which share the dashboard's code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dashboard_support import attr, get, post, rows, text
from flask.testing import FlaskClient

import linger_sched.app as app_module
from linger_sched import FakeClock, Linger
from linger_sched.cli import main


@pytest.fixture
def cli(app: Linger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``linger-sched ...`` in this process on the app's database and prefix (a fresh default
    app per call, as a new process would have; the database's own clock), in an empty
    directory (no schedules.yaml)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LINGER_DATABASE_URL", app.settings.database_url)
    monkeypatch.setenv("LINGER_TABLE_PREFIX", app.settings.table_prefix)
    made: list[Linger] = []

    def run(*args: str, input: str | None = None, code: int = 0) -> str:
        monkeypatch.setattr(app_module, "_default", None)
        result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
        if app_module._default is not None:
            made.append(app_module._default)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return result.output

    yield run
    for a in made:
        a.store.dispose()


def test_pause_resume_and_trigger_a_schedule(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    @app.task(name="nightly", cron="0 3 * * *")
    def nightly() -> None: ...

    app.sync_schedules()
    page = get(client, "/schedule?name=nightly")
    assert 'data-test="pause-schedule"' in page and 'data-test="resume-schedule"' not in page

    r = post(client, "/schedule/pause", {"name": "nightly"})
    assert r.headers["Location"] == "/schedule?name=nightly&done=paused"
    assert app.store.get_schedule("nightly").paused
    page = get(client, r.headers["Location"])
    assert 'data-test="notice">Schedule paused.<' in page and 'data-test="status">paused<' in page
    assert 'data-test="resume-schedule"' in page and 'data-test="pause-schedule"' not in page

    clock.advance(86400 * 2)  # two fire times pass while paused
    r = post(client, "/schedule/resume", {"name": "nightly"})
    assert r.headers["Location"] == "/schedule?name=nightly&done=resumed"
    row = app.store.get_schedule("nightly")
    assert not row.paused
    page = get(client, r.headers["Location"])
    assert attr(rows(page, "ledger-row"), "data-outcome") == ["skipped"]  # the paused period, one row
    r = post(client, "/schedule/resume", {"name": "nightly"})
    assert r.headers["Location"] == "/schedule?name=nightly&done=not-paused"

    r = post(client, "/schedule/trigger", {"name": "nightly"})
    match = re.fullmatch(r"/schedule\?name=nightly&done=triggered&n=(\d+)", r.headers["Location"])
    assert match
    job = app.get_job(int(match.group(1)))
    assert (job.schedule_name, job.reason, job.state) == ("nightly", "manual", "queued")
    page = get(client, r.headers["Location"])
    assert f"job #{job.id} queued" in page and f'data-job-id="{job.id}" data-outcome="queued"' in page
    app.testing.run_pending()
    page = get(client, r.headers["Location"])
    assert f'data-job-id="{job.id}" data-outcome="ran"' in page

    post(client, "/schedule/pause", {"name": "nope"}, status=404)
    post(client, "/schedule/explode", {"name": "nightly"}, status=404)


def test_retry_and_cancel_a_job(app: Linger, client: FlaskClient) -> None:
    @app.task(name="flaky", max_attempts=1)
    def flaky() -> None:
        raise RuntimeError("down")

    failed = flaky.enqueue()
    app.testing.run_pending()
    waiting = flaky.enqueue(delay=3600)
    page = get(client, f"/jobs/{failed}")
    assert 'data-test="retry-job"' in page and 'data-test="cancel-job"' not in page

    r = post(client, f"/jobs/{failed}/retry", page=f"/jobs/{failed}")
    assert r.headers["Location"] == f"/jobs/{failed}?done=retried"
    job = app.get_job(failed)
    assert (job.state, job.attempts) == ("queued", 0)
    page = get(client, r.headers["Location"])
    assert 'data-test="notice">Job queued again.<' in page and 'class="state state-queued"' in page

    r = post(client, f"/jobs/{waiting}/cancel", page=f"/jobs/{waiting}")
    assert r.headers["Location"] == f"/jobs/{waiting}?done=cancelled"
    assert app.get_job(waiting).state == "cancelled"
    # a refused action says why, and changes nothing
    page = text(post(client, f"/jobs/{waiting}/cancel", status=409))
    assert "cancelled" in page and app.get_job(waiting).state == "cancelled"
    post(client, "/jobs/987654321/retry", status=404)


def test_cancel_of_a_running_job_requests_it(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    job_id = app.enqueue("slow.task")
    app.store.claim("node-x", None, 1, 30, now=clock.now())
    r = post(client, f"/jobs/{job_id}/cancel")
    assert r.headers["Location"] == f"/jobs/{job_id}?done=cancel-requested"
    job = app.get_job(job_id)
    assert (job.state, job.cancel_requested) == ("running", True)
    page = get(client, f"/jobs/{job_id}")
    assert 'data-test="cancel-requested"' in page and 'data-test="cancel-job"' not in page


def failing(app: Linger, n: int, task: str) -> list[int]:
    ids = [app.enqueue(task, i, max_attempts=1) for i in range(n)]
    app.testing.run_pending()  # no such task registered: each fails at once
    assert {app.get_job(i).state for i in ids} == {"failed"}
    return ids


def test_bulk_retry_confirms_a_count_then_retries_every_match(app: Linger, client: FlaskClient) -> None:
    mine = failing(app, 7, "reports.build")
    other = failing(app, 2, "mail.send")
    page = get(client, "/jobs?task=reports.build")
    link = re.search(r'href="([^"]+)" data-test="bulk-retry"', page)
    assert link and link.group(1).replace("&amp;", "&") == "/jobs/bulk?action=retry&task=reports.build"
    confirm = get(client, "/jobs/bulk?action=retry&task=reports.build")
    assert re.search(r'data-test="bulk-count">7<', confirm) and "Filter: state <b>failed</b>, task <b>reports.build</b>" in confirm
    assert app.get_job(mine[0]).state == "failed"  # GET changes nothing

    r = post(client, "/jobs/bulk", {"action": "retry", "task": "reports.build", "state": "failed"},
             page="/jobs/bulk?action=retry&task=reports.build")
    assert r.headers["Location"] == "/jobs?state=failed&task=reports.build&done=bulk-retry&n=7"
    assert {app.get_job(i).state for i in mine} == {"queued"}
    assert {app.get_job(i).state for i in other} == {"failed"}
    page = get(client, r.headers["Location"])
    assert 'data-test="notice">7 job(s) queued again.<' in page and 'data-test="no-jobs"' in page
    assert app.store.count_by_state() == {"queued": 7, "failed": 2}

    assert re.search(r'data-test="bulk-count">0<', get(client, "/jobs/bulk?action=retry&task=reports.build"))
    for bad, field in (("action=explode", "action"), ("action=retry&state=queued", "state"),
                       ("action=cancel&state=failed", "state")):
        assert re.search(rf'data-test="error">{field}: ', get(client, f"/jobs/bulk?{bad}", status=400))


def test_bulk_cancel_of_a_queue(app: Linger, client: FlaskClient) -> None:
    doomed = [app.enqueue("t", i, queue="batch", delay=600) for i in range(4)]
    kept = app.enqueue("t", queue="interactive", delay=600)
    confirm = get(client, "/jobs/bulk?action=cancel&queue=batch")
    assert re.search(r'data-test="bulk-count">4<', confirm)
    r = post(client, "/jobs/bulk", {"action": "cancel", "queue": "batch"}, page="/jobs/bulk?action=cancel&queue=batch")
    assert r.headers["Location"] == "/jobs?state=queued&queue=batch&done=bulk-cancel&n=4"
    assert {app.get_job(i).state for i in doomed} == {"cancelled"} and app.get_job(kept).state == "queued"


def test_the_cli_bulk_commands_write_what_the_dashboard_writes(app: Linger, client: FlaskClient, cli: Any) -> None:
    by_web = failing(app, 3, "web.task")
    by_cli = failing(app, 3, "cli.task")
    post(client, "/jobs/bulk", {"action": "retry", "task": "web.task"})
    out = cli("jobs", "retry", "--state", "failed", "--task", "cli.task", input="y\n")
    assert "retry 3 failed job(s)?" in out and "3 job(s) queued again" in out

    def shape(job_id: int) -> tuple[Any, ...]:
        j = app.get_job(job_id)
        return (j.state, j.attempts, j.finished_at, j.locked_by, j.last_error is not None)

    assert [shape(i) for i in by_web] == [shape(i) for i in by_cli] == [("queued", 0, None, None, True)] * 3
    assert app.store.count_by_state() == {"queued": 6}

    # cancel by filter, without a question (--yes); and a single id still works
    out = cli("jobs", "cancel", "--task", "cli.task", "--yes")
    assert "3 job(s) cancelled" in out
    assert {app.get_job(i).state for i in by_cli} == {"cancelled"}
    assert "job" in cli("jobs", "retry", str(by_cli[0]))
    assert "no failed job matches: nothing to retry" in cli("jobs", "retry", "--task", "cli.task")
    out = cli("jobs", "cancel", "--task", "web.task", input="n\n", code=1)  # declined: nothing changes
    assert {app.get_job(i).state for i in by_web} == {"queued"}
    err = cli("jobs", "retry", code=2)
    assert "give a job ID, or filters" in err
    err = cli("jobs", "retry", "5", "--task", "x", code=2)
    assert "not both" in err
    err = cli("jobs", "retry", "--from", "2030-01-01T00:00", code=2)
    assert "--from" in err and "UTC offset" in err


def test_a_pause_by_the_cli_shows_on_the_next_page(app: Linger, client: FlaskClient, cli: Any) -> None:
    @app.task(name="hourly", cron="0 * * * *")
    def hourly() -> None: ...

    app.sync_schedules()
    assert 'data-test="status">active<' in get(client, "/schedule?name=hourly")
    cli("schedules", "pause", "hourly")
    assert 'data-test="status">paused<' in get(client, "/schedule?name=hourly")


# -- schedules created at runtime ---------------------------------------------------------------
def form(**values: str) -> dict[str, str]:
    base = {"name": "report-7", "task": "billing.report", "kind": "cron", "expression": "0 7 * * MON-FRI",
            "tz": "Europe/Berlin", "args": "[7]", "kwargs": "", "queue": "", "priority": "", "misfire": "coalesce",
            "overlap": "skip"}
    return {**base, **values}


def test_add_a_runtime_schedule_after_a_preview(app: Linger, client: FlaskClient) -> None:
    @app.task(name="billing.report")
    def report(customer: int) -> None: ...

    page = get(client, "/schedules")
    assert 'data-test="add-schedule"' in page
    page = get(client, "/schedule/new")
    assert 'data-test="form-save"' not in page  # a preview comes first
    preview = text(post(client, "/schedule/new", form(step="preview"), page="/schedule/new", status=200))
    fires = re.findall(r'<li data-test="fire-time">([^<]*)</li>', preview)
    assert fires[:3] == ["2030-01-01 07:00:00 CET", "2030-01-02 07:00:00 CET", "2030-01-03 07:00:00 CET"]
    assert 'data-test="form-save"' in preview and app.store.load_schedules() == []

    r = post(client, "/schedule/new", form(step="save", queue="reports", priority="-2"), page="/schedule/new")
    assert r.headers["Location"] == "/schedule?name=report-7&done=added"
    row = app.store.get_schedule("report-7")
    assert (row.source, row.spec, row.tz, json.loads(row.args)) == ("runtime", "0 7 * * MON-FRI", "Europe/Berlin", {"args": [7]})
    assert (json.loads(row.options)["queue"], json.loads(row.options)["priority"]) == ("reports", -2)
    page = get(client, r.headers["Location"])
    assert 'data-test="edit-schedule"' in page and 'data-test="remove-schedule"' in page

    preview = text(post(client, "/schedule/new", form(name="ping", kind="every", expression="15m", args="[1]", step="preview"),
                        page="/schedule/new", status=200))
    assert re.findall(r'<li data-test="fire-time">([^<]*)</li>', preview)[:2] == ["2030-01-01 00:00:00 UTC",
                                                                                  "2030-01-01 00:15:00 UTC"]


@pytest.mark.parametrize(("values", "field"), [
    ({"expression": "61 * * * *"}, "cron"),
    ({"tz": "Europe/Berln"}, "tz"),
    ({"args": "[7, 8]"}, "args"),
    ({"args": "not json"}, "args"),
    ({"kwargs": "[1]"}, "kwargs"),
    ({"priority": "high"}, "priority"),
    ({"kind": "every", "expression": "soon"}, "every"),
    ({"misfire": "sometimes"}, "misfire"),
])
def test_a_bad_runtime_schedule_is_refused_with_the_field_named(app: Linger, client: FlaskClient, values: dict[str, str],
                                                                 field: str) -> None:
    @app.task(name="billing.report")
    def report(customer: int) -> None: ...

    for step in ("preview", "save"):
        page = text(post(client, "/schedule/new", form(step=step, **values), page="/schedule/new", status=400))
        error = re.search(r'data-test="form-error">(.*?)</pre>', page, re.DOTALL)
        assert error and f"{field}:" in error.group(1), (step, page[:3000])
        assert 'data-test="form-save"' not in page
    assert app.store.load_schedules() == []


def test_edit_and_remove_a_runtime_schedule_but_not_a_declared_one(app: Linger, client: FlaskClient) -> None:
    @app.task(name="digest", cron="0 6 * * *")
    def digest(user: str = "all") -> None: ...

    app.sync_schedules()
    app.add_schedule("digest-ann", digest, cron="0 7 * * *", tz="Europe/Berlin", kwargs={"user": "ann"})
    page = get(client, "/schedule/edit?name=digest-ann")
    assert 'name="expression" value="0 7 * * *"' in page and 'value="{&#34;user&#34;: &#34;ann&#34;}"' in page
    values = form(name="digest-ann", task="digest", expression="30 8 * * MON-FRI", args="", kwargs='{"user": "ann"}')
    preview = text(post(client, "/schedule/edit", {**values, "step": "preview"}, page="/schedule/edit?name=digest-ann",
                        status=200))
    assert "2030-01-01 08:30:00 CET" in preview and app.store.get_schedule("digest-ann").spec == "0 7 * * *"
    r = post(client, "/schedule/edit", {**values, "step": "save"}, page="/schedule/edit?name=digest-ann")
    assert r.headers["Location"] == "/schedule?name=digest-ann&done=updated"
    assert app.store.get_schedule("digest-ann").spec == "30 8 * * MON-FRI"

    # a declared schedule: no edit or remove button, and the forms refuse it
    page = get(client, "/schedule?name=digest")
    assert 'data-test="edit-schedule"' not in page and 'data-test="remove-schedule"' not in page
    assert "declared" in get(client, "/schedule/edit?name=digest", status=409)
    page = text(post(client, "/schedule/remove", {"name": "digest"}, status=409))
    assert "digest" in page and "declared" in page
    assert app.store.get_schedule("digest").enabled

    r = post(client, "/schedule/remove", {"name": "digest-ann"})
    assert r.headers["Location"] == "/schedules?done=removed"
    assert [s.name for s in app.store.load_schedules()] == ["digest"]
    assert 'data-test="notice">Schedule removed (its jobs stay).<' in get(client, r.headers["Location"])
