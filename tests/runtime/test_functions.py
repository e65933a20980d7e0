"""Function kinds, visibility, actions, log lines, determinism and limits."""

from __future__ import annotations

import random
import socket
import time
import uuid
from typing import Any

import pytest

from basalt import ConvexError, action, internal_mutation, internal_query, mutation, query, v
from basalt.errors import FunctionNotFound, LimitExceeded, SchemaDefinitionError
from basalt.runtime import Limits, ManualClock
from basalt.runtime.determinism import NetworkNotAllowed

from .conftest import MakeRuntime


@internal_mutation(args={"body": v.string()})
async def store(ctx: Any, body: str) -> str:
    print("storing", body)
    return await ctx.db.insert("notes", {"body": body})


@internal_query
async def all_notes(ctx: Any) -> list[str]:
    return [d["body"] for d in await ctx.db.query("notes").collect()]


@action(args={"body": v.string()})
async def shout(ctx: Any, body: str) -> Any:
    print("shouting")
    await ctx.run_mutation("notes:store", {"body": body.upper()})
    await ctx.run_mutation(store, {"body": body.upper() + "!"})
    return await ctx.run_query(all_notes)


@action
async def fail_in_mutation(ctx: Any) -> Any:
    try:
        await ctx.run_mutation("notes:reject", {})
    except ConvexError as exc:
        return {"caught": exc.data}
    return None


@mutation
async def reject(ctx: Any) -> None:
    raise ConvexError("no")


@mutation
async def clock_and_dice(ctx: Any) -> dict[str, Any]:
    first = time.time()
    for _ in range(1000):
        pass
    return {
        "same_time": first == time.time(),
        "time_ms": first * 1000,
        "dice": [random.random() for _ in range(3)],
        "uuid": str(uuid.uuid4()),
    }


@query
async def query_dice(ctx: Any) -> list[float]:
    return [random.random() for _ in range(3)]


@mutation
async def dial_out(ctx: Any) -> None:
    socket.create_connection(("127.0.0.1", 9), timeout=1)


@action
async def dial_from_action(ctx: Any) -> str:
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
    except OSError as exc:
        return type(exc).__name__
    return "connected"


@mutation
async def write_many(ctx: Any, n: float) -> None:
    for i in range(int(n)):
        await ctx.db.insert("notes", {"body": str(i)})


@query
async def read_all(ctx: Any) -> float:
    return float(len(await ctx.db.query("notes").collect()))


MODULES = {
    "notes": {
        "store": store,
        "all_notes": all_notes,
        "shout": shout,
        "fail_in_mutation": fail_in_mutation,
        "reject": reject,
        "clock_and_dice": clock_and_dice,
        "query_dice": query_dice,
        "dial_out": dial_out,
        "dial_from_action": dial_from_action,
        "write_many": write_many,
        "read_all": read_all,
    }
}


async def test_actions_run_queries_and_mutations_and_collect_logs(
    make_runtime: MakeRuntime,
) -> None:
    rt = await make_runtime(MODULES)
    outcome = await rt.call("notes:shout", {"body": "hi"})
    assert outcome.ok, outcome.error
    assert outcome.value == ["HI", "HI!"]
    assert outcome.log_lines == ["[LOG] shouting", "[LOG] storing HI", "[LOG] storing HI!"]
    assert await rt.action("notes:fail_in_mutation", {}) == {"caught": "no"}


async def test_internal_functions_need_admin(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    outcome = await rt.call("notes:store", {"body": "x"})
    assert isinstance(outcome.error, FunctionNotFound)
    assert "public function" in str(outcome.error)
    assert (await rt.call("notes:store", {"body": "x"}, admin=True)).ok
    wrong_kind = await rt.call("notes:all_notes", {}, kind="mutation", admin=True)
    assert isinstance(wrong_kind.error, FunctionNotFound)
    assert "defined as Query" in str(wrong_kind.error)
    missing = await rt.call("notes:nope", {})
    assert isinstance(missing.error, FunctionNotFound) and "notes:nope" in str(missing.error)


async def test_mutations_see_a_frozen_clock_and_seeded_random(make_runtime: MakeRuntime) -> None:
    clock = ManualClock(start_ms=1_800_000_000_000.0)
    rt = await make_runtime(MODULES, clock=clock)
    result = await rt.mutation("notes:clock_and_dice", {})
    assert result["same_time"] is True
    assert result["time_ms"] == pytest.approx(1_800_000_000_000.0)
    # The same snapshot gives the same draws in a query.
    assert await rt.query("notes:query_dice", {}) == await rt.query("notes:query_dice", {})
    # Outside functions, the real clock is back.
    assert abs(time.time() - 1_800_000_000) > 1000


async def test_network_is_refused_in_mutations_but_not_in_actions(
    make_runtime: MakeRuntime,
) -> None:
    rt = await make_runtime(MODULES)
    with pytest.raises(NetworkNotAllowed, match="action"):
        await rt.mutation("notes:dial_out", {})
    assert await rt.action("notes:dial_from_action", {}) in {
        "ConnectionRefusedError",
        "connected",
        "TimeoutError",
    }


async def test_limits_on_documents_written_and_read(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_documents_written=10, max_documents_read=15))
    with pytest.raises(LimitExceeded, match="Too many documents written"):
        await rt.mutation("notes:write_many", {"n": 11.0})
    assert await rt.query("notes:read_all", {}) == 0.0  # the failed mutation left nothing
    await rt.mutation("notes:write_many", {"n": 10.0})
    await rt.mutation("notes:write_many", {"n": 10.0})
    with pytest.raises(LimitExceeded, match="Too many documents read"):
        await rt.query("notes:read_all", {})


def test_declaration_mistakes_fail_at_definition() -> None:
    with pytest.raises(SchemaDefinitionError, match="async def"):

        @query
        def not_async(ctx: Any) -> None:  # type: ignore[misc]
            return None

    with pytest.raises(SchemaDefinitionError, match="parentheses"):

        @query(args={"name": v.string})  # type: ignore[dict-item]
        async def forgot_call(ctx: Any, name: str) -> None:
            return None


async def test_before_commit_is_atomic_with_the_mutation(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)

    async def mark(db: Any) -> None:
        await db.insert("_scheduled_functions", {"name": "notes:store", "state": "done"})

    outcome = await rt.run_mutation_with("notes:store", {"body": "x"}, before_commit=mark)
    assert outcome.ok

    async def count_marks(db: Any) -> float:
        return float(len(await db.system.query("_scheduled_functions").collect()))

    assert await rt.run_system(count_marks) == 1.0
    assert await rt.query("notes:all_notes", {}) == ["x"]

    async def fail(db: Any) -> None:
        await db.insert("_scheduled_functions", {"name": "notes:store", "state": "done"})
        raise RuntimeError("bookkeeping failed")

    outcome = await rt.run_mutation_with("notes:store", {"body": "y"}, before_commit=fail)
    assert isinstance(outcome.error, RuntimeError)
    # Neither the mutation's write nor the bookkeeping was committed.
    assert await rt.run_system(count_marks) == 1.0
    assert await rt.query("notes:all_notes", {}) == ["x"]
    # App code cannot write system tables.
    with pytest.raises(Exception, match="system table"):
        await rt.run_handler(lambda ctx: ctx.db.insert("_scheduled_functions", {"a": 1.0}))
