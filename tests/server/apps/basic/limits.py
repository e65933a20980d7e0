"""Functions for the tests of what one sync connection may hold: an action that
counts how many of its calls run at once, a mutation and a query with large
results, and a query that computes for a while."""

import asyncio
import threading
import time

from basalt import action, mutation, query, v

_lock = threading.Lock()
#: per key: how many ``hold`` calls run now, and the most that ran at once
_running: dict[str, list[int]] = {}


@action(args={"key": v.string(), "seconds": v.float64()})
async def hold(ctx, key, seconds):
    """Runs ``seconds`` s; returns how many calls with this ``key`` ran at once
    at most, so far."""
    with _lock:
        counts = _running.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] = max(counts[1], counts[0])
    try:
        await asyncio.sleep(seconds)
    finally:
        with _lock:
            counts[0] -= 1
    return float(counts[1])


@mutation(args={"tag": v.string(), "size": v.float64()})
async def add_large(ctx, tag, size):
    """Inserts a note under ``tag``; returns ``size`` characters."""
    await ctx.db.insert("notes", {"tag": tag, "body": "large", "pos": 0.0})
    return "x" * int(size)


@query(args={"kib": v.float64(), "salt": v.optional(v.float64())})
async def big(ctx, kib, salt=None):
    """``kib`` KiB of text (``salt`` only makes the arguments distinct)."""
    return "x" * int(kib * 1024)


@query(args={"seconds": v.float64(), "salt": v.optional(v.float64())})
async def spin(ctx, seconds, salt=None):
    """Computes for ``seconds`` without giving the event loop back (a slow query
    within the time limit)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds
