"""Functions for the tests of what one sync connection may hold: a mutation
with a large result."""

from basalt import mutation, v


@mutation(args={"tag": v.string(), "size": v.float64()})
async def add_large(ctx, tag, size):
    """Inserts a note under ``tag``; returns ``size`` characters."""
    await ctx.db.insert("notes", {"tag": tag, "body": "large", "pos": 0.0})
    return "x" * int(size)
