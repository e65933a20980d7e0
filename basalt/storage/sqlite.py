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

WAL checkpoints (copying the log into the database file, with their fsyncs)
run on a worker thread too, not inside a ``COMMIT`` on the event loop (see
:mod:`basalt.storage.sqlite_checkpoint`).

**Group commit.** Mutations still run one at a time, but the mutations that
arrive together share one SQLite transaction: the first opens it, and it is
committed on the next turn of the event loop, after every mutation that was
ready to run has joined. A failing mutation is undone alone: its rows are
held back until it commits, and any statement it had to send runs in its own
``SAVEPOINT`` (see :mod:`basalt.storage.sqlite_tx`). Each mutation gets its
own commit timestamp and commit-log entry; none is acknowledged (its
``write()`` block does not exit) before the shared ``COMMIT`` is durable, and
if that ``COMMIT`` fails, all of them fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import apsw

from basalt.errors import StorageError

from .base import Commit, IndexInfo, KeyWrite, TableInfo
from .catalog import MemoryCatalog
from .commitlog import decode_commit, encode_writes
from .sqlite_checkpoint import CHECKPOINT_PAGES, Checkpointer
from .sqlite_tx import CommitGroup, SqliteReader, SqliteWriter

log = logging.getLogger("basalt.storage")

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


