"""Functions for the sync (WebSocket) tests: a query that fails with data, and
a counter read by id whose every change is as large as the test asks."""

from basalt import ConvexError, mutation, query, v


@query(args={"data": v.any()})
async def fail_with(ctx, data):
    """A query that always fails with a ConvexError carrying ``data``."""
    raise ConvexError(data)


@mutation(args={"tag": v.string()})
async def create(ctx, tag):
    """A new counter at 0 (in the ``blobs`` table); returns its id."""
    return await ctx.db.insert("blobs", {"tag": tag, "value": 0.0})


@mutation(args={"id": v.id("blobs")})
async def bump(ctx, id):
    """Adds 1 to a counter made by ``create``; returns the new value."""
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"value": doc["value"] + 1.0})
    return doc["value"] + 1.0


@query(args={"id": v.id("blobs"), "size": v.float64()})
async def padded(ctx, id, size):
    """A counter's value padded with ``size`` characters, so that every change
    of the counter is a large Transition."""
    doc = await ctx.db.get(id)
    return {"value": None if doc is None else doc["value"], "pad": "x" * int(size)}
