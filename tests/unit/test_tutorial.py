"""The explanation pages cannot lie: the fire times docs/explanation/time-zones.md lists under
each ``<!-- fires: examples/tutorial/dst.py::FUNC -->`` marker are computed here by that
function (linger_sched.specs), and the idempotent tasks of docs/explanation/guarantees.md run
on a test database. SQLite only. (docs/tutorial.md itself: tests/acceptance/test_tutorial.py.)"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from examples.tutorial import dst, idempotent
from linger_sched.testing import for_app

ROOT = Path(__file__).resolve().parents[2]
FIRES = re.compile(r"<!-- fires: examples/tutorial/dst\.py::(\w+) -->\n```text\n(.*?)```", re.DOTALL)

linger_app = for_app(idempotent.app)


def test_every_worked_dst_example_is_what_the_specs_compute() -> None:
    page = (ROOT / "docs" / "explanation" / "time-zones.md").read_text(encoding="utf-8")
    shown = FIRES.findall(page)
    assert len(shown) >= 4, "time-zones.md shows fewer worked examples than expected"
    for func, block in shown:
        listed = [line.split()[0] for line in block.strip().splitlines()]
        assert listed == getattr(dst, func)(), f"time-zones.md: the fire times under {func} are not what it computes"


def test_the_spring_forward_slot_fires_once_at_the_end_of_the_gap() -> None:
    assert "2027-03-28T03:00:00+02:00" in dst.daily_0230_spring_forward()
    fall = dst.every_15_minutes_fall_back()
    assert fall.count("2027-10-31T02:30:00+02:00") == 1 and fall.count("2027-10-31T02:30:00+01:00") == 1


def test_record_once_charges_a_key_once(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.db")
    assert idempotent.record_once("charge:2027-02", 4900, ledger) is True
    assert idempotent.record_once("charge:2027-02", 4900, ledger) is False  # a retry: no second charge


def test_the_monthly_charge_is_keyed_on_its_fire_time(linger_app, linger_clock, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    linger_clock.set(datetime(2027, 1, 31, 12, 0, tzinfo=idempotent.BERLIN))
    linger_app.testing.advance("1d")
    job = linger_app.testing.assert_enqueued(idempotent.charge_month)
    linger_app.testing.run_pending()
    assert linger_app.get_job(job.id).result == "2027-02"
    assert idempotent.record_once("charge:2027-02", 4900) is False  # the job wrote that key
    refund_id = idempotent.refund.enqueue(7)
    linger_app.testing.run_pending()
    assert idempotent.record_once(f"refund:7:job-{refund_id}", -4900) is False
