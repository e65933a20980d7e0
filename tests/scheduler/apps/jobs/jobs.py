"""The app of the scheduler's end-to-end test (a real ``basalt serve``)."""

import asyncio

from basalt import action, internal_mutation, mutation, query


@mutation
async def enqueue(ctx, n, spread):
    """Schedule ``n`` work items, due over the next ``spread`` seconds."""
    for i in range(int(n)):
        await ctx.scheduler.run_after(spread * i / n, "jobs:work", {"i": float(i)})


@internal_mutation
async def work(ctx, i):
    await ctx.db.insert("done", {"i": i})


@mutation
async def start_slow(ctx):
    return await ctx.scheduler.run_after(0, "jobs:slow")


@action
async def slow(ctx):
    await ctx.run_mutation("jobs:mark", {"what": "slow started"})
    await asyncio.sleep(120)
    await ctx.run_mutation("jobs:mark", {"what": "slow finished"})


@internal_mutation
async def mark(ctx, what):
    await ctx.db.insert("marks", {"what": what})


@internal_mutation
async def tick(ctx):
    await ctx.db.insert("marks", {"what": "tick"})


@query
async def summary(ctx):
    states = {}
    slow = None
    async for job in ctx.db.system.query("_scheduled_functions"):
        kind = job["state"]["kind"]
        states[kind] = states.get(kind, 0.0) + 1.0
        if job["name"] == "jobs:slow":
            slow = job["state"]
    done = [d["i"] for d in await ctx.db.query("done").collect()]
    marks = [m["what"] for m in await ctx.db.query("marks").collect()]
    return {"states": states, "done": done, "slow": slow, "marks": marks}
