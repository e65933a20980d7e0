"""Capturing what a function prints as its log lines.

Convex returns a function's ``console.log`` output to the caller as
``logLines``; in Basalt, ``print()`` inside a function does the same, and each
line also goes to the server's own output prefixed with the function path
(``[messages:send] hello``).
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any, TextIO


class FunctionLog:
    """The log lines of one function run."""

    __slots__ = ("label", "lines", "partial")

    def __init__(self, label: str, lines: list[str]) -> None:
        self.label = label
        self.lines = lines
        self.partial = ""


current: ContextVar[FunctionLog | None] = ContextVar("basalt_log", default=None)


class _CapturingStdout:
    """A stdout that also appends complete lines to the running function's log."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        log = current.get()
        if log is None:
            return self._inner.write(text)
        *complete, log.partial = (log.partial + text).split("\n")
        for line in complete:
            self._emit(log, line)
        return len(text)

    def _emit(self, log: FunctionLog, line: str) -> None:
        log.lines.append(f"[LOG] {line}")
        self._inner.write(f"[{log.label}] {line}\n")

    def finish(self, log: FunctionLog) -> None:
        if log.partial:
            self._emit(log, log.partial)
            log.partial = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install() -> None:
    """Route ``print`` inside functions to their log lines (idempotent; re-wraps
    ``sys.stdout`` if something replaced it since)."""
    if not isinstance(sys.stdout, _CapturingStdout):
        sys.stdout = _CapturingStdout(sys.stdout)


def finish(log: FunctionLog) -> None:
    """Flush a trailing partial line of a function that ended."""
    out = sys.stdout
    if isinstance(out, _CapturingStdout):
        out.finish(log)
