"""Executing due jobs: mutations exactly once, actions at most once.

A *mutation* job runs through ``runtime.run_mutation_with``, whose
``before_commit`` re-reads the job in the mutation's own transaction and marks
it ``success`` only if it is still ``pending``; otherwise it raises a private
signal that rolls the whole transaction back. So the mutation's writes and its
``success`` record commit together or not at all: a job canceled (or run by
someone else) in the meantime leaves no trace, and a crash at any point leaves
the job ``pending``, to run once after the restart. A mutation that fails is
rolled back and the job is marked ``failed`` with the error in a transaction
of its own.

A canceled job's effects never commit. It does not even start if the cancel
was durable before its turn: a job that a commit has touched since its page
was read is re-read first, and skipped if no longer pending. (A cancel still
in the engine's open commit group, such as one made by an earlier job of the
same batch, is caught by the job's own transaction instead: the handler may
start, but everything it did is rolled back.)

Mutation jobs execute one at a time in due order (the engine's write lock is
first come, first served), but up to ``mutations_in_flight`` are handed to it
at once so that their commits share the engine's commit groups.

An *action* job is first marked ``inProgress`` (only if still ``pending``),
then run, then marked ``success`` or ``failed``; at most
``max_concurrent_actions`` run at once, and the others wait for a slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from basalt.errors import FunctionNotFound, StorageError
from basalt.runtime import Runtime
from basalt.runtime.db import DatabaseWriter
from basalt.runtime.frames import app_frames
from basalt.runtime.scheduling import IN_PROGRESS, PENDING, SUCCESS, SchedulingError, running_job
from basalt.storage.base import Commit, Document

from .jobs import claim_action, describe_error, fail, move, read_system, renew_lease

log = logging.getLogger("basalt.scheduler")


class _NotPending(Exception):
    """Raised in a mutation job's ``before_commit`` when the job is no longer
    pending: rolls the mutation back, and the executor counts it as skipped."""


@dataclass(slots=True)
class SchedulerStats:
    """Counters of one scheduler (for tests, benchmarks and the dashboard)."""

    #: passes over the due jobs
    passes: int = 0
    #: jobs that ran to success or failure
    succeeded: int = 0
    failed: int = 0
    #: due jobs left alone because they were no longer pending when their turn came
    skipped: int = 0
    #: finished jobs deleted once they were older than the scheduler keeps them
    pruned: int = 0
    #: times the loop was woken by a commit (rather than by its timer)
    commit_wakeups: int = 0
    #: whether the loop is waiting, and for how long (None: until woken)
    sleeping: bool = False
    last_sleep: float | None = None


def _args(job: Document) -> dict[str, Any]:
    args = job.get("args") or [{}]
    return dict(args[0])


class Executor:
    """Runs the jobs of one runtime (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        counters: SchedulerStats,
        *,
        max_concurrent_actions: int,
        mutations_in_flight: int,
        on_action_done: Callable[[], None],
        owner: str = "",
        lease_ms: float = 0.0,
        dev: bool = False,
    ) -> None:
        """``owner`` and ``lease_ms``: the lease an action job is claimed with
        (renewed every third of ``lease_ms`` while it runs; 0: never renewed).
        ``dev``: a failed job is logged in one line, without its traceback."""
        self.runtime = runtime
        self.dev = dev
        self.owner = owner
        self.lease_ms = lease_ms
        self.counters = counters
        self.max_concurrent_actions = max_concurrent_actions
        self.mutations_in_flight = mutations_in_flight
        self.actions: dict[str, asyncio.Task[None]] = {}
        self._on_action_done = on_action_done
        #: ids of documents written by commits that touched _scheduled_functions
        #: since the current page was read
        self._touched: set[str] = set()

    def _now(self) -> float:
        return self.runtime.clock.now_ms()

    def note_commit(self, commit: Commit) -> None:
        """Record the documents of a commit that wrote ``_scheduled_functions``."""
        self._touched.update(commit.doc_ids)

    def page_read(self) -> None:
        """Call just before reading a page of due jobs."""
        self._touched.clear()

    async def run_page(self, jobs: list[Document]) -> int:
        """Start every job of a page; wait for its mutations (not its actions).
        Returns how many jobs were started."""
        started = 0
        window: set[asyncio.Task[None]] = set()
        try:
            for job in jobs:
                kind, error = self._kind(job)
                if kind == "mutation":
                    if len(window) >= self.mutations_in_flight:
                        done, window = await asyncio.wait(
                            window, return_when=asyncio.FIRST_COMPLETED
                        )
                        _raise_first(done)
                    window.add(asyncio.create_task(self._run_mutation_job(job)))
                    started += 1
                elif kind == "action":
                    started += await self._start_action(job)
                else:
                    if await fail(
                        self.runtime, job["_id"], (PENDING,), describe_error(error), self._now()
                    ):
                        self.counters.failed += 1
                    started += 1
            if window:
                done, window = await asyncio.wait(window)
                _raise_first(done)
        finally:
            for task in window:
                task.cancel()
            if window:
                await asyncio.gather(*window, return_exceptions=True)
        return started

    def _kind(self, job: Document) -> tuple[str, Exception]:
        try:
            kind: str = self.runtime.resolve(job["name"], admin=True).kind
        except FunctionNotFound as exc:
            return "missing", exc
        return kind, SchedulingError(f"{job['name']} is a {kind}: it cannot be scheduled")

    async def _run_mutation_job(self, job: Document) -> None:
        runtime = self.runtime
        job_id = job["_id"]
        counters = self.counters

        async def record_success(db: DatabaseWriter) -> None:
            current = await db.system.get(job_id)
            if current is None or current["state"]["kind"] != PENDING:
                raise _NotPending(job_id)
            await db.patch(job_id, {"state": {"kind": SUCCESS}, "completedTime": self._now()})

        if job_id in self._touched:  # written since the page was read: canceled?
            current = await read_system(runtime, lambda db: db.system.get(job_id))
            if current is None or current["state"]["kind"] != PENDING:
                counters.skipped += 1
                return
        outcome = await runtime.run_mutation_with(
            job["name"], _args(job), before_commit=record_success
        )
        error = outcome.error
        if error is None:
            counters.succeeded += 1
        elif isinstance(error, _NotPending):
            counters.skipped += 1
        elif isinstance(error, StorageError):
            raise error  # nothing was written: the job stays pending and is retried
        else:
            self._log_failure("mutation", job, error, rejected=outcome.rejected)
            if await fail(runtime, job_id, (PENDING,), describe_error(error), self._now()):
                counters.failed += 1

    def _log_failure(
        self, kind: str, job: Document, error: BaseException, *, rejected: bool
    ) -> None:
        """Tell the server's output (no client is told) that a job failed: one
        line on a development server, or for a call refused before it ran (its
        arguments no longer match: the traceback would be Basalt's own); in
        production an error raised while it ran comes with its traceback."""
        frames = app_frames(error)
        at = f" (at {frames[0].name}, {frames[0]})" if frames else ""
        log.warning(
            "scheduled %s %s (%s) failed: %s%s",
            kind,
            job["name"],
            job["_id"],
            describe_error(error),
            at,
            exc_info=None if rejected or self.dev else error,
        )

    async def _start_action(self, job: Document) -> int:
        job_id = job["_id"]
        if len(self.actions) >= self.max_concurrent_actions or job_id in self.actions:
            return 0  # picked up when an action finishes and wakes the runner
        if not await claim_action(self.runtime, job_id, self.owner, self._now() + self.lease_ms):
            return 0
        task = asyncio.create_task(self._run_action_job(job), name=f"basalt-job-{job_id}")
        self.actions[job_id] = task
        task.add_done_callback(lambda _: self._action_done(job_id))
        return 1

    async def _run_action_job(self, job: Document) -> None:
        runtime = self.runtime
        job_id = job["_id"]
        token = running_job.set(job_id)
        renewing = (
            asyncio.create_task(self._renew(job_id), name=f"basalt-lease-{job_id}")
            if self.lease_ms > 0
            else None
        )
        try:
            outcome = await runtime.call(job["name"], _args(job), kind="action", admin=True)
        finally:
            running_job.reset(token)
            if renewing is not None:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
        error = outcome.error
        try:
            if error is None:
                moved = await move(runtime, job_id, (IN_PROGRESS,), {"kind": SUCCESS}, self._now())
                self.counters.succeeded += moved
            else:
                self._log_failure("action", job, error, rejected=outcome.rejected)
                moved = await fail(
                    runtime, job_id, (IN_PROGRESS,), describe_error(error), self._now()
                )
                self.counters.failed += moved
        except Exception:
            log.exception("could not record the outcome of scheduled action %s", job_id)

    async def _renew(self, job_id: str) -> None:
        """Renew the lease of a running action until canceled."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000.0)
            try:
                await renew_lease(self.runtime, job_id, self.owner, self._now() + self.lease_ms)
            except Exception:  # the next renewal tries again
                log.exception("could not renew the lease of scheduled action %s", job_id)

    def _action_done(self, job_id: str) -> None:
        self.actions.pop(job_id, None)
        self._on_action_done()

    async def drain_actions(self) -> None:
        """Wait until no action job is running."""
        while self.actions:
            await asyncio.gather(*list(self.actions.values()), return_exceptions=True)

    async def cancel_actions(self) -> list[str]:
        """Cancel the running action jobs; returns their ids."""
        actions = dict(self.actions)
        for task in actions.values():
            task.cancel()
        await asyncio.gather(*actions.values(), return_exceptions=True)
        return list(actions)


def _raise_first(done: set[asyncio.Task[None]]) -> None:
    for task in done:
        error = task.exception()
        if error is not None:
            raise error
