"""A counter per tag: concurrent increments must all count (serializable mutations)."""

from basalt import mutation, query, v


@mutation(args={"tag": v.string()})
async def increment(ctx, tag):
    doc = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).first()
    if doc is None:
        await ctx.db.insert("blobs", {"tag": tag, "value": 1.0})
        return 1.0
    await ctx.db.patch(doc["_id"], {"value": doc["value"] + 1.0})
    return doc["value"] + 1.0


@query(args={"tag": v.string()})
async def get(ctx, tag):
    doc = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).first()
    return None if doc is None else doc["value"]
