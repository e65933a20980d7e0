"""What only the SQLite engine has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from basalt.errors import StorageError
from basalt.storage.base import TableInfo
from basalt.storage.indexing import index_key
from basalt.storage.sqlite import SqliteEngine
from basalt.storage.sqlite_checkpoint import FORCE_FACTOR

from .test_contract import doc


def test_durability_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteEngine(":memory:", durability="sometimes")


# -- commit groups: transactions that arrive together share one SQLite transaction


async def _in_one_group(
    engine: SqliteEngine, *bodies: Callable[[Any], Awaitable[None]]
) -> list[BaseException | None]:
    """Run each body in its own write transaction, all queued at once so they
    join one commit group; returns each one's error (None: acknowledged)."""
    before = engine.groups_committed

    async def run(body: Callable[[Any], Awaitable[None]]) -> None:
        async with engine.write() as tx:
            await body(tx)

    results = await asyncio.gather(*(run(b) for b in bodies), return_exceptions=True)
    errors: list[BaseException | None] = [
        r if isinstance(r, BaseException) else None for r in results
    ]
    committed = engine.groups_committed - before
    assert committed <= 1, f"the transactions were committed in {committed} groups, not one"
    return errors


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[SqliteEngine]:
    engine = SqliteEngine(tmp_path / "db.sqlite3")
    await engine.open()
    try:
        yield engine
    finally:
        await engine.close()


async def _table(engine: SqliteEngine, name: str) -> TableInfo:
    async with engine.write() as tx:
        table = await tx.ensure_table(name)
        await tx.commit()
    return table


async def _ids(engine: SqliteEngine, table_name: str) -> list[str]:
    table = engine.catalog.table_by_name(table_name)
    if table is None:
        return []
    async with engine.read() as rx:
        index = rx.catalog.by_creation_time(table.number)
        return [d["_id"] async for _, d in rx.scan(index, b"", None)]


async def test_a_failed_transaction_in_a_group_is_undone_alone(
    sqlite_engine: SqliteEngine,
) -> None:
    engine = sqlite_engine
    notes = await _table(engine, "notes")
    first = doc(notes.number, 1.0, n=1.0)
    ghost = doc(notes.number, 2.0, n=2.0)
    last = doc(notes.number, 3.0, n=3.0)

    async def commits_first(tx: Any) -> None:
        await tx.insert(notes, first)
        await tx.commit()

    async def fails_after_reading_its_writes(tx: Any) -> None:
        await tx.insert(notes, ghost)
        # Reading sends the earlier transaction's rows and then this one's.
        assert await tx.get(ghost["_id"]) == ghost
        assert await tx.get(first["_id"]) == first
        extra = await tx.ensure_table("extra")
        await tx.insert(extra, doc(extra.number, 2.5))
        raise RuntimeError("refused")

    async def commits_last(tx: Any) -> None:
        assert await tx.get(ghost["_id"]) is None
        assert tx.catalog.table_by_name("extra") is None
        await tx.insert(notes, last)
        extra = await tx.ensure_table("extra")
        await tx.insert(extra, doc(extra.number, 3.5))
        await tx.commit()

    errors = await _in_one_group(
        engine, commits_first, fails_after_reading_its_writes, commits_last
    )
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], RuntimeError)
    assert await _ids(engine, "notes") == [first["_id"], last["_id"]]
    assert len(await _ids(engine, "extra")) == 1


async def test_a_document_written_twice_before_a_read_ends_as_last_written(
    sqlite_engine: SqliteEngine,
) -> None:
    engine = sqlite_engine
    async with engine.write() as tx:
        notes = await tx.ensure_table("notes")
        index = await tx.add_index(notes, "by_n", ("n",))
        older = doc(notes.number, 0.5, n=0.0)
        await tx.insert(notes, older)
        await tx.commit()
    original = doc(notes.number, 1.0, n=1.0)
    changed = {**original, "n": 2.0}
    final = {**original, "n": 3.0}

    async def update_other_then_insert_and_replace(tx: Any) -> None:
        # An update comes first, so the insert's rows are not the first to be sent.
        await tx.replace(notes, older, {**older, "n": 0.25})
        await tx.insert(notes, original)
        await tx.replace(notes, original, changed)  # no read in between
        await tx.commit()

    async def replace_again(tx: Any) -> None:
        await tx.replace(notes, changed, final)
        await tx.commit()

    errors = await _in_one_group(engine, update_other_then_insert_and_replace, replace_again)
    assert errors == [None, None]
    async with engine.read() as rx:
        assert await rx.get(original["_id"]) == final
        keys = [k async for k, _ in rx.scan(index, b"", None)]
        assert keys == [index_key({**older, "n": 0.25}, index), index_key(final, index)]


