"""Read and write transactions of the SQLite engine (:mod:`basalt.storage.sqlite`).

**Deferred row writes.** A write transaction does not send its document and
index-entry rows to SQLite one statement at a time. It collects them in a
:class:`WriteBatch`; when it commits, they join the commit group's batch, and
the group sends each kind of statement once (``executemany``) just before its
``COMMIT``. A transaction that fails has written nothing, so it needs no
``SAVEPOINT`` to be undone.

Reads must see every earlier write, so before a writer reads (or runs a
statement of its own, such as creating a table) it sends the batches first:
the group's batch (earlier transactions, already committed), then its own,
inside a ``SAVEPOINT`` if earlier transactions share the SQLite transaction.
A batch holds at most one write of each document (a second write of the same
document sends the batch first), so its statements touch disjoint rows and
their order does not matter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import apsw

from basalt.errors import StorageError
from basalt.values.wire import dumps_stored, loads_stored

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
from .indexing import index_key
from .scans import ScanPages, scan_queries

if TYPE_CHECKING:
    from .sqlite import SqliteEngine

_SCAN_SQL = scan_queries("?")

#: ``KeyWrite(index_id, key)`` without NamedTuple's Python-level ``__new__`` (a
#: commit makes one per index of every document it writes).
_key_write: Callable[[tuple[int, bytes]], KeyWrite] = partial(tuple.__new__, KeyWrite)

INSERT_DOCUMENT = "INSERT INTO documents(id, table_number, value) VALUES (?, ?, ?)"
UPDATE_DOCUMENT = "UPDATE documents SET value = ? WHERE id = ?"
DELETE_DOCUMENT = "DELETE FROM documents WHERE id = ?"
INSERT_ENTRY = "INSERT INTO index_entries(index_id, key, doc_id) VALUES (?, ?, ?)"
UPDATE_ENTRY = "UPDATE index_entries SET key = ? WHERE index_id = ? AND key = ? AND doc_id = ?"
DELETE_ENTRY = "DELETE FROM index_entries WHERE index_id = ? AND key = ? AND doc_id = ?"


class WriteBatch:
    """Row writes not yet sent to SQLite: parameter rows by statement, and the
    ids of the documents they write."""

    __slots__ = ("doc_ids", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.doc_ids: set[str] = set()

    def add(self, sql: str, params: tuple[Any, ...]) -> None:
        rows = self.rows.get(sql)
        if rows is None:
            self.rows[sql] = [params]
        else:
            rows.append(params)

    def absorb(self, other: WriteBatch) -> None:
        """Take over ``other``'s writes (which touch none of this batch's documents)."""
        if not self.rows:
            self.rows, other.rows = other.rows, self.rows
            self.doc_ids, other.doc_ids = other.doc_ids, self.doc_ids
            return
        for sql, rows in other.rows.items():
            mine = self.rows.get(sql)
            if mine is None:
                self.rows[sql] = rows
            else:
                mine += rows
        self.doc_ids |= other.doc_ids
        other.rows = {}
        other.doc_ids = set()

    def apply(self, conn: apsw.Connection) -> None:
        """Send the writes to SQLite (one statement per kind); the batch is empty
        afterwards, also if SQLite refused one."""
        rows, self.rows = self.rows, {}
        self.doc_ids = set()
        for sql, params in rows.items():
            conn.executemany(sql, params)


class CommitGroup:
    """The commit group open on the engine's writer connection: the commits
    that joined it, their rows not yet sent, and what to restore if it fails."""

    __slots__ = ("catalog_before", "commits", "done", "error", "pending", "ts_before")

    def __init__(self, catalog_before: MemoryCatalog, ts_before: int) -> None:
        self.commits: list[Commit] = []
        #: rows of the joined commits not yet sent to SQLite
        self.pending = WriteBatch()
        #: why sending rows failed: the group can only be rolled back
        self.error: BaseException | None = None
        #: resolved when the group's COMMIT is durable (or has failed)
        self.done: asyncio.Future[None] | None = None
        self.catalog_before = catalog_before
        self.ts_before = ts_before

    def apply_pending(self, conn: apsw.Connection) -> None:
        """Send the joined commits' rows; a failure dooms the group."""
        try:
            self.pending.apply(conn)
        except Exception as exc:
            self.error = exc
            raise StorageError(f"writing the commit group failed, so it is undone: {exc}") from exc


