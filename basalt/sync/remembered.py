"""The answers to mutations that a client may send again after reconnecting.

The npm client keeps its session id across reconnects and re-sends every
mutation it has not seen answered, with its original request id. The hub
remembers each ``(session id, request id)`` → answer, so that a re-sent mutation
is answered, not applied again. What it remembers is bounded both in count and
in bytes (the answers' size as JSON, which includes the mutations' return
values): beyond either bound the oldest answers are forgotten, and a mutation
re-sent after that long is applied again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

#: How many answers the hub remembers at most.
REMEMBERED_MUTATIONS = 10_000
#: How many bytes of answers (as JSON) the hub remembers at most.
REMEMBERED_MUTATION_BYTES = 64 << 20

#: A mutation's answer: the MutationResponse and its commit timestamp (None: failed).
Answer = tuple[dict[str, Any], int | None]


class RememberedMutations:
    """``(session id, request id)`` → the answer of a mutation (a future until it
    is known), oldest first, bounded in count and in bytes."""

    def __init__(
        self, max_count: int = REMEMBERED_MUTATIONS, max_bytes: int = REMEMBERED_MUTATION_BYTES
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        #: the answers' bytes now remembered
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, int], tuple[asyncio.Future[Answer], int]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, int]) -> asyncio.Future[Answer] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def add(self, key: tuple[str, int], answer: asyncio.Future[Answer]) -> None:
        """Remember a mutation that is running (its size is counted once it is answered)."""
        self._entries[key] = (answer, 0)
        self._trim()

    def settle(self, key: tuple[str, int], answer: asyncio.Future[Answer], size: int) -> None:
        """Count the ``size`` bytes of the answer, if it is still remembered."""
        entry = self._entries.get(key)
        if entry is None or entry[0] is not answer:
            return
        self._entries[key] = (answer, size)
        self.bytes += size
        self._trim()

    def discard(self, key: tuple[str, int], answer: asyncio.Future[Answer]) -> None:
        """Forget a mutation that did not complete (it may be sent again and run)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] is answer:
            del self._entries[key]
            self.bytes -= entry[1]

    def _trim(self) -> None:
        entries = self._entries
        while len(entries) > self.max_count or self.bytes > self.max_bytes:
            _, (_, size) = entries.popitem(last=False)
            self.bytes -= size
