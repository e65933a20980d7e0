"""Stopping the hub: a refresh cycle ends wherever the stop finds it."""

from __future__ import annotations

import asyncio
import contextlib

from basalt.sync import SyncHub

from .conftest import Env


async def test_stop_ends_a_cycle_that_waits_for_a_connection(env: Env) -> None:
    """Every connection of the engine is held, so the cycle waits for one; one is
    given back and the hub is stopped 0, 1, 2, … loop iterations later, which
    reaches the moment the connection arrives (where Python 3.11's
    ``asyncio.wait_for``, inside psycopg_pool, drops a cancellation) and the
    ROLLBACK that ends the cycle's snapshot (where a cancellation could keep the
    connection from going back to the pool). The stop must return, and every
    connection must come back: the last round holds them all again."""
    storage = env.runtime.storage
    # A PostgreSQL engine has a bounded pool; a SQLite reader never waits.
    connections = int(getattr(storage, "pool_size", 1))
    for delay in range(60):
        hub = SyncHub(env.runtime)
        hub.start()
        async with contextlib.AsyncExitStack() as others:
            for _ in range(connections - 1):
                await others.enter_async_context(storage.read())
            async with contextlib.AsyncExitStack() as last:
                await last.enter_async_context(storage.read())
                hub.wake()
                for _ in range(5):
                    await asyncio.sleep(0)  # the cycle now waits for a connection
            for _ in range(delay):
                await asyncio.sleep(0)
            await hub.stop()
    # A connection lost to the pool would make this fail with the pool's timeout.
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(storage.read()) for _ in range(connections)]
    assert [reader.ts for reader in readers] == [readers[0].ts] * connections
