"""The storage contract: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from basalt.storage.base import BY_CREATION_TIME, CATALOG_INDEX_ID, Commit
from basalt.storage.indexing import index_key
from basalt.testing.engines import Backend, drop_test_databases, engine_for_tests
from basalt.values.ids import encode_id, new_internal_id
from basalt.values.keys import encode_key, prefix_successor

from .conftest import OpenEngine

# The engines implement more than the Persistence protocol spells (prune_commits).
Engine = Any


def doc(number: int, t: float, **fields: object) -> dict[str, object]:
    return {"_id": encode_id(number, new_internal_id(t)), "_creationTime": t, **fields}


async def test_scan_ranges_order_and_continuation(engine: Engine) -> None:
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        index = await tx.add_index(table, "by_g", ("g",))
        docs = [doc(table.number, 1000.0 + i, g=float(i % 3)) for i in range(250)]
        for d in docs:
            await tx.insert(table, d)
        await tx.commit()
    async with engine.read() as rx:
        all_keys = [k async for k, _ in rx.scan(index, b"", None, batch_size=7)]
        assert all_keys == sorted(all_keys) and len(all_keys) == 250
        start = encode_key([1.0])
        ones = [d async for _, d in rx.scan(index, start, prefix_successor(start))]
        assert [d["_id"] for d in ones] == [d["_id"] for d in docs if d["g"] == 1.0]
        rev = [d async for _, d in rx.scan(index, start, prefix_successor(start), reverse=True)]
        assert rev == ones[::-1]
        third = ones[2]
        after = (index_key(third, index), third["_id"])
        rest = [d async for _, d in rx.scan(index, start, prefix_successor(start), after=after)]
        assert rest == ones[3:]
        rest_rev = [
            d
            async for _, d in rx.scan(
                index, start, prefix_successor(start), reverse=True, after=after
            )
        ]
        assert rest_rev == ones[:2][::-1]
        assert await rx.count(table.number) == 250
        assert rx.bytes_read > 0


VALUES: list[object] = [
    None,
    -(2**63),
    -1,
    0,
    2**62,
    float("-inf"),
    -1.5,
    -0.0,
    0.0,
    1e-300,
    2.5,
    float("inf"),
    float("nan"),
    False,
    True,
    "",
    "A",
    "a",
    "a\x00b",
    "é",
    "\uffff",
    "😀",
    b"",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff\xff",
    [],
    [1.0, "x"],
    {"a": 1.0},
]


async def test_keys_compare_bytewise_like_the_value_order(engine: Engine) -> None:
    """Keys holding every kind of value (bytes ≥ 0x80 included) come back from
    the engine in byte order, which is the value order."""
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        index = await tx.add_index(table, "by_v", ("v",))
        docs = [doc(table.number, 1.0 + i, v=v) for i, v in enumerate(VALUES)]
        docs.append(doc(table.number, 100.0))  # v missing: below null
        for d in docs:
            await tx.insert(table, d)
        await tx.commit()
    expected = sorted(index_key(d, index) for d in docs)
    async with engine.read() as rx:
        forward = [k async for k, _ in rx.scan(index, b"", None, batch_size=4)]
        backward = [k async for k, _ in rx.scan(index, b"", None, reverse=True, batch_size=3)]
        assert forward == expected and backward == expected[::-1]
        got = {d["_id"]: d async for _, d in rx.scan(index, b"", None)}
    for d in docs:  # values round-trip exactly (NaN aside, which != itself)
        if d.get("v") == d.get("v"):
            assert got[d["_id"]] == d


async def test_rollback_leaves_no_table_index_or_document(engine: Engine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.write() as tx:
            table = await tx.ensure_table("ghost")
            await tx.insert(table, doc(table.number, 1.0, a=1.0))
            raise RuntimeError("abort")
    assert engine.catalog.table_by_name("ghost") is None
    async with engine.write() as tx:
        table = await tx.ensure_table("real")
        await tx.commit()
    assert engine.catalog.table_by_name("real") == table
    assert engine.catalog.index(table.number, BY_CREATION_TIME) is not None
    async with engine.read() as rx:
        assert rx.catalog.table_by_name("ghost") is None
        assert await rx.count(table.number) == 0


async def test_commit_log_and_listeners(engine: Engine) -> None:
    seen: list[Commit] = []
    remove = engine.on_commit(seen.append)
    before = await engine.latest_ts()
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        d = doc(table.number, 5.0, a=1.0)
        await tx.insert(table, d)
        ts1 = await tx.commit()
    async with engine.write() as tx:
        new = dict(d, a=2.0)
        await tx.replace(table, d, new)
        ts2 = await tx.commit()
    async with engine.write() as tx:
        await tx.delete(table, new)
        ts3 = await tx.commit()
    remove()
    assert before < ts1 < ts2 < ts3 == await engine.latest_ts()
    commits = await engine.commits_since(before)
    assert [c.ts for c in commits] == [ts1, ts2, ts3] == [c.ts for c in seen]
    index = engine.catalog.by_creation_time(table.number)
    first_keys = {(k.index_id, k.key) for k in commits[0].keys}
    assert (CATALOG_INDEX_ID, b"t") in first_keys
    assert (index.id, index_key(d, index)) in first_keys
    assert commits[0].doc_ids == commits[2].doc_ids == [d["_id"]]
    # A replace that keeps every index key still writes at that key: a query that read
    # the document through the index must see the change.
    assert [(k.index_id, k.key) for k in commits[1].keys] == [(index.id, index_key(new, index))]
    assert await engine.prune_commits(ts3) == 2
    assert [c.ts for c in await engine.commits_since(0)] == [ts3]
    assert [c.ts for c in await engine.commits_since(ts1, limit=1)] == [ts3]


async def test_replace_moves_index_entries_and_drop_index(engine: Engine) -> None:
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        index = await tx.add_index(table, "by_a", ("a",))
        d = doc(table.number, 1.0, a=1.0)
        await tx.insert(table, d)
        await tx.commit()
    async with engine.write() as tx:
        assert await tx.get(d["_id"]) == d
        await tx.replace(table, d, dict(d, a=7.0))
        # The transaction sees its own writes.
        assert [x async for _, x in tx.scan(index, encode_key([7.0]), None)] == [dict(d, a=7.0)]
        await tx.commit()
    async with engine.read() as rx:
        assert [x["a"] async for _, x in rx.scan(index, b"", None)] == [7.0]
        assert await rx.get("missing") is None
    async with engine.write() as tx:
        await tx.drop_index(index)
        await tx.commit()
    assert engine.catalog.index(table.number, "by_a") is None
    async with engine.read() as rx:
        assert [x async for _, x in rx.scan(index, b"", None)] == []
        assert await rx.count(table.number) == 1


async def test_meta_is_written_with_the_transaction(engine: Engine) -> None:
    assert await engine.get_meta("schema") is None
    async with engine.write() as tx:
        await tx.set_meta("schema", "one")
    assert await engine.get_meta("schema") is None  # not committed
    async with engine.write() as tx:
        await tx.set_meta("schema", "two")
        await tx.commit()
    async with engine.write() as tx:
        await tx.set_meta("schema", "three")
        await tx.commit()
    assert await engine.get_meta("schema") == "three"


async def test_reads_see_one_snapshot(engine: Engine) -> None:
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        await tx.insert(table, doc(table.number, 1.0, a=1.0))
        await tx.commit()
    index = engine.catalog.by_creation_time(table.number)
    async with engine.read() as rx:
        ts = rx.ts
        async with engine.write() as tx:
            await tx.insert(table, doc(table.number, 2.0, a=2.0))
            await tx.commit()
        assert len([d async for _, d in rx.scan(index, b"", None)]) == 1
        assert rx.ts == ts
    async with engine.read() as rx:
        assert len([d async for _, d in rx.scan(index, b"", None)]) == 2
        assert rx.ts > ts


async def test_a_second_engine_sees_the_catalog_and_data(open_engine: OpenEngine) -> None:
    """Two engines on one database, as two processes: each picks up the other's
    tables, indexes and documents in its next write transaction. (PostgreSQL read
    transactions pick them up too, see test_postgres.py; SQLite's do not yet.)"""
    a: Engine = await open_engine()
    b: Engine = await open_engine()
    async with a.write() as tx:
        table = await tx.ensure_table("t")
        index = await tx.add_index(table, "by_x", ("x",))
        await tx.insert(table, doc(table.number, 1.0, x=1.0))
        await tx.commit()
    async with b.write() as tx:
        assert tx.catalog.index(table.number, "by_x") == index
        assert [d["x"] async for _, d in tx.scan(index, b"", None)] == [1.0]
        other = await tx.ensure_table("u")
        await tx.insert(table, doc(table.number, 2.0, x=2.0))
        await tx.commit()
    assert other.number != table.number
    async with a.write() as tx:
        assert tx.catalog.table_by_name("u") == other
        assert [d["x"] async for _, d in tx.scan(index, b"", None)] == [1.0, 2.0]
    assert a.catalog.table_by_name("u") == other


async def test_timestamps_never_go_back_across_restarts(open_engine: OpenEngine) -> None:
    e: Engine = await open_engine()
    async with e.write() as tx:
        await tx.ensure_table("t")
        ts = await tx.commit()
    await e.close()
    e2: Engine = await open_engine()
    assert await e2.latest_ts() == ts
    async with e2.write() as tx:
        assert await tx.commit() > ts


async def test_exists_says_whether_the_database_was_made_and_makes_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    """``basalt run`` and ``export`` ask it to refuse a data folder (or schema)
    that holds no database, instead of creating an empty one."""
    engine = engine_for_tests(tmp_path, "fresh", backend=backend)
    assert not await engine.exists()
    assert not await engine.exists()  # asking made nothing
    try:
        await engine.open()
        assert await engine.exists()
    finally:
        await engine.close()
    assert await engine_for_tests(tmp_path, "fresh", backend=backend).exists()
    if backend == "postgres":
        await drop_test_databases(tmp_path)
