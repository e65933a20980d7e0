"""Keeping the server's log readable when the same failure repeats.

A client can make a function fail as often as it likes; each failure logged in
full (with its traceback) would let one client write gigabytes of log a day.
:class:`RepeatLimiter` lets through the first ``burst`` records of each kind
(say, one function failing with one error type) per ``window_s`` seconds and
counts the rest; once the window is over, the count is reported in one
summary record (:class:`Repeats`). Kinds are forgotten once their window is
over; at most ``max_kinds`` are followed at once (more share one kind, so
that varying the kind cannot get around the limit).

:func:`escape_controls` makes text safe to write to a terminal or a log file:
control characters (carriage returns, ANSI escapes, NUL, Unicode line
separators and bidirectional overrides) are written as escapes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: The kind that stands for every kind beyond ``max_kinds``.
OTHER_KINDS: Final = ("(other kinds)",)

# C0 and C1 controls but tab and newline, DEL, line and paragraph separators,
# and the bidirectional embedding, override and isolate characters.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """``text`` with each control character but tab and newline written as an
    escape (``\\r``, ``\\x1b``, ``\\x00``, ``\\u202e`` ...)."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclass(frozen=True, slots=True)
class Repeats:
    """``count`` records of ``kind`` (at ``level``) were held back during the
    window of ``window_s`` seconds that has just ended."""

    kind: tuple[str, ...]
    level: int
    count: int
    window_s: float


def log_repeats(logger: logging.Logger, repeats: Repeats) -> None:
    """Write the summary of held-back records on ``logger``."""
    logger.log(
        repeats.level,
        "… %s: %d more failure(s) like the above in the last %g s were not logged one by one",
        " ".join(repeats.kind),
        repeats.count,
        repeats.window_s,
    )


@dataclass(slots=True)
class _Window:
    started: float
    level: int
    seen: int = 0
    held: int = 0


class RepeatLimiter:
    """Lets ``burst`` records of each kind through per ``window_s`` seconds
    (see the module docstring) and hands the summary of each window that held
    records back to ``report``: at the next :meth:`admit` after the window
    ended, or, when it is asked from an event loop, by a timer on that loop
    when the window ends. ``clock`` is monotonic seconds (tests pass their
    own). Safe to use from several threads."""

    def __init__(
        self,
        report: Callable[[Repeats], None],
        *,
        burst: int = 10,
        window_s: float = 60.0,
        max_kinds: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.burst = burst
        self.window_s = window_s
        self.max_kinds = max_kinds
        self.clock = clock
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._lock = threading.Lock()
        #: the loop a flush is scheduled on (None: no flush is)
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def admit(self, kind: tuple[str, ...], level: int) -> bool:
        """Whether a record of ``kind`` may be written now (the summaries of
        windows that have ended are reported first)."""
        with self._lock:
            now = self.clock()
            ended = self._collect(now)
            window = self._windows.get(kind)
            if window is None:
                if len(self._windows) >= self.max_kinds:
                    kind = OTHER_KINDS
                    window = self._windows.get(kind)
                if window is None:
                    window = self._windows[kind] = _Window(now, level)
            window.level = max(window.level, level)
            window.seen += 1
            allowed = window.seen <= self.burst
            if not allowed:
                window.held += 1
                if window.held == 1:
                    self._remind(window.started + self.window_s - now)
        for summary in ended:
            self.report(summary)
        return allowed

    def flush(self) -> None:
        """Report the summaries of the windows that have ended."""
        with self._lock:
            self._timer_loop = None
            ended = self._collect(self.clock())
            holding = [w for w in self._windows.values() if w.held]
            if holding:
                self._remind(min(w.started for w in holding) + self.window_s - self.clock())
        for summary in ended:
            self.report(summary)

    def _remind(self, delay: float) -> None:
        """Flush in ``delay`` seconds, if there is a running event loop to wait on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the next admit reports it
        if self._timer_loop is loop or (
            self._timer_loop is not None and not self._timer_loop.is_closed()
        ):
            return
        self._timer_loop = loop
        loop.call_later(max(delay, 0.0) + 0.01, self.flush)

    def _collect(self, now: float) -> list[Repeats]:
        ended = [k for k, w in self._windows.items() if now - w.started >= self.window_s]
        summaries = []
        for kind in ended:
            window = self._windows.pop(kind)
            if window.held:
                summaries.append(Repeats(kind, window.level, window.held, self.window_s))
        return summaries
