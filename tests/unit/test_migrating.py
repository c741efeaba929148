"""docs/migrating.md cannot lie: its four sections (Celery, APScheduler, django-q, huey) each show
a peer's code, which must compile, and our side as a file of examples/migrating/, which runs here
on SQLite under a fake clock. The fire times listed under ``<!-- fires: ...::FUNC -->`` are what
FUNC computes and what the scheduler really does over a day; retries, delays, misfires, overlap
and the django-q copy behave as the page says; the cut-over commands run on a scratch database."""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from examples.migrating import from_apscheduler, from_celery, from_django_q, from_huey
from linger_sched import FakeClock, Linger, NaiveDatetimeError
from linger_sched.specs import CronSpec
from linger_sched.testing import on_test_database

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "migrating.md").read_text(encoding="utf-8")
BERLIN = ZoneInfo("Europe/Berlin")
SECTIONS = {  # peer marker -> (section title, our file)
    "celery": ("From Celery and celery beat", from_celery),
    "apscheduler": ("From APScheduler", from_apscheduler),
    "django-q": ("From django-q (django-q2)", from_django_q),
    "huey": ("From huey", from_huey),
}
WITH_DECLARED = [from_celery, from_apscheduler, from_huey]  # django-q's schedules are copied at runtime
PEER = re.compile(r"<!-- peer: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)
EXAMPLE = re.compile(r"<!-- example: (examples/migrating/\w+\.py) -->\n```python\n(.*?)```", re.DOTALL)
FIRES = re.compile(r"<!-- fires: examples/migrating/(\w+)\.py::(\w+) -->\n```text\n(.*?)```", re.DOTALL)
CUTOVER = [  # the block of "Moving the data and cutting over", run by test_the_cut_over_commands
    "linger-sched run --app examples.migrating.from_celery:app",
    "linger-sched schedules --app examples.migrating.from_celery:app",
    "linger-sched schedules trigger cleanup-sessions --app examples.migrating.from_celery:app",
]


def section(title: str) -> str:
    start = PAGE.index(f"\n## {title}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start:end if end != -1 else len(PAGE)]


def started_of(module: ModuleType) -> datetime:
    """The node start the page's fire-time list assumes (``fire_times``' default)."""
    return inspect.signature(module.fire_times).parameters["started"].default


def listed(rows: list[Any]) -> list[str]:
    """Occurrence rows as ``fire_times`` writes them, in fire-time order."""
    return [f"{t.astimezone(BERLIN):%Y-%m-%d %H:%M %Z}  {name}"
            for t, name in sorted((r.scheduled_for, r.schedule_name) for r in rows)]


@pytest.fixture
def run_example(linger_database_url: str, linger_table_prefix: str, linger_clock: FakeClock,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[ModuleType, datetime], Linger]]:
    """``run_example(module, at)``: the module's own app on this test's tables and fake clock, the
    clock set to ``at``; its stand-ins (sessions, outbox, reports) emptied and the mail server up."""
    with contextlib.ExitStack() as stack:
        def use(module: ModuleType, at: datetime) -> Linger:
            linger_clock.set(at)
            for name in ("sessions", "outbox", "reports_sent"):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, type(getattr(module, name))())
            monkeypatch.setitem(module.smtp, "up", True)
            return stack.enter_context(on_test_database(module.app, linger_database_url,
                                                        table_prefix=linger_table_prefix, clock=linger_clock))
        yield use


# -- the page --------------------------------------------------------------------------------------
def test_the_page_has_exactly_one_section_per_peer() -> None:
    titles = re.findall(r"^## (From .*)$", PAGE, re.M)
    assert titles == [title for title, _ in SECTIONS.values()]
    assert "\n## Moving the data and cutting over\n" in PAGE
    for peer, (title, module) in SECTIONS.items():
        text = section(title)
        assert re.search(r"^\| [^|]+ \| linger-sched \| notes \|$", text, re.M), f"{title}: no concept table"
        assert [p for p, _ in PEER.findall(text)] == [peer], f"{title}: its peer code is not (only) {peer}'s"
        assert [f for f, _ in EXAMPLE.findall(text)] == [f"examples/migrating/{module.__name__.rsplit('.', 1)[1]}.py"]


