"""The outcome of one function call, and how errors are told to clients."""

from __future__ import annotations

import secrets
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basalt.errors import BasaltError, ConvexError

from .transaction import ReadSet


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
    """`    at handler (file.py:12)` lines for the frames in app code."""
    lines = []
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if "basalt" in path.parts and "examples" not in path.parts:
            continue
        lines.append(f"    at {frame.name} ({frame.filename}:{frame.lineno})")
    return "\n".join(lines[:5])


def error_message(exc: BaseException, rid: str | None = None) -> str:
    """The ``errorMessage`` a client sees, in the Convex shape::

    [Request ID: 1a2b] Server Error
    Uncaught ValueError: boom
        at handler (app/messages.py:12)
    """
    head = f"[Request ID: {rid or request_id()}] Server Error"
    if isinstance(exc, ConvexError):
        body = f"Uncaught ConvexError: {exc.message}"
    elif isinstance(exc, BasaltError):
        body = f"{exc.code}: {exc.message}"
    else:
        body = f"Uncaught {type(exc).__name__}: {exc}"
    where = _location(exc)
    return f"{head}\n{body}" + (f"\n{where}" if where else "")


def error_data(exc: BaseException) -> tuple[bool, Any]:
    """``(True, data)`` for a ConvexError, ``(False, None)`` otherwise."""
    if isinstance(exc, ConvexError):
        return True, exc.data
    return False, None
