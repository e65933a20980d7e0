"""Trace events of a job (optional in Celstate's plan)."""

import time

from basalt import internal_query, mutation, v


@mutation(args={"jobId": v.string(), "kind": v.string(), "payload": v.any()})
async def record(ctx, jobId, kind, payload):
    return await ctx.db.insert(
        "jobEvents",
        {"jobId": jobId, "kind": kind, "payload": payload, "createdAt": time.time() * 1000},
    )


@internal_query(args={"jobId": v.string()})
async def forJob(ctx, jobId):
    return await (
        ctx.db.query("jobEvents").with_index("by_job", lambda q: q.eq("jobId", jobId)).collect()
    )
