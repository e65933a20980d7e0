"""Read and write transactions of the PostgreSQL engine (:mod:`basalt.storage.postgres`).

A reader runs in ``SERIALIZABLE READ ONLY`` (one snapshot; PostgreSQL may
refuse it rarely, see :mod:`basalt.storage.postgres`); a writer in
``SERIALIZABLE``. Any serialization failure (SQLSTATE 40001), deadlock
(40P01), or clash of two catalog changes made at once (a unique violation on
``tables``/``indexes``) surfaces as :class:`~basalt.errors.WriteConflict`, which
the runtime retries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the PostgreSQL engine needs psycopg 3: pip install 'basalt-backend[postgres]'"
    ) from exc

from basalt.errors import StorageError, WriteConflict
from basalt.values.wire import dumps_stored, loads_stored

from . import postgres_sql as q
from .base import (
    BY_CREATION_TIME,
    CATALOG_INDEX_ID,
    Commit,
    Document,
    IndexInfo,
    KeyWrite,
    TableInfo,
)
from .catalog import MemoryCatalog
from .commitlog import encode_writes
from .indexing import index_key
from .scans import ScanPages

if TYPE_CHECKING:
    from .postgres import PostgresEngine

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


def conflict(exc: psycopg.Error) -> WriteConflict | None:
    """The :class:`WriteConflict` a driver error means, if it means one."""
    if isinstance(exc, _RETRYABLE):
        return WriteConflict(f"PostgreSQL refused to serialize this transaction ({exc.sqlstate})")
    return None


async def fetch(conn: Conn, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement and return its rows (raising WriteConflict on conflicts)."""
    try:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description is not None else []
    except psycopg.Error as exc:
        signal = conflict(exc)
        if signal is not None:
            raise signal from exc
        raise


async def run(conn: Conn, sql: str, params: Sequence[Any] = ()) -> None:
    await fetch(conn, sql, params)


async def begin(conn: Conn, sql: str) -> tuple[Any, ...]:
    """``BEGIN …; SELECT …`` in one round trip: the row the SELECT returns
    (raising WriteConflict if a serializable transaction is refused already)."""
    try:
        cur = await conn.execute(sql)
        cur.nextset()
        row = await cur.fetchone()
    except psycopg.Error as exc:
        signal = conflict(exc)
        if signal is not None:
            raise signal from exc
        raise
    assert row is not None
    return row


async def load_catalog(conn: Conn) -> MemoryCatalog:
    catalog = MemoryCatalog()
    for number, name in await fetch(conn, q.LOAD_TABLES):
        catalog.add_table(TableInfo(name=name, number=number))
    for id_, table_number, name, fields, state in await fetch(conn, q.LOAD_INDEXES):
        catalog.add_index(IndexInfo(id_, table_number, name, tuple(json.loads(fields)), state))
    return catalog


class PgReader:
    """Reads through one pooled connection inside an open transaction."""

    def __init__(self, conn: Conn, catalog: MemoryCatalog, ts: int) -> None:
        self._conn = conn
        self.catalog = catalog
        self.ts = ts
        self.bytes_read = 0

    async def get(self, doc_id: str) -> Document | None:
        for (value,) in await fetch(self._conn, q.GET, (doc_id,)):
            self.bytes_read += len(value)
            return cast(Document, loads_stored(value))
        return None

    async def scan(
        self,
        index: IndexInfo,
        start: bytes,
        end: bytes | None,
        *,
        reverse: bool = False,
        after: tuple[bytes, str] | None = None,
        batch_size: int = 100,
    ) -> AsyncIterator[tuple[bytes, Document]]:
        pages = ScanPages(
            q.SCAN, index.id, start, end, reverse=reverse, after=after, batch_size=batch_size
        )
        page: tuple[str, tuple[Any, ...]] | None = pages.first
        while page is not None:
            rows = await fetch(self._conn, *page)
            for key, _, value in rows:
                self.bytes_read += len(value)
                yield key, cast(Document, loads_stored(value))
            page = pages.after_page(rows)

    async def count(self, table_number: int) -> int:
        index = self.catalog.by_creation_time(table_number)
        rows = await fetch(self._conn, q.COUNT, (index.id,))
        return int(rows[0][0])


