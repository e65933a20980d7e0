"""Actions run off the server's event loop: blocking code in an action never
stalls queries and mutations; ``def`` actions run on threads of their own; a
blocked action loop is reported and new actions move to a fresh one."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from basalt import action, internal_mutation, mutation, query, v
from basalt.errors import SchemaDefinitionError
from basalt.runtime import App, action_workers
from basalt.testing import BasaltTest

from .conftest import MakeRuntime

#: threading events the actions below block on (set by the tests)
EVENTS: dict[str, threading.Event] = {}


@internal_mutation(args={"body": v.string()})
async def store(ctx: Any, body: str) -> str:
    print("storing", body)
    return await ctx.db.insert("notes", {"body": body})


@query
async def bodies(ctx: Any) -> list[str]:
    return sorted(d["body"] for d in await ctx.db.query("notes").collect())


@mutation(args={"body": v.string()})
async def add(ctx: Any, body: str) -> str:
    return await ctx.db.insert("notes", {"body": body})


@action(args={"name": v.string()})
async def blocks(ctx: Any, name: str) -> str:
    """Blocking code in an async action (the way a synchronous SDK blocks)."""
    assert EVENTS[name].wait(30), "never released"
    await ctx.run_mutation(store, {"body": f"after {name}"})
    return name


@action(args={"name": v.string()})
def blocks_in_def(ctx: Any, name: str) -> str:
    assert EVENTS[name].wait(30), "never released"
    return name


@action(args={"name": v.string()})
async def releases(ctx: Any, name: str) -> str:
    EVENTS[name].set()
    return "released"


@action(args={"body": v.string()})
def plain(ctx: Any, body: str) -> dict[str, Any]:
    """A ``def`` action: ctx methods return their results directly."""
    print("in a def action")
    stored = ctx.run_mutation(store, {"body": body})
    file_id = ctx.storage.store(b"bytes from a def action", "text/plain")
    job = ctx.scheduler.run_after(3600, "acts:store", {"body": "later"})
    return {
        "stored": stored == ctx.run_query("acts:by_id", {"id": stored}),
        "all": ctx.run_query(bodies),
        "file": ctx.storage.get(file_id),
        "job": isinstance(job, str),
        "who": ctx.auth.get_user_identity(),
        "nested": ctx.run_action("acts:nested", {}),
    }


@query(args={"id": v.string()})
async def by_id(ctx: Any, id: str) -> str | None:
    doc = await ctx.db.get(id)
    return None if doc is None else doc["_id"]


@action
async def nested(ctx: Any) -> str:
    return "nested ran"


@action
async def async_storage(ctx: Any) -> bytes | None:
    async def chunks() -> Any:
        for part in (b"streamed ", b"from ", b"the action loop"):
            await asyncio.sleep(0)
            yield part

    file_id = await ctx.storage.store(chunks())
    return await ctx.storage.get(file_id)


MODULES = {
    "acts": {
        "store": store,
        "bodies": bodies,
        "add": add,
        "blocks": blocks,
        "blocks_in_def": blocks_in_def,
        "releases": releases,
        "plain": plain,
        "by_id": by_id,
        "nested": nested,
        "async_storage": async_storage,
    }
}


@pytest.fixture(autouse=True)
def _events() -> Any:
    EVENTS.clear()
    yield
    for event in EVENTS.values():
        event.set()  # never leave an action thread waiting


async def test_blocking_code_in_an_action_does_not_stall_the_server(
    make_runtime: MakeRuntime,
) -> None:
    rt = await make_runtime(MODULES)
    EVENTS["a"] = threading.Event()
    blocked = asyncio.create_task(rt.action("acts:blocks", {"name": "a"}))
    # While the action blocks its thread, queries and mutations are served.
    for i in range(20):
        await rt.mutation("acts:add", {"body": f"n{i}"})
    assert len(await rt.query("acts:bodies", {})) == 20
    assert not blocked.done()
    EVENTS["a"].set()
    assert await asyncio.wait_for(blocked, 30) == "a"
    assert "after a" in await rt.query("acts:bodies", {})


async def test_def_actions_block_only_themselves(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    EVENTS["x"] = threading.Event()
    EVENTS["y"] = threading.Event()
    first = asyncio.create_task(rt.action("acts:blocks_in_def", {"name": "x"}))
    second = asyncio.create_task(rt.action("acts:blocks_in_def", {"name": "y"}))
    # An async action (on the action loop) and the server's loop both run on.
    assert await asyncio.wait_for(rt.action("acts:releases", {"name": "y"}), 30) == "released"
    assert await asyncio.wait_for(second, 30) == "y"
    assert not first.done()
    EVENTS["x"].set()
    assert await asyncio.wait_for(first, 30) == "x"


async def test_a_def_action_uses_ctx_without_await(tmp_path: Path) -> None:
    async with BasaltTest(App.from_modules(MODULES), data_dir=tmp_path) as t:
        outcome = await t.runtime.call("acts:plain", {"body": "hello"}, admin=True)
        assert outcome.error is None, outcome.error
        assert outcome.value == {
            "stored": True,
            "all": ["hello"],
            "file": b"bytes from a def action",
            "job": True,
            "who": None,
            "nested": "nested ran",
        }
        assert outcome.log_lines == ["[LOG] in a def action", "[LOG] storing hello"]


async def test_an_async_iterator_made_by_an_action_can_be_stored(tmp_path: Path) -> None:
    async with BasaltTest(App.from_modules(MODULES), data_dir=tmp_path) as t:
        assert await t.action("acts:async_storage", {}) == b"streamed from the action loop"


async def test_a_blocked_action_loop_moves_new_actions_to_a_fresh_one(
    make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadlock of an action that waits, blocking, for another action (say,
    by calling its own server over HTTP) ends: the second action starts on a
    fresh loop and releases the first."""
    rt = await make_runtime(MODULES)
    EVENTS["d"] = threading.Event()
    with caplog.at_level(logging.WARNING, logger="basalt.runtime"):
        blocked = asyncio.create_task(rt.action("acts:blocks", {"name": "d"}))
        await asyncio.sleep(0.05)  # let it take the loop
        releasing = asyncio.create_task(rt.action("acts:releases", {"name": "d"}))
        assert await asyncio.wait_for(releasing, 30) == "released"
        assert await asyncio.wait_for(blocked, 30) == "d"
    messages = [r.getMessage() for r in caplog.records]
    assert any("acts:blocks has blocked the action loop" in m for m in messages), messages
    assert any("new actions start on a fresh action loop" in m for m in messages), messages


async def test_def_is_for_actions_only() -> None:
    def not_async(ctx: Any) -> None: ...

    with pytest.raises(SchemaDefinitionError, match="only actions may also be plain 'def'"):
        query(not_async)
    with pytest.raises(SchemaDefinitionError, match="async def"):
        mutation(not_async)


def test_the_worker_module_documents_its_defaults() -> None:
    assert action_workers.MOVE_AFTER_SECONDS > 0
    assert action_workers.DEFAULT_MAX_THREADS >= 1


async def test_stopping_the_runtime_ends_the_action_threads(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    assert await rt.action("acts:nested", {}) == "nested ran"
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("basalt-actions-") for n in names)
    await rt.stop()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("basalt-actions-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "action loop threads outlived the runtime"
        await asyncio.sleep(0.01)
