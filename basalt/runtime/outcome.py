"""The outcome of one function call, and how much of a failure each caller is told.

Who is told what
----------------
A failed call is told in full — the error's type and message, the app frames
of its traceback, hints such as the functions a module has, and the call's log
lines — to callers who *see everything*: admin callers (the admin key), and
every caller of a development server (``basalt dev``). Everyone else, on a
production server (``basalt serve``), is told no more than it needs:

- a *rejected* call (the function does not exist for this caller, or the
  arguments do not match its validator) keeps its message, which names the
  field at fault, because the caller must fix its call; the message never
  names server files or other functions, and an internal function is answered
  exactly like a missing one;
- an error raised while the function ran is Convex's production answer,
  ``[Request ID: <id>] Server Error`` — whatever was raised, Basalt's own
  errors inside the handler (schema and limit violations) included; a
  ``ConvexError`` adds its ``Uncaught ConvexError: <data>`` line (its data
  reaches the client anyway, as ``errorData``) but no traceback;
- no log lines.

The server log keeps every failure in full (message, traceback) on the
``basalt.functions`` logger, under the request id the client was given; a
``ConvexError`` (the app's own answer) in one line at INFO level, and a
failure that repeats more than 10 times a minute in a summary (see
:func:`report_failure`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from basalt.errors import BasaltError, ConvexError

from .frames import app_frames
from .log_limit import RepeatLimiter, escape_controls, log_repeats
from .transaction import ReadSet

log = logging.getLogger("basalt.functions")

#: Longest function path quoted in a log line (a client chooses the path it sends).
_MAX_QUOTED = 200


@dataclass(slots=True)
class Outcome:
    """What a call produced: a value or an error, its log lines, and for a
    mutation its commit timestamp, for a query its snapshot and read set."""

    value: Any = None
    error: BaseException | None = None
    log_lines: list[str] = field(default_factory=list)
    ts: int | None = None
    read_set: ReadSet | None = None
    #: whether the function asked who the caller is (a query whose result cannot
    #: depend on the caller can be shared between callers)
    read_auth: bool = False
    #: the error is about the call itself (no such function for this caller,
    #: arguments that do not match, a snapshot no longer available), found
    #: before the function ran: its message stays clear for every caller
    rejected: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value


def request_id() -> str:
    return secrets.token_hex(8)


def _location(exc: BaseException) -> str:
    """`    at handler (file.py:12)` lines for the app's frames, innermost first
    (see :mod:`basalt.runtime.frames`)."""
    return "\n".join(
        f"    at {frame.name} ({frame.filename}:{frame.lineno})" for frame in app_frames(exc)[:5]
    )


def _describe(exc: BaseException, *, detail: bool = False) -> str:
    """The error's statement (``Uncaught ValueError: boom``); ``detail``: with
    what only callers who see everything are told (:attr:`BasaltError.detail`)."""
    if isinstance(exc, ConvexError):
        return f"Uncaught ConvexError: {exc.message}"
    if isinstance(exc, BasaltError):
        told = f"{exc.code}: {exc.message}"
        return f"{told} {exc.detail}" if detail and exc.detail else told
    return f"Uncaught {type(exc).__name__}: {exc}"


def error_message(
    exc: BaseException, rid: str | None = None, *, full: bool = True, rejected: bool = False
) -> str:
    """The ``errorMessage`` a client sees, in the Convex shape.

    ``full`` (a caller who sees everything)::

        [Request ID: 1a2b] Server Error
        Uncaught ValueError: boom
            at handler (app/messages.py:12)

    otherwise ``[Request ID: 1a2b] Server Error``, plus the message of a
    ``rejected`` call or the ``Uncaught ConvexError: …`` line of a ConvexError.
    """
    head = f"[Request ID: {rid or request_id()}] Server Error"
    if full:
        body = _describe(exc, detail=True)
        where = _location(exc)
        return f"{head}\n{body}" + (f"\n{where}" if where else "")
    if rejected or isinstance(exc, ConvexError):
        return f"{head}\n{_describe(exc)}"
    return head


def error_data(exc: BaseException) -> tuple[bool, Any]:
    """``(True, data)`` for a ConvexError, ``(False, None)`` otherwise."""
    if isinstance(exc, ConvexError):
        return True, exc.data
    return False, None


def reveals(*, dev: bool, admin: bool) -> bool:
    """Whether a caller sees everything of its calls: admin callers always, and
    every caller of a development server."""
    return dev or admin


class Failure:
    """One failed call: told in full to the server log once, and to each caller
    in the measure :func:`reveals` allows, under one request id."""

    __slots__ = ("_messages", "error", "rejected", "request_id")

    def __init__(
        self, error: BaseException, rejected: bool = False, rid: str | None = None
    ) -> None:
        self.error = error
        self.rejected = rejected
        self.request_id = rid or request_id()
        self._messages: dict[bool, str] = {}

    @classmethod
    def of(cls, outcome: Outcome) -> Failure:
        assert outcome.error is not None
        return cls(outcome.error, outcome.rejected)

    def message(self, *, full: bool) -> str:
        """The ``errorMessage`` for a caller who sees everything (``full``) or not."""
        message = self._messages.get(full)
        if message is None:
            message = error_message(self.error, self.request_id, full=full, rejected=self.rejected)
            self._messages[full] = message
        return message

    def report(self, path: object, *, dev: bool) -> None:
        """Record the failure in the server log (see :func:`report_failure`)."""
        report_failure(self, path, dev=dev)


def _quote(path: object) -> str:
    text = path if isinstance(path, str) else repr(path)
    if len(text) > _MAX_QUOTED:
        text = text[:_MAX_QUOTED] + "…"
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def one_line(failure: Failure, path: object) -> str:
    """``messages:send [Request ID: 1a2b] Uncaught ValueError: boom (at handler, app/x.py:12)``."""
    exc = failure.error
    text = _describe(exc, detail=True)
    frames = app_frames(exc)
    if frames:
        text += f" (at {frames[0].name}, {frames[0].filename}:{frames[0].lineno})"
    text = " ⏎ ".join(text.splitlines())
    return f"{_quote(path)} [Request ID: {failure.request_id}] {text}"


#: Holds back failure records that repeat (see :mod:`basalt.runtime.log_limit`):
#: 10 per function and error type (rejected calls: per error type, as a client
#: chooses their paths) a minute, then a summary.
REPEATS = RepeatLimiter(partial(log_repeats, log))


def report_failure(
    failure: Failure, path: object, *, dev: bool, limiter: RepeatLimiter | None = None
) -> None:
    """Record a failed call on the ``basalt.functions`` logger.

    In development (``dev``), one line per failed call, rejected calls
    (validation failures, unknown functions) included. In production, an error
    raised while the function ran is logged in full, with its traceback; a
    rejected call only at INFO level (anyone can send those). A ``ConvexError``
    is the app's own answer, not a fault: one line at INFO level, without a
    traceback, in both. Control characters of the error's message are
    escaped, and a failure that repeats is summarised (``limiter``, by
    default :data:`REPEATS`).
    """
    exc = failure.error
    convex = isinstance(exc, ConvexError)
    if convex:
        level = logging.INFO
    elif failure.rejected:
        level = logging.WARNING if dev else logging.INFO
    else:
        level = logging.ERROR
    if not log.isEnabledFor(level):
        return
    error_type = type(exc).__name__
    kind = (error_type,) if failure.rejected else (_quote(path), error_type)
    if not (limiter or REPEATS).admit(kind, level):
        return
    if dev:
        log.log(level, "✖ %s", escape_controls(one_line(failure, path)))
    elif failure.rejected:
        log.info("rejected call: %s", escape_controls(one_line(failure, path)))
    else:
        log.log(
            level,
            "%s failed [Request ID: %s]: %s",
            _quote(path),
            failure.request_id,
            escape_controls(_describe(exc, detail=True)),
            exc_info=None if convex else exc,
        )
