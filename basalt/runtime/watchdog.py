"""The event loop's watchdog: time limits for queries and mutations, and a
warning that names the function when something blocks the loop.

Queries and mutations run on the server's event loop, so a handler that
computes for a long time keeps every other client waiting. Each run is given a
budget of loop time (:attr:`~basalt.runtime.transaction.Limits.max_seconds`,
1 s by default, as in Convex). :class:`Limited` drives the handler's coroutine
and adds up the time each of its steps holds the loop (time spent waiting on
the database or on other calls does not count):

- a run whose total goes over the budget gets :class:`TimeLimitSignal` thrown
  in at its next step;
- a single step that never gives the loop back (``while True: pass``) is
  interrupted by this module's watchdog thread, which raises
  :class:`TimeLimitSignal` inside it (``PyThreadState_SetAsyncExc``) once the
  step's deadline has passed. It does not interrupt while Basalt's storage code
  is on the stack (a commit group sending rows); it tries again on its next
  tick, so the step is stopped as soon as it is back in the function's code.

Code that does not return to Python bytecode (a long call into a C library)
cannot be interrupted; the run is still reported as over its limit when that
call returns.

:func:`watch_loop` makes the watchdog also notice a loop that has not run its
callbacks for :data:`BLOCKED_WARNING_SECONDS`, and log a warning naming the
function whose code holds it; the action workers use it to move new actions
off a loop that blocking code holds.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Generator
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

from basalt.storage import base as _storage_base

log = logging.getLogger("basalt.runtime")

#: How often the watchdog thread looks at the loops it watches, in seconds.
TICK_SECONDS = 0.05
#: A watched loop that has not run its callbacks for this long is reported.
BLOCKED_WARNING_SECONDS = 0.5
#: How often a watched loop proves it is running, in seconds.
HEARTBEAT_SECONDS = 0.1

_STORAGE_DIR = os.path.dirname(os.path.abspath(_storage_base.__file__)) + os.sep
_sleep = time.sleep
#: raise an exception in another thread at its next bytecode boundary ...
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
#: ... and take one back that has not been raised yet (NULL clears it)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class TimeLimitSignal(BaseException):
    """Thrown into a query or mutation that ran over its time budget.

    It derives from ``BaseException`` so that ``except Exception`` in app code
    cannot swallow it; the runtime turns it into a ``LimitExceeded`` error.
    """


#: names the function whose code a sampled stack is in, or None
Describe = Callable[[FrameType], "str | None"]


class _Slot:
    """What the watchdog knows about one thread's event loop."""

    __slots__ = (
        "advice",
        "beat",
        "blocked_since",
        "deadline",
        "describe",
        "fired",
        "lock",
        "name",
        "step",
        "thread_id",
        "watchers",
    )

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        #: when the running step must give the loop back (0.0: no step is limited)
        self.deadline = 0.0
        #: a counter of limited steps, and the step the watchdog last interrupted
        self.step = 0
        self.fired = -1
        #: taken to interrupt a step and to end one, so that an interruption never
        #: lands after its step is over
        self.lock = threading.Lock()
        #: the last heartbeat of the watched loop (0.0: not watched)
        self.beat = 0.0
        self.watchers = 0
        self.blocked_since = 0.0
        self.describe: Describe | None = None
        self.name = "the event loop"
        self.advice = ""


_slots: dict[int, _Slot] = {}
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def _slot() -> _Slot:
    """The current thread's slot (made, and the watchdog started, on first use)."""
    ident = threading.get_ident()
    slot = _slots.get(ident)
    if slot is None:
        slot = _slots[ident] = _Slot(ident)
        _ensure_thread()
    return slot


def _ensure_thread() -> None:
    global _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="basalt-watchdog", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        _sleep(TICK_SECONDS)
        now = perf_counter()
        for slot in list(_slots.values()):
            try:
                _check(slot, now)
            except Exception:  # the watchdog must outlive anything it looks at
                log.exception("the event-loop watchdog failed checking a loop")


def _check(slot: _Slot, now: float) -> None:
    deadline = slot.deadline
    if deadline and now > deadline and slot.fired != slot.step:
        frame = sys._current_frames().get(slot.thread_id)
        if frame is not None and not _in_storage(frame):
            with slot.lock:
                if slot.deadline and slot.fired != slot.step:
                    slot.fired = slot.step
                    _set_async_exc(slot.thread_id, TimeLimitSignal)
    beat = slot.beat
    if beat and now - beat > BLOCKED_WARNING_SECONDS:
        if not slot.blocked_since:
            slot.blocked_since = beat
            _warn_blocked(slot, now - beat)
    elif slot.blocked_since:
        slot.blocked_since = 0.0


