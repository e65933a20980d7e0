"""The app the scheduler tests run (module ``tasks``)."""

from __future__ import annotations

from typing import Any

from basalt import ConvexError, action, internal_action, internal_mutation, mutation, query, v
from tests.gates import Gate

#: Gates that blocking functions wait on, by key (set by the tests; actions
#: wait on the action loop, so they are not asyncio.Events).
GATES: dict[str, Gate] = {}
#: How often each handler was entered, by name (a side effect outside any transaction).
ENTERED: dict[str, int] = {}


def _enter(name: str) -> None:
    ENTERED[name] = ENTERED.get(name, 0) + 1


@internal_mutation
async def bump(ctx: Any, name: str) -> None:
    """Record one run under ``name`` (the effect exactly-once is checked on)."""
    _enter(name)
    await ctx.db.insert("events", {"name": name})


@mutation
async def schedule(ctx: Any, delay: float, name: str) -> str:
    job: str = await ctx.scheduler.run_after(delay, "tasks:bump", {"name": name})
    return job


@mutation
async def schedule_at(ctx: Any, when: float, name: str) -> str:
    job: str = await ctx.scheduler.run_at(when, bump, {"name": name})
    return job


@mutation
async def schedule_then_fail(ctx: Any, name: str) -> None:
    await ctx.scheduler.run_after(0, bump, {"name": name})
    raise ConvexError("the mutation fails after scheduling")


@mutation
async def cancel(ctx: Any, job: str) -> None:
    await ctx.scheduler.cancel(job)


@internal_mutation
async def fail(ctx: Any, message: str) -> None:
    await ctx.db.insert("events", {"name": "fail"})
    raise ValueError(message)


@internal_mutation(args={"days": v.int64()})
async def typed(ctx: Any, days: int) -> int:
    return days


@internal_action(args={"days": v.int64()})
async def typed_act(ctx: Any, days: int) -> int:
    return days


@internal_mutation
async def blocked_bump(ctx: Any, name: str, gate: str) -> None:
    """A mutation that waits on a gate before it writes (to crash it mid-way)."""
    _enter(name)
    await GATES[gate].wait()
    await ctx.db.insert("events", {"name": name})


@action
async def act(ctx: Any, name: str) -> str:
    _enter(name)
    await ctx.run_mutation("tasks:bump", {"name": name})
    return name


@action
async def blocked_act(ctx: Any, name: str, gate: str) -> None:
    _enter(name)
    await GATES[gate].wait()
    await ctx.run_mutation(bump, {"name": name})


@action
async def act_fails(ctx: Any) -> None:
    raise RuntimeError("the action broke")


@action
async def schedule_from_action(ctx: Any, name: str) -> list[str]:
    first: str = await ctx.scheduler.run_after(0, bump, {"name": name})
    second: str = await ctx.scheduler.run_after(60, "tasks:bump", {"name": name})
    await ctx.scheduler.cancel(second)
    return [first, second]


@action
async def cancel_self_then_schedule(ctx: Any, name: str, gate: str) -> None:
    """Waits until the test cancels it, then schedules a child (which must not run)."""
    await GATES[gate].wait()
    await ctx.scheduler.run_after(0, bump, {"name": name})


@query
async def count(ctx: Any, name: str) -> int:
    return len(
        [d async for d in ctx.db.query("events").filter(lambda q: q.eq(q.field("name"), name))]
    )


@query
async def jobs(ctx: Any) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = await ctx.db.system.query("_scheduled_functions").collect()
    return docs


@query
async def job(ctx: Any, id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = await ctx.db.system.get(id)
    return doc
