"""The queues between sync sessions and their sockets, and the budget they share.

A connection's messages wait in its :class:`SendQueue` until its writer hands
them to the socket. The writer hands over one message at a time, and only once
the socket has taken most of the previous one, so messages pile up in a queue
only for a client that reads slower than the server sends them.

Two bounds apply to what the queues hold (in bytes of memory):

- **per connection**: :data:`MAX_QUEUED_MESSAGES` messages and
  :data:`MAX_QUEUED_BYTES` bytes. One message is always accepted into an empty
  queue, so a client that reads receives a result of any size the value limits
  allow.
- **per server**: one :class:`SendBudget` (:data:`MAX_TOTAL_QUEUED_BYTES` by
  default, ``BASALT_SYNC_QUEUE_MB`` for ``basalt serve``) for the queues of all
  its connections. When they hold more, the connections holding the most queued
  bytes (the slowest readers) are disconnected until the rest fits. The check
  runs after the writers woken by the latest messages have had their turn, so
  the messages of a fast client that its writer is about to hand over (one large
  result sent to many clients at once) are not held against it.

A connection over either bound is dropped at once, with what it had not read
(the official clients reconnect and resubscribe to the current results).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from operator import attrgetter
from typing import Any

log = logging.getLogger("basalt.server")

#: Most messages queued for one client before it is disconnected as too slow.
MAX_QUEUED_MESSAGES = 2_000
#: Most bytes queued for one client before it is disconnected as too slow (one
#: message alone is always accepted, however large).
MAX_QUEUED_BYTES = 32 << 20
#: Most bytes the queues of all connections of one server hold together.
MAX_TOTAL_QUEUED_BYTES = 256 << 20

#: The memory a message's text takes (O(1); a character may take 1, 2 or 4 bytes).
_size_of = sys.getsizeof


def message_text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class SendBudget:
    """The bytes queued for the sync clients of one server, against one limit."""

    def __init__(self, limit: int = MAX_TOTAL_QUEUED_BYTES) -> None:
        if limit < 1:
            raise ValueError(f"a send budget must be a positive number of bytes, got {limit}")
        self.limit = limit
        #: bytes now queued for all the connections
        self.queued_bytes = 0
        #: the connections' queues
        self.queues: set[SendQueue] = set()
        #: connections dropped for not reading (over either bound)
        self.disconnected = 0
        self._check_due = False

    def over(self) -> None:
        """The queues hold more than the limit: check again once the writers
        have had their turn."""
        if not self._check_due:
            self._check_due = True
            loop = asyncio.get_running_loop()
            # Two loop iterations later: the writers woken by this round of
            # messages have run then, and taken what their sockets accept.
            loop.call_soon(loop.call_soon, self._enforce)

    def _enforce(self) -> None:
        self._check_due = False
        if self.queued_bytes <= self.limit:
            return
        for queue in sorted(self.queues, key=attrgetter("queued_bytes"), reverse=True):
            if self.queued_bytes <= self.limit or not queue.queued_bytes:
                break
            total = self.queued_bytes
            queue.overflow(
                f"it holds {queue.queued_bytes} of the {total} bytes queued for the server's "
                f"sync clients, over the server's limit of {self.limit}"
            )


class SendQueue:
    """The bounded queue of one connection's outgoing messages (JSON text)."""

    def __init__(
        self,
        budget: SendBudget | None = None,
        max_bytes: int = MAX_QUEUED_BYTES,
        max_messages: int = MAX_QUEUED_MESSAGES,
    ) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.closing = False
        #: set when the connection must be dropped (see :attr:`overflow_reason`)
        self.overflowed = asyncio.Event()
        self.overflow_reason = ""
        self.budget = budget
        if budget is not None:
            budget.queues.add(self)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message (the session's ``send`` callback)."""
        if self.closing:
            return
        text = message_text(message)
        size = _size_of(text)
        queued = self.queued_bytes
        if queued and (queued + size > self.max_bytes or self.queue.qsize() >= self.max_messages):
            # The client is not reading: stop now (the server must not hold the
            # connection, its session and its queue until the client wakes up).
            self.overflow(
                f"{self.queue.qsize() + 1} messages of {queued + size} bytes would be queued "
                f"for it, over the limit of {self.max_messages} messages or {self.max_bytes} "
                "bytes per connection"
            )
            return
        self.queued_bytes = queued + size
        self.queue.put_nowait(text)
        budget = self.budget
        if budget is not None:
            budget.queued_bytes += size
            if budget.queued_bytes > budget.limit:
                budget.over()

    def taken(self, text: str) -> None:
        """The writer took ``text`` from the queue."""
        size = _size_of(text)
        self.queued_bytes -= size
        if self.budget is not None:
            self.budget.queued_bytes -= size

    def close(self) -> None:
        """Send what is queued, then close the connection."""
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(None)

    def overflow(self, reason: str) -> None:
        """Drop the connection: discard what is queued and tell its server task."""
        if self.overflowed.is_set():
            return
        self.closing = True
        self.overflow_reason = reason
        self._discard()
        self.overflowed.set()
        if self.budget is not None:
            self.budget.disconnected += 1

    def detach(self) -> None:
        """The connection ended: stop counting it against the server's budget."""
        self.closing = True
        self._discard()
        if self.budget is not None:
            self.budget.queues.discard(self)

    def _discard(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        if self.budget is not None:
            self.budget.queued_bytes -= self.queued_bytes
        self.queued_bytes = 0