def _private_database(path: Path) -> None:
    """Make the database file readable by its owner only before SQLite opens it.

    The database holds every document and the file-storage secret. SQLite
    creates the ``-wal``, ``-shm`` and ``-journal`` files with the database
    file's mode, so the file is created ``0600`` here first (its folder
    ``0700`` if missing); an existing database and its companions with looser
    modes are tightened. The process umask is left alone: Basalt may run
    inside a user's process.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        companion = path.with_name(name)
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
            if mode & 0o077:
                companion.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to change: say so, and go on
            log.warning("could not make %s private to its owner: %s", companion, exc)


def _connect(path: str, sync: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.setbusytimeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("PRAGMA foreign_keys=OFF")
    # Savepoint journals live in memory.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class _WriteBlock:
    """``async with engine.write() as tx``: one transaction in the open commit
    group (see the module docstring). Exiting waits until the group's COMMIT
    is durable."""

    __slots__ = ("_engine", "_writer")

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def __aenter__(self) -> SqliteWriter:
        engine = self._engine
        engine._writers_waiting += 1
        try:
            await engine._write_lock.acquire()
        finally:
            engine._writers_waiting -= 1
        try:
            conn = engine._conn()
            group = engine._group
            if group is not None and group.error is not None:
                engine._finish_group(group.error)  # doomed: undo it before starting anew
                group = None
            if group is None:
                if engine.checkpointer.must_wait():
                    await engine.checkpointer.wait()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    engine._refresh()
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                group = engine._group = CommitGroup(engine.catalog, engine._last_ts)
            # The first transaction of a group needs no savepoint: if it fails, the
            # whole SQLite transaction is rolled back.
            writer = self._writer = SqliteWriter(engine, conn, group, savepoint=bool(group.commits))
            writer.ts = engine._last_ts
            return writer
        except BaseException:
            engine._write_lock.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        engine = self._engine
        writer = self._writer
        committed = writer.committed_ts is not None
        waiter: asyncio.Future[None] | None = None
        try:
            conn = writer._conn
            group = engine._group
            assert group is not None
            if writer.savepoint_open:
                if not committed:
                    conn.execute("ROLLBACK TO mutation")
                conn.execute("RELEASE mutation")
            if committed:
                waiter = group.done
                if waiter is None:
                    waiter = group.done = asyncio.get_running_loop().create_future()
            if not group.commits:
                # Nothing in this group to keep: end the transaction now.
                conn.execute("ROLLBACK")
                engine._group = None
            elif len(group.commits) >= MAX_GROUP_COMMITS or group.error is not None:
                await engine._flush_locked()
            else:
                engine._schedule_flush()
        finally:
            engine._write_lock.release()
        if waiter is not None:
            await waiter


class SqliteEngine:
    """The SQLite storage engine for one database file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "process",
        checkpoint_pages: int = CHECKPOINT_PAGES,
    ) -> None:
        if durability not in DURABILITY_SYNC:
            raise ValueError(
                f"durability must be one of {sorted(DURABILITY_SYNC)}, got {durability!r}"
            )
        self.path = str(path)
        #: runs the WAL checkpoints on worker threads (see sqlite_checkpoint)
        self.checkpointer = Checkpointer(self.path, pages=checkpoint_pages)
        self.durability = durability
        self.catalog = MemoryCatalog()
        self._sync = DURABILITY_SYNC[durability]
        self._writer: apsw.Connection | None = None
        self._readers: list[apsw.Connection] = []
        self._write_lock = asyncio.Lock()
        #: write transactions waiting for the lock (they join the open group)
        self._writers_waiting = 0
        #: the newest timestamp handed out (may be in a commit group not yet durable)
        self._last_ts = 0
        #: the newest durable, visible commit
        self._visible_ts = 0
        self._data_version = -1
        self._listeners: list[Callable[[Commit], None]] = []
        #: the open commit group (see the module docstring)
        self._group: CommitGroup | None = None
        self._flush_scheduled = False
        self._flush_tasks: set[asyncio.Future[None]] = set()
        #: how many commit groups (SQLite transactions) were committed
        self.groups_committed = 0

    # -- lifecycle -----------------------------------------------------------
    async def exists(self) -> bool:
        """Whether the database file exists (creates nothing)."""
        return self.path != ":memory:" and os.path.exists(self.path)

    async def open(self) -> None:
        if self.path != ":memory:":
            _private_database(Path(self.path))
        writer = _connect(self.path, self._sync)
        with writer:
            writer.execute(_LAYOUT)
        if self.path != ":memory:":
            self.checkpointer.attach(writer)
        self._writer = writer
        self._refresh()

    async def close(self) -> None:
        if self._writer is not None and self._group is not None:
            async with self._write_lock:
                await self._flush_locked()
        await self.checkpointer.close()
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
    async def read(self) -> AsyncIterator[SqliteReader]:
        conn = self._readers.pop() if self._readers else _connect(self.path, self._sync)
        reader = SqliteReader(conn, self.catalog)
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

    def record_commit(
        self, doc_ids: list[str], keys: list[KeyWrite], catalog: MemoryCatalog | None
    ) -> Commit:
        """A write transaction commits (its group's COMMIT makes it durable):
        its timestamp, and its catalog if it changed the catalog."""
        ts = max(time.time_ns(), self._last_ts + 1)
        self._last_ts = ts
        if catalog is not None:
            self.catalog = catalog
        return Commit(ts=ts, doc_ids=doc_ids, keys=keys)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        if self._group is None or self._write_lock.locked() or self._writers_waiting:
            return  # the next writer to hold the lock schedules the flush again
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
        group = self._group
        if group is None:
            return
        if self.durability == "power" and group.error is None:
            conn = self._conn()
            loop = asyncio.get_running_loop()

            def run(sql: str) -> None:
                conn.execute(sql)

            # The fsync happens in COMMIT; a worker thread keeps the loop serving.
            error: BaseException | None = None
            try:
                self._write_group(conn, group)
                await loop.run_in_executor(None, run, "COMMIT")
            except BaseException as exc:
                error = exc
            self._finish_group(error)
        else:
            self._commit_group(self._conn())

    def _write_group(self, conn: apsw.Connection, group: CommitGroup) -> None:
        """Send the group's rows not yet sent and its commit-log rows (one
        statement for each kind of row), just before its COMMIT."""
        if group.error is not None:
            raise group.error
        group.apply_pending(conn)
        conn.executemany(
            "INSERT INTO commits(ts, writes) VALUES (?, ?)",
            [(commit.ts, encode_writes(commit)) for commit in group.commits],
        )

    def _commit_group(self, conn: apsw.Connection) -> None:
        group = self._group
        if group is None:
            return
        error: BaseException | None = None
        try:
            self._write_group(conn, group)
            conn.execute("COMMIT")
        except BaseException as exc:
            error = exc
        self._finish_group(error)

    def _finish_group(self, error: BaseException | None) -> None:
        group = self._group
        if group is None:
            return
        self._group = None
        commits, done = group.commits, group.done
        if error is not None:
            conn = self._conn()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.catalog = group.catalog_before
            self._last_ts = group.ts_before
            if done is not None and not done.done():
                done.set_exception(
                    StorageError(f"the commit failed and nothing was written: {error}")
                )
            return
        self.groups_committed += 1
        self.checkpointer.after_commit()
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
