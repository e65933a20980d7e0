"""Stopping the server on SIGINT and SIGTERM, whatever its threads are doing.

SIGINT and SIGTERM are blocked in every thread of the server process
(:func:`block`, called before any thread starts) and received by a thread of
their own that waits for them (``sigwait``). So a signal is seen even while
the event loop is held — by a blocking call, or by a long call into C that
Python signal handlers would wait for.

- The first signal asks every server to stop gracefully (a server still
  starting just ends) and starts the clock: if the process is still running
  :data:`GRACE_SECONDS` later, it exits anyway.
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

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: How long a graceful stop may take after the first signal, in seconds.
GRACE_SECONDS = 10.0

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


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


class Stopping:
    """SIGINT and SIGTERM being listened for (made by :func:`install`).

    What the first signal does is :attr:`action`, run on the event loop: at
    first it cancels the task that installed it (a server still starting, or
    waiting for a broken app to be fixed, just ends); once the servers run,
    :meth:`stop_servers` makes it ask them to stop gracefully.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, action: Callable[[], object]) -> None:
        self._loop = loop
        self.action = action
        #: the signal received first (None: none yet)
        self.received: int | None = None
        self._finished = threading.Event()
        self._previous: set[int | signal.Signals] | None = None
        self._waiter: threading.Thread | None = None

    def stop_servers(self, servers: Sequence[Any]) -> None:
        """From now on the first signal sets ``should_exit`` on ``servers``."""

        def stop() -> None:
            for server in servers:
                server.should_exit = True

        self.action = stop

    def _fire(self) -> None:
        self.action()

    def _wait(self, grace: float) -> None:
        signum = signal.sigwait(_SIGNALS)
        if self._finished.is_set():
            return
        self.received = signum
        name = signal.Signals(signum).name
        _say(f"basalt: {name} received, stopping (send it again to exit at once)\n")
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting anyway
            self._loop.call_soon_threadsafe(self._fire)
        again = signal.sigtimedwait(_SIGNALS, grace)
        if self._finished.is_set():
            return
        if again is None:
            _force_exit(signum, f"the server did not stop within {grace:g} s of {name}")
        else:
            _force_exit(again.si_signo, f"{signal.Signals(again.si_signo).name} received again")

    def restore(self) -> None:
        """Stop listening; the signals' previous mask is back."""
        self._finished.set()
        waiter = self._waiter
        if waiter is not None and waiter.is_alive() and waiter.ident is not None:
            signal.pthread_kill(waiter.ident, signal.SIGTERM)  # wakes it; it sees `finished`
            waiter.join(5)
        if self._previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)


def install(*, grace: float = GRACE_SECONDS) -> Stopping:
    """Listen for SIGINT and SIGTERM (see the module docstring) from now on, from
    a task on the running loop, which the first signal cancels until
    :meth:`Stopping.stop_servers` says otherwise. Call it from the main thread,
    after :func:`block` (threads started before that could still be handed a
    signal); elsewhere nothing is listened for."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping = Stopping(loop, task.cancel if task is not None else (lambda: None))
    if threading.current_thread() is not threading.main_thread():
        return stopping
    stopping._previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    waiter = threading.Thread(
        target=stopping._wait, args=(grace,), name="basalt-signals", daemon=True
    )
    stopping._waiter = waiter
    waiter.start()
    return stopping
