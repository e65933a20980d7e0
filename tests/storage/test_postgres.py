"""What only the PostgreSQL engine has: several processes (here: several engines,
each with its own pool and LISTEN connection) on one schema."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from basalt import mutation, query
from basalt.errors import StorageError, WriteConflict
from basalt.runtime import App, Runtime
from basalt.storage.base import Commit, Persistence
from basalt.storage.postgres import PostgresEngine
from basalt.testing.engines import drop_test_databases, engine_for_tests, require_postgres

from .test_contract import doc

Open = Callable[[], Coroutine[Any, Any, PostgresEngine]]


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Open]:
    """Open PostgreSQL engines on one schema (closed and dropped at the end)."""
    opened: list[PostgresEngine] = []

    async def open_() -> PostgresEngine:
        engine = engine_for_tests(tmp_path, "db", backend="postgres")
        assert isinstance(engine, PostgresEngine)
        await engine.open()
        opened.append(engine)
        return engine

    try:
        yield open_
    finally:
        for engine in opened:
            await engine.close()
        await drop_test_databases(tmp_path)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_engine_is_a_persistence_and_checks_its_schema_name() -> None:
    engine: Persistence = PostgresEngine("postgresql://nowhere/x", schema="app_1")
    assert engine.catalog.tables() == []
    with pytest.raises(ValueError, match="schema"):
        PostgresEngine("postgresql://nowhere/x", schema='x"; drop')


async def test_a_lost_update_is_a_write_conflict(pg: Open) -> None:
    a, b = await pg(), await pg()
    async with a.write() as tx:
        table = await tx.ensure_table("t")
        d = doc(table.number, 1.0, n=0.0)
        await tx.insert(table, d)
        await tx.commit()
    with pytest.raises(WriteConflict):
        async with a.write() as ta, b.write() as tb:
            seen_a, seen_b = await ta.get(d["_id"]), await tb.get(d["_id"])
            await ta.replace(table, seen_a, dict(seen_a, n=seen_a["n"] + 1))
            await ta.commit()
            await tb.replace(table, seen_b, dict(seen_b, n=seen_b["n"] + 1))
            await tb.commit()
    async with b.read() as rx:
        assert (await rx.get(d["_id"]) or {})["n"] == 1.0


async def test_write_skew_is_a_write_conflict(pg: Open) -> None:
    """Each transaction reads what the other writes: no serial order explains
    both committing, so one of them conflicts (serializable, not just snapshot)."""
    a, b = await pg(), await pg()
    async with a.write() as tx:
        table = await tx.ensure_table("t")
        x, y = doc(table.number, 1.0, on=True), doc(table.number, 2.0, on=True)
        await tx.insert(table, x)
        await tx.insert(table, y)
        await tx.commit()
    with pytest.raises(WriteConflict):
        async with a.write() as ta, b.write() as tb:
            await ta.get(x["_id"])
            await tb.get(y["_id"])
            await ta.replace(table, y, dict(y, on=False))
            await tb.replace(table, x, dict(x, on=False))
            await ta.commit()
            await tb.commit()


async def test_a_reader_never_sees_a_state_no_serial_order_passes_through(pg: Open) -> None:
    """The read-only anomaly (Fekete, O'Neil and O'Neil, 2004): a withdrawal
    reads both accounts; a deposit to the savings account commits; a reader
    then sees the deposit but not the withdrawal; the withdrawal commits, its
    penalty computed without the deposit. No serial order of the two writers
    passes through what the reader saw, so one of the three must fail — and as
    the reader has finished, it is the withdrawal, which the runtime retries."""
    a, b, c = await pg(), await pg(), await pg()
    async with a.write() as tx:
        table = await tx.ensure_table("accounts")
        checking = doc(table.number, 1.0, balance=0.0)
        savings = doc(table.number, 2.0, balance=0.0)
        await tx.insert(table, checking)
        await tx.insert(table, savings)
        await tx.commit()
    seen: list[float] = []
    with pytest.raises(WriteConflict):
        async with a.write() as withdrawal:
            x = await withdrawal.get(checking["_id"])
            y = await withdrawal.get(savings["_id"])
            assert x is not None and y is not None
            async with b.write() as deposit:
                saved = await deposit.get(savings["_id"])
                assert saved is not None
                await deposit.replace(table, saved, dict(saved, balance=20.0))
                await deposit.commit()
            async with c.read() as reader:
                for account in (checking, savings):
                    found = await reader.get(account["_id"])
                    assert found is not None
                    seen.append(found["balance"])
            # Overdrawn by the snapshot's sums: a penalty of 1.
            penalty = 1.0 if x["balance"] + y["balance"] - 10.0 < 0 else 0.0
            await withdrawal.replace(table, x, dict(x, balance=x["balance"] - 10.0 - penalty))
            await withdrawal.commit()
    assert seen == [0.0, 20.0]


async def test_commit_timestamps_increase_in_visibility_order(pg: Open) -> None:
    """Two engines commit concurrently while readers take snapshots: every
    snapshot holds exactly the commits up to its ts — a reader never sees a
    commit before an older one."""
    a, b = await pg(), await pg()
    async with a.write() as tx:
        ta = await tx.ensure_table("a")
        tb = await tx.ensure_table("b")
        await tx.commit()
    start = await a.latest_ts()
    snapshots: list[tuple[int, int]] = []
    done = False

    async def writer(engine: PostgresEngine, table: Any, n: int) -> list[int]:
        out = []
        for i in range(n):
            async with engine.write() as tx:
                await tx.insert(table, doc(table.number, float(i + 1), i=float(i)))
                out.append(await tx.commit())
        return out

    async def reader(engine: PostgresEngine) -> None:
        while not done:
            async with engine.read() as rx:
                seen = await rx.count(ta.number) + await rx.count(tb.number)
                snapshots.append((rx.ts, seen))

    readers = [asyncio.create_task(reader(e)) for e in (a, b, a, b)]
    results = await asyncio.gather(
        writer(a, ta, 40), writer(b, tb, 40), writer(a, tb, 20), writer(b, ta, 20)
    )
    done = True
    await asyncio.gather(*readers)
    for out in results:
        assert out == sorted(out)
    log = [c.ts for c in await a.commits_since(start)]
    assert log == sorted(set(log)) and sorted(ts for out in results for ts in out) == log
    assert len(snapshots) > 10
    for ts, seen in snapshots:
        assert seen == sum(1 for t in log if t <= ts), (ts, seen)


async def test_listeners_get_other_processes_commits_once_in_order(pg: Open) -> None:
    a, b = await pg(), await pg()
    seen: list[int] = []
    a.on_commit(lambda c: seen.append(c.ts))
    own: list[int] = []
    async with a.write() as tx:
        table = await tx.ensure_table("t")
        own.append(await tx.commit())

    async def commit(engine: PostgresEngine, t: float) -> int:
        async with engine.write() as tx:
            await tx.insert(table, doc(table.number, t))
            return await tx.commit()

    # Many commits at once from both: notifications coalesce, nothing is lost.
    tss = await asyncio.gather(*(commit(b if i % 3 else a, float(i)) for i in range(30)))
    expected = sorted([*own, *tss])
    await eventually(lambda: len(seen) >= len(expected))
    await asyncio.sleep(0.05)
    assert seen == expected


async def watched_engine(pg: Open) -> tuple[PostgresEngine, Any, list[int]]:
    """An engine with a table ``t`` and the list of commit timestamps its
    listeners receive from then on."""
    engine = await pg()
    seen: list[int] = []
    engine.on_commit(lambda c: seen.append(c.ts))
    async with engine.write() as tx:
        table = await tx.ensure_table("t")
        await tx.commit()
    return engine, table, seen


async def test_concurrent_commits_of_one_process_are_delivered_without_log_reads(
    pg: Open,
) -> None:
    """Commits of one process finish out of order; each waits for the one
    before it (also this process's) instead of reading the log, and listeners
    still get every commit once, in timestamp order, when its commit returns."""
    engine, table, seen = await watched_engine(pg)
    reads_before = engine.log_reads

    async def commit(t: float) -> int:
        async with engine.write() as tx:
            await tx.insert(table, doc(table.number, t))
            ts = await tx.commit()
        assert ts in seen, "the commit returned before its listeners had it"
        return ts

    tss = await asyncio.gather(*(commit(float(i)) for i in range(40)))
    assert seen[1:] == sorted(tss)
    assert engine.log_reads == reads_before


@contextlib.contextmanager
def commit_hook(conn: Any, before: Any = None, after: Any = None) -> Iterator[None]:
    """Run ``before()``/``after()`` around the COMMIT statement sent on ``conn``."""
    original = conn.execute

    async def execute(query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "COMMIT" and before is not None:
            await before()
        result = await original(query, *args, **kwargs)
        if query == "COMMIT" and after is not None:
            await after()
        return result

    conn.execute = execute
    try:
        yield
    finally:
        del conn.execute


async def test_a_connection_lost_during_commit_is_settled_by_the_commit_log(
    pg: Open,
) -> None:
    """When the connection fails during COMMIT, the engine asks the database:
    a transaction that died before committing is a retryable conflict (nothing
    was written); one that committed stands, and is delivered as usual."""
    engine, table, seen = await watched_engine(pg)
    killer = await psycopg.AsyncConnection.connect(require_postgres(), autocommit=True)
    try:
        lost = doc(table.number, 1.0)
        with pytest.raises(WriteConflict, match="lost before COMMIT"):
            async with engine.write() as tx:
                await tx.insert(table, lost)
                pid = tx._conn.info.backend_pid  # type: ignore[attr-defined]

                async def kill() -> None:
                    await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                    while (await (await killer.execute(gone, (pid,))).fetchone()) != (0,):
                        await asyncio.sleep(0.01)

                with commit_hook(tx._conn, before=kill):  # type: ignore[attr-defined]
                    await tx.commit()

        kept = doc(table.number, 2.0)
        async with engine.write() as tx:
            await tx.insert(table, kept)

            async def lose_the_answer() -> None:
                raise psycopg.OperationalError("the server closed the connection unexpectedly")

            with commit_hook(tx._conn, after=lose_the_answer):  # type: ignore[attr-defined]
                ts = await tx.commit()
    finally:
        await killer.close()
    async with engine.read() as reader:
        assert await reader.get(lost["_id"]) is None
        assert await reader.get(kept["_id"]) is not None
    assert ts in seen


async def test_a_paused_listener_catches_up_from_the_commit_log(pg: Open) -> None:
    a, b = await pg(), await pg()
    seen: list[Commit] = []
    a.on_commit(seen.append)
    async with b.write() as tx:
        table = await tx.ensure_table("t")
        first = await tx.commit()
    await eventually(lambda: [c.ts for c in seen] == [first])
    await a.stop_listening()  # as if A's LISTEN connection were down
    missed = []
    for i in range(5):
        async with b.write() as tx:
            await tx.insert(table, doc(table.number, float(i)))
            missed.append(await tx.commit())
    await asyncio.sleep(0.1)
    assert [c.ts for c in seen] == [first]  # nobody told A
    a.start_listening()
    await eventually(lambda: len(seen) == 6)
    assert [c.ts for c in seen] == [first, *missed]
    assert len(seen[-1].doc_ids) == 1


async def test_a_dropped_listen_connection_reconnects_and_catches_up(pg: Open) -> None:
    a, b = await pg(), await pg()
    seen: list[int] = []
    a.on_commit(lambda c: seen.append(c.ts))
    pid = a.listener_pid
    assert pid is not None and a.listener_connections == 1
    url = require_postgres()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    tss = []
    for _ in range(3):
        async with b.write() as tx:
            await tx.ensure_table("t")
            tss.append(await tx.commit())
    await eventually(lambda: len(seen) >= 3)
    assert seen == tss
    assert a.listener_connections == 2 and a.listener_pid not in (None, pid)


async def test_read_transactions_pick_up_another_processes_catalog(pg: Open) -> None:
    a, b = await pg(), await pg()
    async with a.write() as tx:
        table = await tx.ensure_table("t")
        index = await tx.add_index(table, "by_x", ("x",))
        await tx.commit()
    async with b.read() as rx:
        assert rx.catalog.index(table.number, "by_x") == index
    assert b.catalog.index(table.number, "by_x") == index


async def test_continued_scans_use_the_primary_key(pg: Open) -> None:
    engine = await pg()
    plans = []
    async with await psycopg.AsyncConnection.connect(require_postgres(), autocommit=True) as conn:
        await conn.execute(f"SET search_path TO {engine.schema}")
        await conn.execute("SET enable_seqscan = off")  # tiny tables: ask what it can use
        for op, order in ((">", ""), ("<", " DESC")):
            cur = await conn.execute(
                "EXPLAIN SELECT e.key, e.doc_id, d.value FROM index_entries e "
                "JOIN documents d ON d.id = e.doc_id WHERE e.index_id = 1 "
                f"AND e.key >= '\\x00' AND e.key < '\\xff' AND (e.key, e.doc_id) {op} "
                f"('\\x10', 'x') ORDER BY e.key{order}, e.doc_id{order} LIMIT 100"
            )
            plans.append("\n".join(row[0] for row in await cur.fetchall()))
    for plan, op in zip(plans, "><", strict=True):
        assert "index_entries_pkey" in plan and "Sort" not in plan, plan
        condition = plan.split("Index Cond")[1].split("\n")[0]
        assert f"ROW(key, doc_id) {op} ROW(" in condition, plan


@mutation
async def bump(ctx: Any) -> float:
    counter = await ctx.db.query("counters").first()
    if counter is None:
        await ctx.db.insert("counters", {"n": 1.0})
        return 1.0
    await ctx.db.patch(counter["_id"], {"n": counter["n"] + 1})
    return float(counter["n"] + 1)


@query
async def total(ctx: Any) -> float:
    counter = await ctx.db.query("counters").first()
    return 0.0 if counter is None else float(counter["n"])


async def test_two_runtimes_retry_conflicts_transparently(tmp_path: Path) -> None:
    """Two servers on one database increment one counter concurrently: every
    increment lands once; the conflicts were retried and counted."""
    app = App.from_modules({"c": {"bump": bump, "total": total}})
    runtimes = [
        Runtime(app, engine_for_tests(tmp_path, "db", backend="postgres")) for _ in range(2)
    ]
    try:
        for rt in runtimes:
            await rt.start()
        results = await asyncio.gather(*(runtimes[i % 2].mutation("c:bump") for i in range(30)))
        assert sorted(results) == [float(i) for i in range(1, 31)]
        assert await runtimes[0].query("c:total") == 30.0
        assert sum(rt.conflict_retries for rt in runtimes) > 0
    finally:
        for rt in runtimes:
            await rt.stop()
        await drop_test_databases(tmp_path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("call", ["open", "exists"])
async def test_an_unreachable_server_fails_at_once_naming_it(call: str) -> None:
    """No pool retrying until its timeout (and warning meanwhile): one
    StorageError naming where and why, never the password."""
    port = closed_port()
    engine = PostgresEngine(f"postgresql://ann:pw-s3cret@127.0.0.1:{port}/app")
    with pytest.raises(StorageError) as info:
        await getattr(engine, call)()
    message = info.value.message
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}/app: ")
    assert "Connection refused" in message and "pw-s3cret" not in message
    assert info.value.code == "DatabaseUnavailable"


async def test_a_missing_database_is_named() -> None:
    url = urlsplit(require_postgres())
    engine = PostgresEngine(urlunsplit(url._replace(path="/basalt_no_such_db")))
    with pytest.raises(StorageError) as info:
        await engine.open()
    assert info.value.message == (
        f"cannot connect to PostgreSQL at {url.hostname}:{url.port or 5432}/basalt_no_such_db: "
        'database "basalt_no_such_db" does not exist'
    )