class SqliteReader:
    """Reads through one connection inside an open SQLite transaction."""

    ts: int

    def __init__(self, conn: apsw.Connection, catalog: MemoryCatalog) -> None:
        self._conn = conn
        self.catalog = catalog
        self.bytes_read = 0

    def _reading(self) -> apsw.Connection:
        """The connection, ready for a read."""
        return self._conn

    async def get(self, doc_id: str) -> Document | None:
        for (value,) in self._reading().execute(
            "SELECT value FROM documents WHERE id = ?", (doc_id,)
        ):
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
        for key, doc in self._scan(index.id, start, end, reverse, batch_size, after):
            yield key, doc

    def _scan(
        self,
        index_id: int,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        batch_size: int,
        after: tuple[bytes, str] | None = None,
    ) -> Iterator[tuple[bytes, Document]]:
        pages = ScanPages(
            _SCAN_SQL, index_id, start, end, reverse=reverse, after=after, batch_size=batch_size
        )
        page: tuple[str, tuple[Any, ...]] | None = pages.first
        while page is not None:
            rows: list[Any] = self._reading().execute(*page).fetchall()
            for key, _, value in rows:
                self.bytes_read += len(value)
                yield key, cast(Document, loads_stored(value))
            page = pages.after_page(rows)

    async def count(self, table_number: int) -> int:
        index = self.catalog.by_creation_time(table_number)
        for (n,) in self._reading().execute(
            "SELECT count(*) FROM index_entries WHERE index_id = ?", (index.id,)
        ):
            return int(n)
        return 0


