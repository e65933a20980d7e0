"""An event that tests share with functions running on another event loop.

Actions and HTTP actions run on the action loop, a thread of its own, while a
test runs on pytest's loop. An ``asyncio.Event`` belongs to one loop, so a test
that sets it from its own loop wakes the other loop's waiter only by chance.
A :class:`Gate` wakes each waiter on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Gate:
    """``set``, ``is_set`` and ``await wait()``, from any thread and any loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        with self._lock:
            if self._set:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        await waiter


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
