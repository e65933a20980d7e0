"""The scheduler: ``ctx.scheduler`` for functions, and the runner that executes
due jobs and crons.

::

    scheduler = Scheduler()
    runtime = Runtime(app, storage, services=Services(scheduler=scheduler))
    await runtime.start()
    await scheduler.start(runtime)      # recovers, syncs crons, starts the loop
    ...
    await scheduler.stop()
    await runtime.stop()

**Guarantees** (see :mod:`basalt.scheduler.executor`): a scheduled mutation
runs exactly once, its writes committing together with its ``success`` record;
a scheduled action at most once: one that was ``inProgress`` when the server
died is marked ``failed`` on the next start and never run again.

**Push, don't poll.** The loop sleeps until the earliest pending job or cron
run, and a commit that writes ``_scheduled_functions`` wakes it at once (an
``on_commit`` listener), so a job scheduled to run now starts right after the
commit that scheduled it. Mutation jobs execute one after another; action jobs
run concurrently, at most ``max_concurrent_actions`` at a time. The loop sleeps at
most ``MAX_SLEEP_SECONDS`` in case the wall clock jumps.

With a :class:`~basalt.runtime.ManualClock` there is no loop by default: tests
call :meth:`Scheduler.run_due` (everything due at the clock's time) or
:meth:`Scheduler.run_all` (moves the clock from one due time to the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Any, Final

from basalt.runtime import ManualClock, Runtime
from basalt.runtime.scheduling import (
    IN_PROGRESS,
    JOBS_TABLE,
    PENDING,
    ActionScheduler,
    MutationScheduler,
    SchedulingError,
)
from basalt.runtime.services import ServiceUnavailable
from basalt.runtime.transaction import TxState
from basalt.storage.base import Commit

from .cron_table import fire_due_crons, sync_crons
from .executor import Executor, SchedulerStats
from .jobs import (
    INTERRUPTED,
    KEEP_FINISHED_MS,
    due_page,
    ensure_tables,
    fail,
    fail_interrupted,
    jobs_in_state,
    next_due_ms,
    prune_finished,
)

log = logging.getLogger("basalt.scheduler")

#: How long the loop waits after an unexpected error before it tries again.
ERROR_RETRY_SECONDS: Final = 1.0
#: The longest the loop sleeps without a wake-up, in case the wall clock jumps.
MAX_SLEEP_SECONDS: Final = 300.0
#: How often (by the runtime's clock) finished jobs past their keeping time are deleted.
PRUNE_EVERY_MS: Final = 60_000.0
#: How long a running action's lease lasts (renewed every third of it) when
#: several processes may share the storage (not a SQLite file).
DEFAULT_LEASE_MS: Final = 15_000.0


class Scheduler:
    """``ctx.scheduler`` (the runtime's scheduler service) and the runner of
    scheduled functions and crons. See the module docstring."""

    def __init__(
        self,
        *,
        max_concurrent_actions: int = 16,
        mutations_in_flight: int = 32,
        background: bool | None = None,
        page_size: int = 100,
        lease_ms: float | None = None,
        keep_finished_ms: float | None = KEEP_FINISHED_MS,
        dev: bool = False,
    ) -> None:
        """``background``: run the loop (default: unless the runtime's clock is
        a :class:`ManualClock`, where tests call :meth:`run_due`).
        ``mutations_in_flight``: how many due mutation jobs are handed to the
        engine at once (they still execute one at a time, in order).
        ``lease_ms``: how long a running action's claim lasts unless renewed;
        ``inProgress`` jobs whose lease expired are failed at start-up and
        periodically. Default: ``DEFAULT_LEASE_MS``, or 0 on a SQLite file
        (one process: every ``inProgress`` job found at start-up is failed).
        ``keep_finished_ms``: how long a finished job stays in
        ``_scheduled_functions`` (default 7 days, as in Convex; None: for ever);
        older ones are deleted about once a minute.
        ``dev``: a development server's scheduler, which logs each failed job in
        one line (production logs an error raised by a job with its traceback)."""
        if max_concurrent_actions < 1 or mutations_in_flight < 1:
            raise ValueError("max_concurrent_actions and mutations_in_flight must be at least 1")
        self.max_concurrent_actions = max_concurrent_actions
        self.mutations_in_flight = mutations_in_flight
        self.page_size = page_size
        self.lease_ms = lease_ms
        if keep_finished_ms is not None and keep_finished_ms < 0:
            raise ValueError(f"keep_finished_ms must be at least 0, got {keep_finished_ms}")
        self.keep_finished_ms = keep_finished_ms
        self.dev = dev
        self._pruned_at = -math.inf
        #: this scheduler's name in the leases of the actions it runs
        self.owner = uuid.uuid4().hex
        self._lease_checked = 0.0
        self.stats = SchedulerStats()
        self._background = background
        self._runtime: Runtime | None = None
        self._synced_app: object = None
        self._wake = asyncio.Event()
        self._watched: frozenset[int] = frozenset()
        self._unlisten: Any = None
        self._task: asyncio.Task[None] | None = None
        self._executor: Executor | None = None

    # -- the service behind ctx.scheduler ------------------------------------
    def for_mutation(self, state: TxState) -> MutationScheduler:
        runtime = self._bound()
        return MutationScheduler(state, lambda fn: runtime.resolve(fn, admin=True), runtime.clock)

    def for_action(self, runtime: Runtime) -> ActionScheduler:
        return ActionScheduler(runtime)

    def _bound(self) -> Runtime:
        if self._runtime is None:
            raise ServiceUnavailable(
                "ctx.scheduler is not available: the scheduler is not started "
                "(await scheduler.start(runtime) after runtime.start())"
            )
        return self._runtime

    # -- lifecycle -----------------------------------------------------------
    async def start(self, runtime: Runtime) -> None:
        """Create the system tables, mark actions interrupted by a crash as
        failed, sync the app's crons, and start the loop (see ``background``)."""
        if self._runtime is not None:
            raise RuntimeError("this scheduler is already started")
        self._runtime = runtime
        if self.lease_ms is None:
            # One process owns a SQLite database; only shared engines need leases.
            # (Imported here: `import basalt` must not load the SQLite driver.)
            from basalt.storage.sqlite import SqliteEngine

            self.lease_ms = 0.0 if isinstance(runtime.storage, SqliteEngine) else DEFAULT_LEASE_MS
        self._executor = Executor(
            runtime,
            self.stats,
            max_concurrent_actions=self.max_concurrent_actions,
            mutations_in_flight=self.mutations_in_flight,
            on_action_done=self.wake,
            owner=self.owner,
            lease_ms=self.lease_ms,
            dev=self.dev,
        )
        try:
            await ensure_tables(runtime.storage)
            interrupted = await fail_interrupted(runtime, self._now())
            self._lease_checked = time.monotonic()
            if interrupted:
                log.warning("%d scheduled action(s) were failed: %s", interrupted, INTERRUPTED)
            await self._sync()
        except BaseException:
            self._runtime = self._executor = None
            raise
        table = runtime.storage.catalog.table_by_name(JOBS_TABLE)
        assert table is not None
        self._watched = frozenset(i.id for i in runtime.storage.catalog.indexes_of(table.number))
        self._unlisten = runtime.storage.on_commit(self._on_commit)
        background = self._background
        if background is None:
            background = not isinstance(runtime.clock, ManualClock)
        if background:
            self._task = asyncio.create_task(self._loop(), name="basalt-scheduler")

    async def stop(self) -> None:
        """Stop the loop. Actions still running are canceled and marked failed
        (as they would be after a crash); pending jobs stay pending."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runtime, executor = self._runtime, self._executor
        if runtime is not None and executor is not None:
            interrupted = await executor.cancel_actions()
            try:
                for job_id in interrupted:
                    await fail(runtime, job_id, (IN_PROGRESS,), INTERRUPTED, self._now())
            except Exception:  # the restart marks them failed instead
                log.exception("could not mark interrupted actions as failed")
        self._runtime = self._executor = None

    async def sync_crons(self) -> None:
        """Bring ``_cron_jobs`` in line with the runtime's (reloaded) app; call
        after ``runtime.reload(app)``. Raises if ``crons.py`` is invalid."""
        await self._sync()
        self.wake()

    def wake(self) -> None:
        """Make the loop look for due work now (e.g. after moving a ManualClock)."""
        self._wake.set()

    # -- running due work ----------------------------------------------------
    async def run_due(self, *, limit: int = 10_000) -> int:
        """Run everything due at the clock's current time, including what those
        jobs schedule to run now, and wait for the actions it starts. Returns
        how many jobs ran; raises if more than ``limit`` did (a job that keeps
        scheduling itself)."""
        total = 0
        while True:
            ran = await self._pass(wait_actions=True)
            total += ran
            if ran == 0:
                return total
            if total > limit:
                raise SchedulingError(
                    f"more than {limit} scheduled functions ran at one time: "
                    "does a function keep scheduling itself with run_after(0)?"
                )

    async def run_all(self, *, limit: int = 10_000) -> int:
        """With a :class:`ManualClock`: run every scheduled function, moving the
        clock to just past each due time in turn, until none is pending (crons
        fire on the way; they do not keep it going). Returns how many ran."""
        runtime = self._bound()
        clock = runtime.clock
        if not isinstance(clock, ManualClock):
            raise SchedulingError("run_all() moves the clock: it needs a ManualClock")
        total = await self.run_due(limit=limit)
        while True:
            pending = await jobs_in_state(runtime, PENDING, limit=1)
            if not pending:
                return total
            due = float(pending[0]["scheduledTime"])
            if due > clock.now_ms():
                clock.set(due + 0.001)  # past the float rounding of the clock
            total += await self.run_due(limit=limit - total)

    def _now(self) -> float:
        return self._bound().clock.now_ms()

    async def _sync(self) -> None:
        runtime = self._bound()
        app = runtime.app
        await ensure_tables(runtime.storage)  # an app reload may have touched indexes
        try:
            await sync_crons(runtime, self._now())
        finally:
            self._synced_app = app

    async def _pass(self, *, wait_actions: bool) -> int:
        """One pass over the due work; returns how many jobs it started."""
        runtime = self._bound()
        executor = self._executor
        assert executor is not None
        self.stats.passes += 1
        if runtime.app is not self._synced_app:
            try:
                await self._sync()
            except Exception:
                log.exception("the crons of the reloaded app could not be synced")
        now = self._now()
        if self.lease_ms and time.monotonic() - self._lease_checked > self.lease_ms / 2000.0:
            self._lease_checked = time.monotonic()
            expired = await fail_interrupted(runtime, now, frozenset(executor.actions))
            if expired:
                log.warning("%d scheduled action(s) lost their runner: %s", expired, INTERRUPTED)
        await fire_due_crons(runtime, now)
        if self.keep_finished_ms is not None and now - self._pruned_at >= PRUNE_EVERY_MS:
            self._pruned_at = now
            self.stats.pruned += await prune_finished(runtime, now, self.keep_finished_ms)
        started = 0
        cursor: str | None = None
        while True:
            executor.page_read()
            jobs, cursor, done = await due_page(runtime, now, cursor, self.page_size)
            started += await executor.run_page(jobs)
            if done:
                break
        if wait_actions:
            await executor.drain_actions()
        return started

    # -- the loop ------------------------------------------------------------
    def _on_commit(self, commit: Commit) -> None:
        watched = self._watched
        for key in commit.keys:
            if key.index_id in watched:
                if self._executor is not None:
                    self._executor.note_commit(commit)
                if not self._wake.is_set():
                    self.stats.commit_wakeups += 1
                    self._wake.set()
                return

    async def _loop(self) -> None:
        runtime = self._bound()
        manual = isinstance(runtime.clock, ManualClock)
        while True:
            self._wake.clear()
            started = self._now()
            delay: float | None
            try:
                await self._pass(wait_actions=False)
                due = await next_due_ms(runtime, started)
                if due is None:
                    delay = None
                else:
                    delay = max(0.0, (due - self._now()) / 1000.0)
                    if manual and delay > 0:
                        delay = None  # a ManualClock moves only when told: wait for wake()
            except Exception:
                log.exception("the scheduler failed; retrying in %s s", ERROR_RETRY_SECONDS)
                delay = ERROR_RETRY_SECONDS
            if self.lease_ms and not manual:  # look for expired leases now and then
                delay = min(delay if delay is not None else MAX_SLEEP_SECONDS, self.lease_ms / 2000)
            await self._sleep(delay)

    async def _sleep(self, delay: float | None) -> None:
        stats = self.stats
        stats.last_sleep = delay
        if delay is not None and delay <= 0:
            await asyncio.sleep(0)
            return
        stats.sleeping = True
        try:
            timeout = MAX_SLEEP_SECONDS if delay is None else min(delay, MAX_SLEEP_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        finally:
            stats.sleeping = False
