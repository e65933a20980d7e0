"""The state one query or mutation run carries: its storage transaction, what
it read (for subscriptions and conflict checks), and its limits."""

from __future__ import annotations

import inspect
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from basalt.errors import BasaltError, LimitExceeded
from basalt.schema import SchemaDefinition
from basalt.storage.base import CATALOG_INDEX_ID, Commit, ReadTransaction, WriteTransaction

from .clock import CreationTimes

T = TypeVar("T")


class WriteNotAwaited(BasaltError):
    """A mutation called a write (``ctx.db.insert`` & co.) without ``await``."""

    code = "WriteNotAwaited"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-function limits (the Convex defaults)."""

    max_documents_read: int = 32_000
    max_bytes_read: int = 16 << 20
    max_documents_written: int = 16_000
    max_bytes_written: int = 16 << 20
    #: seconds of event-loop time a query or mutation may take (None: no limit)
    max_seconds: float | None = 1.0


class KeyRange(NamedTuple):
    """Keys ``[start, end)`` of one index (``end`` None: unbounded) that a query
    read. Every key in it starts with ``prefix`` (the encoded ``eq`` values of the
    index range), which the subscription index files it under."""

    index_id: int
    prefix: bytes
    start: bytes
    end: bytes | None

    def contains(self, key: bytes) -> bool:
        return self.start <= key and (self.end is None or key < self.end)


@dataclass(slots=True)
class ReadSet:
    """What a function read: index key ranges and document ids.

    A later commit invalidates the result iff one of its written keys falls in
    one of these ranges or it wrote one of these ids.
    """

    ranges: list[KeyRange] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def add_range(
        self, index_id: int, start: bytes, end: bytes | None, prefix: bytes = b""
    ) -> None:
        self.ranges.append(KeyRange(index_id, prefix, start, end))

    def add_missing_table(self, name: str) -> None:
        key = name.encode()
        self.ranges.append(KeyRange(CATALOG_INDEX_ID, key, key, key + b"\x00"))

    def overlaps(self, commit: Commit) -> bool:
        """Whether ``commit`` wrote anything this read set covers."""
        ids = self.ids
        if ids and any(doc_id in ids for doc_id in commit.doc_ids):
            return True
        for write in commit.keys:
            key = write.key
            for r in self.ranges:
                if r.index_id == write.index_id and r.contains(key):
                    return True
        return False


class TxState:
    """Everything the ``ctx.db`` objects of one run share."""

    __slots__ = (
        "bytes_read_before",
        "bytes_written",
        "creation_times",
        "documents_read",
        "documents_written",
        "limits",
        "read_set",
        "schema",
        "system",
        "tx",
        "writes",
    )

    def __init__(
        self,
        tx: ReadTransaction,
        *,
        schema: SchemaDefinition | None,
        limits: Limits,
        creation_times: CreationTimes,
        system: bool = False,
    ) -> None:
        self.tx = tx
        self.schema = schema
        self.limits = limits
        self.creation_times = creation_times
        self.read_set = ReadSet()
        self.documents_read = 0
        #: what the transaction had read before this function (several queries
        #: may share one read transaction: the sync hub's cycle, query_batch)
        self.bytes_read_before = tx.bytes_read
        self.documents_written = 0
        self.bytes_written = 0
        #: True for Basalt's own internal runs, which may write system tables.
        self.system = system
        #: the writes the function asked for, each a coroutine it must await
        #: (see :meth:`unawaited`); None until the first
        self.writes: list[tuple[str, Coroutine[Any, Any, Any]]] | None = None

    def track(self, name: str, write: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """Note a write (``ctx.db.insert(...)`` and the like) the function must await."""
        writes = self.writes
        if writes is None:
            self.writes = [(name, write)]
        else:
            writes.append((name, write))
        return write

    def unawaited(self) -> list[str]:
        """The writes the function never awaited (they did nothing), closed."""
        missed = []
        for name, write in self.writes or ():
            if inspect.getcoroutinestate(write) == inspect.CORO_CREATED:
                missed.append(name)
                write.close()  # no "never awaited" warning on top of the error
        return missed

    @property
    def writer(self) -> WriteTransaction:
        tx = self.tx
        assert hasattr(tx, "commit"), "writes need a mutation"
        return tx  # type: ignore[return-value]

    def count_read(self) -> None:
        self.documents_read += 1
        limits = self.limits
        if self.documents_read > limits.max_documents_read:
            raise LimitExceeded(
                f"Too many documents read in a single function execution "
                f"(limit: {limits.max_documents_read}). Use an index with a narrower range, "
                "take() fewer documents, or paginate.",
                code="TooManyDocumentsRead",
            )
        if self.tx.bytes_read - self.bytes_read_before > limits.max_bytes_read:
            raise LimitExceeded(
                f"Too many bytes read in a single function execution "
                f"(limit: {limits.max_bytes_read} bytes). Read fewer or smaller documents.",
                code="TooManyBytesRead",
            )

    def count_write(self, size: int) -> None:
        self.documents_written += 1
        self.bytes_written += size
        limits = self.limits
        if self.documents_written > limits.max_documents_written:
            raise LimitExceeded(
                f"Too many documents written in a single function execution "
                f"(limit: {limits.max_documents_written}). Split the work across several "
                "mutations (for example with ctx.scheduler).",
                code="TooManyWrites",
            )
        if self.bytes_written > limits.max_bytes_written:
            raise LimitExceeded(
                f"Too many bytes written in a single function execution "
                f"(limit: {limits.max_bytes_written} bytes).",
                code="TooManyBytesWritten",
            )
