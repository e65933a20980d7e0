"""Actions that call queries and mutations."""

from basalt import action, v


@action(args={"tag": v.string(), "bodies": v.array(v.string())})
async def add_all(ctx, tag, bodies):
    """Adds every body through ``ctx.run_mutation``, then reads them back."""
    for i, body in enumerate(bodies):
        await ctx.run_mutation("notes:add", {"tag": tag, "body": body, "pos": float(i)})
    listed = await ctx.run_query("notes:bodies", {"tag": tag})
    hidden = await ctx.run_query("notes:secret_count", {"tag": tag})
    return {"bodies": listed, "count": hidden}


@action(args={"data": v.any()})
async def fail_inside(ctx, data):
    """A ConvexError raised by a mutation that an action runs reaches the client."""
    await ctx.run_mutation("values:fail_with", {"data": data})
