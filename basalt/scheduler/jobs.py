"""The scheduler's system tables and the transactions that move jobs along.

``_scheduled_functions`` (see :mod:`basalt.runtime.scheduling` for its
documents) has Basalt's index ``by_state`` on ``("state.kind",
"scheduledTime")``: the due pending jobs are one range of it, in time order.
``_cron_jobs`` (see :mod:`basalt.scheduler.cron_table`) has ``by_next_run``.
Both are created, with their indexes, when the scheduler starts.

A job moves ``pending → success | failed | canceled`` (mutations) or
``pending → inProgress → success | failed | canceled`` (actions); every move
is a transaction that checks the state it moves from, so two runners (or a
runner and a ``cancel``) racing for one job cannot both win.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from basalt.errors import BasaltError, ConvexError
from basalt.runtime import Runtime
from basalt.runtime.db import DatabaseReader, DatabaseWriter
from basalt.runtime.scheduling import (
    BY_STATE,
    BY_STATE_FIELDS,
    FAILED,
    FINISHED,
    IN_PROGRESS,
    JOBS_TABLE,
    PENDING,
    system_query,
)
from basalt.runtime.transaction import TxState
from basalt.storage.base import Document, Persistence, ReadTransaction

T = TypeVar("T")

CRONS_TABLE: Final = "_cron_jobs"
BY_NEXT_RUN: Final = "by_next_run"
#: The leases of running actions: ``{"jobId", "owner", "until"}`` (ms), one per
#: ``inProgress`` job, written with the claim and deleted with the outcome.
LEASES_TABLE: Final = "_scheduled_leases"
BY_JOB: Final = "by_job"

#: The system tables of the scheduler and their indexes.
LAYOUT: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    JOBS_TABLE: {BY_STATE: BY_STATE_FIELDS},
    CRONS_TABLE: {BY_NEXT_RUN: ("nextRun",)},
    LEASES_TABLE: {BY_JOB: ("jobId",)},
}

#: How long finished jobs (success, failed, canceled) are kept: 7 days, as in Convex.
KEEP_FINISHED_MS: Final = 7 * 86_400_000.0

#: The error recorded for an action that was running when the server stopped.
INTERRUPTED: Final = "the server stopped while this action was running"


def _layout_missing(storage: Persistence) -> bool:
    catalog = storage.catalog
    for table, indexes in LAYOUT.items():
        info = catalog.table_by_name(table)
        if info is None:
            return True
        for name, fields in indexes.items():
            index = catalog.index(info.number, name)
            if index is None or index.fields != fields:
                return True
    return False


async def ensure_tables(storage: Persistence) -> None:
    """Create the scheduler's system tables and indexes where missing (an
    index is backfilled from the documents already there)."""
    if not _layout_missing(storage):
        return
    async with storage.write() as tx:
        for table, indexes in LAYOUT.items():
            info = await tx.ensure_table(table)
            for name, fields in indexes.items():
                index = tx.catalog.index(info.number, name)
                if index is not None and index.fields != fields:
                    await tx.drop_index(index)
                    index = None
                if index is None:
                    await tx.add_index(info, name, fields)
        await tx.commit()


async def read_system(runtime: Runtime, reader: Callable[[DatabaseReader], Awaitable[T]]) -> T:
    """Run ``reader(db)`` in a read transaction that may read system tables
    (no commit, unlike ``runtime.run_system``)."""

    async def body(tx: ReadTransaction) -> T:
        state = TxState(
            tx,
            schema=None,
            limits=runtime.limits,
            creation_times=runtime.creation_times,
            system=True,
        )
        return await reader(DatabaseReader(state))

    return await runtime.read(body)


def describe_error(exc: BaseException) -> str:
    """The ``error`` recorded for a failed job (as Convex words it)."""
    if isinstance(exc, ConvexError):
        return f"Uncaught ConvexError: {exc.message}"
    if isinstance(exc, BasaltError):
        return f"{exc.code}: {exc.message}"
    return f"Uncaught {type(exc).__name__}: {exc}"


async def due_page(
    runtime: Runtime, now_ms: float, cursor: str | None, size: int
) -> tuple[list[Document], str, bool]:
    """Pending jobs due at ``now_ms`` in time order, a page at a time:
    ``(jobs, next cursor, done)``."""

    async def read(db: DatabaseReader) -> dict[str, Any]:
        query = system_query(db, JOBS_TABLE).with_index(
            BY_STATE, lambda q: q.eq("state.kind", PENDING).lte("scheduledTime", now_ms)
        )
        return await query.paginate({"numItems": size, "cursor": cursor})

    page = await read_system(runtime, read)
    return page["page"], page["continueCursor"], page["isDone"]


async def next_due_ms(runtime: Runtime, after_ms: float) -> float | None:
    """The earliest ``scheduledTime`` of a pending job due after ``after_ms``,
    and the earliest cron run, whichever comes first."""

    async def read(db: DatabaseReader) -> float | None:
        job = await (
            system_query(db, JOBS_TABLE)
            .with_index(
                BY_STATE, lambda q: q.eq("state.kind", PENDING).gt("scheduledTime", after_ms)
            )
            .first()
        )
        cron = await system_query(db, CRONS_TABLE).with_index(BY_NEXT_RUN).first()
        times = [] if job is None else [float(job["scheduledTime"])]
        if cron is not None:
            times.append(float(cron["nextRun"]))
        return min(times, default=None)

    return await read_system(runtime, read)


async def jobs_in_state(runtime: Runtime, kind: str, limit: int = 1000) -> list[Document]:
    """Up to ``limit`` jobs in state ``kind``, oldest scheduled first."""

    async def read(db: DatabaseReader) -> list[Document]:
        query = system_query(db, JOBS_TABLE).with_index(
            BY_STATE, lambda q: q.eq("state.kind", kind)
        )
        return await query.take(limit)

    return await read_system(runtime, read)


async def move(
    runtime: Runtime,
    job_id: str,
    from_kinds: tuple[str, ...],
    state: dict[str, Any],
    completed_ms: float | None,
) -> bool:
    """Set a job's state if it is in one of ``from_kinds``; returns whether it moved."""

    async def write(db: DatabaseWriter) -> bool:
        job = await db.system.get(job_id)
        if job is None or job["state"]["kind"] not in from_kinds:
            return False
        fields: dict[str, Any] = {"state": state}
        if completed_ms is not None:
            fields["completedTime"] = float(completed_ms)
        await db.patch(job_id, fields)
        if job["state"]["kind"] == IN_PROGRESS:
            lease = await _lease_of(db, job_id)
            if lease is not None:
                await db.delete(lease["_id"])
        return True

    moved: bool = await runtime.run_system(write)
    return moved


