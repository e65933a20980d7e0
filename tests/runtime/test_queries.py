"""ctx.db.query: index ranges, filters, order, terminal operations, pagination."""

from __future__ import annotations

from typing import Any

import pytest

from basalt import define_schema, define_table, mutation, query, v
from basalt.runtime.index_range import IndexRangeError
from basalt.runtime.query import QueryError
from basalt.values.keys import encode_key

from .conftest import MakeRuntime

schema = define_schema(
    {
        "items": define_table(
            {"group": v.string(), "n": v.float64(), "tag": v.optional(v.string())}
        )
        .index("by_group", ["group"])
        .index("by_group_n", ["group", "n"])
        .index("by_tag", ["tag"]),
    }
)


@mutation
async def seed(ctx: Any, groups: list[str], count: float) -> list[str]:
    ids = []
    for group in groups:
        for i in range(int(count)):
            doc: dict[str, Any] = {"group": group, "n": float(i)}
            if i % 2 == 0:
                doc["tag"] = "even"
            ids.append(await ctx.db.insert("items", doc))
    return ids


def _ns(docs: list[dict[str, Any]]) -> list[float]:
    return [d["n"] for d in docs]


@query
async def range_query(ctx: Any, group: str, lo: float, hi: float, order: str) -> Any:
    q = ctx.db.query("items").with_index(
        "by_group_n", lambda q: q.eq("group", group).gte("n", lo).lt("n", hi)
    )
    return await q.order(order).collect()


@query
async def int_bounds(ctx: Any, group: str) -> Any:
    return await (
        ctx.db.query("items")
        .with_index("by_group_n", lambda q: q.eq("group", group).gt("n", 2).lte("n", 4))
        .collect()
    )


@query
async def filtered(ctx: Any, style: str) -> Any:
    q = ctx.db.query("items")
    if style == "builder":
        q = q.filter(lambda q: q.and_(q.eq(q.field("group"), "a"), q.gte(q.field("n"), 3)))
    else:
        q = q.filter(lambda q: (q["group"] == "a") & (q["n"] >= 3))
    return await q.collect()


@query
async def missing_tag(ctx: Any) -> Any:
    return await ctx.db.query("items").filter(lambda q: q.eq(q.field("tag"), None)).collect()


@query
async def by_missing_tag_index(ctx: Any) -> Any:
    return await ctx.db.query("items").with_index("by_tag", lambda q: q.eq("tag", "even")).collect()


@query
async def terminal(ctx: Any, op: str, group: str) -> Any:
    q = ctx.db.query("items").with_index("by_group", lambda q: q.eq("group", group))
    if op == "first":
        return await q.first()
    if op == "unique":
        return await q.unique()
    if op == "take":
        return await q.order("desc").take(3)
    if op == "iter":
        return [d["n"] async for d in q]
    raise AssertionError(op)


@query
async def page(ctx: Any, opts: dict[str, Any], order: str = "asc") -> Any:
    return await ctx.db.query("items").order(order).paginate(opts)


@query
async def bad_index(ctx: Any, style: str) -> Any:
    if style == "no_such_index":
        return await ctx.db.query("items").with_index("nope").collect()
    if style == "wrong_field":
        return (
            await ctx.db.query("items").with_index("by_group_n", lambda q: q.eq("n", 1)).collect()
        )
    if style == "eq_after_range":
        return await (
            ctx.db.query("items")
            .with_index("by_group_n", lambda q: q.gt("group", "a").eq("n", 1))
            .collect()
        )
    if style == "missing_table":
        return await ctx.db.query("nothing_here").collect()
    if style == "system_table":
        return await ctx.db.query("_storage").collect()
    raise AssertionError(style)


MODULES = {
    "items": {
        "seed": seed,
        "range_query": range_query,
        "int_bounds": int_bounds,
        "filtered": filtered,
        "missing_tag": missing_tag,
        "by_missing_tag_index": by_missing_tag_index,
        "terminal": terminal,
        "page": page,
        "bad_index": bad_index,
    }
}


async def test_index_ranges_and_order(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["b", "a", "c"], "count": 10.0})
    asc = await rt.query("items:range_query", {"group": "a", "lo": 2.0, "hi": 6.0, "order": "asc"})
    assert _ns(asc) == [2.0, 3.0, 4.0, 5.0] and {d["group"] for d in asc} == {"a"}
    desc = await rt.query(
        "items:range_query", {"group": "a", "lo": 2.0, "hi": 6.0, "order": "desc"}
    )
    assert _ns(desc) == [5.0, 4.0, 3.0, 2.0]
    # Python ints in a range over a float64 field mean the numbers.
    assert _ns(await rt.query("items:int_bounds", {"group": "c"})) == [3.0, 4.0]


