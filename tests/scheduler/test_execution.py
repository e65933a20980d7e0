"""Running due jobs: exactly once for mutations (across a crash too), at most
once for actions, failures recorded, overdue jobs run after a restart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from basalt.runtime.scheduling import insert_job
from basalt.scheduler.jobs import KEEP_FINISHED_MS, prune_finished
from basalt.scheduler.runner import DEFAULT_LEASE_MS
from basalt.testing.engines import selected_backend
from tests.gates import Gate

from . import tasks
from .conftest import START_MS, MakeEnv


async def wait_for(predicate: Any, what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.005)


async def test_a_mutation_job_commits_with_its_success_record(make_env: MakeEnv) -> None:
    env = await make_env()
    ids = [
        await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": f"m{i}"})
        for i in range(5)
    ]
    assert await env.scheduler.run_due() == 5
    for i, job_id in enumerate(ids):
        assert (await env.job(job_id))["state"] == {"kind": "success"}
        assert await env.count(f"m{i}") == 1
    assert env.scheduler.stats.succeeded == 5


async def test_a_job_run_from_a_stale_read_is_not_run_again(make_env: MakeEnv) -> None:
    """White-box: the executor is handed the job as it was read before it ran
    (as a second runner racing for it would be). The job's transaction sees it
    is no longer pending and rolls back: the effects are not applied twice."""
    env = await make_env()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": "once"})
    stale = await env.job(job_id)
    await env.scheduler.run_due()
    done = await env.job(job_id)
    assert await env.count("once") == 1
    executor = env.scheduler._executor
    assert executor is not None
    await executor._run_mutation_job(stale)
    assert await env.count("once") == 1
    assert await env.job(job_id) == done
    assert env.scheduler.stats.skipped == 1
    assert env.scheduler.stats.succeeded == 1


async def test_a_cancel_after_the_pre_check_rolls_the_run_back(make_env: MakeEnv) -> None:
    """White-box: a cancel that commits between the runner's pre-check and the
    mutation's transaction. The handler runs, but the transaction's own check
    sees the job canceled and rolls everything back: no effects, no success."""
    env = await make_env()

    async def fresh_job(db: Any) -> str:
        return await insert_job(db, "tasks:bump", {"name": "raced"}, START_MS)

    job_id = await env.runtime.run_system(fresh_job)
    job = await env.job(job_id)
    original = env.runtime.run_mutation_with

    async def cancel_first(*args: Any, **kw: Any) -> Any:
        await env.runtime.mutation("tasks:cancel", {"job": job_id})
        return await original(*args, **kw)

    executor = env.scheduler._executor
    assert executor is not None
    env.runtime.run_mutation_with = cancel_first  # type: ignore[method-assign]
    try:
        await executor._run_mutation_job(job)
    finally:
        env.runtime.run_mutation_with = original  # type: ignore[method-assign]
    assert tasks.ENTERED["raced"] == 1  # the handler ran ...
    assert await env.count("raced") == 0  # ... but nothing of it committed
    assert (await env.job(job_id))["state"] == {"kind": "canceled"}
    assert env.scheduler.stats.skipped == 1
    assert env.scheduler.stats.succeeded == 0


@pytest.mark.parametrize("in_flight", [1, 32])
async def test_a_job_canceled_by_an_earlier_job_of_the_same_pass_leaves_no_trace(
    make_env: MakeEnv, in_flight: int
) -> None:
    env = await make_env(mutations_in_flight=in_flight)
    victim = await env.runtime.mutation("tasks:schedule", {"delay": 1, "name": "victim"})

    async def schedule_canceller(ctx: Any) -> None:
        await ctx.scheduler.run_after(0.5, "tasks:cancel", {"job": victim})

    await env.runtime.run_handler(schedule_canceller)
    env.manual.advance(2)
    await env.scheduler.run_due()
    assert (await env.job(victim))["state"] == {"kind": "canceled"}
    assert await env.count("victim") == 0
    assert env.scheduler.stats.skipped == 1
    if in_flight == 1:
        # The cancel was committed before the victim's turn: it never started.
        assert "victim" not in tasks.ENTERED


async def test_a_failing_mutation_job_is_rolled_back_and_marked_failed(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    env = await make_env()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:fail", {"message": "boom"})
        return job

    job_id = await env.runtime.run_handler(schedule)
    with caplog.at_level(logging.WARNING, logger="basalt.scheduler"):
        assert await env.scheduler.run_due() == 1
    job = await env.job(job_id)
    assert job["state"] == {"kind": "failed", "error": "Uncaught ValueError: boom"}
    # No client is told: the server's output (the dev console) is.
    [record] = [r for r in caplog.records if job_id in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "tasks:fail" in record.getMessage()
    assert "Uncaught ValueError: boom" in record.getMessage()
    assert job["completedTime"] == START_MS
    assert await env.count("fail") == 0  # its insert was rolled back
    env.manual.advance(60)
    assert await env.scheduler.run_due() == 0  # failed jobs are not retried


@pytest.mark.parametrize("dev", [False, True])
async def test_a_failed_job_is_logged_in_one_line_when_its_traceback_tells_nothing(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture, dev: bool
) -> None:
    """A job refused before it ran (its arguments no longer match) is one line,
    without Basalt's own traceback; on a development server every failed job
    is one line, with the app's line; in production an error the job raised
    keeps its traceback."""
    env = await make_env(dev=dev)

    async def schedule(ctx: Any) -> list[str]:
        return [
            await ctx.scheduler.run_after(0, "tasks:typed", {"days": 3.0}),
            await ctx.scheduler.run_after(0, "tasks:typed_act", {"days": 3.0}),
            await ctx.scheduler.run_after(0, "tasks:fail", {"message": "boom"}),
        ]

    typed, typed_act, failing = await env.runtime.run_handler(schedule)
    with caplog.at_level(logging.WARNING, logger="basalt.scheduler"):
        assert await env.scheduler.run_due() == 3
    records = {
        job: [r for r in caplog.records if job in r.getMessage()]
        for job in (typed, typed_act, failing)
    }
    for job, kind, path in (
        (typed, "mutation", "tasks:typed"),
        (typed_act, "action", "tasks:typed_act"),
    ):
        [record] = records[job]
        assert record.getMessage().startswith(
            f"scheduled {kind} {path} ({job}) failed: ArgumentValidationError"
        )
        assert record.exc_info is None
        assert (await env.job(job))["state"]["kind"] == "failed"
    [record] = records[failing]
    raised_at = tasks.fail.handler.__code__.co_firstlineno + 3  # the `raise` line
    at = f"(at fail, {tasks.__file__}:{raised_at})"
    assert record.getMessage().endswith(f"Uncaught ValueError: boom {at}"), record.getMessage()
    assert (record.exc_info is None) == dev


async def test_a_job_whose_function_is_gone_fails_with_the_reason(make_env: MakeEnv) -> None:
    env = await make_env()

    async def write(db: Any) -> str:
        return await insert_job(db, "tasks:removed", {}, START_MS)

    job_id = await env.runtime.run_system(write)
    assert await env.scheduler.run_due() == 1
    state = (await env.job(job_id))["state"]
    assert state["kind"] == "failed"
    assert "Could not find function for 'tasks:removed'" in state["error"]


async def test_an_action_job_runs_once_and_records_success(make_env: MakeEnv) -> None:
    env = await make_env()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:act", {"name": "a"})
        return job

    job_id = await env.runtime.run_handler(schedule)
    assert await env.scheduler.run_due() == 1
    job = await env.job(job_id)
    assert job["state"] == {"kind": "success"}
    assert await env.count("a") == 1
    assert tasks.ENTERED["a"] == 2  # the action, and the mutation it ran
    assert await env.scheduler.run_due() == 0


async def test_a_failing_action_records_the_error(make_env: MakeEnv) -> None:
    env = await make_env()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:act_fails")
        return job

    job_id = await env.runtime.run_handler(schedule)
    await env.scheduler.run_due()
    job = await env.job(job_id)
    assert job["state"] == {"kind": "failed", "error": "Uncaught RuntimeError: the action broke"}
    assert "completedTime" in job


async def test_actions_run_concurrently_up_to_the_limit(make_env: MakeEnv) -> None:
    env = await make_env(max_concurrent_actions=3)
    gate = tasks.GATES["g"] = Gate()

    async def schedule(ctx: Any) -> None:
        for i in range(5):
            await ctx.scheduler.run_after(0, "tasks:blocked_act", {"name": f"p{i}", "gate": "g"})

    await env.runtime.run_handler(schedule)
    run = asyncio.create_task(env.scheduler.run_due())

    async def three_running() -> bool:
        return len(tasks.ENTERED) == 3

    await wait_for(three_running, "three actions to start")
    states = [d["state"]["kind"] for d in await env.jobs()]
    assert sorted(states) == ["inProgress"] * 3 + ["pending"] * 2
    gate.set()
    assert await run == 5
    assert [d["state"]["kind"] for d in await env.jobs()] == ["success"] * 5


async def test_canceling_a_running_action_cancels_what_it_schedules(make_env: MakeEnv) -> None:
    env = await make_env()
    gate = tasks.GATES["g"] = Gate()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(
            0, "tasks:cancel_self_then_schedule", {"name": "child", "gate": "g"}
        )
        return job

    job_id = await env.runtime.run_handler(schedule)
    run = asyncio.create_task(env.scheduler.run_due())

    async def running() -> bool:
        return (await env.job(job_id))["state"]["kind"] == "inProgress"

    await wait_for(running, "the action to start")
    await env.runtime.mutation("tasks:cancel", {"job": job_id})
    gate.set()
    await run
    jobs = {d["name"]: d for d in await env.jobs()}
    assert jobs["tasks:cancel_self_then_schedule"]["state"] == {"kind": "canceled"}
    assert jobs["tasks:bump"]["state"] == {"kind": "canceled"}
    assert await env.count("child") == 0


async def test_a_mutation_interrupted_by_a_crash_runs_once_after_restart(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    tasks.GATES["g"] = Gate()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(
            0, "tasks:blocked_bump", {"name": "crash", "gate": "g"}
        )
        return job

    job_id = await env.runtime.run_handler(schedule)
    run = asyncio.create_task(env.scheduler.run_due())

    async def entered() -> bool:
        return tasks.ENTERED.get("crash") == 1

    await wait_for(entered, "the mutation to start")
    run.cancel()  # the process dies mid-mutation
    await asyncio.gather(run, return_exceptions=True)
    await env.crash()

    again = await make_env(clock=env.clock)
    assert (await again.job(job_id))["state"] == {"kind": "pending"}
    assert await again.count("crash") == 0
    tasks.GATES["g"].set()
    assert await again.scheduler.run_due() == 1
    assert await again.count("crash") == 1
    assert (await again.job(job_id))["state"] == {"kind": "success"}
    assert await again.scheduler.run_due() == 0
    assert await again.count("crash") == 1


async def test_an_action_running_at_a_crash_is_failed_on_restart(make_env: MakeEnv) -> None:
    env = await make_env()
    tasks.GATES["g"] = Gate()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:blocked_act", {"name": "x", "gate": "g"})
        return job

    job_id = await env.runtime.run_handler(schedule)
    run = asyncio.create_task(env.scheduler.run_due())

    async def in_progress() -> bool:
        return (await env.job(job_id))["state"]["kind"] == "inProgress"

    await wait_for(in_progress, "the action to start")
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await env.crash()
    # A SQLite file has one process, so its actions hold no lease; on a shared
    # engine (PostgreSQL) the restart waits until the dead runner's lease ran out.
    lease_ms = env.scheduler.lease_ms or 0.0
    assert lease_ms == (0.0 if selected_backend() == "sqlite" else DEFAULT_LEASE_MS)
    env.manual.advance(lease_ms / 1000)

    again = await make_env(clock=env.clock)
    job = await again.job(job_id)
    assert job["state"] == {
        "kind": "failed",
        "error": "the server stopped while this action was running",
    }
    assert job["completedTime"] == START_MS + lease_ms
    tasks.GATES["g"].set()
    assert await again.scheduler.run_due() == 0
    assert tasks.ENTERED["x"] == 1  # at most once: never started again
    assert await again.count("x") == 0


async def test_stopping_marks_running_actions_failed(make_env: MakeEnv) -> None:
    env = await make_env(background=True)
    tasks.GATES["g"] = Gate()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:blocked_act", {"name": "y", "gate": "g"})
        return job

    blocked = await env.runtime.run_handler(schedule)

    async def in_progress() -> bool:
        return (await env.job(blocked))["state"]["kind"] == "inProgress"

    await wait_for(in_progress, "the action to start")
    await env.scheduler.stop()
    state = (await env.job(blocked))["state"]
    assert state == {"kind": "failed", "error": "the server stopped while this action was running"}


async def test_overdue_jobs_run_promptly_after_a_restart(make_env: MakeEnv) -> None:
    env = await make_env()
    for i in range(3):
        await env.runtime.mutation("tasks:schedule", {"delay": 10 + i, "name": f"o{i}"})
    await env.scheduler.stop()
    await env.runtime.stop()

    env.manual.advance(3600)  # the server was down for an hour
    again = await make_env(clock=env.clock)
    assert await again.scheduler.run_due() == 3
    assert [await again.count(f"o{i}") for i in range(3)] == [1, 1, 1]
    jobs = await again.jobs()
    assert all(j["completedTime"] == START_MS + 3_600_000 for j in jobs)


async def test_finished_jobs_are_kept_seven_days_then_deleted(make_env: MakeEnv) -> None:
    env = await make_env()
    day = 86_400.0
    done = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": "done"})

    async def schedule_failing(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:fail", {"message": "boom"})
        return job

    failed = await env.runtime.run_handler(schedule_failing)
    canceled = await env.runtime.mutation("tasks:schedule", {"delay": 3 * day, "name": "c"})
    await env.runtime.mutation("tasks:cancel", {"job": canceled})
    later = await env.runtime.mutation("tasks:schedule", {"delay": 30 * day, "name": "later"})
    assert await env.scheduler.run_due() == 2
    env.manual.advance(6 * day)
    recent = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": "recent"})
    assert await env.scheduler.run_due() == 1
    assert env.scheduler.stats.pruned == 0
    env.manual.advance(1 * day + 60)  # the first two finished 7 days and a minute ago
    await env.scheduler.run_due()
    left = {job["_id"]: job["state"]["kind"] for job in await env.jobs()}
    assert done not in left and failed not in left
    # Canceled at once but due in 3 days: it goes 7 days after its due time.
    assert left == {canceled: "canceled", later: "pending", recent: "success"}
    assert env.scheduler.stats.pruned == 2
    env.manual.advance(3 * day)  # 7 days after the canceled job was due
    await env.scheduler.run_due()
    assert {job["_id"] for job in await env.jobs()} == {later, recent}
    env.manual.advance(3 * day)  # 7 days after the recent one finished
    await env.scheduler.run_due()
    assert {job["_id"] for job in await env.jobs()} == {later}


async def test_finished_jobs_can_be_kept_for_ever(make_env: MakeEnv) -> None:
    env = await make_env(keep_finished_ms=None)
    job = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": "done"})
    assert await env.scheduler.run_due() == 1
    env.manual.advance(365 * 86_400.0)
    await env.scheduler.run_due()
    assert [j["_id"] for j in await env.jobs()] == [job]


async def test_pruning_goes_through_finished_jobs_page_by_page(make_env: MakeEnv) -> None:
    env = await make_env(keep_finished_ms=None)
    for i in range(5):
        await env.runtime.mutation("tasks:schedule", {"delay": i, "name": f"j{i}"})
    env.manual.advance(10)
    assert await env.scheduler.run_due() == 5
    # One of them finished late: it is due long enough ago, but not finished long enough ago.
    late = (await env.jobs())[4]["_id"]
    now = START_MS + 10_000 + KEEP_FINISHED_MS + 1
    await env.runtime.run_system(lambda db: db.patch(late, {"completedTime": now}))
    assert await prune_finished(env.runtime, now, KEEP_FINISHED_MS, page=2) == 4
    assert [job["_id"] for job in await env.jobs()] == [late]
