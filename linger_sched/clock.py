"""The only module that reads wall-clock or monotonic time.

Everything else takes a :class:`Clock` (or an explicit ``now``). Inside the package every
instant is an aware UTC ``datetime``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc


class Clock:
    """Real time. ``offset`` shifts the wall clock (to simulate a node whose clock is off).

    A real clock is *not authoritative*: the store compares leases and due times with the
    database's own clock, so a node with a wrong clock neither runs early nor duplicates.
    """

    authoritative = False

    def __init__(self, offset: timedelta | float = 0.0) -> None:
        if not isinstance(offset, timedelta):
            offset = timedelta(seconds=float(offset))
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def store_now(self) -> datetime | None:
        """The instant to hand to the store: None (the database's own clock) unless this clock
        is authoritative."""
        return self.now() if self.authoritative else None

    def lead(self, seconds: float) -> float:
        """How far ahead of a due instant to prepare work (claim a job, write an occurrence):
        the round trips then happen before the instant. 0 under a clock advanced by hand."""
        return 0.0 if self.authoritative else max(0.0, seconds)

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep up to ``seconds``; return True at once if ``stop`` is (or becomes) set."""
        seconds = max(0.0, seconds)
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)


def sleep(seconds: float) -> None:
    """Pause this thread in real time (a retry's pause, a job's wait for its run_at): the one
    place that sleeps, as :class:`Clock` is the one that reads time."""
    if seconds > 0:
        time.sleep(seconds)


def backoff(failures: int, *, base: float = 1.0, cap: float = 60.0, jitter: float = 1.0) -> float:
    """``base * 2**(failures-1) * jitter``, capped at ``cap``: the one exponential back-off of
    every retry (database errors, outcome writes, job retries, restarts). Safe for any count."""
    exponent = min(max(0, failures - 1), 64)
    return min(cap, base * (2.0 ** exponent) * jitter)


class FakeClock(Clock):
    """A clock for tests: time moves only when the test says so.

    It is *authoritative*: its ``now()`` is passed to every store call instead of the
    database clock, so tests control due times, leases and backoff exactly.
    ``wait()`` advances the fake time instead of sleeping (unless ``stop`` is set).
    """

    authoritative = True

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__()
        if start is None:
            start = datetime(2030, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float | timedelta) -> datetime:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            return self._now

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        with self._lock:
            delta = (instant.astimezone(UTC) - self._now).total_seconds()
            self._now = instant.astimezone(UTC)
            self._mono += max(0.0, delta)

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return False
