"""How many bytes of request bodies one server process holds in memory at once.

Each request's body is limited on its own (16 MiB of function arguments, 20
MiB for an HTTP action's ``await request.body()``), but nothing bounded their
sum: a few hundred clients sending large bodies at once could take gigabytes.
A :class:`BodyBudget` is shared by both ports of a process. A request reserves
its body's bytes before reading them — its whole ``Content-Length`` at once
when it declares one (so that two half-read bodies never wait for each other),
chunk by chunk otherwise — and gives them back when its response is sent. A
request that finds no room waits up to :data:`BODY_WAIT_SECONDS` for others to
finish (its client is not read meanwhile, so TCP holds it back), then gets
```503`` with :class:`~basalt.errors.ServerBusy`.

Uploads to file storage stream to disk and are not counted here (they have
their own limits, see :mod:`basalt.runtime.files`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from basalt.errors import ServerBusy

log = logging.getLogger("basalt.server")

#: Bytes of request bodies one process holds at once (``BASALT_REQUEST_BODIES_MB``).
MAX_BODY_BYTES_HELD = 256 << 20
#: Seconds a request waits for room in the budget before it is refused.
BODY_WAIT_SECONDS = 10.0
#: Bodies this small are read whatever the budget holds.
SMALL_BODY_BYTES = 64 * 1024


class BodyBudget:
    """Bytes of request bodies held by the requests of one process."""

    def __init__(self, limit: int = MAX_BODY_BYTES_HELD, wait: float = BODY_WAIT_SECONDS) -> None:
        self.limit = limit
        self.wait = wait
        self.held = 0
        #: requests refused for want of room (for the log)
        self.refused = 0
        self._freed = asyncio.Event()

    def lease(self) -> BodyLease:
        """A new request's share (empty until it reserves bytes)."""
        return BodyLease(self)

    def _fits(self, size: int) -> bool:
        # A body alone may always be read: one larger than the whole budget is
        # refused by its own route's limit, not left waiting for ever.
        return self.held + size <= self.limit or self.held == 0

    async def _take(self, size: int, total: int) -> None:
        if total > SMALL_BODY_BYTES and not self._fits(size):
            deadline = asyncio.get_running_loop().time() + self.wait
            while not self._fits(size):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self.refused += 1
                    if self.refused % 100 == 1:
                        log.warning(
                            "%d bytes of request bodies held (the limit): refusing new "
                            "ones with 503 (%d so far)",
                            self.held,
                            self.refused,
                        )
                    raise ServerBusy(
                        "The server is reading as many request bodies as it may hold at "
                        "once: retry in a moment"
                    )
                self._freed.clear()
                try:
                    async with asyncio.timeout(left):
                        await self._freed.wait()
                except TimeoutError:
                    pass
        self.held += size

    def _give_back(self, size: int) -> None:
        self.held -= size
        self._freed.set()


class BodyLease:
    """The bytes one request has reserved; :meth:`release` gives them back."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    async def reserve(self, total: int) -> None:
        """Make this request's reservation at least ``total`` bytes (waiting
        for room, or raising :class:`~basalt.errors.ServerBusy`)."""
        more = total - self.held
        if more > 0:
            await self._budget._take(more, total)
            self.held = total

    def release(self) -> None:
        if self.held:
            self._budget._give_back(self.held)
            self.held = 0


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The request's ``Content-Length`` (None if absent or not a number)."""
    text = headers.get("content-length")
    if text is None or not text.isdigit() or len(text) > 18:
        return None
    return int(text)
