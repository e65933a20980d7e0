"""The storage protocol: what every engine (SQLite, PostgreSQL) implements.

The physical layout is fixed and app-independent (no DDL per app table):

- a *catalog* of tables (name ↔ table number) and indexes (index id, table,
  name, fields, state);
- a *documents* table holding the current version of every document as the
  stored encoding of its full value (system fields included);
- an *index-entries* table keyed by ``(index_id, encoded_key, doc_id)``, where
  ``encoded_key`` is the order-preserving encoding of the indexed field values
  followed by ``_creationTime`` (see :mod:`basalt.storage.indexing`), so every
  index range scan is a byte range on both engines;
- a *commit log*: one row per commit with its timestamp (nanoseconds, strictly
  increasing) and its write set, which feeds subscriptions in this and other
  processes.

Every table has the implicit index ``by_creation_time`` (key: ``_creationTime``);
``by_id`` is served by the documents table's primary key.

Reads happen in a :class:`ReadTransaction` at one snapshot; writes in a
:class:`WriteTransaction`, which sees its own writes and becomes visible to
others atomically at :meth:`WriteTransaction.commit`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

Document = dict[str, Any]

BY_ID = "by_id"
#: The pseudo index id under which a commit that creates a table records the
#: key ``name.encode()``, so a query that read a missing table is invalidated.
CATALOG_INDEX_ID = 0
BY_CREATION_TIME = "by_creation_time"


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A table in the catalog."""

    name: str
    number: int


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """A database index in the catalog.

    ``fields`` are the user fields (dotted paths); ``_creationTime`` is always
    appended to the key, so ``by_creation_time`` has ``fields == ()``.
    ``state`` is ``"ready"`` or ``"backfilling"``.
    """

    id: int
    table_number: int
    name: str
    fields: tuple[str, ...]
    state: str = "ready"


class KeyWrite(NamedTuple):
    """One index key a commit touched: an old key removed or a new key added.

    The sync layer invalidates a subscription iff one of these keys falls in one
    of the key ranges the subscription's query read.
    """

    index_id: int
    key: bytes


@dataclass(slots=True)
class Commit:
    """One entry of the commit log."""

    ts: int
    #: ids of the documents written (point reads of ``by_id`` are matched on these)
    doc_ids: list[str] = field(default_factory=list)
    #: old and new keys in every index of every written document
    keys: list[KeyWrite] = field(default_factory=list)


class Catalog(Protocol):
    """The in-memory view of tables and indexes, kept current by the engine."""

    def table_by_name(self, name: str) -> TableInfo | None: ...
    def table_by_number(self, number: int) -> TableInfo | None: ...
    def tables(self) -> list[TableInfo]: ...
    def indexes_of(self, table_number: int) -> list[IndexInfo]: ...
    def index(self, table_number: int, name: str) -> IndexInfo | None: ...


class ReadTransaction(Protocol):
    """Reads at one snapshot. ``ts`` is the newest commit the snapshot includes;
    ``bytes_read`` counts the stored size of every document loaded so far;
    ``catalog`` is the catalog as this transaction sees it."""

    @property
    def ts(self) -> int: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def catalog(self) -> Catalog: ...

    async def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None."""
        ...

    def scan(
        self,
        index: IndexInfo,
        start: bytes,
        end: bytes | None,
        *,
        reverse: bool = False,
        after: tuple[bytes, str] | None = None,
        batch_size: int = 100,
    ) -> AsyncIterator[tuple[bytes, Document]]:
        """Documents whose index key is in ``[start, end)`` (``end`` None:
        unbounded), in key order (then id order), descending if ``reverse``,
        strictly after the position ``after`` = ``(key, doc_id)`` in that order
        when given. Yields ``(key, document)``."""
        ...

    async def count(self, table_number: int) -> int:
        """How many documents the table holds."""
        ...


class WriteTransaction(ReadTransaction, Protocol):
    """A read-write transaction that sees its own writes."""

    async def ensure_table(self, name: str) -> TableInfo:
        """The table with this name, created (with ``by_creation_time``) if new."""
        ...

    async def insert(self, table: TableInfo, document: Document) -> None:
        """Store a new document; ``document`` carries ``_id`` and ``_creationTime``."""
        ...

    async def replace(self, table: TableInfo, old: Document, new: Document) -> None:
        """Replace a stored document (same ``_id``) by a new full value."""
        ...

    async def delete(self, table: TableInfo, old: Document) -> None:
        """Remove a stored document."""
        ...

    async def add_index(self, table: TableInfo, name: str, fields: tuple[str, ...]) -> IndexInfo:
        """Declare an index and backfill it from the table's documents."""
        ...

    async def drop_index(self, index: IndexInfo) -> None:
        """Remove an index and all its entries."""
        ...

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (schema text, settings) with this transaction."""
        ...

    async def commit(self) -> int:
        """Commit: returns the commit timestamp. The writes become durable and
        visible to others atomically, at the latest when the ``write()`` block
        exits (an engine may commit several transactions together)."""
        ...


class Persistence(Protocol):
    """A storage engine. One instance serves one database for one process.

    ``open`` prepares the database (creating the layout on first use) and loads
    the catalog; ``close`` releases everything. ``latest_ts`` never decreases,
    across restarts too.
    """

    @property
    def catalog(self) -> Catalog: ...

    async def exists(self) -> bool:
        """Whether the database was made already (an earlier ``open``), asked
        without creating anything; the engine need not be open. Raises
        :class:`~basalt.errors.StorageError` if the database cannot be reached."""
        ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def read(self) -> AbstractAsyncContextManager[ReadTransaction]:
        """A read transaction at the latest committed snapshot."""
        ...

    def write(self) -> AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction. Leaving the block normally does not commit:
        call :meth:`WriteTransaction.commit`; anything else rolls back."""
        ...

    async def latest_ts(self) -> int: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def commits_since(self, ts: int, limit: int = 1000) -> list[Commit]:
        """Commit-log entries with a timestamp greater than ``ts``, oldest first."""
        ...

    def on_commit(self, listener: Callable[[Commit], None]) -> Callable[[], None]:
        """Call ``listener`` after each commit made through this engine (in this
        process). Returns a function that removes the listener."""
        ...
