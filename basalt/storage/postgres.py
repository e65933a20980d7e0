"""The PostgreSQL engine (psycopg 3 with a connection pool), for several server
processes on one database. Install it with ``pip install 'basalt-backend[postgres]'``.

The layout is SQLite's (:mod:`basalt.storage.postgres_sql`), in a PostgreSQL
schema per deployment. Transactions (:mod:`basalt.storage.postgres_tx`):

- **Mutations are serializable**: write transactions run at ``SERIALIZABLE``;
  PostgreSQL's serializable snapshot isolation aborts one of any set of
  concurrent transactions that no serial order explains, with SQLSTATE 40001
  (or 40P01 on a deadlock). Both raise :class:`~basalt.errors.WriteConflict`,
  and the runtime retries the mutation with backoff (counted in
  ``Runtime.conflict_retries``).
- **Commit timestamps follow visibility order across processes.** At commit a
  transaction calls ``basalt_commit``, which takes a transaction-level advisory
  lock (one per schema), takes ``ts = max(now, last + 1)`` from the
  ``commit_clock`` sequence, inserts the commit-log row and queues a NOTIFY.
  PostgreSQL releases transaction locks only after the commit is durable and
  visible to new snapshots, so the next committer gets the lock — and a larger
  timestamp — only once every smaller timestamp is visible: a snapshot always
  holds a prefix of the commit log, and its ``ts`` (the newest commit in it)
  says exactly which commits it holds. The lock covers only the end of the
  commit (one statement and the COMMIT), not the transaction.
- **Reads** run at ``SERIALIZABLE READ ONLY`` and end with ``COMMIT``: they
  take part in serializable snapshot isolation, so no reader sees a state that
  no serial order of the writers passes through (PostgreSQL's "read-only
  anomaly", which ``REPEATABLE READ`` — or a reader that rolls back — would
  let through). PostgreSQL prevents it by cancelling the writer that would
  complete it or, rarely, the reader; a cancelled reader raises
  :class:`~basalt.errors.WriteConflict` and its caller runs it again.
- **A connection lost during COMMIT** does not leave the outcome unknown: the
  engine waits for the commit lock (held by that transaction until it ended)
  and looks for its row in the commit log. Not there: nothing was written, and
  the mutation is retried as after a conflict. There: the commit stands.
- **Catalog**: every transaction reads the one-row ``catalog_version`` in its
  BEGIN round trip and reloads tables and indexes when another process changed
  them; a transaction that changes the catalog bumps it, so it conflicts with any
  concurrent writer that used the older catalog.
- **Commit notifications**: this process's commits reach ``on_commit`` listeners
  right after COMMIT; other processes' through LISTEN/NOTIFY on a dedicated
  connection. A notification only says "read the commit log": the engine reads
  every commit newer than the last one it delivered, so notifications that were
  coalesced or lost (the listening connection dropped and came back) cost
  nothing. Listeners receive every commit once, in timestamp order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

from basalt.errors import StorageError

from . import postgres_sql as q
from .base import Commit
from .catalog import MemoryCatalog
from .commitlog import decode_commit
from .postgres_tx import Conn, PgReader, PgWriter, begin, fetch, load_catalog, run
from .postgres_url import DEFAULT_SCHEMA, location, schema_problem

try:
    import psycopg
    from psycopg import sql
    from psycopg.pq import TransactionStatus
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the PostgreSQL engine needs psycopg 3 and psycopg-pool: "
        "pip install 'basalt-backend[postgres]'"
    ) from exc

log = logging.getLogger(__name__)

#: Seconds a first connection may take when the URL sets no ``connect_timeout``.
CONNECT_TIMEOUT = 5
#: How long the listener waits before reconnecting, at most (it doubles from 50 ms).
MAX_RECONNECT_DELAY = 2.0
#: How many commit-log entries one catch-up query reads.
CATCH_UP_BATCH = 1000


def _reason(exc: Exception) -> str:
    """PostgreSQL's reason for refusing a connection, on one line and without
    the prefixes libpq repeats (``connection to server at "h", port p failed: FATAL:``)."""
    if isinstance(exc, psycopg.ProgrammingError):  # about the URL's text: never echo it
        return "the URL is not a valid connection URL (postgresql://user@host:port/database)"
    text = re.sub(r'connection to server at "[^"]*", port \d+ failed: ', "", str(exc))
    text = re.sub(r"^connection failed: |FATAL:\s+", "", text)
    first, *hints = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    hint = "; ".join(hint[:1].lower() + hint[1:] for hint in hints)
    return (first + (f" ({hint})" if hint else "")) or type(exc).__name__


def _key(text: str) -> int:
    """A stable signed 64-bit advisory-lock key."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), signed=True)


