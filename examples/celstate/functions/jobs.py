"""Job records: the pipeline upserts them; the public API reads them without
internal fields, with asset URLs in place of file names."""

import time

from basalt import internal_query, mutation, query, v

from .schema import schema

PUBLIC_ROLES = ("output", "mask")

#: The arguments of jobs:upsert: every field of a job but the timestamps it manages.
JOB_FIELDS = {
    name: validator
    for name, validator in schema.tables["jobs"].validator.fields.items()
    if name not in ("createdAt", "updatedAt")
}


async def _find(ctx, job_id):
    return await (
        ctx.db.query("jobs").with_index("by_job_id", lambda q: q.eq("jobId", job_id)).unique()
    )


@mutation(args=JOB_FIELDS)
async def upsert(ctx, **job):
    """Create the job, or replace its fields (fields left out are removed)."""
    now = time.time() * 1000
    existing = await _find(ctx, job["jobId"])
    if existing is None:
        return await ctx.db.insert("jobs", {**job, "createdAt": now, "updatedAt": now})
    await ctx.db.replace(
        existing["_id"], {**job, "createdAt": existing["createdAt"], "updatedAt": now}
    )
    return existing["_id"]


@query(args={"jobId": v.string()})
async def getPublic(ctx, jobId):
    """What the public API shows: no internal asset type, assets as URLs."""
    job = await _find(ctx, jobId)
    if job is None:
        return None
    assets = await (
        ctx.db.query("jobAssets").with_index("by_job", lambda q: q.eq("jobId", jobId)).collect()
    )
    # Debug images and traces stay internal (Celstate's interface contract).
    urls = {
        asset["filename"]: await ctx.storage.get_url(asset["storageId"])
        for asset in assets
        if asset["role"] in PUBLIC_ROLES
    }
    component = job.get("component")
    return {
        "jobId": job["jobId"],
        "status": job["status"],
        "retryAfter": job.get("retryAfter"),
        "error": job.get("error"),
        "component": {**component, "assets": urls} if component else None,
    }


@internal_query(args={"jobId": v.string()})
async def getInternal(ctx, jobId):
    """The whole record, internal fields included (admin only)."""
    return await _find(ctx, jobId)
