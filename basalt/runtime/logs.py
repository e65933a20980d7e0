"""What a function prints and logs: its log lines.

Convex returns a function's console output to the caller as ``logLines``
(``"[LOG] hi"``, ``"[INFO] …"``, ``"[WARN] …"``, ``"[ERROR] …"``). In Basalt,
while a function runs:

- each line it ``print()``\\ s is a ``[LOG]`` line;
- each ``logging`` record it logs is a line with its level (``[DEBUG]``,
  ``[INFO]``, ``[WARN]``, ``[ERROR]``), its exception's traceback included.
  The loggers of app modules (``logging.getLogger(__name__)``) log INFO and
  above (the app loader sets that); other loggers keep the level logging's
  configuration gives them (the root logger: WARNING). Basalt's own records
  (``basalt.*``) and the server's (``uvicorn``, ``asyncio``) never become a
  function's lines.

Each line also goes to the server's output (stderr) prefixed with the function
path — ``[messages:send] hello``, ``[messages:send] [INFO] saved`` — instead
of through the logging handlers, which would print it a second time without
the path. There, control characters (carriage returns, ANSI escapes, NUL
...) are written as escapes (``\\r``, ``\\x1b``, ``\\x00``), and every line
of a multi-line record (a traceback) carries the prefix; the lines a caller
receives are kept as the function wrote them. Lines are attributed per call
(a context variable), so concurrent calls on one event loop keep their own.
Whether a caller receives them is decided where its answer is written (see
:mod:`basalt.runtime.outcome`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from contextvars import ContextVar
from typing import Any, TextIO

from .log_limit import escape_controls


class FunctionLog:
    """The log lines of one function run."""

    __slots__ = ("label", "lines", "partial")

    def __init__(self, label: str, lines: list[str]) -> None:
        self.label = label
        self.lines = lines
        self.partial = ""

    def add(self, level: str, text: str) -> None:
        """Append a ``[LEVEL] text`` line and echo it to the server's output."""
        self.lines.append(f"[{level}] {text}")
        echo = text if level == "LOG" else f"[{level}] {text}"
        # On the server's output, control characters are escapes (a function
        # must not move the cursor, colour or rewrite the terminal, nor end a
        # line early), and each line of a multi-line record has the prefix.
        prefix = f"[{escape_controls(self.label)}] "
        echo = "".join(f"{prefix}{line}\n" for line in escape_controls(echo).split("\n"))
        # Without a usable stderr the caller still gets its line.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(echo)


current: ContextVar[FunctionLog | None] = ContextVar("basalt_log", default=None)


class _CapturingStdout:
    """A stdout that turns the running function's complete lines into its log."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        log = current.get()
        if log is None:
            return self._inner.write(text)
        *complete, log.partial = (log.partial + text).split("\n")
        for line in complete:
            log.add("LOG", line)
        return len(text)

    def finish(self, log: FunctionLog) -> None:
        if log.partial:
            log.add("LOG", log.partial)
            log.partial = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# -- logging ----------------------------------------------------------------------

#: Loggers whose records are the server's, never a function's log lines.
_SERVER_LOGGERS = ("basalt", "uvicorn", "asyncio")

_FORMATTER = logging.Formatter("%(message)s")


def _level_name(levelno: int) -> str:
    """Convex's name for a record's level."""
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def _is_server_record(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in _SERVER_LOGGERS)


def _belongs_to_call(record: logging.LogRecord) -> FunctionLog | None:
    """The function log a record is a line of (None: not logged by a function)."""
    log = current.get()
    if log is None or _is_server_record(record.name):
        return None
    return log


class _RecordCapture:
    """A log record factory that adds each record a function logs to its lines.

    Records are taken where they are made (in the logging call, so in the
    caller's context), which needs no handler and works whatever handlers the
    process has.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        log = _belongs_to_call(record)
        if log is not None:
            try:
                text = _FORMATTER.format(record)
            except Exception as exc:  # as logging's handlers do: never fail the caller
                text = f"{record.msg!r} (could not be formatted: {exc!r})"
            log.add(_level_name(record.levelno), text)
        return record


class _NotAFunctionsRecord(logging.Filter):
    """Keeps handlers from printing what a function logged (it is echoed with
    the function's path already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _belongs_to_call(record) is None


_NOT_A_FUNCTIONS_RECORD = _NotAFunctionsRecord()


def install() -> None:
    """Route ``print`` and ``logging`` inside functions to their log lines
    (idempotent; re-wraps ``sys.stdout`` if something replaced it since, and
    filters the root logger's handlers added since)."""
    if not isinstance(sys.stdout, _CapturingStdout):
        sys.stdout = _CapturingStdout(sys.stdout)
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RecordCapture):
        logging.setLogRecordFactory(_RecordCapture(factory))
    for handler in logging.getLogger().handlers:
        if _NOT_A_FUNCTIONS_RECORD not in handler.filters:
            handler.addFilter(_NOT_A_FUNCTIONS_RECORD)


def finish(log: FunctionLog) -> None:
    """Flush a trailing partial line of a function that ended."""
    out = sys.stdout
    if isinstance(out, _CapturingStdout):
        out.finish(log)