class PostgresEngine:
    """The PostgreSQL storage engine for one schema of one database."""

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        schema = schema or DEFAULT_SCHEMA
        problem = schema_problem(schema)
        if problem is not None:
            raise ValueError(f"schema {problem}")
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        #: the NOTIFY channel and the advisory lock key of this deployment
        self.channel = f"basalt_{schema}"[:63]
        self.lock_key = _key(f"basalt.commit.{schema}")
        self.catalog = MemoryCatalog()
        self._catalog_version = -1
        self._pool: AsyncConnectionPool[Conn] | None = None
        #: the newest commit this engine knows to be visible
        self._visible_ts = 0
        #: the newest commit delivered to listeners (every older one was delivered)
        self._delivered_ts = 0
        self._deliver_lock = asyncio.Lock()
        #: how many times commits were read back from the log to deliver them
        self.log_reads = 0
        #: commits of this process between taking their ts and being delivered
        self._in_flight: dict[int, asyncio.Future[None]] = {}
        self._catch_ups: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[Commit], None]] = []
        self._listen_task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        #: how many times the LISTEN connection was (re)established
        self.listener_connections = 0
        #: the server process id of the LISTEN connection (None while down)
        self.listener_pid: int | None = None

    # -- lifecycle -----------------------------------------------------------
    async def exists(self) -> bool:
        """Whether the schema holds Basalt's tables (creates nothing)."""
        async with await self._connect_once() as conn:
            cur = await conn.execute(
                "SELECT to_regclass(format('%%I.tables', %s::text)) IS NOT NULL", (self.schema,)
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def _connect_once(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        """One connection outside the pool: a database that does not exist, a
        host that refuses or does not answer, bad credentials fail here at once
        (within ``connect_timeout``, default :data:`CONNECT_TIMEOUT` s) with
        :class:`StorageError` naming the server and PostgreSQL's reason, never
        the password (the pool would retry for its whole timeout)."""
        timeout = None if "connect_timeout" in self.url else CONNECT_TIMEOUT
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=timeout
            )
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {location(self.url)}: {_reason(exc)}",
                code="DatabaseUnavailable",
            ) from None

    async def open(self) -> None:
        await (await self._connect_once()).close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
            name=f"basalt-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=10)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        try:
            async with self._connection() as conn:
                layout = q.LAYOUT.format(schema=self.schema)
                setup = f"SELECT pg_advisory_xact_lock({_key(f'basalt.layout.{self.schema}')});"
                async with conn.transaction():
                    await conn.execute(setup + layout)
                version, ts = await begin(conn, q.BEGIN_READ)
                try:
                    catalog = await load_catalog(conn)
                finally:
                    await _end(conn)
            self._adopt_catalog(catalog, int(version))
            self._visible_ts = self._delivered_ts = int(ts)
            self.start_listening()
            # Not asyncio.wait_for: on Python 3.11 it can drop a cancellation (see _getconn).
            async with asyncio.timeout(30):
                await self._listening.wait()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.stop_listening()
        for task in list(self._catch_ups):
            task.cancel()
        await asyncio.gather(*self._catch_ups, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _get_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StorageError("the PostgreSQL engine is not open")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection for one statement or transaction (``pool.connection()``,
        but cancellable: see :func:`_getconn`)."""
        pool = self._get_pool()
        conn = await _getconn(pool)
        try:
            yield conn
        finally:
            await _putconn(pool, conn)

    def _adopt_catalog(self, catalog: MemoryCatalog, version: int) -> None:
        if version > self._catalog_version:
            self.catalog, self._catalog_version = catalog, version

    async def _catalog_at(self, conn: Conn, version: int) -> MemoryCatalog:
        """The catalog as of the open transaction's snapshot (catalog ``version``)."""
        if version == self._catalog_version:
            return self.catalog
        catalog = await load_catalog(conn)
        self._adopt_catalog(catalog, version)
        return catalog

    # -- transactions --------------------------------------------------------
    @asynccontextmanager
    async def read(self) -> AsyncIterator[PgReader]:
        pool = self._get_pool()
        conn = await _getconn(pool)
        try:
            version, ts = await begin(conn, q.BEGIN_READ)
            self._visible_ts = max(self._visible_ts, int(ts))
            yield PgReader(conn, await self._catalog_at(conn, int(version)), int(ts))
            # Committed, not rolled back: a serializable transaction that rolls back
            # counts as never having read anything, and would not protect what it saw.
            await run(conn, "COMMIT")
        finally:
            await _release(pool, conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PgWriter]:
        pool = self._get_pool()
        conn = await _getconn(pool)
        try:
            (version,) = await begin(conn, q.BEGIN_WRITE)
            yield PgWriter(self, conn, await self._catalog_at(conn, int(version)))
        finally:
            await _release(pool, conn)

    async def latest_ts(self) -> int:
        async with self._connection() as conn:
            rows = await fetch(conn, q.LATEST_TS)
        self._visible_ts = max(self._visible_ts, int(rows[0][0]))
        return self._visible_ts

    async def get_meta(self, key: str) -> str | None:
        async with self._connection() as conn:
            rows = await fetch(conn, q.GET_META, (key,))
        return str(rows[0][0]) if rows else None

    async def commits_since(self, ts: int, limit: int = 1000) -> list[Commit]:
        async with self._connection() as conn:
            rows = await fetch(conn, q.COMMITS_SINCE, (ts, limit))
        return [decode_commit(int(t), bytes(w)) for t, w in rows]

    async def prune_commits(self, before_ts: int) -> int:
        """Drop commit-log entries older than ``before_ts`` (the newest is kept)."""
        async with self._connection() as conn:
            cur = await conn.execute(q.PRUNE, (before_ts,))
            return cur.rowcount

    # -- commit notifications ------------------------------------------------
    def on_commit(self, listener: Callable[[Commit], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _committed(self, conn: Conn, commit: Commit, prev: int) -> None:
        """After this process's COMMIT on ``conn``: deliver the commit, and first any
        older commit of another process not delivered yet (``prev`` is the timestamp
        handed out just before this one)."""
        self._visible_ts = max(self._visible_ts, commit.ts)
        earlier = self._in_flight.get(prev)
        if earlier is not None:
            # The commit before this one is this process's too, still finishing:
            # it delivers itself first (or gives up its place), no log read needed.
            await asyncio.shield(earlier)
        if commit.ts <= self._delivered_ts:
            return  # a catch-up read it from the log meanwhile
        if prev == self._delivered_ts and not self._deliver_lock.locked():
            self._deliver(commit)
            return
        # Catch up on this transaction's own connection: waiting for another one
        # while holding it could drain the pool.
        async with self._deliver_lock:
            if commit.ts > self._delivered_ts:
                await self._catch_up_locked(conn)

    def _expect(self, ts: int) -> None:
        """A transaction of this process took ``ts`` and is about to COMMIT."""
        self._in_flight[ts] = asyncio.get_running_loop().create_future()

    def _settle(self, ts: int, *, maybe_committed: bool = False) -> None:
        """``ts`` was delivered, or will not be by its own transaction (the COMMIT
        failed or its outcome is unknown, or the task was cancelled): release
        the commit waiting on it and, if it ``maybe_committed`` but is still
        undelivered, have the log read."""
        done = self._in_flight.pop(ts, None)
        if done is not None and not done.done():
            done.set_result(None)
        if maybe_committed and ts > self._delivered_ts and self._pool is not None:
            task = asyncio.get_running_loop().create_task(self._catch_up())
            self._catch_ups.add(task)
            task.add_done_callback(self._catch_ups.discard)

    async def _was_committed(self, ts: int, cause: BaseException) -> bool:
        """Whether the transaction that took ``ts`` committed, after its connection
        failed during COMMIT. Waits for the commit lock, which that transaction
        held until it committed or aborted, then looks for its commit-log row."""
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(q.WAIT_FOR_COMMIT_LOCK, (self.lock_key,))
                rows = await fetch(conn, q.HAS_COMMIT, (ts,))
        except psycopg.Error as exc:
            raise StorageError(
                f"the outcome of commit {ts} is unknown: {cause} (and checking failed: {exc})"
            ) from exc
        return bool(rows)

    async def _catch_up(self) -> None:
        """Deliver what the log holds beyond the last delivered commit, on a
        connection of its own (taken before the lock, as committers hold theirs
        when they take it)."""
        try:
            async with self._connection() as conn, self._deliver_lock:
                await self._catch_up_locked(conn)
        except Exception:  # the next commit or notification catches up instead
            log.exception("reading the commit log failed")

    def _deliver(self, commit: Commit) -> None:
        if commit.ts <= self._delivered_ts:
            return
        self._delivered_ts = commit.ts
        self._settle(commit.ts)
        for listener in list(self._listeners):
            try:
                listener(commit)
            except Exception:  # one failing listener must not starve the others
                log.exception("a commit listener failed on commit %d", commit.ts)

    async def _catch_up_locked(self, conn: Conn) -> None:
        """Deliver every commit in the log newer than the last one delivered (the
        caller holds the delivery lock)."""
        while True:
            self.log_reads += 1
            rows = await fetch(conn, q.COMMITS_SINCE, (self._delivered_ts, CATCH_UP_BATCH))
            for ts, writes in rows:
                self._visible_ts = max(self._visible_ts, ts)
                self._deliver(decode_commit(int(ts), bytes(writes)))
            if len(rows) < CATCH_UP_BATCH:
                return

    def start_listening(self) -> None:
        """Start the LISTEN task (``open`` does; a test may pause it with
        :meth:`stop_listening` and resume it)."""
        if self._listen_task is None:
            self._listening.clear()
            self._listen_task = asyncio.create_task(self._listen_loop(), name=self.channel)

    async def stop_listening(self) -> None:
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _listen_loop(self) -> None:
        """LISTEN on one connection, read the commit log on another (never on the
        pool, which writers waiting for delivery may hold), reconnect when either
        drops, and catch up from the log each time."""
        delay = 0.05
        while True:
            listen: Conn | None = None
            reader: Conn | None = None
            try:
                listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                reader = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, options=f"-c search_path={self.schema}"
                )
                await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self.listener_connections += 1
                self.listener_pid = listen.info.backend_pid
                # Whatever was committed while nobody listened comes from the log.
                async with self._deliver_lock:
                    await self._catch_up_locked(reader)
                self._listening.set()
                delay = 0.05
                async for notify in listen.notifies():
                    ts = int(notify.payload)
                    # This process's own commits deliver themselves.
                    if ts > self._delivered_ts and ts not in self._in_flight:
                        async with self._deliver_lock:
                            await self._catch_up_locked(reader)
            except psycopg.OperationalError as exc:
                log.warning("the commit listener lost its connection (reconnecting): %s", exc)
            except Exception:  # keep delivering other processes' commits whatever happened
                log.exception("the commit listener failed (reconnecting)")
            finally:
                self.listener_pid = None
                for conn in (listen, reader):
                    if conn is not None:
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)


async def _getconn(pool: AsyncConnectionPool[Conn]) -> Conn:
    """``pool.getconn()``, raising the cancellation that psycopg_pool may drop.

    A client that waits for a connection waits in ``asyncio.wait_for``, which on
    Python 3.11 returns the inner result instead of raising ``CancelledError``
    when the task is cancelled in the loop iteration that the connection arrives
    (CPython gh-86296; fixed in 3.12). The cancelled task would then go on as if
    never cancelled: a sync hub being stopped would start another refresh cycle
    and never end. ``Task.cancelling()`` still counts the request: give the
    connection back and raise it.
    """
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    conn = await pool.getconn()
    if task is not None and task.cancelling() > cancelling:
        await _putconn(pool, conn)
        raise asyncio.CancelledError
    return conn


async def _putconn(pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
    """Give ``conn`` back to the pool, even if the caller is cancelled meanwhile
    (the pool would lose the connection for good)."""
    await asyncio.shield(pool.putconn(conn))


async def _release(pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
    """End the transaction on ``conn`` and give it back to the pool. A
    cancellation during the ROLLBACK still returns it: the pool rolls back (or
    replaces) a connection that comes back inside a transaction."""
    try:
        await _end(conn)
    finally:
        await _putconn(pool, conn)


async def _end(conn: Conn) -> None:
    """End whatever transaction is open on ``conn`` before it goes back to the pool."""
    if conn.info.transaction_status not in (TransactionStatus.IDLE, TransactionStatus.UNKNOWN):
        try:
            await conn.execute("ROLLBACK")
        except psycopg.Error:
            await conn.close()  # the pool discards a closed connection
