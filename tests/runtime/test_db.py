"""ctx.db writes and reads, schema validation, and transactional behaviour."""

from __future__ import annotations

from typing import Any

import pytest

from basalt import UNSET, ConvexError, define_schema, define_table, mutation, query, v
from basalt.errors import (
    ArgumentValidationError,
    InvalidValue,
    ReturnsValidationError,
    SchemaValidationError,
)
from basalt.runtime.db import DatabaseError

from .conftest import MakeRuntime

schema = define_schema(
    {
        "users": define_table({"name": v.string(), "age": v.optional(v.float64())}),
        "posts": define_table({"author": v.id("users"), "title": v.string()}).index(
            "by_author", ["author"]
        ),
    }
)


@mutation(args={"name": v.string(), "age": v.optional(v.float64())})
async def add_user(ctx: Any, name: str, age: float | None = None) -> str:
    doc: dict[str, Any] = {"name": name}
    if age is not None:
        doc["age"] = age
    return await ctx.db.insert("users", doc)


@mutation
async def raw_insert(ctx: Any, table: str, doc: dict[str, Any]) -> str:
    return await ctx.db.insert(table, doc)


@mutation
async def patch(ctx: Any, id: str, fields: dict[str, Any]) -> None:
    await ctx.db.patch(id, fields)


@mutation
async def drop_age(ctx: Any, id: str) -> None:
    await ctx.db.patch(id, {"age": UNSET})


@mutation
async def replace(ctx: Any, id: str, doc: dict[str, Any]) -> None:
    await ctx.db.replace(id, doc)


@mutation
async def delete(ctx: Any, id: str) -> None:
    await ctx.db.delete(id)


@query
async def get(ctx: Any, id: str) -> Any:
    return await ctx.db.get(id)


@query
async def count(ctx: Any, table: str) -> float:
    return float(len(await ctx.db.query(table).collect()))


@mutation
async def insert_then_fail(ctx: Any, n: float) -> None:
    for i in range(int(n)):
        await ctx.db.insert("users", {"name": f"doomed {i}"})
    raise ConvexError({"code": "BOOM", "inserted": n})


@mutation
async def insert_then_crash(ctx: Any) -> None:
    await ctx.db.insert("users", {"name": "doomed"})
    raise RuntimeError("crash after insert")


@query(returns=v.string())
async def bad_return(ctx: Any) -> Any:
    return 5.0


@query
async def not_a_value(ctx: Any) -> Any:
    return (1, 2)


@query
async def normalize(ctx: Any, table: str, id: str) -> Any:
    return ctx.db.normalize_id(table, id)


MODULES = {
    "users": {
        "add": add_user,
        "raw_insert": raw_insert,
        "patch": patch,
        "drop_age": drop_age,
        "replace": replace,
        "delete": delete,
        "get": get,
        "count": count,
        "insert_then_fail": insert_then_fail,
        "insert_then_crash": insert_then_crash,
        "bad_return": bad_return,
        "not_a_value": not_a_value,
        "normalize": normalize,
    }
}


