"""Messages per channel: the invalidation benchmark subscribes to many channels
and inserts into one that nobody watches."""

from basalt import mutation, query, v


@query(args={"channel": v.string()})
async def by_channel(ctx, channel):
    """The latest 10 messages of one channel."""
    q = ctx.db.query("messages").with_index("by_channel", lambda q: q.eq("channel", channel))
    return await q.order("desc").take(10)


@mutation(args={"channel": v.string(), "body": v.string()})
async def send(ctx, channel, body):
    """Insert one message and return its id."""
    return await ctx.db.insert("messages", {"channel": channel, "body": body})
