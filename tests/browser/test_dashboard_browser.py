"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright), against a real
``linger-sched run`` node and a real ``linger-sched dashboard`` process, on SQLite, PostgreSQL
and MariaDB: the overview, pausing and resuming a schedule, running it now and seeing its job
succeed, retrying a failed job, filtering jobs; an unauthenticated request and a POST without
the CSRF token are refused. A screenshot of every page is saved under
``test-artifacts/dashboard/<database>/`` (``LINGER_TEST_ARTIFACTS`` moves it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from linger_sched.store import Store

from acceptance.helpers import cli_cmd, wait_for
from acceptance.test_dashboard_cli import dashboard, environment, fetch, opener

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
USER, PASSWORD = "ops", "s3cret-<pass>"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

TASKS = '''
from linger_sched import task


@task
def tick():
    return "ok"


@task(max_attempts=1)
def explode(order):
    raise RuntimeError(f"payment gateway said no to order {order}")
'''

SCHEDULES = '''
imports: [browser_tasks]
schedules:
  hourly-report:
    task: browser_tasks.tick
    cron: "0 * * * *"
    tz: Europe/Berlin
'''


@pytest.fixture
def chromium() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        if IN_CI:
            pytest.fail(f"CI=true and Playwright is missing: {exc}")
        pytest.skip(f"Playwright missing: {exc}")
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("CI=true and no chromium on PATH (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium on PATH")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def shots(db_name: str) -> Path:
    base = Path(os.environ.get("LINGER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path = base / "dashboard" / db_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_an_operator_runs_the_dashboard_in_a_browser(chromium: object, store: Store, db_url: str, prefix: str,
                                                      tmp_path: Path, shots: Path) -> None:
    (tmp_path / "browser_tasks.py").write_text(textwrap.dedent(TASKS))
    (tmp_path / "schedules.yaml").write_text(textwrap.dedent(SCHEDULES))
    env = environment(db_url, prefix, PYTHONPATH=str(tmp_path), LINGER_POLL_INTERVAL="0.2s", LINGER_TICK_INTERVAL="0.5s")
    node = subprocess.Popen(cli_cmd("run"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(s.name == "hourly-report" for s in store.load_schedules()), 30, what="the node's schedules")
        failed = store.enqueue([{"task": "browser_tasks.explode", "args": '{"args":[42]}', "max_attempts": 1}])[0]
        wait_for(lambda: store.get_job(failed).state == "failed", 30, what="the failing job")
        dash_env = {**env, "LINGER_DASHBOARD_USER": USER, "LINGER_DASHBOARD_PASSWORD": PASSWORD}
        with dashboard(tmp_path, dash_env) as (url, _):
            # no credentials: refused before any page is read
            status, headers, _ = fetch(opener(), url)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
            context = chromium.new_context(http_credentials={"username": USER, "password": PASSWORD},  # type: ignore[attr-defined]
                                           viewport={"width": 1280, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            # the overview: this node, live, holding the lease
            page.goto(url)
            page.wait_for_selector('[data-test="node-row"]')
            assert page.locator('[data-test="leader-node"]').count() == 1
            assert page.locator('[data-test="read-at"]').first.inner_text()
            page.screenshot(path=str(shots / "overview.png"), full_page=True)

            # schedules -> the schedule: its cron in words, next fire times in its zone
            page.click('[data-test="nav-schedules"]')
            page.wait_for_selector('[data-test="schedule-row"]')
            page.screenshot(path=str(shots / "schedules.png"), full_page=True)
            page.click('[data-test="schedule-link"]:has-text("hourly-report")')
            page.wait_for_selector('[data-test="schedule-name"]')
            assert "hour" in page.locator('[data-test="words"]').first.inner_text().lower()
            assert page.locator('[data-test="fire-time"]').first.inner_text().endswith((" CET", " CEST"))

            # pause, then resume: the page and the row say so
            page.click('[data-test="pause-schedule"]')
            page.wait_for_selector('[data-test="resume-schedule"]')
            assert page.locator('[data-test="status"]').first.inner_text().strip() == "paused"
            assert store.get_schedule("hourly-report").paused
            page.click('[data-test="resume-schedule"]')
            page.wait_for_selector('[data-test="pause-schedule"]')
            assert not store.get_schedule("hourly-report").paused

            # run now: the job appears and succeeds (the node runs it)
            page.click('[data-test="trigger-schedule"]')
            wait_for(lambda: [j for j in store.list_jobs("succeeded", schedule_name="hourly-report")], 30,
                     what="the triggered job to succeed")
            page.screenshot(path=str(shots / "schedule.png"), full_page=True)
            page.goto(url + "jobs?schedule=hourly-report")
            row = page.locator('[data-test="job-row"]').first
            assert row.get_attribute("data-state") == "succeeded"

            # filter jobs by state
            page.goto(url + "jobs")
            page.select_option('[data-test="filter-state"]', "failed")
            page.click('[data-test="filter-submit"]')
            page.wait_for_url("**/jobs?*state=failed*")
            states = {r.get_attribute("data-state") for r in page.locator('[data-test="job-row"]').all()}
            assert states == {"failed"}
            page.screenshot(path=str(shots / "jobs.png"), full_page=True)

            # the failed job: its traceback, then retry -> it runs again (and fails again)
            page.click(f'[data-test="job-row"][data-job-id="{failed}"] [data-test="job-link"]')
            page.wait_for_selector('[data-test="job-error"]')
            assert "payment gateway said no to order 42" in page.locator('[data-test="job-error"]').inner_text()
            page.screenshot(path=str(shots / "job.png"), full_page=True)
            first_end = store.get_job(failed).finished_at
            assert first_end is not None
            page.click('[data-test="retry-job"]')  # a fresh set of attempts, due now
            wait_for(lambda: (j := store.get_job(failed)).state == "failed" and j.finished_at and j.finished_at > first_end,
                     30, what="the retried job's new attempt")
            page.reload()
            assert page.locator('[data-test="state"]').first.inner_text().strip() == "failed"
            assert "1 of 1" in page.locator('[data-test="job-attempts"]').inner_text()

            page.click('[data-test="nav-queues"]')
            page.wait_for_load_state()
            page.screenshot(path=str(shots / "queues.png"), full_page=True)

            # a POST without the CSRF token (authenticated, with the page's cookies) is refused
            before = store.get_schedule("hourly-report").paused
            refused = page.request.post(url + "schedule/pause", form={"name": "hourly-report"})
            assert refused.status in (400, 403)
            assert store.get_schedule("hourly-report").paused == before
            assert not errors, errors
            context.close()
    finally:
        node.terminate()
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)