async def test_insert_get_has_system_fields(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    user_id = await rt.mutation("users:add", {"name": "ann", "age": 31.0})
    doc = await rt.query("users:get", {"id": user_id})
    assert doc["_id"] == user_id
    assert isinstance(doc["_creationTime"], float)
    assert doc["name"] == "ann" and doc["age"] == 31.0
    assert len(user_id) == 32


async def test_int_is_coerced_to_float_for_number_fields(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    user_id = await rt.mutation("users:add", {"name": "bo", "age": 40})
    doc = await rt.query("users:get", {"id": user_id})
    assert doc["age"] == 40.0 and type(doc["age"]) is float


async def test_patch_replace_delete(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    user_id = await rt.mutation("users:add", {"name": "cy", "age": 20.0})
    await rt.mutation("users:patch", {"id": user_id, "fields": {"age": 21.0}})
    assert (await rt.query("users:get", {"id": user_id}))["age"] == 21.0
    await rt.mutation("users:drop_age", {"id": user_id})
    assert "age" not in await rt.query("users:get", {"id": user_id})
    before = await rt.query("users:get", {"id": user_id})
    await rt.mutation("users:replace", {"id": user_id, "doc": {"name": "cyd"}})
    after = await rt.query("users:get", {"id": user_id})
    assert after == {"_id": user_id, "_creationTime": before["_creationTime"], "name": "cyd"}
    await rt.mutation("users:delete", {"id": user_id})
    assert await rt.query("users:get", {"id": user_id}) is None
    with pytest.raises(DatabaseError, match="no document with id"):
        await rt.mutation("users:delete", {"id": user_id})


async def test_schema_violation_names_table_and_field(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    with pytest.raises(SchemaValidationError) as info:
        await rt.mutation("users:raw_insert", {"table": "users", "doc": {"name": 5.0}})
    assert '"users"' in info.value.message and ".name" in info.value.message
    user_id = await rt.mutation("users:add", {"name": "dee"})
    with pytest.raises(SchemaValidationError) as info:
        await rt.mutation("users:patch", {"id": user_id, "fields": {"age": "old"}})
    assert user_id in info.value.message and ".age" in info.value.message
    with pytest.raises(SchemaValidationError, match="ghosts"):
        await rt.mutation("users:raw_insert", {"table": "ghosts", "doc": {"a": 1.0}})


async def test_id_fields_must_point_at_their_table(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    user_id = await rt.mutation("users:add", {"name": "eve"})
    post_id = await rt.mutation(
        "users:raw_insert", {"table": "posts", "doc": {"author": user_id, "title": "t"}}
    )
    with pytest.raises(SchemaValidationError, match="author"):
        await rt.mutation(
            "users:raw_insert", {"table": "posts", "doc": {"author": post_id, "title": "t"}}
        )
    assert await rt.query("users:normalize", {"table": "users", "id": user_id}) == user_id
    assert await rt.query("users:normalize", {"table": "posts", "id": user_id}) is None
    assert await rt.query("users:normalize", {"table": "users", "id": "nope"}) is None


async def test_reserved_and_invalid_fields_are_refused(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    with pytest.raises(InvalidValue, match="_secret"):
        await rt.mutation("users:raw_insert", {"table": "things", "doc": {"_secret": 1.0}})
    with pytest.raises(ArgumentValidationError, match=r"\.doc\.a.*\$x"):
        await rt.mutation("users:raw_insert", {"table": "things", "doc": {"a": {"$x": 1.0}}})
    with pytest.raises(InvalidValue, match=r"1 MiB|limit"):
        await rt.mutation("users:raw_insert", {"table": "things", "doc": {"a": "x" * (1 << 20)}})
    with pytest.raises(DatabaseError, match="system table"):
        await rt.mutation("users:raw_insert", {"table": "_storage", "doc": {"a": 1.0}})


async def test_failed_mutation_leaves_no_trace(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("users:add", {"name": "keep"})
    with pytest.raises(ConvexError) as info:
        await rt.mutation("users:insert_then_fail", {"n": 5.0})
    assert info.value.data == {"code": "BOOM", "inserted": 5.0}
    with pytest.raises(RuntimeError, match="crash after insert"):
        await rt.mutation("users:insert_then_crash", {})
    assert await rt.query("users:count", {"table": "users"}) == 1.0


async def test_argument_and_return_validation(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    with pytest.raises(ArgumentValidationError, match=r"\.name"):
        await rt.mutation("users:add", {"name": 3.0})
    with pytest.raises(ArgumentValidationError, match=r"extra|unexpected|not in"):
        await rt.mutation("users:add", {"name": "x", "nickname": "y"})
    with pytest.raises(ReturnsValidationError, match="users:bad_return"):
        await rt.query("users:bad_return", {})
    with pytest.raises(InvalidValue, match="tuple"):
        await rt.query("users:not_a_value", {})


async def test_data_survives_restart(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    ids = [await rt.mutation("users:add", {"name": f"u{i}"}) for i in range(5)]
    ts = await rt.storage.latest_ts()
    await rt.stop()
    rt2 = await make_runtime(MODULES, schema)
    assert [(await rt2.query("users:get", {"id": i}))["name"] for i in ids] == [
        f"u{i}" for i in range(5)
    ]
    assert await rt2.storage.latest_ts() == ts
    await rt2.mutation("users:add", {"name": "later"})
    assert await rt2.storage.latest_ts() > ts
