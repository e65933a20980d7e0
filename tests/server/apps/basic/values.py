"""Values round-tripping through arguments, return values and storage."""

from basalt import ConvexError, Int64, action, mutation, query, v


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


# -- integers, as handlers make them ------------------------------------------------


@mutation(args={"tag": v.string(), "n": v.float64()})
async def store_count(ctx, tag, n):
    """Stores ``int(n)`` (a plain int: an int64 in the document)."""
    return await ctx.db.insert("blobs", {"tag": tag, "value": int(n)})


@query(args={"tag": v.string()})
async def counts(ctx, tag):
    """A count made with len() (a plain int), an explicit Int64, and the int64
    that store_count put in a document."""
    docs = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return {
        "count": len(docs),
        "next": len(docs) + 1,
        "explicit": Int64(len(docs)),
        "stored": [d["value"] for d in docs],
    }


@query(args={"tag": v.string()}, returns=v.object({"count": v.int64(), "of": v.float64()}))
async def count_int64(ctx, tag):
    """A plain int returned through a v.int64() validator: an int64 for clients."""
    docs = await ctx.db.query("blobs").with_index("by_tag", lambda q: q.eq("tag", tag)).collect()
    return {"count": len(docs), "of": len(docs)}


@query(args={})
async def too_big(ctx):
    """A plain int beyond 2**53: no float64 holds it, so it cannot be sent as a number."""
    return {"total": 2**53 + 1}
