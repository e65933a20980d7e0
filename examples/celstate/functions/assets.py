"""Asset uploads: an upload URL for the pipeline, then the stored file's metadata."""

import time

from basalt import ConvexError, mutation, query, v


@mutation
async def generateUploadUrl(ctx):
    """A one-time URL the pipeline POSTs a file's bytes to."""
    return await ctx.storage.generate_upload_url()


@mutation(
    args={
        "jobId": v.string(),
        "role": v.string(),
        "filename": v.string(),
        "storageId": v.id("_storage"),
        "contentType": v.string(),
        "bytes": v.number(),
    }
)
async def save(ctx, jobId, role, filename, storageId, contentType, bytes):
    """Record an uploaded file under its job (one file per job and role)."""
    stored = await ctx.storage.get_metadata(storageId)
    if stored is None:
        raise ConvexError({"code": "NO_SUCH_FILE", "storageId": storageId})
    if stored["size"] != bytes:
        raise ConvexError(
            {"code": "SIZE_MISMATCH", "expected": bytes, "stored": float(stored["size"])}
        )
    existing = await (
        ctx.db.query("jobAssets")
        .with_index("by_job_role", lambda q: q.eq("jobId", jobId).eq("role", role))
        .unique()
    )
    doc = {
        "jobId": jobId,
        "role": role,
        "filename": filename,
        "storageId": storageId,
        "contentType": contentType,
        "bytes": bytes,
        "createdAt": time.time() * 1000,
    }
    if existing is None:
        return await ctx.db.insert("jobAssets", doc)
    await ctx.db.replace(existing["_id"], doc)
    await ctx.storage.delete(existing["storageId"])
    return existing["_id"]


@query(args={"jobId": v.string(), "filename": v.string()})
async def urlOf(ctx, jobId, filename):
    """The URL a job's file is served at, or None."""
    assets = await (
        ctx.db.query("jobAssets").with_index("by_job", lambda q: q.eq("jobId", jobId)).collect()
    )
    for asset in assets:
        if asset["filename"] == filename:
            return await ctx.storage.get_url(asset["storageId"])
    return None
