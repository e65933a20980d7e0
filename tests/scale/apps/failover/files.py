"""File storage: upload URLs, stored ids, serving URLs and deletion."""

from basalt import mutation, query, v


@mutation(args={})
async def upload_url(ctx):
    return await ctx.storage.generate_upload_url()


@query(args={"id": v.string()})
async def url(ctx, id):
    return await ctx.storage.get_url(id)


@query(args={"id": v.string()})
async def metadata(ctx, id):
    return await ctx.storage.get_metadata(id)


@mutation(args={"id": v.string()})
async def delete(ctx, id):
    await ctx.storage.delete(id)
