"""Push, don't poll: the background loop sleeps until the next due time and is
woken by the commit that schedules a job, with the real clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from basalt.runtime import Clock, ManualClock
from basalt.scheduler import cron_jobs

from .conftest import Env, MakeEnv


async def until(predicate: Any, timeout: float = 5.0) -> float:
    """Seconds until ``await predicate()`` is true (checked every millisecond)."""
    start = time.perf_counter()
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.001)
    return time.perf_counter() - start


def idle_timer(env: Env) -> float | None:
    """How long the loop sleeps when nothing is due: with no timer at all on a
    SQLite file; on a shared engine (PostgreSQL), until its next look for
    expired action leases (every half lease)."""
    lease_ms = env.scheduler.lease_ms
    if lease_ms and not isinstance(env.clock, ManualClock):
        return lease_ms / 2000
    return None


async def idle(env: Env) -> None:
    """Wait until the loop sleeps with nothing due: only a wake-up (or, on a
    shared engine, the lease check) can end it."""
    timer = idle_timer(env)
    assert timer is None or timer > 5, "the lease check would hide a missed wake-up"

    async def sleeping_idle() -> bool:
        stats = env.scheduler.stats
        return stats.sleeping and stats.last_sleep == timer

    await until(sleeping_idle)


async def test_a_job_due_now_runs_right_after_its_commit(make_env: MakeEnv) -> None:
    env = await make_env(clock=Clock())
    await idle(env)
    wakeups = env.scheduler.stats.commit_wakeups
    latencies = []
    for i in range(5):
        job_id = await env.runtime.mutation("tasks:schedule", {"delay": 0, "name": f"now{i}"})

        async def done(job_id: str = job_id) -> bool:
            return (await env.job(job_id))["state"]["kind"] == "success"

        latencies.append(await until(done))
        await idle(env)
    # The loop had no timer running: the commit woke it.
    assert env.scheduler.stats.commit_wakeups > wakeups
    assert max(latencies) < 0.25, latencies
    assert [await env.count(f"now{i}") for i in range(5)] == [1] * 5


async def test_the_loop_sleeps_until_the_next_due_time(make_env: MakeEnv) -> None:
    env = await make_env(clock=Clock())
    await idle(env)
    started = time.perf_counter()
    job_id = await env.runtime.mutation("tasks:schedule", {"delay": 0.3, "name": "soon"})

    async def sleeping_with_timer() -> bool:
        stats = env.scheduler.stats
        return stats.sleeping and stats.last_sleep is not None and stats.last_sleep <= 0.3

    await until(sleeping_with_timer)
    assert env.scheduler.stats.last_sleep is not None
    assert 0 < env.scheduler.stats.last_sleep <= 0.3

    async def done() -> bool:
        return (await env.job(job_id))["state"]["kind"] == "success"

    await until(done)
    elapsed = time.perf_counter() - started
    assert 0.3 <= elapsed < 1.0, elapsed
    job = await env.job(job_id)
    assert job["completedTime"] >= job["scheduledTime"]


async def test_an_action_job_scheduled_from_an_action_runs_by_push(make_env: MakeEnv) -> None:
    env = await make_env(clock=Clock())
    await idle(env)
    first, _ = await env.runtime.action("tasks:schedule_from_action", {"name": "pushed"})

    async def done() -> bool:
        return (await env.job(first))["state"]["kind"] == "success"

    assert await until(done) < 0.25


async def test_a_manual_clock_loop_runs_due_work_on_wake(make_env: MakeEnv) -> None:
    crons = cron_jobs()
    crons.interval("tick", fn="tasks:bump", args={"name": "tick"}, seconds=10)
    env = await make_env(background=True, crons=crons)
    await idle(env)  # a ManualClock does not move by itself: no timer
    env.manual.advance(10)
    env.scheduler.wake()

    async def ticked() -> bool:
        return await env.count("tick") == 1

    await until(ticked)
