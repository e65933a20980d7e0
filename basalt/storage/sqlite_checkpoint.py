"""Checkpoints of the SQLite engine's write-ahead log, off the event loop.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the WAL
size threshold: it copies the WAL's pages into the database file and fsyncs
both, on the thread that commits, which for Basalt is the event loop. The
engine turns it off and runs the checkpoint on a worker thread instead, on a
connection of its own, while writes go on.

A checkpoint that runs beside writers cannot restart the WAL: SQLite starts
writing the WAL from its beginning again only when a write transaction begins
after a checkpoint copied every frame. So when the WAL reaches
``FORCE_FACTOR`` times the threshold, the next commit group first waits (with
the engine's write lock held, the loop still serving reads) for a checkpoint
that runs with no writer; the WAL then restarts, and its file stays bounded.
"""

from __future__ import annotations

import asyncio
import logging

import apsw

log = logging.getLogger("basalt.storage")

#: WAL pages after which a background checkpoint starts (SQLite's default).
CHECKPOINT_PAGES = 1000
#: WAL pages, as a multiple of the threshold, after which writers wait for one.
FORCE_FACTOR = 4


class Checkpointer:
    """Runs the WAL checkpoints of one database file on worker threads."""

    def __init__(self, path: str, *, pages: int = CHECKPOINT_PAGES) -> None:
        if pages < 1:
            raise ValueError(f"checkpoint_pages must be at least 1, got {pages}")
        self._path = path
        self._pages = pages
        self._force_at = pages * FORCE_FACTOR
        self._conn: apsw.Connection | None = None
        self._running: asyncio.Future[int] | None = None
        #: pages in the WAL after the newest commit of the writer connection
        self.wal_pages = 0
        #: WAL pages the newest checkpoint copied (0 once the WAL restarted)
        self._copied = 0
        #: checkpoints run beside writers, and checkpoints writers waited for
        self.background = 0
        self.waited = 0

    def attach(self, writer: apsw.Connection) -> None:
        """Take over the checkpoints of ``writer`` (this replaces SQLite's automatic
        checkpoint on that connection)."""
        writer.setwalhook(self._on_commit)

    def _on_commit(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        self.wal_pages = pages
        return apsw.SQLITE_OK

    def after_commit(self) -> None:
        """A commit group is durable: start a checkpoint if the WAL holds the
        threshold's worth of pages that no checkpoint copied, and none is running."""
        if self.wal_pages < self._copied:
            self._copied = 0  # the WAL restarted
        if self.wal_pages - self._copied >= self._pages and self._running is None:
            self._start()
            self.background += 1

    def must_wait(self) -> bool:
        """Whether the next commit group must first wait for :meth:`wait`."""
        return self.wal_pages >= self._force_at

    async def wait(self) -> None:
        """Checkpoint with no writer (the caller holds the engine's write lock),
        so that the next write restarts the WAL."""
        if self._running is not None:
            await asyncio.shield(self._running)
        copied = await self._start()
        self.waited += 1
        # A reader's snapshot can keep frames from being copied: then try again
        # only once the WAL has grown by as much again.
        self._force_at = self._pages * FORCE_FACTOR
        if copied < self.wal_pages:
            self._force_at += self.wal_pages

    def _start(self) -> asyncio.Future[int]:
        running = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        self._running = running
        running.add_done_callback(self._finished)
        return running

    def _finished(self, running: asyncio.Future[int]) -> None:
        if self._running is running:
            self._running = None
        if not running.cancelled() and running.exception() is None:
            self._copied = max(running.result(), 0)

    def _checkpoint(self) -> int:
        """(On a worker thread.) Copy what the WAL holds into the database file;
        how many of its pages were copied (-1: none, it failed)."""
        try:
            if self._conn is None:
                conn = apsw.Connection(self._path)
                conn.setbusytimeout(1_000)
                # A connection finds the WAL when it first reads the database.
                conn.execute("PRAGMA journal_mode").fetchall()
                self._conn = conn
            frames, copied = self._conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as exc:  # the next checkpoint tries again
            log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
            return -1
        return int(copied) if frames >= 0 else -1  # -1, -1: not in WAL mode

    async def close(self) -> None:
        """Wait for a running checkpoint and close the connection."""
        if self._running is not None:
            await asyncio.shield(self._running)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
