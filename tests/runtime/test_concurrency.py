"""Concurrent mutations: serializable, all-or-nothing each, committed in groups."""

from __future__ import annotations

import asyncio
from typing import Any

from basalt import ConvexError, mutation, query
from basalt.storage.base import Commit
from basalt.storage.sqlite import SqliteEngine

from .conftest import MakeRuntime


@mutation
async def bump(ctx: Any, fail: bool = False) -> float:
    counter = await ctx.db.query("counters").first()
    if counter is None:
        await ctx.db.insert("counters", {"n": 1.0})
        value = 1.0
    else:
        value = counter["n"] + 1
        await ctx.db.patch(counter["_id"], {"n": value})
    await ctx.db.insert("log", {"n": value})
    if fail:
        raise ConvexError("refused")
    return value


@query
async def state(ctx: Any) -> Any:
    counter = await ctx.db.query("counters").first()
    log = [d["n"] for d in await ctx.db.query("log").collect()]
    return {"n": counter["n"] if counter else 0.0, "log": log}


MODULES = {"c": {"bump": bump, "state": state}}


async def test_concurrent_mutations_are_serializable_and_isolated(
    make_runtime: MakeRuntime,
) -> None:
    rt = await make_runtime(MODULES)
    storage = rt.storage
    grouping = isinstance(storage, SqliteEngine)
    seen: list[Commit] = []
    storage.on_commit(seen.append)
    groups_before = storage.groups_committed if isinstance(storage, SqliteEngine) else 0
    calls = [rt.call("c:bump", {"fail": i % 5 == 4}) for i in range(100)]
    outcomes = await asyncio.gather(*calls)
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    assert len(ok) == 80 and len(failed) == 20
    assert all(isinstance(o.error, ConvexError) and o.ts is None for o in failed)
    # Every successful increment saw all earlier ones: values are 1..80, each once.
    assert sorted(o.value for o in ok) == [float(i) for i in range(1, 81)]
    final = await rt.query("c:state", {})
    assert final["n"] == 80.0 and final["log"] == [float(i) for i in range(1, 81)]
    # Commit timestamps increase in commit order, and listeners saw them in that order.
    ts = [o.ts for o in sorted(ok, key=lambda o: o.value)]
    assert ts == sorted(ts) and [c.ts for c in seen] == ts
    # Mutations that arrived together shared SQLite transactions.
    if grouping:
        assert isinstance(storage, SqliteEngine)
        assert storage.groups_committed - groups_before < 80
    assert await storage.latest_ts() == ts[-1]
