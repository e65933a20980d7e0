"""Stopping the server on SIGINT and SIGTERM, whatever its event loop is doing.

The handlers are plain Python signal handlers, not event-loop callbacks: they
run in the main thread as soon as it executes Python code again, so a signal
is seen also while something holds the event loop (a blocking call is
interrupted by the signal, runs the handler, and resumes).

- The first signal asks every server to stop gracefully, and arms a timer:
  if the process has not exited :data:`GRACE_SECONDS` later, it exits anyway.
- A second signal exits at once.

A forced exit skips the shutdown code, as ``kill -9`` would; every acknowledged
write is already durable (see ``BASALT_DURABILITY``), so nothing committed is
lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

#: How long a graceful stop may take after the first signal, in seconds.
GRACE_SECONDS = 10.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stoppable(Protocol):
    """What a server offers to be stopped (uvicorn's ``Server``)."""

    should_exit: bool
    force_exit: bool


def _say(text: str) -> None:
    # os.write: a handler may interrupt a print() holding stderr's lock.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _force_exit(signum: int, why: str) -> None:
    _say(f"basalt: {why}; exiting now\n")
    os._exit(128 + signum)


def install(servers: Sequence[Stoppable], *, grace: float = GRACE_SECONDS) -> Callable[[], None]:
    """Handle SIGINT and SIGTERM for ``servers`` (call from the main thread);
    returns a function that puts the previous handlers back. Outside the main
    thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    first = threading.Event()
    received: list[int] = []
    done = threading.Event()

    def expire() -> None:
        first.wait()
        if not done.wait(grace):
            name = signal.Signals(received[0]).name
            _force_exit(received[0], f"the server did not stop within {grace:g} s of {name}")

    timer = threading.Thread(target=expire, name="basalt-stop-timer", daemon=True)
    timer.start()

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
            _force_exit(signum, f"{signal.Signals(signum).name} received again")
        received.append(signum)
        name = signal.Signals(signum).name
        _say(f"basalt: {name} received, stopping (send it again to exit at once)\n")
        for server in servers:
            server.should_exit = True
        first.set()

    previous = {sig: signal.signal(sig, handle) for sig in _SIGNALS}

    def restore() -> None:
        done.set()
        first.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