class SqliteWriter(SqliteReader):
    """A write transaction in the engine's open commit group (see the module
    docstring). ``savepoint``: earlier transactions share the SQLite
    transaction, so statements of this one run inside a ``SAVEPOINT``."""

    def __init__(
        self, engine: SqliteEngine, conn: apsw.Connection, group: CommitGroup, *, savepoint: bool
    ) -> None:
        # (SqliteReader.__init__ inline: one of these is made for every mutation)
        self._conn = conn
        self.catalog = engine.catalog
        self.bytes_read = 0
        self._engine = engine
        self._group = group
        self._catalog_changed = False
        self._doc_ids: list[str] = []
        self._keys: list[KeyWrite] = []
        self._staged = WriteBatch()
        self._savepoint = savepoint
        #: whether this transaction's SAVEPOINT is open (it is made on first need)
        self.savepoint_open = False
        self.committed_ts: int | None = None

    # -- sending deferred writes ---------------------------------------------
    def _reading(self) -> apsw.Connection:
        group = self._group
        if group.pending.rows:
            group.apply_pending(self._conn)
        if self._staged.rows:
            return self._writing()
        return self._conn

    def _writing(self) -> apsw.Connection:
        """The connection for a statement of this transaction, with every
        earlier write sent, inside the savepoint if there must be one."""
        group = self._group
        conn = self._conn
        if group.pending.rows:
            group.apply_pending(conn)  # before the savepoint: those writes are committed
        if self._savepoint and not self.savepoint_open:
            conn.execute("SAVEPOINT mutation")
            self.savepoint_open = True
        if self._staged.rows:
            self._staged.apply(conn)
        return conn

    def _batch_for(self, doc_id: str) -> WriteBatch:
        """The batch to add a write of ``doc_id`` to (sent first if it already
        writes that document)."""
        staged = self._staged
        if doc_id in staged.doc_ids:
            self._writing()
        staged.doc_ids.add(doc_id)
        return staged

    # -- catalog -------------------------------------------------------------
    def _own_catalog(self) -> MemoryCatalog:
        if not self._catalog_changed:
            self.catalog = self.catalog.copy()
            self._catalog_changed = True
        return self.catalog

    async def ensure_table(self, name: str) -> TableInfo:
        table = self.catalog.table_by_name(name)
        if table is not None:
            return table
        catalog = self._own_catalog()
        table = TableInfo(name=name, number=catalog.next_table_number(name.startswith("_")))
        self._writing().execute(
            "INSERT INTO tables(number, name) VALUES (?, ?)", (table.number, name)
        )
        catalog.add_table(table)
        self._keys.append(KeyWrite(CATALOG_INDEX_ID, name.encode()))
        await self._create_index(table, BY_CREATION_TIME, ())
        return table

    async def _create_index(
        self, table: TableInfo, name: str, fields: tuple[str, ...]
    ) -> IndexInfo:
        catalog = self._own_catalog()
        index = IndexInfo(catalog.next_index_id(), table.number, name, fields, "ready")
        self._writing().execute(
            "INSERT INTO indexes(id, table_number, name, fields, state) VALUES (?, ?, ?, ?, ?)",
            (index.id, table.number, name, json.dumps(list(fields)), index.state),
        )
        catalog.add_index(index)
        return index

    async def add_index(self, table: TableInfo, name: str, fields: tuple[str, ...]) -> IndexInfo:
        index = await self._create_index(table, name, fields)
        source = self.catalog.by_creation_time(table.number)
        rows = [
            (index.id, index_key(doc, index), doc["_id"])
            for _, doc in self._scan(source.id, b"", None, False, 1000)
        ]
        self._writing().executemany(INSERT_ENTRY, rows)
        return index

    async def drop_index(self, index: IndexInfo) -> None:
        conn = self._writing()
        conn.execute("DELETE FROM index_entries WHERE index_id = ?", (index.id,))
        conn.execute("DELETE FROM indexes WHERE id = ?", (index.id,))
        self._own_catalog().remove_index(index)

    # -- documents -----------------------------------------------------------
    async def insert(self, table: TableInfo, document: Document) -> None:
        doc_id = document["_id"]
        batch = self._batch_for(doc_id)
        batch.add(INSERT_DOCUMENT, (doc_id, table.number, dumps_stored(document)))
        keys = self._keys
        for index in self.catalog.indexes_of(table.number):
            key = index_key(document, index)
            batch.add(INSERT_ENTRY, (index.id, key, doc_id))
            keys.append(_key_write((index.id, key)))
        self._doc_ids.append(doc_id)

    async def replace(self, table: TableInfo, old: Document, new: Document) -> None:
        doc_id = old["_id"]
        batch = self._batch_for(doc_id)
        batch.add(UPDATE_DOCUMENT, (dumps_stored(new), doc_id))
        keys = self._keys
        for index in self.catalog.indexes_of(table.number):
            old_key = index_key(old, index)
            new_key = index_key(new, index)
            # The document changed even where its key did not: a query that read it
            # through this index must see the write.
            keys.append(KeyWrite(index.id, new_key))
            if old_key == new_key:
                continue
            batch.add(UPDATE_ENTRY, (new_key, index.id, old_key, doc_id))
            keys.append(KeyWrite(index.id, old_key))
        self._doc_ids.append(doc_id)

    async def delete(self, table: TableInfo, old: Document) -> None:
        doc_id = old["_id"]
        batch = self._batch_for(doc_id)
        batch.add(DELETE_DOCUMENT, (doc_id,))
        for index in self.catalog.indexes_of(table.number):
            key = index_key(old, index)
            batch.add(DELETE_ENTRY, (index.id, key, doc_id))
            self._keys.append(KeyWrite(index.id, key))
        self._doc_ids.append(doc_id)

    async def set_meta(self, key: str, value: str) -> None:
        self._writing().execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- commit --------------------------------------------------------------
    async def commit(self) -> int:
        """Assign this transaction's commit timestamp. The commit becomes durable
        and visible when the ``write()`` block exits (with its commit group)."""
        if self.committed_ts is not None:
            raise StorageError("this transaction was already committed")
        group = self._group
        staged = self._staged
        if staged.rows:
            pending = group.pending
            if pending.rows and not pending.doc_ids.isdisjoint(staged.doc_ids):
                group.apply_pending(self._conn)  # earlier writes of those documents go first
            pending.absorb(staged)
        commit = self._engine.record_commit(
            self._doc_ids, self._keys, self.catalog if self._catalog_changed else None
        )
        group.commits.append(commit)  # its commit-log row is written with the group's
        self.committed_ts = commit.ts
        return commit.ts
