"""The app the sync tests subscribe to: items in groups with an index on
(group, n), queries of every read shape, mutations, actions and errors.

``CALLS`` counts how often each query handler ran (executions, not results).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from typing import Any

from basalt import (
    ConvexError,
    action,
    define_schema,
    define_table,
    internal_query,
    mutation,
    query,
    v,
)
from basalt.runtime.db import UNSET

schema = define_schema(
    {
        "items": define_table(
            {"group": v.string(), "n": v.float64(), "label": v.optional(v.string())}
        ).index("by_group_n", ["group", "n"]),
    },
    strict_table_name_types=False,
)

CALLS: Counter[str] = Counter()

#: Set by a test to make ``items:gated`` wait inside its run (see the race test).
GATE: dict[str, asyncio.Event] = {}


def _strip(docs: list[dict[str, Any]]) -> list[Any]:
    return [[d.get("group"), d.get("n"), d.get("label")] for d in docs]


# -- queries ----------------------------------------------------------------------


@query
async def by_group(ctx: Any, group: str) -> Any:
    CALLS["by_group"] += 1
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return _strip(await q.collect())


@query
async def in_range(ctx: Any, group: str, lo: float, hi: float) -> Any:
    CALLS["in_range"] += 1
    q = ctx.db.query("items").with_index(
        "by_group_n", lambda q: q.eq("group", group).gte("n", lo).lt("n", hi)
    )
    return _strip(await q.collect())


@query
async def first_n(ctx: Any, group: str, count: float, order: str = "asc") -> Any:
    CALLS["first_n"] += 1
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return _strip(await q.order(order).take(int(count)))


@query
async def get(ctx: Any, id: str) -> Any:
    CALLS["get"] += 1
    doc = await ctx.db.get(id)
    return None if doc is None else _strip([doc])[0]


@query
async def two_groups(ctx: Any, first: str, second: str) -> Any:
    """Reads two ranges and lets other tasks run in between (as a query on a
    networked database would), so commits can land in the middle of a cycle."""
    CALLS["two_groups"] += 1
    found = []
    for group in (first, second):
        q = ctx.db.query("items").with_index("by_group_n", lambda q, g=group: q.eq("group", g))
        found.append(_strip(await q.collect()))
        await asyncio.sleep(0)
    return found


@query
async def everything(ctx: Any) -> Any:
    CALLS["everything"] += 1
    return _strip(await ctx.db.query("items").collect())


@query
async def count_ns(ctx: Any, group: str) -> Any:
    """A result that often stays the same when the data changes."""
    CALLS["count_ns"] += 1
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return float(len(await q.collect()))


@query
async def later(ctx: Any) -> Any:
    """Reads a table that no schema declares and nothing has created yet."""
    CALLS["later"] += 1
    return [d["text"] for d in await ctx.db.query("later").collect()]


@query
async def whoami(ctx: Any) -> Any:
    CALLS["whoami"] += 1
    identity = await ctx.auth.get_user_identity()
    return None if identity is None else identity["subject"]


@query
async def maybe_whoami(ctx: Any, group: str) -> Any:
    """Reads auth only once the group has items."""
    CALLS["maybe_whoami"] += 1
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    if not await q.collect():
        return "nobody"
    identity = await ctx.auth.get_user_identity()
    return None if identity is None else identity["subject"]


@query
async def logs(ctx: Any, group: str) -> Any:
    print("looking at", group)
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return float(len(await q.collect()))


@query
async def boom(ctx: Any) -> Any:
    raise ValueError("kaboom")


@query
async def leaky(ctx: Any, group: str) -> Any:
    """Prints and logs; fails with a secret in its message once the group has a
    negative item (for the redaction tests)."""
    CALLS["leaky"] += 1
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    docs = await q.collect()
    print(f"checked {group}: {len(docs)}")
    logging.getLogger(__name__).warning("%d items in %s", len(docs), group)
    if any(d["n"] < 0 for d in docs):
        raise ValueError("SECRET_DB_PASSWORD=hunter2")
    return float(len([d for d in docs if d["n"] > 0]))


@query
async def refuse(ctx: Any, code: str) -> Any:
    raise ConvexError({"code": code})


@query
async def gated(ctx: Any, group: str) -> Any:
    """Stops in the middle of its run until the test opens ``GATE["open"]``."""
    CALLS["gated"] += 1
    if "open" in GATE:
        GATE["entered"].set()
        await GATE["open"].wait()
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return _strip(await q.collect())


@query
async def sized(ctx: Any, group: str, extra: float = 0.0, salt: float = 0.0) -> Any:
    """A string of 1,000 characters per item of the group plus ``extra``
    (``salt`` only makes the arguments, and so the execution, distinct)."""
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return "x" * (1000 * len(await q.collect()) + int(extra))


@query
async def slow(ctx: Any, group: str, salt: float = 0.0) -> Any:
    """``by_group`` that waits a few milliseconds first (as a slow query would)."""
    CALLS["slow"] += 1
    await asyncio.sleep(0.005)
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return _strip(await q.collect())


@internal_query
async def secret(ctx: Any, x: float = 0.0) -> Any:
    return "classified"


# -- mutations and actions --------------------------------------------------------


@mutation
async def add(ctx: Any, group: str, n: float, label: str | None = None) -> Any:
    doc: dict[str, Any] = {"group": group, "n": n}
    if label is not None:
        doc["label"] = label
    return await ctx.db.insert("items", doc)


@mutation
async def move(ctx: Any, id: str, group: str | None = None, n: float | None = None) -> None:
    fields: dict[str, Any] = {}
    if group is not None:
        fields["group"] = group
    if n is not None:
        fields["n"] = n
    await ctx.db.patch(id, fields)


@mutation
async def relabel(ctx: Any, id: str, label: str | None = None) -> None:
    await ctx.db.patch(id, {"label": UNSET if label is None else label})


@mutation
async def remove(ctx: Any, id: str) -> None:
    await ctx.db.delete(id)


@mutation
async def add_later(ctx: Any, text: str) -> Any:
    return await ctx.db.insert("later", {"text": text})


@mutation
async def reject(ctx: Any, data: Any) -> Any:
    await ctx.db.insert("items", {"group": "rejected", "n": 0.0})
    raise ConvexError(data)


@mutation
async def crash(ctx: Any) -> Any:
    await ctx.db.insert("items", {"group": "crashed", "n": 0.0})
    raise RuntimeError("the mutation broke")


@mutation
async def counted(ctx: Any, group: str) -> Any:
    """Inserts one item and returns how many the group has (shows double application)."""
    await ctx.db.insert("items", {"group": group, "n": 0.0})
    q = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", group))
    return float(len(await q.collect()))


@mutation
async def add_when_open(ctx: Any, group: str) -> Any:
    """Inserts into ``group`` once the group ``open`` has an item; fails before."""
    gate = ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("group", "open"))
    if await gate.first() is None:
        raise ConvexError("not open yet")
    return await ctx.db.insert("items", {"group": group, "n": 0.0})


@mutation
async def who_mutates(ctx: Any) -> Any:
    identity = await ctx.auth.get_user_identity()
    return None if identity is None else identity["subject"]


@action
async def shout(ctx: Any, text: str) -> Any:
    print("shouting", text)
    return {"shout": text.upper()}


@action
async def refuse_action(ctx: Any, code: str) -> Any:
    raise ConvexError({"code": code})


@action
async def broken_action(ctx: Any) -> Any:
    raise ValueError("the action broke")


#: Per key: how many ``items:held`` actions run now, and the most at once.
HELD: dict[str, list[int]] = {}
#: Keys whose ``items:held`` actions may return.
RELEASED: set[str] = set()
_held_lock = threading.Lock()


@action
async def held(ctx: Any, key: str, pad: str = "") -> Any:
    """Runs until a test adds ``key`` to ``RELEASED`` (``pad`` only makes the
    request larger)."""
    with _held_lock:
        counts = HELD.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] = max(counts[1], counts[0])
    try:
        while key not in RELEASED:
            await asyncio.sleep(0.002)
    finally:
        with _held_lock:
            counts[0] -= 1
    return None


@mutation
async def leaky_mutation(ctx: Any) -> Any:
    print("about to fail")
    raise ValueError("SECRET_DB_PASSWORD=hunter2")


@action
async def leaky_action(ctx: Any) -> Any:
    print("about to fail")
    raise ValueError("SECRET_DB_PASSWORD=hunter2")


@query
async def default(ctx: Any) -> Any:
    return "the default export"


ITEMS = {
    name: obj
    for name, obj in dict(globals()).items()
    if name
    in {
        "by_group",
        "in_range",
        "first_n",
        "get",
        "everything",
        "two_groups",
        "count_ns",
        "later",
        "whoami",
        "maybe_whoami",
        "logs",
        "leaky",
        "leaky_mutation",
        "leaky_action",
        "boom",
        "refuse",
        "gated",
        "secret",
        "add",
        "move",
        "relabel",
        "remove",
        "add_later",
        "reject",
        "crash",
        "counted",
        "who_mutates",
        "add_when_open",
        "sized",
        "slow",
        "shout",
        "refuse_action",
        "broken_action",
        "held",
    }
}

MODULES: dict[str, Any] = {"items": ITEMS, "counter": {"default": default}}
