"""One shared counter: every sync client subscribes to ``get``; ``bump`` changes it."""

from basalt import mutation, query

NAME = "main"


@query(args={})
async def get(ctx):
    """The counter's value (0 before the first bump)."""
    doc = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", NAME)).first()
    return 0.0 if doc is None else doc["value"]


@mutation(args={})
async def bump(ctx):
    """Add one to the counter and return the new value."""
    doc = await ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", NAME)).first()
    if doc is None:
        await ctx.db.insert("counters", {"name": NAME, "value": 1.0})
        return 1.0
    value = doc["value"] + 1.0
    await ctx.db.patch(doc["_id"], {"value": value})
    return value
