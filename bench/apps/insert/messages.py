"""The one mutation the insert benchmark calls: ``messages:send``."""

from basalt import mutation, v


@mutation(args={"author": v.string(), "body": v.string()})
async def send(ctx, author, body):
    """Insert one message and return its id."""
    return await ctx.db.insert("messages", {"author": author, "body": body})
