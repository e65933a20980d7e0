"""Functions of the `messages` module: call them as "messages:list" and so on."""

from basalt import ConvexError, mutation, pagination_opts_validator, query, v


@query(args={"limit": v.optional(v.float64())})
async def list(ctx, limit=50.0):
    """The newest messages, newest first."""
    return await ctx.db.query("messages").order("desc").take(int(limit))


@query(args={"author": v.string()})
async def by_author(ctx, author):
    """Every message of one author, oldest first."""
    return await (
        ctx.db.query("messages").with_index("by_author", lambda q: q.eq("author", author)).collect()
    )


@query(args={"paginationOpts": pagination_opts_validator})
async def page(ctx, paginationOpts):
    """Messages page by page, oldest first."""
    return await ctx.db.query("messages").paginate(paginationOpts)


@mutation(args={"author": v.string(), "body": v.string()})
async def send(ctx, author, body):
    """Store a message and return its id."""
    if not body.strip():
        raise ConvexError({"code": "EMPTY", "message": "A message needs some text"})
    return await ctx.db.insert("messages", {"author": author, "body": body})


@mutation(args={"id": v.id("messages")})
async def like(ctx, id):
    """Add one like to a message; returns the new count."""
    message = await ctx.db.get(id)
    if message is None:
        raise ConvexError({"code": "NOT_FOUND", "message": f"no message {id}"})
    likes = message.get("likes", 0.0) + 1
    await ctx.db.patch(id, {"likes": likes})
    return likes
