"""Where actions run: off the server's event loop.

Queries, mutations, subscriptions and the HTTP API share the server's event
loop. Actions call the outside world, often through libraries that block (the
official OpenAI SDK, ``requests``, ``urllib``), so they never run there:

- an ``async def`` action (and every HTTP action) runs on the **action loop**,
  an event loop on a thread of its own. Async clients made once at module level
  (``AsyncOpenAI()``, ``httpx.AsyncClient()``) keep working, because they stay
  on one loop;
- a plain ``def`` action runs on a thread of its own from a bounded pool, so
  blocking code there stalls only that action.

Blocking code inside an ``async def`` action holds the action loop, and the
other async actions with it. The watchdog then logs a warning naming the
action, and once the loop has been held for :data:`MOVE_AFTER_SECONDS`, actions
that have not started yet (and new ones) go to a fresh action loop, so the
deployment stays live — also when the blocked action waits for another action,
for example by calling its own server over HTTP. The old loop ends once the
work on it has ended. (Objects bound to the old loop, such as a module-level
async client that the blocked action was using, cannot follow; the warning
says to declare the action with plain ``def``.)

What an action asks of the deployment (``ctx.run_query``, ``ctx.scheduler``,
``ctx.storage``) is sent back to the server's loop (:mod:`basalt.runtime.loops`).
Context variables travel with the work both ways (a callback handed to another
loop runs in a copy of its sender's context), so what the caller set — the
scheduler's running job, say — is seen by the action and by what it calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import watchdog

log = logging.getLogger("basalt.runtime")

T = TypeVar("T")

#: How many ``def`` actions may run at once by default.
DEFAULT_MAX_THREADS = 64
#: How long blocking code may hold the action loop before actions that have not
#: started yet move to a fresh one, in seconds.
MOVE_AFTER_SECONDS = 1.0
#: How long ``close`` waits for the action threads to end, in seconds.
CLOSE_WAIT_SECONDS = 2.0

_ADVICE = (
    "other async actions wait meanwhile. Declare it with plain `def` (it then runs on a "
    "thread of its own), or use an async library"
)

_local = threading.local()


def on_action_thread() -> bool:
    """Whether the calling thread runs actions (an action loop or a ``def`` action)."""
    return getattr(_local, "action_thread", False)


class ActionLoop:
    """An event loop on a daemon thread of its own, watched by the watchdog."""

    def __init__(self, name: str, describe: watchdog.Describe) -> None:
        self.loop = asyncio.new_event_loop()
        #: pieces of work placed on this loop that have not ended
        self.users = 0
        self.retired = False
        self._ready = threading.Event()
        self._watch: watchdog.LoopWatch | None = None
        self._describe = describe
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        _local.action_thread = True
        loop = self.loop
        asyncio.set_event_loop(loop)
        self._watch = watchdog.watch_loop(
            loop, self._describe, name=f"the action loop ({self.thread.name})", advice=_ADVICE
        )
        self._ready.set()
        try:
            loop.run_forever()
            self._watch.stop()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stalled_for(self) -> float:
        """Seconds the loop has been held by code that does not give it back."""
        return self._watch.stalled_for() if self._watch is not None else 0.0

    def stop(self) -> None:
        """End the thread once its loop gets control back (work left is cancelled)."""
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)


class _Placement:
    """One piece of work sent to an action loop: it starts there once, or, if
    that loop stays blocked, is taken back and sent to another."""

    def __init__(self, make: Callable[[], Awaitable[Any]], done: asyncio.Future[Any]) -> None:
        self._make = make
        self._done = done
        self._main = done.get_loop()
        self._lock = threading.Lock()
        self._claimed = False
        self.task: asyncio.Task[Any] | None = None
        self.task_loop: asyncio.AbstractEventLoop | None = None

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def start(self, target: ActionLoop) -> None:
        """Runs on ``target``'s loop: begin the work, unless it was taken back."""
        if not self.claim():
            return
        self.task_loop = target.loop
        self.task = target.loop.create_task(self._run())

    async def _run(self) -> None:
        main, done = self._main, self._done
        try:
            result = await self._make()
        except BaseException as exc:
            main.call_soon_threadsafe(_settle, done, None, exc)
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise
        else:
            main.call_soon_threadsafe(_settle, done, result, None)

    def cancel(self) -> None:
        """Stop the work: never start it, or cancel it where it runs."""
        if self.claim():
            return
        task, loop = self.task, self.task_loop
        if task is not None and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