class PgWriter(PgReader):
    """A ``SERIALIZABLE`` write transaction; :meth:`commit` ends it with COMMIT."""

    def __init__(self, engine: PostgresEngine, conn: Conn, catalog: MemoryCatalog) -> None:
        super().__init__(conn, catalog, engine._visible_ts)
        self._engine = engine
        self._catalog_version: int | None = None
        self._doc_ids: list[str] = []
        self._keys: list[KeyWrite] = []
        self.committed_ts: int | None = None
        #: set once COMMIT (or ROLLBACK) has been sent
        self.finished = False
        #: held while the catalog changes: a function may run writes of one
        #: transaction concurrently (asyncio.gather), and a change awaits the
        #: database between reading the catalog and adding to it
        self._catalog_lock = asyncio.Lock()

    async def _own_catalog(self) -> MemoryCatalog:
        """The catalog to change: a private copy, with the version bumped in the
        database (two transactions changing the catalog at once conflict)."""
        if self._catalog_version is None:
            rows = await fetch(self._conn, q.BUMP_CATALOG)
            self._catalog_version = int(rows[0][0])
            self.catalog = self.catalog.copy()
        return self.catalog

    async def _insert_catalog_row(self, sql: str, params: Sequence[Any]) -> None:
        try:
            await run(self._conn, sql, params)
        except pg_errors.UniqueViolation as exc:
            # Another process created the same table/index number meanwhile.
            raise WriteConflict("the catalog changed concurrently") from exc

    async def ensure_table(self, name: str) -> TableInfo:
        table = self.catalog.table_by_name(name)
        if table is not None:
            return table
        async with self._catalog_lock:
            table = self.catalog.table_by_name(name)  # made meanwhile by a concurrent write
            if table is not None:
                return table
            catalog = await self._own_catalog()
            table = TableInfo(name=name, number=catalog.next_table_number(name.startswith("_")))
            await self._insert_catalog_row(q.INSERT_TABLE, (table.number, name))
            catalog.add_table(table)
            self._keys.append(KeyWrite(CATALOG_INDEX_ID, name.encode()))
            await self._add_index_row(table, BY_CREATION_TIME, ())
        return table

    async def _create_index(
        self, table: TableInfo, name: str, fields: tuple[str, ...]
    ) -> IndexInfo:
        async with self._catalog_lock:
            return await self._add_index_row(table, name, fields)

    async def _add_index_row(
        self, table: TableInfo, name: str, fields: tuple[str, ...]
    ) -> IndexInfo:
        catalog = await self._own_catalog()
        index = IndexInfo(catalog.next_index_id(), table.number, name, fields, "ready")
        await self._insert_catalog_row(
            q.INSERT_INDEX, (index.id, table.number, name, json.dumps(list(fields)), index.state)
        )
        catalog.add_index(index)
        return index

    async def add_index(self, table: TableInfo, name: str, fields: tuple[str, ...]) -> IndexInfo:
        index = await self._create_index(table, name, fields)
        source = self.catalog.by_creation_time(table.number)
        rows = [
            (index.id, index_key(doc, index), doc["_id"])
            async for _, doc in self.scan(source, b"", None, batch_size=1000)
        ]
        await self._executemany(q.INSERT_ENTRY, rows)
        return index

    async def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            async with self._conn.cursor() as cur:
                await cur.executemany(sql, rows)
        except psycopg.Error as exc:
            signal = conflict(exc)
            if signal is not None:
                raise signal from exc
            raise

    async def drop_index(self, index: IndexInfo) -> None:
        catalog = await self._own_catalog()
        await run(self._conn, q.DELETE_INDEX_ENTRIES, (index.id,))
        await run(self._conn, q.DELETE_INDEX, (index.id,))
        catalog.remove_index(index)

    async def insert(self, table: TableInfo, document: Document) -> None:
        doc_id = document["_id"]
        await run(self._conn, q.INSERT_DOCUMENT, (doc_id, table.number, dumps_stored(document)))
        params: list[Any] = []
        for index in self.catalog.indexes_of(table.number):
            key = index_key(document, index)
            params += (index.id, key, doc_id)
            self._keys.append(KeyWrite(index.id, key))
        await run(self._conn, q.insert_entries(len(params) // 3), params)
        self._doc_ids.append(doc_id)

    async def replace(self, table: TableInfo, old: Document, new: Document) -> None:
        doc_id = old["_id"]
        await run(self._conn, q.UPDATE_DOCUMENT, (dumps_stored(new), doc_id))
        for index in self.catalog.indexes_of(table.number):
            old_key = index_key(old, index)
            new_key = index_key(new, index)
            # A query that read the document through this index must see the write.
            self._keys.append(KeyWrite(index.id, new_key))
            if old_key == new_key:
                continue
            await run(self._conn, q.UPDATE_ENTRY, (new_key, index.id, old_key, doc_id))
            self._keys.append(KeyWrite(index.id, old_key))
        self._doc_ids.append(doc_id)

    async def delete(self, table: TableInfo, old: Document) -> None:
        doc_id = old["_id"]
        await run(self._conn, q.DELETE_DOCUMENT, (doc_id,))
        for index in self.catalog.indexes_of(table.number):
            key = index_key(old, index)
            await run(self._conn, q.DELETE_ENTRY, (index.id, key, doc_id))
            self._keys.append(KeyWrite(index.id, key))
        self._doc_ids.append(doc_id)

    async def set_meta(self, key: str, value: str) -> None:
        await run(self._conn, q.SET_META, (key, value))

    async def commit(self) -> int:
        """Take the next commit timestamp, log the commit and COMMIT; the writes are
        durable and visible to every process when this returns."""
        if self.committed_ts is not None or self.finished:
            raise StorageError("this transaction was already committed")
        engine = self._engine
        commit = Commit(ts=0, doc_ids=self._doc_ids, keys=self._keys)
        rows = await fetch(
            self._conn, q.COMMIT_LOG, (encode_writes(commit), engine.lock_key, engine.channel)
        )
        prev, commit.ts = int(rows[0][0]), int(rows[0][1])
        self.finished = True
        engine._expect(commit.ts)
        refused = False  # known not to have committed: nothing to read from the log
        try:
            lost = False
            try:
                await self._conn.execute("COMMIT")
            except psycopg.Error as exc:
                signal = conflict(exc)
                if signal is not None:
                    refused = True
                    raise signal from exc
                # The connection failed during COMMIT: ask the database what happened.
                if not await engine._was_committed(commit.ts, exc):
                    refused = True
                    raise WriteConflict(
                        f"the connection was lost before COMMIT ({exc}); nothing was written"
                    ) from exc
                lost = True
            self.committed_ts = commit.ts
            if self._catalog_version is not None:
                engine._adopt_catalog(self.catalog, self._catalog_version)
            if lost:
                await engine._catch_up()  # on a healthy connection
            else:
                await engine._committed(self._conn, commit, prev)
        finally:
            engine._settle(commit.ts, maybe_committed=not refused)
        return commit.ts
