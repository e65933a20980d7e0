"""The event loop's watchdog: time limits for queries and mutations, and a
warning that names the function when something blocks a loop.

Queries and mutations run on the server's event loop, so a handler that
computes for a long time keeps every other client waiting. Each run has a
budget of loop time (:attr:`~basalt.runtime.transaction.Limits.max_seconds`,
1 s by default, as in Convex). A run is registered while it lasts
(an entry in its loop's :attr:`_Slot.runs`: nothing happens per step), and
this module's watchdog thread samples it every
:data:`TICK_SECONDS`: a run seen executing (its coroutine is running, not
waiting) is charged the time since the previous tick. Time spent waiting on
the database or on other calls is not charged.

A run over its budget is stopped with :class:`TimeLimitSignal`:

- while it executes, the watchdog sends the loop's thread a signal whose
  handler raises it there, when the run's own frame is on the stack and
  Basalt's storage code is not (a commit group sending rows is never cut
  short; the watchdog asks again on its next tick). A signal also interrupts a
  blocking system call (a ``select``, a read on a pipe);
- when it ends (it swallowed the signal, or finished between two ticks), the
  runtime reports it over its limit all the same.

Python runs signal handlers on the main thread only, so a loop on another
thread (or a process where every real-time signal is already taken) gets the
second behaviour alone. Code that never returns to Python bytecode (a long
call into a C library that ignores signals) cannot be interrupted either.

:func:`watch_loop` makes the watchdog also notice a loop that has not run its
callbacks for :data:`BLOCKED_WARNING_SECONDS`, and log a warning naming the
function whose code holds it and the app's line that does (the innermost app
frame on the loop's stack, by :mod:`basalt.runtime.frames`' rule); the action
workers use it to move new actions off a loop that blocking code holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

from basalt.storage import base as _storage_base

from .frames import innermost_app_frame

log = logging.getLogger("basalt.runtime")

#: How often the watchdog thread looks at the loops it watches, in seconds.
TICK_SECONDS = 0.05
#: A watched loop that has not run its callbacks for this long is reported.
BLOCKED_WARNING_SECONDS = 0.5
#: How often a watched loop proves it is running, in seconds.
HEARTBEAT_SECONDS = 0.1

_STORAGE_DIR = os.path.dirname(os.path.abspath(_storage_base.__file__)) + os.sep
_sleep = time.sleep


class TimeLimitSignal(BaseException):
    """Raised in a query or mutation that ran over its time budget.

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
        "describe",
        "interrupt",
        "interruptible",
        "last_tick",
        "name",
        "runs",
        "thread_id",
        "used",
        "watchers",
    )

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        #: the limited runs on this thread: their coroutines and budgets (the
        #: runtime adds and removes them; the watchdog only reads)
        self.runs: dict[Any, float] = {}
        #: seconds charged to runs (the watchdog writes; the runtime pops)
        self.used: dict[Any, float] = {}
        self.last_tick = 0.0
        #: the run (coroutine) the signal handler is asked to stop
        self.interrupt: Any = None
        self.interruptible = False
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
#: the signal that asks the main thread to stop a run (None: not installed)
_interrupt_signal: int | None = None


def current_slot() -> _Slot:
    """The watchdog's record of the calling thread's event loop (made, and the
    watchdog started, on first use)."""
    ident = threading.get_ident()
    slot = _slots.get(ident)
    if slot is None:
        slot = _slots[ident] = _Slot(ident)
        slot.interruptible = _install_interrupt()
        _ensure_thread()
    return slot


def _install_interrupt() -> bool:
    """Install the interrupt signal's handler (main thread only), once."""
    global _interrupt_signal
    if threading.current_thread() is not threading.main_thread():
        return False
    if _interrupt_signal is not None:
        return True
    low, high = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", 0)
    for number in range(low + 4, high + 1) if low else (signal.SIGUSR2,):
        if signal.getsignal(number) in (signal.SIG_DFL, None):
            signal.signal(number, _on_interrupt)
            _interrupt_signal = number
            return True
    log.warning("no free signal to stop queries and mutations over their time limit with")
    return False


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    slot = _slots.get(threading.get_ident())
    coro = slot.interrupt if slot is not None else None
    target = getattr(coro, "cr_frame", None)
    if target is None or frame is None:
        return
    f: FrameType | None = frame
    found = False
    while f is not None:
        if f.f_code.co_filename.startswith(_STORAGE_DIR):
            return  # never in the middle of storage code: asked again next tick
        if f is target:
            found = True
            break
        f = f.f_back
    if found:
        assert slot is not None
        slot.interrupt = None
        raise TimeLimitSignal


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
                _charge(slot, now)
                _check_heartbeat(slot, now)
            except Exception:  # the watchdog must outlive anything it looks at
                log.exception("the event-loop watchdog failed checking a loop")


def _charge(slot: _Slot, now: float) -> None:
    elapsed = now - slot.last_tick if slot.last_tick else 0.0
    slot.last_tick = now
    runs, used = slot.runs, slot.used
    for coro, budget in list(runs.items()):
        if coro.cr_running:
            spent = used[coro] = used.get(coro, 0.0) + elapsed
            if spent > budget and slot.interruptible and _interrupt_signal is not None:
                slot.interrupt = coro
                signal.pthread_kill(slot.thread_id, _interrupt_signal)
    for coro in [c for c in used if c not in runs]:  # ended while being charged
        used.pop(coro, None)
    if slot.interrupt is not None and slot.interrupt not in runs:
        slot.interrupt = None


def _check_heartbeat(slot: _Slot, now: float) -> None:
    beat = slot.beat
    if beat and now - beat > BLOCKED_WARNING_SECONDS:
        if not slot.blocked_since:
            slot.blocked_since = beat
            _warn_blocked(slot, now - beat)
    elif slot.blocked_since:
        slot.blocked_since = 0.0


def _warn_blocked(slot: _Slot, seconds: float) -> None:
    frame = sys._current_frames().get(slot.thread_id)
    if frame is None:
        return
    culprit = slot.describe(frame) if slot.describe is not None else None
    # The app's line holding the loop; Basalt's or a library's innermost frame
    # (a patched time.sleep, a socket read) only when no app code is on the stack.
    app = innermost_app_frame(frame)
    where = str(app) if app is not None else f"{frame.f_code.co_filename}:{frame.f_lineno}"
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
    slot = current_slot()
    slot.describe = describe
    slot.name = name
    slot.advice = advice
    slot.watchers += 1
    return LoopWatch(slot, loop)