def _settle(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(result)
    elif isinstance(error, asyncio.CancelledError):
        done.cancel()
    else:
        done.set_exception(error)


class Lease:
    """An action loop held by one action (or HTTP action, for as long as its
    streaming response lasts); work placed with :meth:`run` moves, before it has
    started, to a fresh loop if this one stays blocked."""

    def __init__(self, workers: ActionWorkers, target: ActionLoop) -> None:
        self._workers = workers
        self.target = target
        self._closed = False
        target.users += 1

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the lease's work runs on (objects made by it belong there)."""
        return self.target.loop

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the lease's action loop and return its result;
        cancelling the caller cancels the work."""
        main = asyncio.get_running_loop()
        done: asyncio.Future[T] = main.create_future()
        placement = _Placement(make, done)
        self.target.loop.call_soon_threadsafe(placement.start, self.target)
        try:
            while True:
                finished, _ = await asyncio.wait({done}, timeout=MOVE_AFTER_SECONDS)
                if finished:
                    return done.result()
                if self.target.stalled_for() >= MOVE_AFTER_SECONDS and placement.claim():
                    self._move()
                    placement = _Placement(make, done)
                    self.target.loop.call_soon_threadsafe(placement.start, self.target)
        except asyncio.CancelledError:
            placement.cancel()
            raise

    def _move(self) -> None:
        old = self.target
        self.target = self._workers._fresh_loop(old)
        self.target.users += 1
        self._workers._release(old)

    def close(self) -> None:
        """The work of this lease is over."""
        if not self._closed:
            self._closed = True
            self._workers._release(self.target)


class ActionWorkers:
    """The action loop and ``def``-action threads of one runtime."""

    def __init__(
        self,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        describe: watchdog.Describe | None = None,
    ) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self.describe: watchdog.Describe = describe or (lambda frame: None)
        self._current: ActionLoop | None = None
        self._loops: list[ActionLoop] = []
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._names = 0

    def lease(self) -> Lease:
        """The action loop for one action (a fresh one if the current one is
        blocked)."""
        if self._closed:
            raise RuntimeError("the runtime is stopped: no more actions run")
        current = self._current
        if current is None:
            current = self._current = self._new_loop()
        elif current.stalled_for() >= MOVE_AFTER_SECONDS:
            current = self._fresh_loop(current)
        return Lease(self, current)

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the action loop and return its result."""
        lease = self.lease()
        try:
            return await lease.run(make)
        finally:
            lease.close()

    async def run_in_thread(self, fn: Callable[[], T], *, nested: bool = False) -> T:
        """Run ``fn()`` on a thread of its own and return its result. At most
        ``max_threads`` run at once and more wait, except ``nested`` ones (started
        by an action, which must not wait for its own caller's thread)."""
        if self._closed:
            raise RuntimeError("the runtime is stopped: no more actions run")
        if nested:
            return await asyncio.to_thread(_as_action_thread, fn)
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                self.max_threads, thread_name_prefix="basalt-action", initializer=_mark_thread
            )
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    def _new_loop(self) -> ActionLoop:
        self._names += 1
        created = ActionLoop(f"basalt-actions-{self._names}", self.describe)
        self._loops.append(created)
        return created

    def _fresh_loop(self, blocked: ActionLoop) -> ActionLoop:
        """The current loop if it is not ``blocked``; else a new current one."""
        if self._current is not None and self._current is not blocked:
            return self._current
        log.warning(
            "%s has been blocked for %.1f s: new actions start on a fresh action loop",
            blocked.thread.name,
            blocked.stalled_for(),
        )
        blocked.retired = True
        self._current = self._new_loop()
        if blocked.users == 0:
            self._end(blocked)
        return self._current

    def _release(self, target: ActionLoop) -> None:
        target.users -= 1
        if target.users == 0 and (target.retired or self._closed):
            self._end(target)

    def _end(self, target: ActionLoop) -> None:
        target.stop()
        with contextlib.suppress(ValueError):
            self._loops.remove(target)

    async def close(self) -> None:
        """Stop the action loops (work still on them is cancelled) and the
        threads; a thread stuck in blocking code is left to end on its own."""
        self._closed = True
        loops, self._loops, self._current = self._loops, [], None
        for target in loops:
            target.stop()
        threads = [t.thread for t in loops if t.thread.is_alive()]
        pool, self._threads = self._threads, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if threads:
            await asyncio.to_thread(_join_all, threads, CLOSE_WAIT_SECONDS)


def _mark_thread() -> None:
    _local.action_thread = True


def _as_action_thread(fn: Callable[[], T]) -> T:
    previous = getattr(_local, "action_thread", False)
    _local.action_thread = True
    try:
        return fn()
    finally:
        _local.action_thread = previous


def _join_all(threads: list[threading.Thread], seconds: float) -> None:
    end = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
        if thread.is_alive():
            log.warning("%s is still running blocking code at shutdown; leaving it", thread.name)
