"""Reloading the app (``basalt dev``): live subscriptions run the new code."""

from __future__ import annotations

from typing import Any

from basalt import mutation, query, v
from basalt.runtime import App

from . import app as app_module
from .conftest import MakeEnv


def modules(version: int) -> dict[str, Any]:
    """The ``live`` module as it is before (1) and after (2) an edit."""

    async def rows(ctx: Any, group: str) -> list[Any]:
        return await (
            ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group)).collect()
        )

    @query(args={"group": v.string()})
    async def count(ctx: Any, group: str) -> int:
        n = len(await rows(ctx, group))
        return n if version == 1 else 100 + n

    @query(args={"group": v.string()})
    async def same(ctx: Any, group: str) -> str:
        return "unchanged"

    # Version 2 takes a number: the string the client subscribed with is refused.
    @query(args={"group": v.string() if version == 1 else v.float64()})
    async def strict(ctx: Any, group: Any) -> Any:
        return group

    @query(args={})
    async def doomed(ctx: Any) -> str:
        return "here"

    @mutation(args={"group": v.string()})
    async def add(ctx: Any, group: str) -> None:
        await ctx.db.insert("items", {"group": group, "n": 1.0})

    live: dict[str, Any] = {"count": count, "same": same, "strict": strict, "add": add}
    if version == 1:
        live["doomed"] = doomed  # deleted by the edit
    return {"live": live}


async def test_a_reload_reruns_every_live_subscription_with_the_new_code(
    make_env: MakeEnv,
) -> None:
    env = await make_env(modules(1), app_module.schema)
    first, second = await env.connected("first"), await env.connected("second")
    q_count = await first.subscribe("live:count", {"group": "g"})
    q_same = await first.subscribe("live:same", {"group": "g"})
    q_strict = await first.subscribe("live:strict", {"group": "g"})
    q_doomed = await first.subscribe("live:doomed")
    q_shared = await second.subscribe("live:count", {"group": "g"})  # one shared execution
    await first.mutation("live:add", {"group": "g"})
    await first.mutation("live:add", {"group": "g"})
    await env.settle()
    assert first.value(q_count) == second.value(q_shared) == 2.0
    assert (first.value(q_strict), first.value(q_doomed)) == ("g", "here")
    ts = await env.runtime.storage.latest_ts()

    marks = first.mark(), second.mark()
    await env.runtime.reload(App.from_modules(modules(2), schema=app_module.schema))
    await env.hub.reload()
    await env.settle()

    # Without any commit, the new code's results arrive, in one Transition per client.
    assert await env.runtime.storage.latest_ts() == ts
    assert first.value(q_count) == second.value(q_shared) == 102.0
    kind, message, _ = first.results[q_strict]
    assert kind == "error" and "Invalid arguments for live:strict" in message
    kind, message, _ = first.results[q_doomed]
    assert kind == "error" and "live:doomed" in message
    [transition] = first.since(marks[0])
    changed = {mod["queryId"] for mod in transition["modifications"]}
    assert changed == {q_count, q_strict, q_doomed}  # "same" did not change: not re-sent
    assert [m["type"] for m in second.since(marks[1])] == ["Transition"]
    assert first.value(q_same) == "unchanged"

    # A later commit re-runs the new code too.
    await second.mutation("live:add", {"group": "g"})
    await env.settle()
    assert first.value(q_count) == second.value(q_shared) == 103.0


async def test_a_reload_leaves_unchanged_results_unsent(make_env: MakeEnv) -> None:
    env = await make_env(modules(1), app_module.schema)
    client = await env.connected()
    await client.subscribe("live:same", {"group": "g"})
    await env.settle()
    mark = client.mark()
    await env.runtime.reload(App.from_modules(modules(1), schema=app_module.schema))
    await env.hub.reload()
    await env.settle()
    assert client.since(mark) == []