async def test_filters_in_both_spellings(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a", "b"], "count": 6.0})
    for style in ("builder", "operators"):
        docs = await rt.query("items:filtered", {"style": style})
        assert _ns(docs) == [3.0, 4.0, 5.0]
    # A missing field is not null.
    assert await rt.query("items:missing_tag", {}) == []
    assert len(await rt.query("items:by_missing_tag_index", {})) == 6


async def test_terminal_operations(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a"], "count": 5.0})
    await rt.mutation("items:seed", {"groups": ["solo"], "count": 1.0})
    assert (await rt.query("items:terminal", {"op": "first", "group": "a"}))["n"] == 0.0
    assert _ns(await rt.query("items:terminal", {"op": "take", "group": "a"})) == [4.0, 3.0, 2.0]
    assert await rt.query("items:terminal", {"op": "iter", "group": "a"}) == [
        0.0, 1.0, 2.0, 3.0, 4.0,
    ]  # fmt: skip
    assert (await rt.query("items:terminal", {"op": "unique", "group": "solo"}))["n"] == 0.0
    assert await rt.query("items:terminal", {"op": "unique", "group": "none"}) is None
    with pytest.raises(QueryError, match="more than one"):
        await rt.query("items:terminal", {"op": "unique", "group": "a"})


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pagination_visits_every_document_once(make_runtime: MakeRuntime, order: str) -> None:
    rt = await make_runtime(MODULES, schema)
    ids = await rt.mutation("items:seed", {"groups": ["a"], "count": 7.0})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        result = await rt.query(
            "items:page", {"opts": {"numItems": 3.0, "cursor": cursor}, "order": order}
        )
        seen += [d["_id"] for d in result["page"]]
        cursor = result["continueCursor"]
        pages += 1
        if result["isDone"]:
            break
        assert pages < 10
    assert seen == (ids if order == "asc" else ids[::-1])
    assert pages >= 3


async def test_pagination_end_cursor_keeps_page_boundaries(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a"], "count": 6.0})
    first = await rt.query("items:page", {"opts": {"numItems": 3.0, "cursor": None}})
    # New documents arrive; re-running the first page up to its end cursor keeps it stable.
    await rt.mutation("items:seed", {"groups": ["z"], "count": 2.0})
    again = await rt.query(
        "items:page",
        {"opts": {"numItems": 3.0, "cursor": None, "endCursor": first["continueCursor"]}},
    )
    assert [d["_id"] for d in again["page"]] == [d["_id"] for d in first["page"]]
    with pytest.raises(QueryError, match="cursor"):
        await rt.query("items:page", {"opts": {"numItems": 3.0, "cursor": "garbage!"}})


async def test_bad_index_use_is_explained(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a"], "count": 1.0})
    with pytest.raises(QueryError, match="by_group_n"):
        await rt.query("items:bad_index", {"style": "no_such_index"})
    with pytest.raises(IndexRangeError, match="'group'"):
        await rt.query("items:bad_index", {"style": "wrong_field"})
    with pytest.raises(IndexRangeError, match="before any range"):
        await rt.query("items:bad_index", {"style": "eq_after_range"})
    assert await rt.query("items:bad_index", {"style": "missing_table"}) == []
    with pytest.raises(QueryError, match="system table"):
        await rt.query("items:bad_index", {"style": "system_table"})


async def test_read_set_covers_only_what_was_read(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a", "b"], "count": 5.0})
    outcome = await rt.call("items:terminal", {"op": "take", "group": "a"}, admin=True)
    assert outcome.ok and outcome.read_set is not None
    ((index_id, prefix, start, end),) = outcome.read_set.ranges
    table = rt.storage.catalog.table_by_name("items")
    assert table is not None
    index = rt.storage.catalog.index(table.number, "by_group")
    assert index is not None and index_id == index.id
    # Descending take(3) of group "a" stops at n=2: the range starts at that key, not earlier,
    # and lies within the keys of group "a".
    assert start > b"" and end is not None and start < end
    assert prefix == encode_key(["a"]) and start.startswith(prefix) and start > prefix


async def test_read_set_overlaps_only_relevant_commits(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, schema)
    await rt.mutation("items:seed", {"groups": ["a", "b"], "count": 3.0})
    outcome = await rt.call(
        "items:range_query", {"group": "a", "lo": 0.0, "hi": 2.0, "order": "asc"}, admin=True
    )
    read_set = outcome.read_set
    assert read_set is not None
    ts = outcome.ts
    assert ts is not None
    await rt.mutation("items:seed", {"groups": ["b"], "count": 3.0})  # another group
    await rt.mutation("items:seed", {"groups": ["a"], "count": 1.0})  # n=0.0 in group a
    unrelated, related = await rt.storage.commits_since(ts)
    assert not read_set.overlaps(unrelated)
    assert read_set.overlaps(related)
