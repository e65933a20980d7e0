"""Retrying transactions that lost a write conflict (or whose snapshot the
engine refused): how often, and how long to wait between attempts."""

from __future__ import annotations

import asyncio
import random

#: How often a transaction is retried on a write conflict before giving up.
MAX_CONFLICT_RETRIES = 20


async def conflict_backoff(attempt: int) -> None:
    """Sleep before retry ``attempt`` of a conflicting transaction (exponential,
    capped at 0.1 s, with full jitter)."""
    await asyncio.sleep(min(0.001 * 2**attempt, 0.1) * random.random())
