"""Asset uploads as the Celstate pipeline does them: generateUploadUrl → POST
the bytes → save the storageId → resolve URLs with getUrl."""

from basalt import mutation, query, v


@mutation
async def generateUploadUrl(ctx):
    return await ctx.storage.generate_upload_url()


@mutation(
    args={
        "jobId": v.string(),
        "role": v.string(),
        "storageId": v.id("_storage"),
        "contentType": v.string(),
        "bytes": v.float64(),
    }
)
async def save(ctx, **asset):
    return await ctx.db.insert("jobAssets", asset)


@query(args={"jobId": v.string()})
async def list(ctx, jobId):
    assets = (
        await ctx.db.query("jobAssets")
        .with_index("by_job", lambda q: q.eq("jobId", jobId))
        .collect()
    )
    return [
        {
            "role": a["role"],
            "url": await ctx.storage.get_url(a["storageId"]),
            "sha256": (await ctx.db.system.get(a["storageId"]))["sha256"],
        }
        for a in assets
    ]


@mutation(args={"storageId": v.id("_storage")})
async def remove(ctx, storageId):
    await ctx.storage.delete(storageId)