def _in_storage(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_STORAGE_DIR):
            return True
        frame = frame.f_back
    return False


def _warn_blocked(slot: _Slot, seconds: float) -> None:
    frame = sys._current_frames().get(slot.thread_id)
    if frame is None:
        return
    culprit = slot.describe(frame) if slot.describe is not None else None
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    if culprit is not None:
        log.warning(
            "%s has blocked %s for %.1f s (at %s): %s",
            culprit,
            slot.name,
            seconds,
            where,
            slot.advice,
        )
    else:
        log.warning("%s has been blocked for %.1f s (at %s)", slot.name, seconds, where)


def describe_with(codes: Callable[[], dict[CodeType, str]]) -> Describe:
    """A :data:`Describe` that names the outermost frame of a sampled stack whose
    code is in ``codes()`` (handler code objects by function name)."""

    def describe(frame: FrameType) -> str | None:
        known = codes()
        found = None
        f: FrameType | None = frame
        while f is not None:
            name = known.get(f.f_code)
            if name is not None:
                found = name
            f = f.f_back
        return found

    return describe


class LoopWatch:
    """The watchdog's view of one event loop (see :func:`watch_loop`)."""

    def __init__(self, slot: _Slot, loop: asyncio.AbstractEventLoop) -> None:
        self._slot = slot
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._beat()

    def _beat(self) -> None:
        self._slot.beat = perf_counter()
        self._handle = self._loop.call_later(HEARTBEAT_SECONDS, self._beat)

    def stalled_for(self) -> float:
        """Seconds since the loop last ran its callbacks (about 0 while it runs)."""
        return max(0.0, perf_counter() - self._slot.beat - HEARTBEAT_SECONDS)

    def stop(self) -> None:
        """Stop watching (call on the loop's thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            slot = self._slot
            slot.watchers -= 1
            if slot.watchers <= 0:
                slot.watchers = 0
                slot.beat = 0.0
                slot.blocked_since = 0.0


def watch_loop(
    loop: asyncio.AbstractEventLoop, describe: Describe, *, name: str, advice: str
) -> LoopWatch:
    """Watch ``loop`` (running on the calling thread): when it stops running its
    callbacks for :data:`BLOCKED_WARNING_SECONDS`, log a warning naming the
    function ``describe`` finds on the stack, ``name`` (what the loop is) and
    ``advice`` (what to do about it)."""
    slot = _slot()
    slot.describe = describe
    slot.name = name
    slot.advice = advice
    slot.watchers += 1
    return LoopWatch(slot, loop)


def _end_step(slot: _Slot, step: int, outer: float) -> None:
    """Give the slot back its outer deadline and drop an interruption aimed at
    ``step`` that has not been raised yet. If that interruption lands while this
    runs, the bookkeeping is finished before it propagates."""
    try:
        with slot.lock:
            slot.deadline = outer
            if slot.fired == step:
                _clear_async_exc(slot.thread_id, None)
    except TimeLimitSignal:
        with slot.lock:
            slot.deadline = outer
        raise


class Limited:
    """Awaiting it runs ``coro`` with at most ``budget`` seconds of loop time
    (see the module docstring); over it, :class:`TimeLimitSignal` is raised.

    ``spent`` holds the loop time the run has taken so far.
    """

    __slots__ = ("_budget", "_coro", "spent")

    def __init__(self, coro: Any, budget: float) -> None:
        self._coro = coro
        self._budget = budget
        self.spent = 0.0

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        budget = self._budget
        slot = _slot()
        value: Any = None
        error: BaseException | type[BaseException] | None = None
        try:
            while True:
                if error is None and self.spent > budget:
                    error = TimeLimitSignal
                slot.step += 1
                step = slot.step
                outer = slot.deadline
                start = perf_counter()
                try:
                    mine = start + budget - self.spent
                    slot.deadline = mine if not outer or mine < outer else outer
                    if error is None:
                        yielded = coro.send(value)
                    else:
                        thrown, error = error, None
                        yielded = coro.throw(thrown)
                except StopIteration as stop:
                    result = stop.value
                    break
                finally:
                    self.spent += perf_counter() - start
                    _end_step(slot, step, outer)
                try:
                    value = yield yielded
                except GeneratorExit:
                    raise
                except BaseException as exc:  # thrown in by the task (cancellation)
                    value, error = None, exc
        finally:
            coro.close()
        if self.spent > budget:  # also when the function swallowed the signal
            raise TimeLimitSignal
        return result