async def _lease_of(db: DatabaseReader, job_id: str) -> Document | None:
    query = system_query(db, LEASES_TABLE).with_index(BY_JOB, lambda q: q.eq("jobId", job_id))
    lease: Document | None = await query.first()
    return lease


async def claim_action(runtime: Runtime, job_id: str, owner: str, until_ms: float) -> bool:
    """Mark a pending action job ``inProgress`` with a lease held by ``owner``
    until ``until_ms``; False if it is no longer pending."""

    async def write(db: DatabaseWriter) -> bool:
        job = await db.system.get(job_id)
        if job is None or job["state"]["kind"] != PENDING:
            return False
        await db.patch(job_id, {"state": {"kind": IN_PROGRESS}})
        await db.insert(LEASES_TABLE, {"jobId": job_id, "owner": owner, "until": float(until_ms)})
        return True

    claimed: bool = await runtime.run_system(write)
    return claimed


async def renew_lease(runtime: Runtime, job_id: str, owner: str, until_ms: float) -> bool:
    """Extend ``owner``'s lease on a running action; False if it holds none."""

    async def write(db: DatabaseWriter) -> bool:
        lease = await _lease_of(db, job_id)
        if lease is None or lease["owner"] != owner:
            return False
        await db.patch(lease["_id"], {"until": float(until_ms)})
        return True

    renewed: bool = await runtime.run_system(write)
    return renewed


async def fail(
    runtime: Runtime, job_id: str, from_kinds: tuple[str, ...], error: str, now_ms: float
) -> bool:
    """Mark a job failed with ``error`` if it is in one of ``from_kinds``."""
    return await move(runtime, job_id, from_kinds, {"kind": FAILED, "error": error}, now_ms)


async def fail_interrupted(
    runtime: Runtime, now_ms: float, running_here: frozenset[str] = frozenset()
) -> int:
    """Mark failed every ``inProgress`` job whose lease expired by ``now_ms``
    (or that has none), except those in ``running_here``: at most once means
    an action whose runner died is not run again, while the actions other
    live processes run (and renew) are left alone. Returns how many."""
    count = 0
    cursor: str | None = None
    while True:

        async def read(db: DatabaseReader, after: str | None = cursor) -> dict[str, Any]:
            query = system_query(db, JOBS_TABLE).with_index(
                BY_STATE, lambda q: q.eq("state.kind", IN_PROGRESS)
            )
            return await query.paginate({"numItems": 200, "cursor": after})

        page = await read_system(runtime, read)
        ids = [job["_id"] for job in page["page"] if job["_id"] not in running_here]

        async def write(db: DatabaseWriter, job_ids: list[str] = ids) -> int:
            marked = 0
            for job_id in job_ids:
                current = await db.system.get(job_id)
                if current is None or current["state"]["kind"] != IN_PROGRESS:
                    continue
                lease = await _lease_of(db, job_id)
                if lease is not None:
                    if float(lease["until"]) > now_ms:
                        continue
                    await db.delete(lease["_id"])
                await db.patch(
                    job_id,
                    {"state": {"kind": FAILED, "error": INTERRUPTED}, "completedTime": now_ms},
                )
                marked += 1
            return marked

        if ids:
            marked: int = await runtime.run_system(write)
            count += marked
        if page["isDone"]:
            return count
        cursor = page["continueCursor"]


async def prune_finished(runtime: Runtime, now_ms: float, keep_ms: float, page: int = 500) -> int:
    """Delete the jobs that finished more than ``keep_ms`` before ``now_ms``, a
    page per transaction; returns how many.

    It looks through the finished jobs due before the cutoff (``by_state`` is in
    ``scheduledTime`` order): a job finishes after it is due, except one
    canceled early, which goes once its due time is that old too.
    """
    cutoff = now_ms - keep_ms
    deleted = 0
    for kind in sorted(FINISHED):
        cursor: str | None = None
        done = False
        while not done:

            async def write(
                db: DatabaseWriter, kind: str = kind, after: str | None = cursor
            ) -> Any:
                query = system_query(db, JOBS_TABLE).with_index(
                    BY_STATE, lambda q: q.eq("state.kind", kind).lt("scheduledTime", cutoff)
                )
                result = await query.paginate({"numItems": page, "cursor": after})
                gone = 0
                for job in result["page"]:
                    if job.get("completedTime", job["scheduledTime"]) < cutoff:
                        await db.delete(job["_id"])
                        gone += 1
                return [gone, result["continueCursor"], result["isDone"]]

            gone, cursor, done = await runtime.run_system(write)
            deleted += gone
    return deleted
