"""Two schedulers on one PostgreSQL schema (as in two server processes):
scheduled mutations and cron runs happen once, and a running action is failed
only when its runner's lease expired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from basalt.runtime import App, ManualClock, Runtime
from basalt.runtime.services import Services
from basalt.scheduler import CronJobs, Scheduler, cron_jobs
from basalt.testing.engines import drop_test_databases, engine_for_tests

from ..scheduler import tasks

#: 2024-06-10 12:00:00 UTC.
START_MS = 1_718_020_800_000.0

Node = tuple[Runtime, Scheduler]
MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[MakeNode]:
    """``make_node(clock)``: one more runtime + scheduler (no loop) on the
    test's PostgreSQL schema, like one more server process."""
    tasks.GATES.clear()
    tasks.ENTERED.clear()
    started: list[Node] = []

    async def make(clock: ManualClock, crons: CronJobs | None = None, **options: Any) -> Node:
        app = App.from_modules({"tasks": tasks})
        app.crons = crons
        scheduler = Scheduler(background=False, **options)
        storage = engine_for_tests(tmp_path, "db", backend="postgres")
        runtime = Runtime(app, storage, clock=clock, services=Services(scheduler=scheduler))
        await runtime.start()
        await scheduler.start(runtime)
        started.append((runtime, scheduler))
        return runtime, scheduler

    try:
        yield make
    finally:
        for runtime, scheduler in reversed(started):
            if runtime._started:
                await scheduler.stop()
                await runtime.stop()
        await drop_test_databases(tmp_path)


async def test_two_schedulers_run_each_due_mutation_once(make_node: MakeNode) -> None:
    clock = ManualClock(START_MS)
    (a, sa), (b, sb) = await make_node(clock), await make_node(clock)
    n = 60

    async def schedule(ctx: Any) -> None:
        for i in range(n):
            await ctx.scheduler.run_after(0, "tasks:bump", {"name": f"job{i}"})

    await a.run_handler(schedule)
    ran = await asyncio.gather(sa.run_due(), sb.run_due())
    assert sum(ran) >= n
    for i in range(n):
        assert await b.query("tasks:count", {"name": f"job{i}"}) == 1, f"job{i}"
    assert sa.stats.succeeded + sb.stats.succeeded == n
    print(
        f"\n{n} due mutations, two schedulers: ran {sa.stats.succeeded} + {sb.stats.succeeded},"
        f" skipped {sa.stats.skipped + sb.stats.skipped},"
        f" conflict retries {a.conflict_retries + b.conflict_retries}"
    )


async def test_two_schedulers_fire_a_cron_once_per_due_time(make_node: MakeNode) -> None:
    crons = cron_jobs()
    crons.interval("tick", fn="tasks:bump", args={"name": "tick"}, minutes=1)
    clock = ManualClock(START_MS)
    (a, sa), (_, sb) = await make_node(clock, crons), await make_node(clock, crons)
    steps = 10
    for _ in range(steps):
        clock.advance(60_000.0)
        await asyncio.gather(sa.run_due(), sb.run_due())
    assert await a.query("tasks:count", {"name": "tick"}) == steps


async def test_a_live_lease_survives_another_start_and_an_expired_one_fails(
    make_node: MakeNode,
) -> None:
    clock = ManualClock(START_MS)
    a, sa = await make_node(clock, lease_ms=60_000.0)
    tasks.GATES["g"] = asyncio.Event()

    async def schedule(ctx: Any) -> str:
        job: str = await ctx.scheduler.run_after(0, "tasks:blocked_act", {"name": "x", "gate": "g"})
        return job

    job_id = await a.run_handler(schedule)
    run = asyncio.create_task(sa.run_due())
    for _ in range(500):
        if (await a.query("tasks:job", {"id": job_id}))["state"]["kind"] == "inProgress":
            break
        await asyncio.sleep(0.01)
    # Another process starts while the action runs: the action is left alone.
    b, _ = await make_node(clock, lease_ms=60_000.0)
    assert (await b.query("tasks:job", {"id": job_id}))["state"] == {"kind": "inProgress"}
    # The first process dies (no shutdown code); once its lease expired, the
    # next start fails the action, and it never runs again.
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await a.stop()
    clock.advance(60_001.0)
    c, sc = await make_node(clock, lease_ms=60_000.0)
    job = await c.query("tasks:job", {"id": job_id})
    assert job["state"] == {
        "kind": "failed",
        "error": "the server stopped while this action was running",
    }
    tasks.GATES["g"].set()
    assert await sc.run_due() == 0
    assert tasks.ENTERED["x"] == 1
