"""The functions the file-storage tests call (module ``files``), and a schema
whose ``assets`` table refers to stored files with ``v.id("_storage")``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from basalt import ConvexError, action, define_schema, define_table, mutation, query, v

schema_module = {
    "schema": define_schema(
        {
            "assets": define_table({"file": v.id("_storage"), "role": v.string()}),
            "notes": define_table({"body": v.string()}),
        }
    )
}


@mutation
async def generate_upload_url(ctx: Any) -> str:
    return str(await ctx.storage.generate_upload_url())


@query(args={"id": v.any()})
async def get_url(ctx: Any, id: Any) -> str | None:
    return await ctx.storage.get_url(id)


@query(args={"id": v.any()})
async def get_metadata(ctx: Any, id: Any) -> Any:
    return await ctx.storage.get_metadata(id)


@query(args={"id": v.string()})
async def system_get(ctx: Any, id: str) -> Any:
    return await ctx.db.system.get(id)


@query
async def all_files(ctx: Any) -> list[Any]:
    return await ctx.db.system.query("_storage").collect()


@mutation(args={"id": v.any()})
async def delete(ctx: Any, id: Any) -> None:
    await ctx.storage.delete(id)


@mutation(args={"id": v.string()})
async def delete_then_fail(ctx: Any, id: str) -> None:
    await ctx.storage.delete(id)
    raise ConvexError("changed my mind")


@mutation(args={"file": v.id("_storage"), "role": v.string()})
async def save_asset(ctx: Any, file: str, role: str) -> str:
    return str(await ctx.db.insert("assets", {"file": file, "role": role}))


@mutation
async def add_note(ctx: Any) -> str:
    return str(await ctx.db.insert("notes", {"body": "not a file"}))


@action(args={"text": v.string(), "content_type": v.optional(v.string())})
async def store_text(ctx: Any, text: str, content_type: str | None = None) -> str:
    return str(await ctx.storage.store(text.encode(), content_type))


@action(args={"parts": v.array(v.bytes())})
async def store_stream(ctx: Any, parts: list[bytes]) -> str:
    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return str(await ctx.storage.store(chunks(), "application/x-parts"))


@action(args={"id": v.any()})
async def read(ctx: Any, id: Any) -> bytes | None:
    return await ctx.storage.get(id)


@action(args={"id": v.string()})
async def action_delete(ctx: Any, id: str) -> None:
    await ctx.storage.delete(id)


@action(args={"id": v.string()})
async def action_info(ctx: Any, id: str) -> Any:
    return {
        "url": await ctx.storage.get_url(id),
        "metadata": await ctx.storage.get_metadata(id),
        "upload_url": await ctx.storage.generate_upload_url(),
    }
