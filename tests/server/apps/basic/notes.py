"""Notes: ordinary queries and mutations, pagination, internal functions."""

from basalt import (
    ConvexError,
    internal_mutation,
    internal_query,
    mutation,
    pagination_opts_validator,
    query,
    v,
)


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


@query(args={"tag": v.string(), "paginationOpts": pagination_opts_validator})
async def page(ctx, tag, paginationOpts):
    return await (
        ctx.db.query("notes")
        .with_index("by_tag", lambda q: q.eq("tag", tag))
        .paginate(paginationOpts)
    )


@mutation(args={"tag": v.string()})
async def add_then_fail(ctx, tag):
    """Inserts a note, then fails: the insert must not survive."""
    await ctx.db.insert("notes", {"tag": tag, "body": "doomed", "pos": 0.0})
    raise ConvexError({"code": "FAILED_AFTER_INSERT"})


@mutation(args={"tag": v.string(), "count": v.float64()})
async def add_many_then_fail(ctx, tag, count):
    """Inserts ``count`` notes; the last insert breaks the schema, so none survive."""
    n = int(count)
    for i in range(n - 1):
        await ctx.db.insert("notes", {"tag": tag, "body": f"n{i}", "pos": float(i)})
    await ctx.db.insert("notes", {"tag": tag, "body": 42.0, "pos": float(n)})


@mutation(args={"tag": v.string(), "body": v.string()})
async def write_ghost(ctx, tag, body):
    """Writes to a table that the schema does not declare."""
    return await ctx.db.insert("ghosts", {"tag": tag, "body": body})


@query(args={})
async def read_ghosts(ctx):
    """Reads a table that does not exist: an empty result."""
    return await ctx.db.query("ghosts").collect()


@query(
    args={
        "user": v.object({"name": v.string(), "tags": v.array(v.string())}),
        "limit": v.float64(),
    }
)
async def typed(ctx, user, limit):
    return {"name": user["name"], "tags": user["tags"], "limit": limit}


@internal_query(args={"tag": v.string()})
async def secret_count(ctx, tag):
    docs = await ctx.db.query("notes").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return len(docs)


@internal_mutation(args={"tag": v.string()})
async def secret_add(ctx, tag):
    return await ctx.db.insert("notes", {"tag": tag, "body": "secret", "pos": 0.0})
