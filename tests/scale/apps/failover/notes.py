"""Notes under a tag: what the writers add and the subscription reads."""

from basalt import mutation, query, v


@mutation(args={"tag": v.string(), "body": v.string(), "pos": v.float64()})
async def add(ctx, tag, body, pos):
    return await ctx.db.insert("notes", {"tag": tag, "body": body, "pos": pos})


@query(args={"tag": v.string()})
async def list(ctx, tag):
    return await ctx.db.query("notes").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()


@query(args={"tag": v.string()})
async def bodies(ctx, tag):
    docs = await ctx.db.query("notes").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return [d["body"] for d in docs]
