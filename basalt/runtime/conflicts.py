"""Retrying transactions that lost a write conflict (or whose snapshot the
engine refused): how often, and how long to wait between attempts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from basalt.errors import WriteConflict

T = TypeVar("T")

#: How often a transaction is retried on a write conflict before giving up.
MAX_CONFLICT_RETRIES = 20


async def conflict_backoff(attempt: int) -> None:
    """Sleep before retry ``attempt`` of a conflicting transaction (exponential,
    capped at 0.1 s, with full jitter)."""
    await asyncio.sleep(min(0.001 * 2**attempt, 0.1) * random.random())


async def retry_conflicts(
    attempt: Callable[[], Awaitable[T]],
    *,
    on_conflict: Callable[[], None] | None = None,
    retries: int = MAX_CONFLICT_RETRIES,
) -> T:
    """``await attempt()``, run again after :func:`conflict_backoff` each time it
    raises WriteConflict (``on_conflict`` is told), at most ``retries`` times;
    then the WriteConflict propagates."""
    conflicts = 0
    while True:
        try:
            return await attempt()
        except WriteConflict:
            conflicts += 1
            if on_conflict is not None:
                on_conflict()
            if conflicts > retries:
                raise
            await conflict_backoff(conflicts)
