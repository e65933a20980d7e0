"""The answers to mutations that a client may send again after reconnecting.

The npm client keeps its session id across reconnects and re-sends every
mutation it has not seen answered, with its original request id. The hub
remembers the answer of each mutation that committed, so that a re-sent one is
answered, not applied again.

An answer is remembered under a :func:`mutation_key`: a digest of the caller
(its identity, and whether it used the admin key), the session id, the request
id, the canonical function path and the arguments. A re-send matches only if
all of them are equal: a mutation sent by another caller, or with other
arguments, under a session id and request id someone already used runs as
itself, and never receives someone else's answer.

Only committed mutations are remembered. A failed mutation commits nothing, so
running it again when it is re-sent (its client never saw the failure) applies
it at most once all the same; one still running is remembered until it ends,
so that a re-send meanwhile waits for its answer.

What is remembered is bounded in count and in bytes (each answer's size as
JSON, which includes the mutation's return value, plus :data:`ENTRY_BYTES` for
its key and bookkeeping): beyond either bound the oldest answers are forgotten,
and a mutation re-sent after that long is applied again. The client controls
none of a key's size: the digest is fixed, and a session id is at most
:data:`~basalt.sync.limits.MAX_SESSION_ID_CHARS` characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from typing import Any

from basalt.runtime.app import canonical_path
from basalt.values.wire import to_convex_json

#: How many answers the hub remembers at most.
REMEMBERED_MUTATIONS = 10_000
#: How many bytes of answers (as JSON, plus keys) the hub remembers at most.
REMEMBERED_MUTATION_BYTES = 64 << 20
#: What one remembered answer costs besides its JSON: its key, its future and
#: the dictionary slot holding them.
ENTRY_BYTES = 512

#: A mutation's answer: the MutationResponse and its commit timestamp (None: nothing committed).
Answer = tuple[dict[str, Any], int | None]


def _part(digest: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def mutation_key(
    caller: str, session_id: str, request_id: int, path: str, args: dict[str, Any]
) -> bytes:
    """The key of a mutation's answer: who sent it, under which session and
    request id, and what it asked for (the canonical path and the arguments as
    canonical JSON, so that ``counter.js:inc`` re-sent by the Rust client is
    ``counter:inc``). CPU in proportion to the arguments' size."""
    digest = hashlib.blake2b(digest_size=32)
    for text in (caller, session_id, str(request_id), canonical_path(path)):
        _part(digest, text)
    _part(digest, json.dumps(to_convex_json(args), sort_keys=True, separators=(",", ":")))
    return digest.digest()


class RememberedMutations:
    """:func:`mutation_key` → the answer of a mutation (a future until it is
    known), oldest first, bounded in count and in bytes."""

    def __init__(
        self, max_count: int = REMEMBERED_MUTATIONS, max_bytes: int = REMEMBERED_MUTATION_BYTES
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        #: the bytes now counted for the remembered answers (see ENTRY_BYTES)
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[asyncio.Future[Answer], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> asyncio.Future[Answer] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def add(self, key: bytes, answer: asyncio.Future[Answer]) -> None:
        """Remember a mutation that is running (its answer's size is counted
        once it has committed)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (answer, ENTRY_BYTES)
        self.bytes += ENTRY_BYTES
        self._trim()

    def settle(self, key: bytes, answer: asyncio.Future[Answer], size: int) -> None:
        """The mutation committed: count the ``size`` bytes of its answer, if
        it is still remembered."""
        entry = self._entries.get(key)
        if entry is None or entry[0] is not answer:
            return
        self._entries[key] = (answer, entry[1] + size)
        self.bytes += size
        self._trim()

    def discard(self, key: bytes, answer: asyncio.Future[Answer]) -> None:
        """Forget a mutation that committed nothing (it may be sent again and run)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] is answer:
            del self._entries[key]
            self.bytes -= entry[1]

    def _trim(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_count or self.bytes > self.max_bytes):
            _, (_, size) = entries.popitem(last=False)
            self.bytes -= size
