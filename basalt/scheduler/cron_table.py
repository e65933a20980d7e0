"""The ``_cron_jobs`` system table: the deployed crons and their next runs.

One document per cron declared in the app's ``crons.py``::

    {"name": "clear presence",           # the cron's unique name
     "function": "presence:clear",       # the function's path
     "args": [{}],                       # a one-element list holding the arguments
     "schedule": {"type": "interval", "seconds": 300.0},   # or hourly, daily,
                                         # weekly, monthly, cron (see crons.py)
     "nextRun": 1718000300000.0,         # ms since the epoch
     "lastRun": 1718000000000.0,         # the time of the latest run, once it ran
     "lastJobId": "..."}                 # its job in _scheduled_functions

:func:`sync_crons` brings the table in line with ``crons.py`` when the
scheduler starts and when the app is reloaded: new crons are added, changed
ones updated (a changed schedule starts over from now), removed ones deleted,
so they stop. :func:`fire_due_crons` turns every due cron into a job of
``_scheduled_functions`` (due at the cron's time) and advances ``nextRun``, in
one transaction. The runner then executes that job like any other, so each
run is recorded there — state, error, completion time — and a cron mutation
runs exactly once per run.
"""

from __future__ import annotations

from typing import Any

from basalt.runtime import Runtime
from basalt.runtime.db import DatabaseReader, DatabaseWriter
from basalt.runtime.query import Query
from basalt.runtime.scheduling import SchedulingError, insert_job, system_query
from basalt.storage.base import Document

from .crons import CronJobs, first_run_ms, next_run_ms
from .jobs import BY_NEXT_RUN, CRONS_TABLE, read_system

_SPEC_FIELDS = ("function", "args", "schedule")


def declared_crons(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """The crons of the runtime's app as ``_cron_jobs`` specs, by name."""
    crons = runtime.app.crons
    if crons is None:
        return {}
    if not isinstance(crons, CronJobs):
        raise SchedulingError(
            "crons.py must define `crons = cron_jobs()` (from basalt import cron_jobs), "
            f"got {type(crons).__name__}"
        )
    crons.check_functions(lambda fn: runtime.resolve(fn, admin=True))  # done at load too
    return {
        job.name: {
            "function": runtime.resolve(job.fn, admin=True).path,
            "args": [job.args],
            "schedule": job.schedule,
        }
        for job in crons
    }


def _changes(
    declared: dict[str, dict[str, Any]], stored: list[Document]
) -> tuple[list[str], list[tuple[Document, dict[str, Any]]], list[Document]]:
    """``(added names, (stored, declared) pairs that changed, removed documents)``."""
    by_name = {doc["name"]: doc for doc in stored}
    added, changed = [], []
    for name, spec in declared.items():
        old = by_name.pop(name, None)
        if old is None:
            added.append(name)
        elif any(old.get(field) != spec[field] for field in _SPEC_FIELDS):
            changed.append((old, spec))
    return added, changed, list(by_name.values())


async def sync_crons(runtime: Runtime, now_ms: float) -> bool:
    """Bring ``_cron_jobs`` in line with the app's ``crons.py``; returns whether
    anything changed."""
    declared = declared_crons(runtime)

    async def read(db: DatabaseReader) -> list[Document]:
        return await system_query(db, CRONS_TABLE).collect()

    added, changed, removed = _changes(declared, await read_system(runtime, read))
    if not (added or changed or removed):
        return False

    async def write(db: DatabaseWriter) -> None:
        added, changed, removed = _changes(declared, await read(db))
        for name in added:
            spec = declared[name]
            first = first_run_ms(spec["schedule"], now_ms)
            await db.insert(CRONS_TABLE, {"name": name, **spec, "nextRun": first})
        for old, spec in changed:
            fields = dict(spec)
            if old.get("schedule") != spec["schedule"]:
                fields["nextRun"] = first_run_ms(spec["schedule"], now_ms)
            await db.patch(old["_id"], fields)
        for old in removed:
            await db.delete(old["_id"])

    await runtime.run_system(write)
    return True


async def fire_due_crons(runtime: Runtime, now_ms: float) -> int:
    """Schedule a run of every cron due at ``now_ms``; returns how many."""

    def due(db: DatabaseReader) -> Query:
        return system_query(db, CRONS_TABLE).with_index(
            BY_NEXT_RUN, lambda q: q.lte("nextRun", now_ms)
        )

    async def peek(db: DatabaseReader) -> Document | None:
        return await due(db).first()

    if await read_system(runtime, peek) is None:
        return 0

    async def write(db: DatabaseWriter) -> int:
        crons = await due(db).collect()
        for cron in crons:
            at = float(cron["nextRun"])
            args = cron["args"][0] if cron["args"] else {}
            job_id = await insert_job(db, cron["function"], args, at)
            await db.patch(
                cron["_id"],
                {
                    "nextRun": next_run_ms(cron["schedule"], at, now_ms),
                    "lastRun": at,
                    "lastJobId": job_id,
                },
            )
        return len(crons)

    fired: int = await runtime.run_system(write)
    return fired
