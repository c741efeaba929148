"""The Store reads the dashboard added, on SQLite, PostgreSQL and MariaDB, against what a scan
of the rows says: the id of the first job since an instant (a binary search of the primary
key, gaps included), the finished jobs per interval, the jobs created per queue, the
schedules in pages and counted by status."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from linger_sched.store import Store

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_first_job_id_since_is_a_binary_search_of_the_primary_key(store: Store) -> None:
    assert store.first_job_id_since(T0) is None  # no job at all
    ids = [store.enqueue([{"task": "t", "queue": "q"}], now=at(i))[0] for i in range(40)]
    j = store.t.jobs
    with store.engine.begin() as conn:  # gaps in the ids
        conn.execute(sa.delete(j).where(j.c.id.in_(ids[5:9] + ids[20:31])))
    left = [(i, job_id) for i, job_id in enumerate(ids) if not (5 <= i < 9 or 20 <= i < 31)]
    for minute in [-10, 0, 0.5, 4, 5, 6, 8.99, 9, 19.5, 20, 25, 31, 38, 39, 39.5, 40, 100]:
        expected = next((job_id for i, job_id in left if at(i) >= at(minute)), None)
        assert store.first_job_id_since(at(minute)) == expected, minute


def test_finished_histogram_and_created_by_queue(store: Store) -> None:
    rows = []
    for i in range(30):
        rows.append({"task": "t", "queue": "a" if i % 3 else "b", "priority": 0, "max_attempts": 1, "args": "{}",
                     "run_at": at(i), "created_at": at(i), "occurrences": 1, "attempts": 1,
                     "state": ("succeeded", "failed", "queued")[i % 3 if i % 5 else 0],
                     "finished_at": None if (i % 5 and i % 3 == 2) else at(i + 0.5)})
    j = store.t.jobs
    with store.engine.begin() as conn:
        conn.execute(sa.insert(j), rows)
        ids = [r[0] for r in conn.execute(sa.select(j.c.id).order_by(j.c.id))]
    bounds = [at(10), at(15), at(20)]
    min_id = store.first_job_id_since(at(9))
    assert min_id == ids[9]
    expected: dict[tuple[str, str], list[int]] = {}
    for r in rows[9:]:
        if r["state"] in ("succeeded", "failed") and bounds[0] <= r["finished_at"] < bounds[-1]:
            counts = expected.setdefault((r["queue"], r["state"]), [0, 0])
            counts[0 if r["finished_at"] < bounds[1] else 1] += 1
    assert store.finished_histogram(bounds, min_id=min_id) == expected and expected
    assert store.finished_histogram(bounds, min_id=ids[-1] + 1) == {}
    assert store.finished_histogram(bounds[:1], min_id=min_id) == {}
    since = ids[20]
    assert store.created_by_queue(since) == {"a": sum(1 for r in rows[20:] if r["queue"] == "a"),
                                             "b": sum(1 for r in rows[20:] if r["queue"] == "b")}


def test_schedules_in_pages_and_counted(store: Store) -> None:
    base = {"task": "t", "spec": "every:60s", "tz": "UTC", "anchor": T0, "args": "{}", "options": "{}",
            "next_run_at": T0, "paused": False, "enabled": True, "spec_hash": "h"}
    names = [f"s{i:02d}" for i in range(12)]
    store.save_schedules(inserts=[{**base, "name": n} for n in names], now=T0)
    assert [s.name for s in store.list_schedules(None, 5)] == names[:5]
    assert [s.name for s in store.list_schedules("s04", 5)] == names[5:10]
    assert [s.name for s in store.list_schedules("s09", 5)] == names[10:]
    assert store.list_schedules("zzz", 5) == []
    store.set_paused("s01", True, now=T0)
    store.disable_schedules(["s02", "s03"], now=T0)
    store.mark_schedule_error("s04", "boom", expected=T0, retry_at=at(5), now=T0)
    store.set_paused("s02", True, now=T0)  # disabled and paused: disabled
    assert store.schedule_counts() == {"total": 12, "active": 8, "paused": 1, "disabled": 2, "error": 1}


def test_first_job_id_since_with_times_out_of_order_and_bursts(store: Store) -> None:
    """Bursts (many jobs at one instant, long quiet spells) and a row whose clock was off: the
    answer is still the least id whose created_at qualifies, where the order allows one."""
    minutes = [0] * 50 + [1, 2] + [300] * 200 + [301, 302, 303] + [5000]
    ids = [store.enqueue([{"task": "t"}], now=at(m))[0] for m in minutes]
    for probe in [-1, 0, 0.5, 1, 2, 2.5, 299, 300, 300.5, 302, 303, 304, 4999, 5000, 5001]:
        expected = next((i for i, m in zip(ids, minutes) if m >= probe), None)
        assert store.first_job_id_since(at(probe)) == expected, probe
