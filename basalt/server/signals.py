"""Stopping the server on SIGINT and SIGTERM, whatever its threads are doing.

SIGINT and SIGTERM are blocked in every thread of the server process
(:func:`block`, called before any thread starts) and received by a thread of
their own that waits for them (``sigwait``). So a signal is seen even while
the event loop is held — by a blocking call, or by a long call into C that
Python signal handlers would wait for.

- The first signal asks every server to stop gracefully and starts the clock:
  if the process is still running :data:`GRACE_SECONDS` later, it exits anyway.
- A second signal exits at once.

A forced exit skips the shutdown code, as ``kill -9`` would; every acknowledged
write is already durable (see ``BASALT_DURABILITY``), so nothing committed is
lost.

One case is out of reach: code that holds the interpreter lock in a single
long call into C (a pathological regular expression, ``sum(range(10**13))``)
stops every Python thread, this one included, until it returns; only SIGKILL
ends such a process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

#: How long a graceful stop may take after the first signal, in seconds.
GRACE_SECONDS = 10.0

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Stoppable(Protocol):
    """What a server offers to be stopped (uvicorn's ``Server``)."""

    should_exit: bool


def block() -> None:
    """Block SIGINT and SIGTERM in the calling thread, and so in every thread it
    starts from now on (call it first thing in the main thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _force_exit(signum: int, why: str) -> None:
    _say(f"basalt: {why}; exiting now\n")
    os._exit(128 + signum)


def install(servers: Sequence[Stoppable], *, grace: float = GRACE_SECONDS) -> Callable[[], None]:
    """Stop ``servers`` on SIGINT and SIGTERM (see the module docstring); returns a
    function that stops listening for them. Call it from the main thread, after
    :func:`block` (threads started before that could still be handed a
    signal); elsewhere nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    finished = threading.Event()

    def wait() -> None:
        signum = signal.sigwait(_SIGNALS)
        if finished.is_set():
            return
        name = signal.Signals(signum).name
        _say(f"basalt: {name} received, stopping (send it again to exit at once)\n")
        for server in servers:
            server.should_exit = True
        again = signal.sigtimedwait(_SIGNALS, grace)
        if finished.is_set():
            return
        if again is None:
            _force_exit(signum, f"the server did not stop within {grace:g} s of {name}")
        else:
            _force_exit(again.si_signo, f"{signal.Signals(again.si_signo).name} received again")

    waiter = threading.Thread(target=wait, name="basalt-signals", daemon=True)
    waiter.start()

    def restore() -> None:
        finished.set()
        if waiter.is_alive() and waiter.ident is not None:
            signal.pthread_kill(waiter.ident, signal.SIGTERM)  # wakes it; it sees `finished`
            waiter.join(5)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    return restore
