"""``ctx.scheduler`` in mutations and actions: run_after, run_at, cancel, the
job documents, and scheduling as part of the mutation's transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from basalt.errors import ConvexError
from basalt.runtime.scheduling import SchedulingError
from basalt.runtime.services import ServiceUnavailable
from basalt.runtime.transaction import TxState
from basalt.scheduler import Scheduler

from . import tasks
from .conftest import START_MS, MakeEnv


async def test_run_after_runs_when_due_and_not_before(make_env: MakeEnv) -> None:
    env = await make_env()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 30, "name": "later"})
    job = await env.job(job_id)
    assert job["name"] == "tasks:bump"
    assert job["args"] == [{"name": "later"}]
    assert job["scheduledTime"] == START_MS + 30_000
    assert job["state"] == {"kind": "pending"}
    assert "completedTime" not in job

    env.manual.advance(29.9)
    assert await env.scheduler.run_due() == 0
    assert await env.count("later") == 0

    env.manual.advance(0.1)
    assert await env.scheduler.run_due() == 1
    assert await env.count("later") == 1
    job = await env.job(job_id)
    assert job["state"] == {"kind": "success"}
    assert job["completedTime"] == START_MS + 30_000
    # Nothing runs twice.
    env.manual.advance(3600)
    assert await env.scheduler.run_due() == 0
    assert await env.count("later") == 1


async def test_run_at_takes_seconds_or_datetimes(make_env: MakeEnv) -> None:
    env = await make_env()
    at = START_MS / 1000 + 90
    job_id = await env.runtime.mutation("tasks:schedule_at", {"when": at, "name": "at"})
    assert (await env.job(job_id))["scheduledTime"] == START_MS + 90_000

    async def schedule(ctx: Any, when: Any) -> str:
        job: str = await ctx.scheduler.run_at(when, "tasks:bump", {"name": "dt"})
        return job

    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    aware = start.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=5)
    naive_utc = start.replace(tzinfo=None) + timedelta(minutes=10)
    ids = [
        await env.runtime.run_handler(lambda ctx, w=when: schedule(ctx, w))
        for when in (aware, naive_utc)
    ]
    times = [(await env.job(i))["scheduledTime"] for i in ids]
    assert times == [START_MS + 300_000, START_MS + 600_000]

    env.manual.advance(600)
    assert await env.scheduler.run_due() == 3
    assert await env.count("at") == 1
    assert await env.count("dt") == 2


async def test_a_time_in_the_past_is_due_now(make_env: MakeEnv) -> None:
    env = await make_env()
    await env.runtime.mutation("tasks:schedule_at", {"when": 1_000_000.0, "name": "past"})
    assert await env.scheduler.run_due() == 1
    assert await env.count("past") == 1


async def test_cancel_a_pending_job(make_env: MakeEnv) -> None:
    env = await make_env()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 10, "name": "never"})
    env.manual.advance(5)
    await env.runtime.mutation("tasks:cancel", {"job": job_id})
    job = await env.job(job_id)
    assert job["state"] == {"kind": "canceled"}
    assert job["completedTime"] == START_MS + 5_000
    env.manual.advance(60)
    assert await env.scheduler.run_due() == 0
    assert await env.count("never") == 0
    assert tasks.ENTERED.get("never") is None
    # Canceling again, or canceling a finished job, changes nothing.
    await env.runtime.mutation("tasks:cancel", {"job": job_id})
    assert (await env.job(job_id))["completedTime"] == START_MS + 5_000


async def test_cancel_of_a_finished_job_keeps_its_record(make_env: MakeEnv) -> None:
    env = await make_env()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": "done"})
    await env.scheduler.run_due()
    await env.runtime.mutation("tasks:cancel", {"job": job_id})
    assert (await env.job(job_id))["state"] == {"kind": "success"}


async def test_scheduling_is_rolled_back_with_a_failing_mutation(make_env: MakeEnv) -> None:
    env = await make_env()
    with pytest.raises(ConvexError):
        await env.runtime.mutation("tasks:schedule_then_fail", {"name": "ghost"})
    assert await env.jobs() == []
    env.manual.advance(60)
    assert await env.scheduler.run_due() == 0
    assert await env.count("ghost") == 0


async def test_a_cancel_in_a_failing_mutation_is_rolled_back(make_env: MakeEnv) -> None:
    env = await make_env()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 1, "name": "kept"})

    async def cancel_then_fail(ctx: Any) -> None:
        await ctx.scheduler.cancel(job_id)
        raise ValueError("roll it back")

    with pytest.raises(ValueError):
        await env.runtime.run_handler(cancel_then_fail)
    env.manual.advance(1)
    assert await env.scheduler.run_due() == 1
    assert await env.count("kept") == 1


async def test_jobs_are_readable_from_queries_in_time_order(make_env: MakeEnv) -> None:
    env = await make_env()
    for delay, name in ((20, "b"), (10, "a")):
        await env.runtime.mutation("tasks:schedule", {"delay": delay, "name": name})
    docs = await env.jobs()
    assert [d["args"][0]["name"] for d in docs] == ["b", "a"]  # by creation time
    assert {d["state"]["kind"] for d in docs} == {"pending"}
    assert all(
        set(d) == {"_id", "_creationTime", "name", "args", "scheduledTime", "state"} for d in docs
    )

    async def by_time(ctx: Any) -> list[str]:
        docs = (
            await ctx.db.system.query("_scheduled_functions")
            .with_index("by_state", lambda q: q.eq("state.kind", "pending"))
            .collect()
        )
        return [d["args"][0]["name"] for d in docs]

    assert await env.runtime.run_handler(by_time) == ["a", "b"]


async def test_scheduling_from_an_action_commits_each_call(make_env: MakeEnv) -> None:
    env = await make_env()
    first, second = await env.runtime.action("tasks:schedule_from_action", {"name": "from-action"})
    assert (await env.job(first))["state"] == {"kind": "pending"}
    assert (await env.job(second))["state"]["kind"] == "canceled"
    assert await env.scheduler.run_due() == 1
    assert await env.count("from-action") == 1
    env.manual.advance(120)
    assert await env.scheduler.run_due() == 0
    assert await env.count("from-action") == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.run_after(-1, "tasks:bump", {"name": "x"}), "must be ≥ 0"),
        (lambda s: s.run_after("soon", "tasks:bump", {"name": "x"}), "number of seconds"),
        (lambda s: s.run_after(float("nan"), "tasks:bump", {"name": "x"}), "must be ≥ 0"),
        (lambda s: s.run_at(START_MS, "tasks:bump", {"name": "x"}), "not milliseconds"),
        (lambda s: s.run_at("tomorrow", "tasks:bump", {"name": "x"}), "datetime or seconds"),
        (lambda s: s.run_after(0, "tasks:count", {"name": "x"}), "only mutations and actions"),
        (lambda s: s.run_after(0, "tasks:nope"), "Could not find function"),
        (lambda s: s.run_after(0, 42), "must be a function or its path"),
        (lambda s: s.run_after(0, "tasks:bump", ["x"]), "must be a dict"),
        (lambda s: s.run_after(0, "tasks:bump", {"name": {1, 2}}), "set"),
        (lambda s: s.cancel("not-an-id"), "not the id of a scheduled function"),
    ],
)
async def test_bad_calls_fail_at_scheduling_time(
    make_env: MakeEnv, call: Any, message: str
) -> None:
    env = await make_env()

    async def handler(ctx: Any) -> object:
        return await call(ctx.scheduler)

    with pytest.raises(Exception, match=message):
        await env.runtime.run_handler(handler)
    assert await env.jobs() == []


async def test_cancel_refuses_ids_of_other_tables(make_env: MakeEnv) -> None:
    env = await make_env()

    async def handler(ctx: Any) -> None:
        doc = await ctx.db.insert("events", {"name": "x"})
        await ctx.scheduler.cancel(doc)

    with pytest.raises(SchedulingError, match="not the id of a scheduled function"):
        await env.runtime.run_handler(handler)


async def test_a_scheduler_that_is_not_started_says_so(make_env: MakeEnv) -> None:
    env = await make_env()
    idle = Scheduler()
    with pytest.raises(ServiceUnavailable, match="not started"):
        idle.for_mutation(TxState.__new__(TxState))
    with pytest.raises(RuntimeError, match="already started"):
        await env.scheduler.start(env.runtime)
