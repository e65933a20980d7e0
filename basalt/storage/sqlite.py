"""The SQLite engine (via ``apsw``, which bundles a current SQLite with FTS5 and
extension loading).

One writer connection serves all write transactions of the process, one at a
time (``BEGIN IMMEDIATE`` also keeps other processes out); read transactions
use a pool of reader connections, each a WAL snapshot. Durability:

- ``"process"`` (default): ``synchronous=NORMAL`` in WAL mode. Every
  acknowledged commit survives a crash or ``kill -9`` of the process; the last
  commits before a power loss or OS crash may be lost.
- ``"power"``: ``synchronous=FULL``: every acknowledged commit is fsynced and
  survives power loss, at the price of one fsync per commit group; the commit
  runs on a worker thread so the server keeps serving during the fsync.

**Group commit.** Mutations still run one at a time, each in its own
``SAVEPOINT`` (a failing one is undone alone), but the mutations that arrive
together share one SQLite transaction: the first opens it, and it is committed
on the next turn of the event loop, after every mutation that was ready to run
has joined. Each mutation gets its own commit timestamp and commit-log entry;
none is acknowledged (its ``write()`` block does not exit) before the shared
``COMMIT`` is durable, and if that ``COMMIT`` fails, all of them fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

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
from .commitlog import decode_commit, encode_writes
from .indexing import index_key
from .scans import ScanPages, scan_queries

DURABILITY_SYNC = {"process": "NORMAL", "power": "FULL"}
#: A commit group is committed at the latest when it holds this many commits.
MAX_GROUP_COMMITS = 256

_LAYOUT = """
CREATE TABLE IF NOT EXISTS tables(
    number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS indexes(
    id INTEGER PRIMARY KEY, table_number INTEGER NOT NULL, name TEXT NOT NULL,
    fields TEXT NOT NULL, state TEXT NOT NULL, UNIQUE(table_number, name));
CREATE TABLE IF NOT EXISTS documents(
    id TEXT PRIMARY KEY, table_number INTEGER NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries(
    index_id INTEGER NOT NULL, key BLOB NOT NULL, doc_id TEXT NOT NULL,
    PRIMARY KEY(index_id, key, doc_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits(ts INTEGER PRIMARY KEY, writes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_SCAN_SQL = scan_queries("?")

_INSERT_ENTRIES_SQL: dict[int, str] = {}


def _insert_entries_sql(rows: int) -> str:
    """One INSERT for all of a document's index entries (one statement, not one per index)."""
    sql = _INSERT_ENTRIES_SQL.get(rows)
    if sql is None:
        values = ", ".join(["(?, ?, ?)"] * rows)
        sql = _INSERT_ENTRIES_SQL[rows] = (
            f"INSERT INTO index_entries(index_id, key, doc_id) VALUES {values}"
        )
    return sql


def _connect(path: str, sync: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.setbusytimeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("PRAGMA foreign_keys=OFF")
    # Savepoint journals (one per mutation in a commit group) live in memory.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class _Reader:
    """Reads through one connection inside an open SQLite transaction."""

    ts: int

    def __init__(self, conn: apsw.Connection, catalog: MemoryCatalog) -> None:
        self._conn = conn
        self.catalog = catalog
        self.bytes_read = 0

    async def get(self, doc_id: str) -> Document | None:
        for (value,) in self._conn.execute("SELECT value FROM documents WHERE id = ?", (doc_id,)):
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
            rows: list[Any] = self._conn.execute(*page).fetchall()
            for key, _, value in rows:
                self.bytes_read += len(value)
                yield key, cast(Document, loads_stored(value))
            page = pages.after_page(rows)

    async def count(self, table_number: int) -> int:
        index = self.catalog.by_creation_time(table_number)
        for (n,) in self._conn.execute(
            "SELECT count(*) FROM index_entries WHERE index_id = ?", (index.id,)
        ):
            return int(n)
        return 0


class _Writer(_Reader):
    """A write transaction on the writer connection (inside BEGIN IMMEDIATE)."""

    def __init__(self, engine: SqliteEngine, conn: apsw.Connection) -> None:
        super().__init__(conn, engine.catalog)
        self._engine = engine
        self._catalog_changed = False
        self._doc_ids: list[str] = []
        self._keys: list[KeyWrite] = []
        self.committed_ts: int | None = None

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
        self._conn.execute("INSERT INTO tables(number, name) VALUES (?, ?)", (table.number, name))
        catalog.add_table(table)
        self._keys.append(KeyWrite(CATALOG_INDEX_ID, name.encode()))
        await self._create_index(table, BY_CREATION_TIME, ())
        return table

    async def _create_index(
        self, table: TableInfo, name: str, fields: tuple[str, ...]
    ) -> IndexInfo:
        catalog = self._own_catalog()
        index = IndexInfo(catalog.next_index_id(), table.number, name, fields, "ready")
        self._conn.execute(
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
        self._conn.executemany(
            "INSERT INTO index_entries(index_id, key, doc_id) VALUES (?, ?, ?)", rows
        )
        return index

    async def drop_index(self, index: IndexInfo) -> None:
        self._conn.execute("DELETE FROM index_entries WHERE index_id = ?", (index.id,))
        self._conn.execute("DELETE FROM indexes WHERE id = ?", (index.id,))
        self._own_catalog().remove_index(index)

    async def insert(self, table: TableInfo, document: Document) -> None:
        doc_id = document["_id"]
        conn = self._conn
        conn.execute(
            "INSERT INTO documents(id, table_number, value) VALUES (?, ?, ?)",
            (doc_id, table.number, dumps_stored(document)),
        )
        keys = self._keys
        params: list[Any] = []
        for index in self.catalog.indexes_of(table.number):
            key = index_key(document, index)
            params += (index.id, key, doc_id)
            keys.append(KeyWrite(index.id, key))
        conn.execute(_insert_entries_sql(len(params) // 3), params)
        self._doc_ids.append(doc_id)

    async def replace(self, table: TableInfo, old: Document, new: Document) -> None:
        doc_id = old["_id"]
        conn = self._conn
        conn.execute("UPDATE documents SET value = ? WHERE id = ?", (dumps_stored(new), doc_id))
        keys = self._keys
        for index in self.catalog.indexes_of(table.number):
            old_key = index_key(old, index)
            new_key = index_key(new, index)
            # The document changed even where its key did not: a query that read it
            # through this index must see the write.
            keys.append(KeyWrite(index.id, new_key))
            if old_key == new_key:
                continue
            conn.execute(
                "UPDATE index_entries SET key = ? WHERE index_id = ? AND key = ? AND doc_id = ?",
                (new_key, index.id, old_key, doc_id),
            )
            keys.append(KeyWrite(index.id, old_key))
        self._doc_ids.append(doc_id)

    async def delete(self, table: TableInfo, old: Document) -> None:
        doc_id = old["_id"]
        conn = self._conn
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        for index in self.catalog.indexes_of(table.number):
            key = index_key(old, index)
            conn.execute(
                "DELETE FROM index_entries WHERE index_id = ? AND key = ? AND doc_id = ?",
                (index.id, key, doc_id),
            )
            self._keys.append(KeyWrite(index.id, key))
        self._doc_ids.append(doc_id)

    async def set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def commit(self) -> int:
        """Assign this transaction's commit timestamp. The commit becomes durable
        and visible when the ``write()`` block exits (with its commit group)."""
        if self.committed_ts is not None:
            raise StorageError("this transaction was already committed")
        engine = self._engine
        ts = max(time.time_ns(), engine._last_ts + 1)
        commit = Commit(ts=ts, doc_ids=self._doc_ids, keys=self._keys)
        # Its commit-log row is written with the group's (see _log_group).
        engine._last_ts = ts
        if self._catalog_changed:
            engine.catalog = self.catalog
        self.committed_ts = ts
        engine._group_commits.append(commit)
        return ts


class _WriteBlock:
    """``async with engine.write() as tx``: one transaction in the open commit
    group (see the module docstring). Exiting waits until the group's COMMIT
    is durable."""

    __slots__ = ("_engine", "_savepoint", "_writer")

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def __aenter__(self) -> _Writer:
        engine = self._engine
        await engine._write_lock.acquire()
        try:
            conn = engine._conn()
            if not engine._group_open:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    engine._refresh()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                engine._group_open = True
                engine._group_catalog_before = engine.catalog
                engine._group_ts_before = engine._last_ts
            # The first transaction of a group needs no savepoint: if it fails, the
            # whole SQLite transaction is rolled back.
            self._savepoint = bool(engine._group_commits)
            if self._savepoint:
                conn.execute("SAVEPOINT mutation")
            writer = self._writer = _Writer(engine, conn)
            writer.ts = engine._last_ts
            return writer
        except BaseException:
            engine._write_lock.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        engine = self._engine
        committed = self._writer.committed_ts is not None
        waiter: asyncio.Future[None] | None = None
        try:
            conn = engine._conn()
            if self._savepoint:
                if not committed:
                    conn.execute("ROLLBACK TO mutation")
                conn.execute("RELEASE mutation")
            if committed:
                waiter = engine._group_done
                if waiter is None:
                    waiter = engine._group_done = asyncio.get_running_loop().create_future()
            if not engine._group_commits:
                # Nothing in this group to keep: end the transaction now.
                conn.execute("ROLLBACK")
                engine._group_open = False
            elif len(engine._group_commits) >= MAX_GROUP_COMMITS:
                await engine._flush_locked()
            else:
                engine._schedule_flush()
        finally:
            engine._write_lock.release()
        if waiter is not None:
            await waiter


class SqliteEngine:
    """The SQLite storage engine for one database file."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "process") -> None:
        if durability not in DURABILITY_SYNC:
            raise ValueError(
                f"durability must be one of {sorted(DURABILITY_SYNC)}, got {durability!r}"
            )
        self.path = str(path)
        self.durability = durability
        self.catalog = MemoryCatalog()
        self._sync = DURABILITY_SYNC[durability]
        self._writer: apsw.Connection | None = None
        self._readers: list[apsw.Connection] = []
        self._write_lock = asyncio.Lock()
        #: the newest timestamp handed out (may be in a commit group not yet durable)
        self._last_ts = 0
        #: the newest durable, visible commit
        self._visible_ts = 0
        self._data_version = -1
        self._listeners: list[Callable[[Commit], None]] = []
        # The open commit group (see the module docstring).
        self._group_open = False
        self._group_commits: list[Commit] = []
        #: resolved when the open group's COMMIT is durable (or has failed)
        self._group_done: asyncio.Future[None] | None = None
        self._group_catalog_before = self.catalog
        self._group_ts_before = 0
        self._flush_scheduled = False
        self._flush_tasks: set[asyncio.Future[None]] = set()
        #: how many commit groups (SQLite transactions) were committed
        self.groups_committed = 0

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(self.path, self._sync)
        with writer:
            writer.execute(_LAYOUT)
        self._writer = writer
        self._refresh()

    async def close(self) -> None:
        if self._writer is not None and self._group_open:
            async with self._write_lock:
                await self._flush_locked()
        for conn in self._readers:
            conn.close()
        self._readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _conn(self) -> apsw.Connection:
        if self._writer is None:
            raise StorageError("the SQLite engine is not open")
        return self._writer

    def _refresh(self) -> None:
        """Reload the catalog and the last timestamp if another process wrote."""
        conn = self._conn()
        version = int(cast(int, conn.execute("PRAGMA data_version").fetchall()[0][0]))
        if version == self._data_version:
            return
        self._data_version = version
        catalog = MemoryCatalog()
        for number, name in conn.execute("SELECT number, name FROM tables"):
            catalog.add_table(TableInfo(name=name, number=number))
        for id_, table_number, name, fields, state in conn.execute(
            "SELECT id, table_number, name, fields, state FROM indexes ORDER BY id"
        ):
            catalog.add_index(IndexInfo(id_, table_number, name, tuple(json.loads(fields)), state))
        self.catalog = catalog
        for (ts,) in conn.execute("SELECT coalesce(max(ts), 0) FROM commits"):
            self._last_ts = max(self._last_ts, int(ts))
            self._visible_ts = max(self._visible_ts, int(ts))

    # -- transactions --------------------------------------------------------
    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Reader]:
        conn = self._readers.pop() if self._readers else _connect(self.path, self._sync)
        reader = _Reader(conn, self.catalog)
        conn.execute("BEGIN")
        try:
            # The first read fixes the snapshot; the newest commit in it is its ts.
            rows: list[Any] = conn.execute("SELECT coalesce(max(ts), 0) FROM commits").fetchall()
            reader.ts = int(rows[0][0])
            yield reader
        finally:
            conn.execute("COMMIT")
            self._readers.append(conn)

    def write(self) -> _WriteBlock:
        return _WriteBlock(self)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if not self._group_open or self._write_lock.locked():
            return  # the writer holding the lock schedules the flush again
        if self.durability == "power":
            task = asyncio.ensure_future(self._flush_with_lock())
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)
        else:
            self._commit_group(self._conn())

    async def _flush_with_lock(self) -> None:
        async with self._write_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        """Commit the open group (the caller holds the write lock)."""
        if not self._group_open:
            return
        if self.durability == "power":
            conn = self._conn()
            loop = asyncio.get_running_loop()

            def run(sql: str) -> None:
                conn.execute(sql)

            # The fsync happens in COMMIT; a worker thread keeps the loop serving.
            error: BaseException | None = None
            try:
                self._log_group(conn)
                await loop.run_in_executor(None, run, "COMMIT")
            except BaseException as exc:
                error = exc
            self._finish_group(error)
        else:
            self._commit_group(self._conn())

    def _log_group(self, conn: apsw.Connection) -> None:
        """Write the commit-log rows of the open group's commits (one statement
        for the group, just before its COMMIT)."""
        conn.executemany(
            "INSERT INTO commits(ts, writes) VALUES (?, ?)",
            [(commit.ts, encode_writes(commit)) for commit in self._group_commits],
        )

    def _commit_group(self, conn: apsw.Connection) -> None:
        error: BaseException | None = None
        try:
            self._log_group(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            error = exc
        self._finish_group(error)

    def _finish_group(self, error: BaseException | None) -> None:
        commits, done = self._group_commits, self._group_done
        self._group_commits, self._group_done = [], None
        self._group_open = False
        if error is not None:
            conn = self._conn()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.catalog = self._group_catalog_before
            self._last_ts = self._group_ts_before
            if done is not None and not done.done():
                done.set_exception(
                    StorageError(f"the commit failed and nothing was written: {error}")
                )
            return
        self.groups_committed += 1
        if commits:
            self._visible_ts = commits[-1].ts
        for commit in commits:
            self._notify(commit)
        if done is not None and not done.done():
            done.set_result(None)

    async def latest_ts(self) -> int:
        return self._visible_ts

    async def get_meta(self, key: str) -> str | None:
        async with self.read() as reader:
            for (value,) in reader._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)):
                return str(value)
        return None

    async def commits_since(self, ts: int, limit: int = 1000) -> list[Commit]:
        async with self.read() as reader:
            rows: list[Any] = reader._conn.execute(
                "SELECT ts, writes FROM commits WHERE ts > ? ORDER BY ts LIMIT ?", (ts, limit)
            ).fetchall()
        return [decode_commit(t, w) for t, w in rows]

    async def prune_commits(self, before_ts: int) -> int:
        """Drop commit-log entries older than ``before_ts`` (the newest is kept)."""
        async with self._write_lock:
            await self._flush_locked()
            conn = self._conn()
            with conn:
                conn.execute(
                    "DELETE FROM commits WHERE ts < ? AND ts < (SELECT max(ts) FROM commits)",
                    (before_ts,),
                )
            return conn.changes()

    def on_commit(self, listener: Callable[[Commit], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, commit: Commit) -> None:
        for listener in list(self._listeners):
            listener(commit)
