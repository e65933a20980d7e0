"""Values round-tripping through arguments, return values and storage."""

from basalt import ConvexError, action, mutation, query, v


@query(args={"value": v.any()})
async def echo(ctx, value):
    return value


@query(args={"value": v.any()})
async def describe(ctx, value):
    """The Python type the server received, and the value back."""
    return {"type": type(value).__name__, "value": value}


@mutation(args={"tag": v.string(), "value": v.any()})
async def store(ctx, tag, value):
    return await ctx.db.insert("blobs", {"tag": tag, "value": value})


@query(args={"tag": v.string()})
async def load(ctx, tag):
    docs = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return [d["value"] for d in docs]


@mutation(args={"data": v.any()})
async def fail_with(ctx, data):
    raise ConvexError(data)


@query(args={"data": v.any()})
async def query_fail_with(ctx, data):
    """A query that throws ConvexError (a subscription's QueryFailed carries the data)."""
    raise ConvexError(data)


@query(args={})
async def boom(ctx):
    raise ValueError("kaboom: something broke")


@action(args={"value": v.any()})
async def echo_action(ctx, value):
    return value


@query(args={"text": v.string()})
async def shout(ctx, text):
    print("shouting", text)
    print("twice")
    return text.upper()
