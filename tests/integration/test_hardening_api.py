"""Hardening of the public API: arguments against signatures, options apart from arguments,
tasks in __main__, an injected clock (issue: hardening, points 9, 10, 21, 22)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from linger_sched import FakeClock, JobArgumentsError, JobOptionError, Linger

ROOT = Path(__file__).resolve().parents[2]


# -- 9. arguments are bound to the task's signature at enqueue ---------------------------------
def test_enqueue_checks_arguments_against_the_signature(app: Linger) -> None:
    @app.task(name="invoices.send_email")
    def send_email(to: str, subject: str, *, cc: str | None = None) -> None: ...

    with pytest.raises(JobArgumentsError, match=r"invoices\.send_email.*missing a required argument: 'to'"):
        send_email.enqueue()
    with pytest.raises(JobArgumentsError, match="unexpected keyword argument 'bcc'"):
        send_email.enqueue("a", "b", bcc="x")
    with pytest.raises(JobArgumentsError, match="too many positional arguments"):
        app.enqueue("invoices.send_email", "a", "b", "c")
    with pytest.raises(JobArgumentsError, match="missing a required argument: 'subject'"):
        app.enqueue_many(send_email, [("a", "b"), ("only-one",)])
    assert app.store.count_by_state() == {}
    send_email.enqueue("a", "b", cc="c")
    assert app.store.count_by_state() == {"queued": 1}


def test_class_jobs_check_their_constructor(app: Linger) -> None:
    @app.task(name="Invoice")
    class Invoice:
        def __init__(self, number: int) -> None:
            self.number = number

        def perform(self) -> None: ...

    with pytest.raises(JobArgumentsError, match="missing a required argument: 'number'"):
        Invoice.enqueue()  # type: ignore[attr-defined]
    Invoice.enqueue(5)  # type: ignore[attr-defined]
    assert app.jobs()[0].kwargs == {"number": 5}


def test_a_schedule_whose_args_do_not_fit_its_task_is_refused(app: Linger) -> None:
    from linger_sched import ConfigError

    with pytest.raises(ConfigError, match="missing a required argument: 'b'"):
        @app.task(name="two", every="1h", args=["only-one"])
        def two(a: str, b: str) -> None: ...


# -- 10. task parameters named like job options ---------------------------------------------------
def test_a_parameter_named_like_a_job_option_is_never_swallowed(app: Linger) -> None:
    @app.task(name="notify")
    def notify(user_id: int, queue: str = "sms") -> None: ...

    with pytest.raises(JobOptionError, match=r"parameter named 'queue'.*options\(queue=\.\.\.\)"):
        notify.enqueue(1, queue="email")
    assert app.store.count_by_state() == {}
    # explicit forms: job options apart, every keyword of enqueue() is the task's
    job_a = notify.options(queue="email").enqueue(1, queue="push")
    job_b = app.with_options("notify", priority=5).enqueue(2, queue="mail")
    a, b = app.get_job(job_a), app.get_job(job_b)
    assert (a.queue, a.kwargs) == ("email", {"queue": "push"})
    assert (b.queue, b.priority, b.kwargs) == ("default", 5, {"queue": "mail"})
    ran = []
    app.registry.tasks["notify"].func = lambda user_id, queue="sms": ran.append((user_id, queue))
    app.work()
    assert sorted(ran) == [(1, "push"), (2, "mail")]
    with pytest.raises(JobOptionError, match="unknown job option"):
        notify.options(qeue="x")


# -- 21. a task defined in __main__ ---------------------------------------------------------------
def test_a_task_in_main_warns_that_workers_cannot_find_it(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from linger_sched import Linger
        app = Linger("sqlite:///{tmp_path / 'x.db'}")

        @app.task
        def hello():
            pass

        @app.task(name="named")
        def quiet():
            pass

        from linger_sched import task

        @task(queue="q")
        def other():
            pass
        """), encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "'__main__.hello' is defined in __main__" in out.stderr
    assert "script.py:5:" in out.stderr and "script.py:15:" in out.stderr  # the user's decorator lines
    assert "'__main__.other' is defined in __main__" in out.stderr and "named" not in out.stderr


# -- 22. an injected clock, and types users' checkers accept -------------------------------------
def test_load_config_keeps_an_injected_clock(tmp_path: Path, db_url: str, prefix: str) -> None:
    clock = FakeClock()
    app = Linger(db_url, table_prefix=prefix, clock=clock)
    cfg = tmp_path / "schedules.yaml"
    cfg.write_text("concurrency: 2\n", encoding="utf-8")
    app.load_config(cfg)
    assert app.clock is clock and app.settings.concurrency == 2


def test_mypy_accepts_the_documented_api(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    example = tmp_path / "example.py"
    example.write_text(textwrap.dedent("""
        import asyncio
        from datetime import datetime, timedelta, timezone
        from linger_sched import Linger, current_job, task

        @task(queue="mail", max_attempts=5, retry_backoff=30)
        def send_email(to: str, subject: str) -> None:
            ...

        job_id: int = send_email.enqueue("ann@example.com", "Welcome")
        send_email.enqueue("bob@example.com", "Reminder", delay=timedelta(hours=1))
        send_email.enqueue("cy@example.com", "Report", run_at=datetime(2026, 12, 1, 18, tzinfo=timezone.utc))
        send_email.options(queue="bulk").enqueue("dee@example.com", "Digest")
        send_email("now@example.com", "Direct call")

        app = Linger("sqlite:///app.db")

        @app.task
        def cleanup() -> int:
            return 1

        n: int = cleanup()

        @app.task(name="Invoice")
        class Invoice:
            def __init__(self, number: int) -> None:
                self.number = number

            def perform(self) -> None: ...

        invoice: Invoice = Invoice(3)

        @app.task
        async def fetch(url: str) -> int:
            await asyncio.sleep(0)
            return 1

        fetch.enqueue("https://example.com")
        """), encoding="utf-8")
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        from linger_sched import task

        @task
        def add(a: int, b: int) -> int:
            return a + b

        s: str = add(1, 2)
        """), encoding="utf-8")
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent"]
    ok = subprocess.run([*cmd, str(example)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert wrong.returncode == 1 and 'Incompatible types in assignment (expression has type "int"' in wrong.stdout


def test_a_task_parameter_named_task_is_the_tasks_own(app: Linger) -> None:
    """Found by tests/integration/test_fuzz_enqueue.py: ``enqueue("t", task=...)`` raised
    "got multiple values for argument 'task'" (the task's own keyword hit enqueue's first
    parameter)."""
    @app.task(name="tasks.assign")
    def assign(task: str, user: int) -> None: ...

    job_id = app.enqueue("tasks.assign", task="review", user=3)
    assert app.get_job(job_id).kwargs == {"task": "review", "user": 3}
    assert app.get_job(assign.enqueue(task="deploy", user=4)).kwargs == {"task": "deploy", "user": 4}