def test_the_peer_code_compiles() -> None:
    blocks = PEER.findall(PAGE)
    assert sorted(p for p, _ in blocks) == sorted(SECTIONS)
    for peer, code in blocks:
        ast.parse(code, filename=f"docs/migrating.md <!-- peer: {peer} -->")


def test_our_code_on_the_page_is_the_example_files() -> None:
    shown = dict(EXAMPLE.findall(PAGE))
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "examples/migrating").glob("from_*.py"))
    assert sorted(shown) == files
    for path, code in shown.items():
        assert code == (ROOT / path).read_text(encoding="utf-8"), f"docs/migrating.md shows an old {path}"


def test_the_listed_fire_times_are_what_fire_times_computes() -> None:
    shown = FIRES.findall(PAGE)
    assert {m for m, _, _ in shown} == {m.__name__.rsplit(".", 1)[1] for m in WITH_DECLARED}
    for module_name, func, block in shown:
        module = {m.__name__.rsplit(".", 1)[1]: m for m in WITH_DECLARED}[module_name]
        assert block.strip().splitlines() == getattr(module, func)(), f"{module_name}: the page's fire times are stale"


# -- the schedules, as the scheduler runs them ----------------------------------------------------
@pytest.mark.parametrize("module", WITH_DECLARED, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_a_day_of_the_scheduler_fires_what_fire_times_says(run_example, module: ModuleType) -> None:
    started = started_of(module)
    app = run_example(module, started)
    rows = app.testing.advance("25h", run=True)  # the first node's first 25 hours, every job run when due
    assert rows and all(r.state == "succeeded" and r.occurrences == 1 for r in rows)
    assert listed(rows) == module.fire_times(started, hours=25)
    cleanups = [r for r in rows if r.schedule_name == "cleanup-sessions"]
    assert [r.scheduled_for for r in cleanups] == [started.replace(hour=3, minute=0) + timedelta(days=d) for d in (0, 1)]
    assert all(r.result == r.scheduled_for.isoformat() for r in cleanups)  # keyed on the fire time


@pytest.mark.parametrize(("day", "utc_hour"), [(datetime(2027, 1, 14), 2), (datetime(2027, 3, 28), 1), (datetime(2027, 7, 15), 1)],
                         ids=["winter", "the-night-summer-time-starts", "summer"])
def test_celery_cleanup_stays_at_three_in_berlin_all_year(run_example, day: datetime, utc_hour: int) -> None:
    """'03:00 Berlin time all year (02:00 UTC in winter, 01:00 UTC in summer)'."""
    assert "(02:00 UTC in winter, 01:00 UTC in\nsummer)" in section("From Celery and celery beat")
    app = run_example(from_celery, (day - timedelta(hours=12)).replace(tzinfo=BERLIN))
    cleanups = [r for r in app.testing.advance("1d", run=True) if r.schedule_name == "cleanup-sessions"]
    assert [r.scheduled_for for r in cleanups] == [day.replace(hour=utc_hour, tzinfo=UTC)]


def test_huey_crontab_times_are_utc_unless_told(run_example) -> None:
    """huey's default crontab(hour="3") is tz="UTC": 04:00 in Berlin in winter, 05:00 in summer."""
    assert "04:00 in Berlin in winter and 05:00 in summer" in section("From huey")
    utc = CronSpec("0 3 * * *", "UTC")
    assert utc.next_after(datetime(2027, 1, 14, tzinfo=UTC)).astimezone(BERLIN).hour == 4
    assert utc.next_after(datetime(2027, 7, 15, tzinfo=UTC)).astimezone(BERLIN).hour == 5
    berlin = CronSpec("0 3 * * *", "Europe/Berlin")  # what from_huey declares
    assert berlin.next_after(datetime(2027, 7, 15, tzinfo=UTC)) == datetime(2027, 7, 15, 1, tzinfo=UTC)


def test_celery_a_gap_longer_than_the_threshold_is_one_coalesced_job(run_example) -> None:
    """'If every node is down from 03:25 to 03:50, sync-inventory's 03:35 and 03:45 runs become one
    job scheduled for 03:45, occurrences 2.'"""
    text = section("From Celery and celery beat")
    assert "down from 03:25 to 03:50" in text and "one job scheduled for 03:45, `occurrences` 2" in text
    app = run_example(from_celery, started_of(from_celery))
    app.testing.advance("1h", run=True)  # up to 03:25, the 03:25 sync included
    app.clock.set(datetime(2027, 1, 14, 3, 50, tzinfo=BERLIN))  # no node ran meanwhile
    (job,) = [r for r in app.testing.advance(0, run=True) if r.schedule_name == "sync-inventory"]
    assert job.scheduled_for == datetime(2027, 1, 14, 3, 45, tzinfo=BERLIN)
    assert (job.occurrences, job.state) == (2, "succeeded")


def test_a_cron_fire_time_before_the_first_start_is_not_caught_up(run_example) -> None:
    """'A cron schedule first fires at its first fire time after the node registers it'."""
    assert "A cron schedule first fires at its first fire time **after** the node registers it" in PAGE
    app = run_example(from_celery, datetime(2027, 1, 14, 3, 5, tzinfo=BERLIN))  # beat stopped at 02:58, say
    rows = app.testing.advance("23h", run=True)
    assert not [r for r in rows if r.schedule_name == "cleanup-sessions"]  # 03:00 ran nowhere
    assert rows[0].schedule_name == "sync-inventory" and rows[0].scheduled_for == app.clock.now() - timedelta(hours=23)
    rows = app.testing.advance("1h", run=True)
    assert [r.scheduled_for for r in rows if r.schedule_name == "cleanup-sessions"] == [datetime(2027, 1, 15, 2, tzinfo=UTC)]
    # "that job's scheduled_for is the moment of the trigger, not the missed fire time"
    assert "that job's `scheduled_for` is the moment\n  of the trigger" in PAGE
    job = app.get_job(app.trigger("cleanup-sessions"))
    assert (job.scheduled_for, job.reason) == (app.clock.now(), "manual")
    app.testing.run_pending()
    assert app.get_job(job.id).result == app.clock.now().isoformat()


def test_a_gap_shorter_than_the_threshold_runs_every_occurrence_late(run_example) -> None:
    """'shorter than the misfire threshold (... 32 s) is not a misfire: every occurrence of that
    window runs, a little late. A longer one follows each schedule's misfire= (coalesce ...)'."""
    assert "plus two ticks, 32 s) is not a misfire" in section("Moving the data and cutting over")
    app = run_example(from_celery, started_of(from_celery))
    assert app.new_scheduler_settings().threshold == 32
    app.testing.advance(0, run=True)  # the node registers the schedules at 02:25 (sync runs at once)
    app.clock.set(datetime(2027, 1, 14, 2, 35, 25, tzinfo=BERLIN))  # 25 s late
    (late,) = app.testing.advance(0, run=True)
    assert (late.scheduled_for, late.occurrences, late.reason) == (datetime(2027, 1, 14, 2, 35, tzinfo=BERLIN), 1, None)
    app.clock.set(datetime(2027, 1, 14, 2, 55, 40, tzinfo=BERLIN))  # 02:45 is 10 min 40 s late: a misfire
    (coalesced,) = app.testing.advance(0, run=True)
    assert (coalesced.scheduled_for, coalesced.occurrences) == (datetime(2027, 1, 14, 2, 55, tzinfo=BERLIN), 2)
    assert coalesced.reason and coalesced.reason.startswith("coalesced")


def test_cleanup_is_keyed_on_its_fire_time_when_late(run_example) -> None:
    app = run_example(from_celery, started_of(from_celery))
    from_celery.sessions.update(old=datetime(2027, 1, 14, 2, 59, tzinfo=BERLIN), new=datetime(2027, 1, 14, 3, 5, tzinfo=BERLIN))
    app.testing.advance(0, run=True)
    app.clock.set(datetime(2027, 1, 14, 3, 10, tzinfo=BERLIN))  # ten minutes late, after "new" expired
    (job,) = [r for r in app.testing.advance(0, run=True) if r.schedule_name == "cleanup-sessions"]
    assert job.result == datetime(2027, 1, 14, 2, tzinfo=UTC).isoformat()
    assert list(from_celery.sessions) == ["new"]  # what expired before 03:00 only, however late it ran


def test_apscheduler_misfire_grace_of_an_hour(run_example) -> None:
    """'a 03:00 cleanup that no node could start before 04:00 is not run (... "misfire: older than
    misfire_grace"); one that is half an hour late runs once'."""
    text = section("From APScheduler")
    assert 'before 04:00 is not run (a\n`skipped` row says "misfire: older than misfire_grace")' in text
    app = run_example(from_apscheduler, started_of(from_apscheduler))
    app.testing.advance(0, run=True)
    app.clock.set(datetime(2027, 1, 14, 4, 1, tzinfo=BERLIN))
    (dropped,) = [r for r in app.testing.advance(0, run=True) if r.schedule_name == "cleanup-sessions"]
    assert dropped.state == "skipped" and "misfire: older than misfire_grace" in (dropped.reason or "")
    app.clock.set(datetime(2027, 1, 15, 3, 30, tzinfo=BERLIN))  # the next night, half an hour late
    (ran,) = [r for r in app.testing.advance(0, run=True) if r.schedule_name == "cleanup-sessions"]
    assert (ran.state, ran.occurrences, ran.scheduled_for) == ("succeeded", 1, datetime(2027, 1, 15, 2, tzinfo=UTC))


def test_apscheduler_per_customer_schedules(run_example) -> None:
    app = run_example(from_apscheduler, datetime(2027, 1, 17, 22, tzinfo=BERLIN))  # a Sunday night
    from_apscheduler.schedule_reports_for(7)
    from_apscheduler.schedule_reports_for(7)  # replace_existing: no error
    from_apscheduler.schedule_reports_for(7, "0 8 * * MON")  # a new cadence for the same schedule
    (info,) = [s for s in app.schedules() if s.name == "report-7"]
    assert (info.spec, info.tz, info.source) == ("0 8 * * MON", "Europe/Berlin", "runtime")
    rows = app.testing.advance_to(datetime(2027, 1, 18, 8, 5, tzinfo=BERLIN), run=True)
    (report,) = [r for r in rows if r.schedule_name == "report-7"]
    assert (report.scheduled_for, report.args, report.state) == (datetime(2027, 1, 18, 7, tzinfo=UTC), [7], "succeeded")
    assert from_apscheduler.reports_sent == [7]
    from_apscheduler.customer_left(7)
    assert "report-7" not in {s.name for s in app.schedules()}


def test_huey_overlap_skips_while_the_previous_sync_waits(run_example) -> None:
    assert 'recorded as\n`skipped` (reason "overlap")' in section("From huey")
    app = run_example(from_huey, started_of(from_huey))
    rows = [r for r in app.testing.advance("25m") if r.schedule_name == "sync-inventory"]  # no worker runs
    assert [(r.scheduled_for.astimezone(BERLIN).strftime("%H:%M"), r.state) for r in rows] == [
        ("02:30", "queued"), ("02:40", "skipped"), ("02:50", "skipped")]
    assert all("overlap" in (r.reason or "") for r in rows[1:])


# -- retries and delayed jobs --------------------------------------------------------------------------
RETRIES = [  # module, base of the backoff, how the section words the delays
    (from_celery, 30, "30 s later, then 60 s and 120 s later (each ±25 %)"),
    (from_apscheduler, 30, "retried 30 s, 60 s, 120 s later"),
    (from_django_q, 60, "60 s, 120 s and 240 s later (each ±25 %), four attempts in all"),
    (from_huey, 30, "30 s, 60 s, 120 s, each ±25 %"),
]


@pytest.mark.parametrize(("module", "base", "words"), RETRIES, ids=["celery", "apscheduler", "django-q", "huey"])
def test_send_email_retries_with_the_backoff_the_page_states(run_example, module: ModuleType, base: int,
                                                             words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    title = next(t for t, m in SECTIONS.values() if m is module)
    assert words in section(title).replace("\n", " ")
    app = run_example(module, datetime(2027, 1, 14, 12, tzinfo=BERLIN))
    monkeypatch.setitem(module.smtp, "up", False)
    job_id = module.send_email.enqueue("ann@example.com", "Welcome")
    for attempt in (1, 2, 3):
        (job,) = app.testing.run_pending().retrying
        wait = (job.run_at - app.clock.now()).total_seconds()
        expected = base * 2 ** (attempt - 1)
        assert (job.id, job.attempts) == (job_id, attempt)
        assert 0.75 * expected <= wait <= 1.25 * expected, f"attempt {attempt}: queued again {wait}s later"
        assert not app.testing.run_pending(), "nothing is due before the backoff has passed"
        app.clock.set(job.run_at)
    (job,) = app.testing.run_pending().failed
    assert (job.attempts, job.max_attempts) == (4, 4)
    assert "ConnectionError: SMTP server unreachable" in (job.last_error or "")


@pytest.mark.parametrize("module", [from_celery, from_huey], ids=["celery", "huey"])
def test_remind_later_is_due_in_fifteen_minutes(run_example, module: ModuleType) -> None:
    app = run_example(module, datetime(2027, 1, 14, 12, tzinfo=BERLIN))
    job_id = module.remind_later("bob@example.com")
    assert app.testing.assert_enqueued(module.send_email, args=["bob@example.com", "Your cart is waiting"],
                                       run_at=datetime(2027, 1, 14, 12, 15, tzinfo=BERLIN)).id == job_id
    app.testing.advance("14m", run=True)
    assert module.outbox == []
    app.testing.advance("1m", run=True)
    assert module.outbox == [("bob@example.com", "Your cart is waiting")]


def test_apscheduler_remind_at_takes_an_aware_datetime_only(run_example) -> None:
    app = run_example(from_apscheduler, datetime(2027, 1, 14, 12, tzinfo=BERLIN))
    when = datetime(2027, 1, 14, 18, 30, tzinfo=BERLIN)
    job = app.get_job(from_apscheduler.remind_at("cy@example.com", when))
    assert job.run_at == when
    with pytest.raises(NaiveDatetimeError):
        from_apscheduler.remind_at("cy@example.com", datetime(2027, 1, 14, 18, 30))


def test_django_q_welcome_is_due_now(run_example) -> None:
    app = run_example(from_django_q, datetime(2027, 1, 14, 12, tzinfo=BERLIN))
    from_django_q.welcome("dee@example.com")
    app.testing.run_pending()
    assert from_django_q.outbox == [("dee@example.com", "Welcome")]


# -- django-q: copying Schedule rows -------------------------------------------------------------------
def row(pk: int, name: str, func: str, schedule_type: str, next_run: datetime, **fields: Any) -> SimpleNamespace:
    """A django-q Schedule as copy_schedule reads it (the model's attribute names)."""
    return SimpleNamespace(**{"pk": pk, "name": name, "func": func, "schedule_type": schedule_type, "cron": None,
                              "minutes": None, "args": None, "kwargs": None, "next_run": next_run, **fields})


def test_django_q_schedules_copied_keep_their_times(run_example) -> None:
    """'with next_run at 02:27, sync-inventory fires at 02:27, 02:37, 02:47 and on. The CRON row
    becomes cleanup-sessions at 03:00 Berlin time; a pending ONCE row becomes a job due at its
    next_run.'"""
    assert "with `next_run` at 02:27, `sync-inventory` fires at 02:27, 02:37, 02:47" in section("From django-q (django-q2)")
    started = datetime(2027, 1, 14, 2, 25, tzinfo=BERLIN)
    app = run_example(from_django_q, started)
    copy = from_django_q.copy_schedule
    assert copy(row(1, "cleanup-sessions", "shop.tasks.cleanup_sessions", "C", started, cron="0 3 * * *")) is None
    copy(row(2, "sync-inventory", "shop.tasks.sync_inventory", "I", datetime(2027, 1, 14, 2, 27, tzinfo=BERLIN), minutes=10))
    copy(row(3, "", "shop.tasks.send_email", "D", datetime(2027, 1, 14, 7, 15, tzinfo=BERLIN), args="'ops@example.com', 'Daily'"))
    copy(row(4, "weekly-digest", "shop.tasks.send_email", "W", datetime(2027, 1, 18, 6, 0, tzinfo=UTC),
             args="'team@example.com'", kwargs="{'subject': 'Weekly'}"))
    once = copy(row(5, "", "shop.tasks.send_email", "O", datetime(2027, 1, 14, 2, 40, tzinfo=BERLIN),
                    args="('ann@example.com', 'Your cart is waiting')"))
    with pytest.raises(ValueError, match="has no plain translation"):
        copy(row(6, "quarterly", "shop.tasks.sync_inventory", "Q", started))

    infos = {s.name: s for s in app.schedules()}
    assert {n: (i.spec, i.tz, i.source) for n, i in infos.items()} == {
        "cleanup-sessions": ("0 3 * * *", "Europe/Berlin", "runtime"),
        "sync-inventory": ("every:600s", "UTC", "runtime"),
        "django-q-3": ("15 7 * * *", "Europe/Berlin", "runtime"),
        "weekly-digest": ("0 7 * * 1", "Europe/Berlin", "runtime"),  # Monday 06:00 UTC is 07:00 in Berlin
    }
    assert isinstance(once, int) and app.get_job(once).run_at == datetime(2027, 1, 14, 2, 40, tzinfo=BERLIN)

    rows = app.testing.advance("1h", run=True)
    assert [r.scheduled_for.astimezone(BERLIN).strftime("%H:%M") for r in rows if r.schedule_name == "sync-inventory"] == [
        "02:27", "02:37", "02:47", "02:57", "03:07", "03:17"]
    (cleanup,) = [r for r in rows if r.schedule_name == "cleanup-sessions"]
    assert cleanup.scheduled_for == datetime(2027, 1, 14, 2, tzinfo=UTC) and cleanup.state == "succeeded"
    assert from_django_q.outbox == [("ann@example.com", "Your cart is waiting")]  # the ONCE row, at 02:40
    app.remove_schedule("sync-inventory")  # four days of it would only slow the test down
    rows = app.testing.advance_to(datetime(2027, 1, 18, 7, 30, tzinfo=BERLIN), run=True)
    assert {(r.schedule_name, r.args[0], r.kwargs.get("subject", r.args[-1])) for r in rows if r.task == "shop.tasks.send_email"} \
        == {("django-q-3", "ops@example.com", "Daily"), ("weekly-digest", "team@example.com", "Weekly")}


def test_django_q_catch_up_is_misfire_all(run_example) -> None:
    """catch_up = True keeps every missed fire time: copy_schedule(row, misfire="all")."""
    started = datetime(2027, 1, 14, 2, 25, tzinfo=BERLIN)
    app = run_example(from_django_q, started)
    from_django_q.copy_schedule(row(2, "sync-inventory", "shop.tasks.sync_inventory", "I", started, minutes=10),
                                misfire="all")
    app.testing.advance(0, run=True)
    app.clock.set(started + timedelta(minutes=35))  # no node for 35 minutes: 02:35, 02:45, 02:55 missed
    rows = app.testing.advance(0, run=True)
    assert [(r.scheduled_for.astimezone(BERLIN).strftime("%H:%M"), r.occurrences) for r in rows] == [
        ("02:35", 1), ("02:45", 1), ("02:55", 1)]


# -- the cut-over commands -----------------------------------------------------------------------------
def test_the_page_shows_the_cut_over_commands_this_test_runs() -> None:
    text = section("Moving the data and cutting over")
    assert "<!-- sh: checked by tests/unit/test_migrating.py -->\n```sh\n" in text
    block = text.split("<!-- sh: checked by tests/unit/test_migrating.py -->\n```sh\n", 1)[1].split("```", 1)[0]
    assert [re.sub(r"\s+#\s.*$", "", line).rstrip() for line in block.splitlines()] == CUTOVER


def test_the_cut_over_commands(tmp_path: Path) -> None:
    """A node started by the first command registers the schedules and runs the interval at once;
    the second lists them with their first fire times; the third runs cleanup-sessions now."""
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "__init__.py", tmp_path / "examples")
    shutil.copytree(ROOT / "examples" / "migrating", tmp_path / "examples" / "migrating",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGER_") and k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def cli(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    node = subprocess.Popen(shlex.split(CUTOVER[0]), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            listing = cli(CUTOVER[1])
            if listing.returncode == 0 and re.search(r"sync-inventory\s+active\s+\S+\s+succeeded", listing.stdout):
                break
            assert node.poll() is None, node.communicate()[0]
            assert time.monotonic() < deadline, listing.stdout + listing.stderr
            time.sleep(0.3)
    finally:
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=60)
    assert node.returncode == 0 and "Traceback" not in out, out
    assert re.search(r"^NAME\s+STATE\s+NEXT\s+LAST", listing.stdout, re.M)
    assert re.search(r"cleanup-sessions\s+active\s+\d{4}-\d\d-\d\dT03:00:00\+0[12]:00", listing.stdout), listing.stdout
    triggered = cli(CUTOVER[2])
    assert triggered.returncode == 0 and re.search(r"schedule cleanup-sessions triggered: job \d+", triggered.stdout), \
        triggered.stdout + triggered.stderr
