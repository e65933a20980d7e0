"""Scheduled mutations whose every run leaves a row, slow scheduled actions
that note which process runs them, and views of the jobs' states."""

import asyncio
import os

from basalt import action, internal_mutation, mutation, query, v


@mutation(args={"batch": v.string(), "count": v.float64(), "spread": v.float64()})
async def schedule(ctx, batch, count, spread):
    """Schedules ``count`` runs of ``record``, due over the next ``spread`` seconds."""
    n = int(count)
    for i in range(n):
        await ctx.scheduler.run_after(spread * i / n, "jobs:record", {"batch": batch, "n": i})


@internal_mutation(args={"batch": v.string(), "n": v.float64()})
async def record(ctx, batch, n):
    await ctx.db.insert("runs", {"batch": batch, "n": n})


@query(args={"batch": v.string()})
async def runs(ctx, batch):
    """The ``n`` of every recorded run of the batch (a run twice shows twice)."""
    runs = ctx.db.query("runs").with_index("by_batch", lambda q: q.eq("batch", batch))
    docs = await runs.collect()
    return [d["n"] for d in docs]


@query(args={})
async def states(ctx):
    """How many jobs of ``jobs:record`` are in each state."""
    counts = {}
    async for job in ctx.db.system.query("_scheduled_functions"):
        if job["name"] == "jobs:record":
            kind = job["state"]["kind"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


@mutation(args={"batch": v.string(), "k": v.float64(), "seconds": v.float64()})
async def schedule_slow(ctx, batch, k, seconds):
    await ctx.scheduler.run_after(0, "jobs:slow", {"batch": batch, "k": k, "seconds": seconds})


@action(args={"batch": v.string(), "k": v.float64(), "seconds": v.float64()})
async def slow(ctx, batch, k, seconds):
    """Notes its start and its process, then takes ``seconds``."""
    await ctx.run_mutation("jobs:started", {"batch": batch, "k": k, "pid": float(os.getpid())})
    await asyncio.sleep(seconds)


@internal_mutation(args={"batch": v.string(), "k": v.float64(), "pid": v.float64()})
async def started(ctx, batch, k, pid):
    await ctx.db.insert("starts", {"batch": batch, "k": k, "pid": pid})


@query(args={"batch": v.string()})
async def starts(ctx, batch):
    """``[k, pid]`` of every start of a slow action of the batch."""
    rows = ctx.db.query("starts").with_index("by_batch", lambda q: q.eq("batch", batch))
    return [[d["k"], d["pid"]] for d in await rows.collect()]


@query(args={"batch": v.string()})
async def slow_states(ctx, batch):
    """The state of each slow action of the batch, by ``k`` (as text)."""
    states = {}
    async for job in ctx.db.system.query("_scheduled_functions"):
        args = job["args"][0]
        if job["name"] == "jobs:slow" and args["batch"] == batch:
            states[str(int(args["k"]))] = job["state"]
    return states
