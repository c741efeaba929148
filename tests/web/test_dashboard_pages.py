"""Every page of the dashboard, server side, on SQLite, PostgreSQL and MariaDB: what it shows
for a known state of the tables (the ``app`` fixture's FakeClock makes every time exact)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from dashboard_support import attr, get, rows
from flask.testing import FlaskClient

from linger_sched import FakeClock, Linger, current_job
from linger_sched.scheduler import LEADER

UTC = timezone.utc


def test_overview_shows_nodes_leader_counts_throughput_and_waits(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    @app.task(name="ok", queue="mail")
    def ok() -> None: ...

    @app.task(name="bad", max_attempts=1)
    def bad() -> None:
        raise RuntimeError("no")

    store = app.store
    now = clock.now()
    store.register_node("node-a", host="h1", pid=1, roles="scheduler,worker", registry_hash="x", version="1", now=now)
    store.register_node("node-b", host="h2", pid=2, roles="worker", registry_hash="x", version="1", now=now)
    for _ in range(3):
        ok.enqueue()
    bad.enqueue()
    clock.advance(5)  # they waited 5 s after they were due
    app.testing.run_pending()
    clock.advance(60)
    ok.enqueue(delay=3600)  # queued, not due
    overdue = ok.enqueue()  # due now; waiting 90 s when the page is read
    clock.advance(90)
    store.heartbeat_node("node-a", now=clock.now())  # node-b's last heartbeat is 155 s old: lost
    assert store.acquire_lease(LEADER, "node-a", 30, now=clock.now()) is not None

    page = get(client, "/")
    assert "data read at 00:02:35 (UTC)" in page
    nodes = rows(page, "node-row")
    assert dict(zip(attr(nodes, "data-node"), attr(nodes, "data-live"))) == {"node-a": "yes", "node-b": "no"}
    assert re.search(r'data-test="leader-node">node-a<', page) and re.search(r'data-test="leader-epoch">1<', page)
    counts = dict(zip(attr(rows(page, "state-row"), "data-state"),
                      re.findall(r'data-test="state-count">(\d+)<', page)))
    assert counts == {"queued": "2", "running": "0", "succeeded": "3", "failed": "1", "cancelled": "0", "skipped": "0"}
    assert attr(rows(page, "queue-row"), "data-queue") == ["default", "mail"]
    hour = re.search(r'id="chart-hour" data-test="chart-hour" data-succeeded="(\d+)" data-failed="(\d+)"', page)
    day = re.search(r'id="chart-day" data-test="chart-day" data-succeeded="(\d+)" data-failed="(\d+)"', page)
    assert hour and day and hour.groups() == ("3", "1") and day.groups() == ("3", "1")
    assert page.count('<rect class="ok"') == 2 and page.count('<rect class="failed"') == 2  # one bar each, per chart
    assert "<svg" in page and "</svg>" in page
    assert re.search(r'data-test="oldest-due"[^>]*>due 2030-01-01 00:01:05 UTC, waiting 90s<', page)
    assert re.search(r'data-test="delay-median">5\.0s<', page)
    assert app.get_job(overdue).state == "queued"

    # the live fragment: the same data without the page around it
    fragment = get(client, "/", headers={"X-Linger-Fragment": "live"})
    assert "<html" not in fragment and "data read at" in fragment and 'data-test="nodes-table"' in fragment


def test_overview_of_an_empty_install(client: FlaskClient) -> None:
    page = get(client, "/")
    assert 'data-test="leader-none"' in page and "no node is running" in page and "none queued" in page
    assert "no finished job yet" in page


def test_schedules_page_shows_words_zones_fire_times_with_dst_and_every_status(app: Linger, client: FlaskClient,
                                                                               clock: FakeClock) -> None:
    clock.set(datetime(2030, 3, 30, 12, tzinfo=UTC))  # the night before Berlin springs forward

    @app.task(name="nightly", cron="30 2 * * *", tz="Europe/Berlin")
    def nightly() -> None: ...

    @app.task(name="beat", every="5m")
    def beat() -> None: ...

    @app.task(name="held", cron="0 9 * * MON-FRI")
    def held() -> None: ...

    @app.task(name="gone", cron="0 0 1 * *", enabled=False)
    def gone() -> None: ...

    @app.task(name="broken", every="1h")
    def broken() -> None: ...

    app.sync_schedules()
    app.pause("held")
    app.testing.advance("6m", run=True)  # beat runs twice
    row = app.store.get_schedule("broken")
    assert row.next_run_at is not None
    app.store.mark_schedule_error("broken", "ValueError: the row cannot be planned", expected=row.next_run_at,
                                  retry_at=clock.now() + timedelta(minutes=10), now=clock.now())

    page = get(client, "/schedules")
    found = rows(page, "schedule-row")
    assert attr(found, "data-schedule") == ["beat", "broken", "gone", "held", "nightly"]
    assert attr(found, "data-status") == ["active", "error", "disabled", "paused", "active"]
    assert "Every 5 minutes" not in page  # intervals are ours: "every 5 minutes"
    assert ">every 5 minutes<" in page and ">At 02:30<" in page and ">At 09:00, Monday through Friday<" in page
    assert "Europe/Berlin" in page
    # the fire time in the spring-forward gap moves to its end, and says so
    assert "2030-03-31 03:00:00 CEST" in page
    assert "DST change: CET UTC+01:00 \u2192 CEST UTC+02:00; moved to the end of the spring-forward gap" in page
    assert "ValueError: the row cannot be planned" in page and "enabled: false" in page
    beat_row = page[page.index('data-schedule="beat"'):page.index('data-schedule="broken"')]
    assert "2030-03-30 12:05:00 UTC" in beat_row and "state-succeeded" in beat_row  # its last run, and how it went


def test_fall_back_fire_times_are_marked_as_repeated_passes(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    clock.set(datetime(2030, 10, 26, 12, tzinfo=UTC))  # Berlin falls back at 03:00 on the 27th

    @app.task(name="quarter", cron="*/30 2 * * *", tz="Europe/Berlin")
    def quarter() -> None: ...

    app.sync_schedules()
    page = get(client, "/schedule?name=quarter")
    fires = re.findall(r'<li data-test="fire-time">([^<]*)(?: <span class="dst" data-test="dst-note">([^<]*)</span>)?</li>', page)
    assert fires[:6] == [
        ("2030-10-27 02:00:00 CEST", "repeated hour: first pass"),
        ("2030-10-27 02:30:00 CEST", "repeated hour: first pass"),
        ("2030-10-27 02:00:00 CET", "DST change: CEST UTC+02:00 \u2192 CET UTC+01:00; repeated hour: second pass"),
        ("2030-10-27 02:30:00 CET", "repeated hour: second pass"),
        ("2030-10-28 02:00:00 CET", ""),
        ("2030-10-28 02:30:00 CET", ""),
    ]


def test_schedules_are_paged_by_name(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    base = {"task": "t", "spec": "every:60s", "tz": "UTC", "anchor": clock.now(), "args": "{}", "options": "{}",
            "next_run_at": clock.now(), "paused": False, "enabled": True, "spec_hash": "h"}
    app.store.save_schedules(inserts=[{**base, "name": f"s{i:03d}"} for i in range(57)], now=clock.now())
    first = get(client, "/schedules")
    names = attr(rows(first, "schedule-row"), "data-schedule")
    assert names == [f"s{i:03d}" for i in range(50)]
    nxt = re.search(r'href="([^"]+)" data-test="page-next"', first)
    assert nxt and nxt.group(1) == "/schedules?after=s049"
    second = get(client, "/schedules?after=s049")
    assert attr(rows(second, "schedule-row"), "data-schedule") == [f"s{i:03d}" for i in range(50, 57)]
    assert 'data-test="page-next"' not in second and 'data-test="page-first"' in second
    assert "57 schedule(s): 57 active" in first


def test_schedule_page_shows_its_ledger_and_history_strip(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    calls = []

    @app.task(name="tick", every="1m", max_attempts=1, overlap="skip")
    def tick() -> None:
        calls.append(current_job())
        if len(calls) == 2:
            raise RuntimeError("second run fails")

    scheduler = app.new_scheduler()
    scheduler.sync(list(app.registry.schedules.values()))
    scheduler.tick()  # 00:00 due now: a job
    app.testing.run_pending()  # ran
    clock.advance(60)
    scheduler.tick()  # 00:01
    app.testing.run_pending()  # failed
    clock.advance(600)  # ten minutes without a leader: late, coalesced into one run
    scheduler.tick()
    clock.advance(60)
    scheduler.tick()  # the coalesced run is still queued: this one is skipped (overlap)
    app.testing.run_pending()
    clock.advance(1)  # (a trigger at the very instant of an occurrence would collide with it)
    app.trigger("tick")  # run now: reason manual

    page = get(client, "/schedule?name=tick")
    ledger = rows(page, "ledger-row")
    outcomes = attr(ledger, "data-outcome")
    assert outcomes[::-1] == ["ran", "failed", "coalesced", "skipped", "queued"], outcomes
    occurrences = re.findall(r'data-test="occurrences">(\d+)<', page)
    assert occurrences[::-1] == ["1", "1", "10", "1", "1"]
    reasons = re.findall(r'<td data-test="reason">([^<]*)</td>', page)
    assert reasons[0] == "manual" and reasons[1].startswith("overlap")
    cells = re.findall(r'data-test="history-cell" data-outcome="(\w+)"', page)
    assert cells == ["ran", "failed", "coalesced", "skipped", "queued"]  # oldest first, left to right
    assert "second run fails" not in page  # the ledger links to the job; its traceback is on the job's page
    assert ">every minute<" in page


@pytest.mark.parametrize("bad", ["/schedule", "/schedule?name=nope"])
def test_schedule_page_of_no_schedule(client: FlaskClient, bad: str) -> None:
    page = get(client, bad, status=400 if bad == "/schedule" else 404)
    assert "name" in page or "nope" in page


def test_jobs_page_filters_and_keyset_pages(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    ids = []
    for i in range(120):
        ids.append(app.enqueue("alpha" if i % 2 else "beta", i, queue="q1" if i % 3 else "q2"))
        clock.advance(60)
    newest_first = ids[::-1]

    page = get(client, "/jobs")
    assert [int(x) for x in attr(rows(page, "job-row"), "data-job-id")] == newest_first[:50]
    older = re.search(r'href="/jobs\?before=(\d+)" data-test="page-older"', page)
    assert older and 'data-test="page-newer"' not in page
    page2 = get(client, f"/jobs?before={older.group(1)}")
    assert [int(x) for x in attr(rows(page2, "job-row"), "data-job-id")] == newest_first[50:100]
    newer = re.search(r'href="/jobs\?after=(\d+)" data-test="page-newer"', page2)
    older2 = re.search(r'href="/jobs\?before=(\d+)" data-test="page-older"', page2)
    assert newer and older2
    page3 = get(client, f"/jobs?before={older2.group(1)}")
    assert [int(x) for x in attr(rows(page3, "job-row"), "data-job-id")] == newest_first[100:]
    assert 'data-test="page-older"' not in page3
    back = re.search(r'href="/jobs\?after=(\d+)" data-test="page-newer"', page3)
    assert back
    page2_again = get(client, f"/jobs?after={back.group(1)}")
    assert [int(x) for x in attr(rows(page2_again, "job-row"), "data-job-id")] == newest_first[50:100]

    def listed(query: str) -> list[int]:
        out, url = [], f"/jobs?{query}"
        while url:
            p = get(client, url)
            out += [int(x) for x in attr(rows(p, "job-row"), "data-job-id")]
            more = re.search(r'href="([^"]+)" data-test="page-older"', p)
            url = more.group(1).replace("&amp;", "&") if more else ""
        return out

    assert listed("task=alpha") == [j for i, j in enumerate(ids) if i % 2][::-1]
    assert listed("task=beta&queue=q2") == [j for i, j in enumerate(ids) if not i % 2 and not i % 3][::-1]
    # created between 00:10 and 00:20 (UTC, the dashboard's zone): jobs 10..19
    assert listed("from=2030-01-01T00:10&to=2030-01-01T00:20") == ids[10:20][::-1]
    assert listed("from=2030-01-01T01:10:00%2B01:00&to=2030-01-01T00:12:00Z") == ids[10:12][::-1]
    assert listed("from=2031-01-01T00:00") == []
    assert listed("state=failed") == []
    app.cancel(ids[5])
    assert listed("state=cancelled&task=alpha") == [ids[5]]
    # the filter form shows what is filtered
    page = get(client, "/jobs?task=alpha&state=queued")
    assert 'name="task" value="alpha"' in page and '<option value="queued" selected>' in page


@pytest.mark.parametrize(("query", "field"), [
    ("state=bogus", "state"), ("before=x1", "before"), ("after=-3", "after"), ("from=yesterday", "from"),
    ("from=2030-01-02T00:00&to=2030-01-01T00:00", "created_to"),
])
def test_jobs_page_names_a_bad_filter(client: FlaskClient, query: str, field: str) -> None:
    page = get(client, f"/jobs?{query}", status=400)
    assert re.search(rf'data-test="error">{field}: ', page), page


def test_job_page_shows_arguments_result_progress_attempts_timings_and_traceback(app: Linger, client: FlaskClient,
                                                                                  clock: FakeClock) -> None:
    @app.task(name="report", max_attempts=2)
    def report(customer: int, fmt: str = "pdf") -> dict[str, int]:
        return {"pages": 3}

    @app.task(name="crash", max_attempts=1)
    def crash() -> None:
        raise ValueError("deep down it broke")

    done = report.enqueue(42, fmt="csv")
    failed = crash.enqueue()
    clock.advance(2)
    app.testing.run_pending()
    page = get(client, f"/jobs/{done}")
    assert re.search(r'data-test="job-args">\[\s*42\s*\]<', page)
    assert '&#34;fmt&#34;: &#34;csv&#34;' in page
    assert re.search(r'data-test="job-result">\{\s*&#34;pages&#34;: 3\s*\}<', page)
    assert re.search(r'data-test="job-attempts">1 of 2<', page)
    assert "2030-01-01 00:00:02 UTC" in page and "waited after due" in page
    assert 'data-test="retry-job"' not in page and 'data-test="cancel-job"' not in page  # succeeded: nothing to do

    page = get(client, f"/jobs/{failed}")
    error = re.search(r'<pre class="traceback" id="job-error" data-test="job-error">(.*?)</pre>', page, re.DOTALL)
    assert error and "Traceback (most recent call last)" in error.group(1) and "ValueError: deep down it broke" in error.group(1)
    assert 'data-test="retry-job"' in page

    running = report.enqueue(7)
    (claimed,) = app.store.claim("node-x", None, 1, 30, now=clock.now())
    assert claimed.id == running
    assert app.store.set_progress("node-x", running, 1, 0.4, "40 of 100 pages")
    page = get(client, f"/jobs/{running}")
    assert '<progress max="1" value="0.4">' in page and 'data-test="job-progress-message">40 of 100 pages<' in page
    assert "node-x" in page and 'data-test="cancel-job"' in page

    get(client, "/jobs/987654321", status=404)


def test_queues_page_shows_depth_oldest_and_rates(app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    @app.task(name="mailer", queue="mail", max_attempts=1)
    def mailer(fail: bool = False) -> None:
        if fail:
            raise RuntimeError("smtp down")

    for _ in range(3):
        mailer.enqueue()
    mailer.enqueue(fail=True)
    clock.advance(120)
    app.testing.run_pending()  # 3 out, 1 of them... 4 out (3 succeeded, 1 failed)
    clock.advance(60)
    mailer.enqueue()
    mailer.enqueue()
    app.enqueue("other.task", queue="reports", delay=600)  # not due
    clock.advance(30)

    page = get(client, "/queues")
    found = rows(page, "queue-row")
    assert attr(found, "data-queue") == ["mail", "reports"]
    mail = page[page.index('data-queue="mail"'):page.index('data-queue="reports"')]
    assert re.search(r'data-test="depth">2<', mail) and re.search(r'data-test="rate-in">6<', mail)
    assert re.search(r'data-test="rate-out">4<', mail) and re.search(r'data-test="failed-out">1<', mail)
    assert "waiting 30s" in mail
    reports = page[page.index('data-queue="reports"'):]
    assert "none due (next 2030-01-01 00:13:00 UTC)" in reports and re.search(r'data-test="rate-in">1<', reports)


def test_the_day_chart_reads_its_closed_hours_once_per_five_minutes(app: Linger, client: FlaskClient,
                                                                   clock: FakeClock) -> None:
    clock.set(datetime(2030, 1, 1, 12, 1, tzinfo=UTC))

    def totals() -> tuple[str, ...]:
        page = get(client, "/")
        hour = re.search(r'data-test="chart-hour" data-succeeded="(\d+)"', page)
        day = re.search(r'data-test="chart-day" data-succeeded="(\d+)"', page)
        assert hour and day
        return hour.group(1), day.group(1)

    def finished_at(at: datetime) -> None:
        j = app.store.t.jobs
        with app.store.engine.begin() as conn:
            conn.execute(j.insert().values(task="t", args="{}", queue="q", state="succeeded", run_at=at, created_at=at,
                                           started_at=at, finished_at=at))

    assert totals() == ("0", "0")
    finished_at(clock.now() - timedelta(hours=3))  # in a closed hour of the day chart
    finished_at(clock.now() - timedelta(seconds=30))  # in the last hour
    assert totals() == ("1", "1")  # the closed hours are as read at 12:01
    clock.advance(300)  # the charts' end moves: the day is read again
    assert totals() == ("1", "2")


def test_overview_says_released_for_a_lease_given_back_and_expired_for_one_that_lapsed(
        app: Linger, client: FlaskClient, clock: FakeClock) -> None:
    store = app.store
    assert store.acquire_lease(LEADER, "node-a", 30, now=clock.now()) is not None
    clock.advance(5)
    assert store.release_lease(LEADER, "node-a", now=clock.now())
    clock.advance(10)
    page = get(client, "/")
    assert re.search(r'the lease of node-a \(epoch 1\)\s+was released 10s ago', page), page
    assert store.acquire_lease(LEADER, "node-b", 30, now=clock.now()) is not None
    clock.advance(40)  # node-b died: its lease lapsed 10 s ago
    page = get(client, "/")
    assert re.search(r'the lease of node-b \(epoch 2\)\s+expired 10s ago', page), page
