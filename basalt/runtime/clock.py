"""Clocks. Everything that reads the time (creation times, the frozen clock of
queries and mutations, and later the scheduler) reads it from a clock object,
so tests can move time with :class:`ManualClock`."""

from __future__ import annotations

import time


class Clock:
    """The system clock."""

    def time_ns(self) -> int:
        """Wall-clock time in nanoseconds since the Unix epoch."""
        return time.time_ns()

    def now_ms(self) -> float:
        """Wall-clock time in milliseconds since the Unix epoch."""
        return self.time_ns() / 1_000_000


class ManualClock(Clock):
    """A clock that only moves when told to (for tests)."""

    def __init__(self, start_ms: float | None = None) -> None:
        self._ns = time.time_ns() if start_ms is None else int(start_ms * 1_000_000)

    def time_ns(self) -> int:
        return self._ns

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._ns += int(seconds * 1_000_000_000)

    def set(self, ms: float) -> None:
        """Set the clock to ``ms`` milliseconds since the epoch (forward only)."""
        ns = int(ms * 1_000_000)
        if ns < self._ns:
            raise ValueError("a clock only moves forward")
        self._ns = ns


class CreationTimes:
    """Strictly increasing ``_creationTime`` values (milliseconds, float).

    Consecutive values differ by at least 1/1024 ms, which float64 represents
    exactly at today's epoch milliseconds, so no two documents created through
    one process share a creation time.
    """

    STEP = 1 / 1024

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0.0

    def next(self) -> float:
        now = self._clock.now_ms()
        value = now if now > self._last else self._last + self.STEP
        self._last = value
        return value
