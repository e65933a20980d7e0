"""``ctx.scheduler``: running mutations and actions later.

Scheduled functions are documents of the system table ``_scheduled_functions``,
shaped as in Convex and readable with ``ctx.db.system.query``::

    {"_id": "...", "_creationTime": 1718000000000.0,
     "name": "messages:send",             # the function's path
     "args": [{"body": "hi"}],            # a one-element list holding the arguments
     "scheduledTime": 1718000005000.0,    # when it is due (ms since the epoch)
     "state": {"kind": "pending"},        # inProgress | success | canceled |
                                          # failed (with "error": "...")
     "completedTime": 1718000005012.0}    # once it finished or was canceled

In a mutation, ``ctx.scheduler`` writes through the mutation's own transaction:
a job exists if and only if the mutation commits. In an action each call is a
transaction of its own. This module is the ``ctx`` side only; the runner that
executes due jobs is :mod:`basalt.scheduler` (the runtime never imports it).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from basalt.errors import BasaltError, InvalidValue
from basalt.values.int64 import Int64
from basalt.values.model import check_value

from . import determinism
from .clock import Clock
from .db import DatabaseReader, DatabaseWriter
from .functions import Function
from .query import Query
from .transaction import TxState

if TYPE_CHECKING:
    from .runtime import Runtime

T = TypeVar("T")

#: The system table holding scheduled functions.
JOBS_TABLE: Final = "_scheduled_functions"
#: Basalt's index on ``_scheduled_functions``: due pending jobs in time order.
BY_STATE: Final = "by_state"
BY_STATE_FIELDS: Final = ("state.kind", "scheduledTime")

PENDING: Final = "pending"
IN_PROGRESS: Final = "inProgress"
SUCCESS: Final = "success"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
#: States a job never leaves.
FINISHED: Final = frozenset({SUCCESS, FAILED, CANCELED})

#: ``run_at`` takes seconds since the epoch; anything above this (the year
#: 5138) is taken for milliseconds passed by mistake and refused.
_MAX_EPOCH_SECONDS: Final = 1e11

#: The id of the scheduled action whose code is running in this context (set by
#: the runner), so that an action canceled while it runs schedules nothing that
#: will run: what it schedules from then on is recorded as canceled, as in Convex.
running_job: ContextVar[str | None] = ContextVar("basalt_running_job", default=None)

FunctionRef = Function | str


class SchedulingError(BasaltError):
    """A ``ctx.scheduler`` call with a bad function, time or arguments."""

    code = "InvalidScheduleCall"
    http_status = 400


def system_query(db: DatabaseReader, table: str) -> Query:
    """A query over any system table, for Basalt's own system transactions
    (``ctx.db.system.query`` only reaches the tables apps may read)."""
    state: TxState = db._state
    if not state.system:
        raise SchedulingError(f"{table!r} can only be read by Basalt's own transactions")
    return Query(state, table, system=True)


def delay_ms(seconds: object) -> float:
    """A ``run_after`` delay in milliseconds (a finite number of seconds ≥ 0)."""
    if type(seconds) not in (int, float, Int64):
        raise SchedulingError(
            f"run_after: the delay must be a number of seconds, got {type(seconds).__name__}"
        )
    value = float(seconds)  # type: ignore[arg-type]
    if not math.isfinite(value) or value < 0:
        raise SchedulingError(f"run_after: the delay must be ≥ 0 seconds, got {seconds!r}")
    return value * 1000.0


def epoch_ms(when: object) -> float:
    """Milliseconds since the epoch for a ``run_at`` time: a ``datetime`` (an
    aware one, or a naive one meaning UTC) or seconds since the epoch (what
    ``time.time()`` returns)."""
    if isinstance(when, datetime):
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return aware.timestamp() * 1000.0
    if type(when) not in (int, float, Int64):
        raise SchedulingError(
            "run_at: the time must be a datetime or seconds since the epoch "
            f"(time.time()), got {type(when).__name__}"
        )
    value = float(when)  # type: ignore[arg-type]
    if not math.isfinite(value) or value < 0:
        raise SchedulingError(f"run_at: {when!r} is not a time")
    if value > _MAX_EPOCH_SECONDS:
        raise SchedulingError(
            f"run_at: {when!r} is too far in the future; the time is in seconds since the "
            "epoch (time.time()), not milliseconds"
        )
    return value * 1000.0


def check_args(args: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    """The arguments of a scheduled call: an object of Convex values."""
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise SchedulingError(
            f"the arguments scheduled for {path} must be a dict, got {type(args).__name__}"
        )
    checked = dict(args)
    try:
        check_value(checked, what=f"arguments scheduled for {path}")
    except InvalidValue as exc:
        raise SchedulingError(exc.message) from None
    return checked


def function_path(resolve: Callable[[FunctionRef], Function], fn: FunctionRef) -> str:
    """The path of ``fn``, which must be a mutation or an action (public or internal)."""
    if not isinstance(fn, Function | str):
        raise SchedulingError(
            f"the function to schedule must be a function or its path, got {type(fn).__name__}"
        )
    function = resolve(fn)
    if function.kind not in ("mutation", "action"):
        raise SchedulingError(
            f"{function.path} is a {function.kind}: only mutations and actions can be scheduled"
        )
    assert function.path is not None
    return function.path


async def insert_job(
    db: DatabaseWriter,
    path: str,
    args: dict[str, Any],
    scheduled_ms: float,
    *,
    canceled_at: float | None = None,
) -> str:
    """Insert a job (``db`` must be a system writer); returns its id. With
    ``canceled_at`` the job is recorded as canceled at that time."""
    doc: dict[str, Any] = {"name": path, "args": [args], "scheduledTime": float(scheduled_ms)}
    if canceled_at is None:
        doc["state"] = {"kind": PENDING}
    else:
        doc["state"] = {"kind": CANCELED}
        doc["completedTime"] = float(canceled_at)
    return await db.insert(JOBS_TABLE, doc)


async def cancel_job(db: DatabaseWriter, job_id: object, now_ms: float) -> bool:
    """Cancel a pending or running job; returns whether it was canceled. A job
    that has finished, or no longer exists, is left alone."""
    if not isinstance(job_id, str) or db.normalize_id(JOBS_TABLE, job_id) is None:
        raise SchedulingError(f"cancel: {job_id!r} is not the id of a scheduled function")
    job = await db.system.get(job_id)
    if job is None or job["state"]["kind"] in FINISHED:
        return False
    await db.patch(job_id, {"state": {"kind": CANCELED}, "completedTime": float(now_ms)})
    return True


async def _canceled_parent_time(db: DatabaseWriter, now_ms: float) -> float | None:
    """``now_ms`` if this code runs inside a scheduled action that was canceled."""
    parent = running_job.get()
    if parent is None:
        return None
    job = await db.system.get(parent)
    if job is not None and job["state"]["kind"] == CANCELED:
        return now_ms
    return None


class _SchedulerBase:
    """``run_after``, ``run_at`` and ``cancel`` over a way to write jobs."""

    __slots__ = ("_clock", "_resolve")

    def __init__(self, resolve: Callable[[FunctionRef], Function], clock: Clock) -> None:
        self._resolve = resolve
        self._clock = clock

    def _now_ms(self) -> float:
        return self._clock.now_ms()

    async def run_after(
        self, seconds: float, fn: FunctionRef, args: Mapping[str, Any] | None = None
    ) -> str:
        """Run ``fn(**args)`` ``seconds`` from now (0: as soon as this commits);
        returns the id of the job in ``_scheduled_functions``."""
        delay = delay_ms(seconds)
        path = function_path(self._resolve, fn)
        return await self._insert(path, check_args(args, path), self._now_ms() + delay)

    async def run_at(
        self, when: datetime | float, fn: FunctionRef, args: Mapping[str, Any] | None = None
    ) -> str:
        """Run ``fn(**args)`` at ``when``: a ``datetime`` (naive means UTC) or
        seconds since the epoch (``time.time()``). A time in the past means now.
        Returns the id of the job in ``_scheduled_functions``."""
        at = epoch_ms(when)
        path = function_path(self._resolve, fn)
        return await self._insert(path, check_args(args, path), at)

    async def cancel(self, job_id: str) -> None:
        """Cancel a scheduled function. A pending one will not run; an action
        already running goes on, but what it schedules from then on is canceled
        too; a finished one is left as it is."""
        await self._cancel(job_id)

    async def _insert(self, path: str, args: dict[str, Any], at_ms: float) -> str:
        raise NotImplementedError

    async def _cancel(self, job_id: str) -> None:
        raise NotImplementedError


class MutationScheduler(_SchedulerBase):
    """``ctx.scheduler`` of a mutation: jobs are written in its transaction."""

    __slots__ = ("_db", "_state")

    def __init__(
        self, state: TxState, resolve: Callable[[FunctionRef], Function], clock: Clock
    ) -> None:
        super().__init__(resolve, clock)
        self._state = state
        self._db: DatabaseWriter | None = None

    def _writer(self) -> DatabaseWriter:
        # Made on first use: most mutations never schedule anything.
        if self._db is None:
            state = self._state
            system = TxState(
                state.tx,
                schema=state.schema,
                limits=state.limits,
                creation_times=state.creation_times,
                system=True,
            )
            self._db = DatabaseWriter(system)
        return self._db

    # Part of the mutation's transaction: each call is a write it must await.
    def run_after(
        self, seconds: float, fn: FunctionRef, args: Mapping[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Run ``fn(**args)`` ``seconds`` after this mutation commits (0: as soon as
        it commits); returns (await it) the id of the job in ``_scheduled_functions``."""
        return self._state.track("ctx.scheduler.run_after", super().run_after(seconds, fn, args))

    def run_at(
        self, when: datetime | float, fn: FunctionRef, args: Mapping[str, Any] | None = None
    ) -> Coroutine[Any, Any, str]:
        """Run ``fn(**args)`` at ``when`` (see the action scheduler's ``run_at``);
        returns (await it) the id of the job in ``_scheduled_functions``."""
        return self._state.track("ctx.scheduler.run_at", super().run_at(when, fn, args))

    def cancel(self, job_id: str) -> Coroutine[Any, Any, None]:
        """Cancel a scheduled function when this mutation commits; await it."""
        return self._state.track("ctx.scheduler.cancel", super().cancel(job_id))

    def _now_ms(self) -> float:
        # The mutation's frozen clock (the runtime's clock when it started).
        frozen = determinism.current.get()
        if frozen is not None:
            return frozen.time_ns / 1_000_000
        return self._clock.now_ms()

    async def _insert(self, path: str, args: dict[str, Any], at_ms: float) -> str:
        db = self._writer()
        canceled = await _canceled_parent_time(db, self._now_ms())
        return await insert_job(db, path, args, at_ms, canceled_at=canceled)

    async def _cancel(self, job_id: str) -> None:
        await cancel_job(self._writer(), job_id, self._now_ms())


class ActionScheduler(_SchedulerBase):
    """``ctx.scheduler`` of an action: each call commits a transaction of its own."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(lambda fn: runtime.resolve(fn, admin=True), runtime.clock)
        self._runtime = runtime

    async def _insert(self, path: str, args: dict[str, Any], at_ms: float) -> str:
        now = self._now_ms()

        async def write(db: DatabaseWriter) -> str:
            canceled = await _canceled_parent_time(db, now)
            return await insert_job(db, path, args, at_ms, canceled_at=canceled)

        return await self._system(write)

    async def _cancel(self, job_id: str) -> None:
        now = self._now_ms()

        async def write(db: DatabaseWriter) -> None:
            await cancel_job(db, job_id, now)

        await self._system(write)

    async def _system(self, handler: Callable[[DatabaseWriter], Awaitable[T]]) -> T:
        result: T = await self._runtime.run_system(handler)
        return result