async def test_rows_that_cannot_be_written_fail_the_whole_group_and_nothing_else(
    sqlite_engine: SqliteEngine,
) -> None:
    engine = sqlite_engine
    notes = await _table(engine, "notes")
    same = doc(notes.number, 1.0, n=1.0)
    other = doc(notes.number, 2.0, n=2.0)

    def inserting(document: dict[str, Any]) -> Callable[[Any], Awaitable[None]]:
        async def body(tx: Any) -> None:
            await tx.insert(notes, document)
            await tx.commit()

        return body

    # Two transactions insert the same id: SQLite refuses the second row when the
    # group is written, so no transaction of that group is acknowledged.
    errors = await _in_one_group(engine, inserting(other), inserting(same), inserting(same))
    assert all(isinstance(e, StorageError) for e in errors), errors
    assert await _ids(engine, "notes") == []
    # The engine keeps serving.
    async with engine.write() as tx:
        await tx.insert(notes, same)
        await tx.commit()
    assert await _ids(engine, "notes") == [same["_id"]]


# -- WAL checkpoints run on a worker thread, and the WAL stays bounded


async def test_checkpoints_run_beside_writes_and_keep_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    pages = 16
    engine = SqliteEngine(path, checkpoint_pages=pages)
    await engine.open()
    body = "x" * 600
    largest_wal = 0
    try:
        notes = await _table(engine, "notes")

        async def insert(i: int) -> None:
            async with engine.write() as tx:
                await tx.insert(notes, doc(notes.number, 1.0 + i / 1024, body=body))
                await tx.commit()

        for start in range(0, 6000, 30):  # groups of 30 writes, one after the other
            await asyncio.gather(*(insert(i) for i in range(start, start + 30)))
            largest_wal = max(largest_wal, (tmp_path / "db.sqlite3-wal").stat().st_size)
        written = 6000 * len(body)
        frame = 4096 + 24  # a WAL frame: a page and its header
        assert largest_wal < written / 4, "the WAL grew with the data instead of restarting"
        assert largest_wal <= 2 * FORCE_FACTOR * pages * frame + 64 * frame
        # Checkpoints ran beside writes; now and then writers waited for one, so
        # that the WAL could restart.
        checkpointer = engine.checkpointer
        assert checkpointer.background > 10
        assert checkpointer.waited > 0
    finally:
        await engine.close()
    reopened = SqliteEngine(path)
    await reopened.open()
    try:
        assert len(await _ids(reopened, "notes")) == 6000
    finally:
        await reopened.close()


def test_checkpoint_pages_are_checked() -> None:
    with pytest.raises(ValueError, match="checkpoint_pages"):
        SqliteEngine(":memory:", checkpoint_pages=0)


async def test_writers_that_queued_behind_a_slow_one_share_one_group(
    sqlite_engine: SqliteEngine,
) -> None:
    engine = sqlite_engine
    notes = await _table(engine, "notes")
    go_on = asyncio.Event()

    async def write(i: int, wait: bool = False) -> None:
        async with engine.write() as tx:
            if wait:
                await go_on.wait()  # holds the write lock meanwhile
            await tx.insert(notes, doc(notes.number, 1.0 + i))
            await tx.commit()

    before = engine.groups_committed
    slow = asyncio.ensure_future(write(0, wait=True))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(write(i)) for i in range(1, 21)]
    await asyncio.sleep(0.01)  # all 20 wait for the lock
    go_on.set()
    await asyncio.gather(slow, *queued)
    assert len(await _ids(engine, "notes")) == 21
    assert engine.groups_committed - before == 1
