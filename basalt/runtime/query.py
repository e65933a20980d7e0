"""``ctx.db.query(table)``: index ranges, filters, order, and the terminal
operations ``take``, ``first``, ``unique``, ``collect``, ``paginate`` and
``async for``.

Every run records the key range it actually read (up to where it stopped), so a
subscription is invalidated only by commits that write inside that range.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

from basalt.errors import BasaltError
from basalt.storage.base import BY_CREATION_TIME, Document, IndexInfo, TableInfo
from basalt.values.int64 import Int64

from .filters import Evaluator, FilterBuilder, compile_filter
from .index_range import IndexRangeBuilder
from .schema_info import float_fields
from .transaction import TxState

Position = tuple[bytes, str]


class QueryError(BasaltError):
    code = "InvalidQuery"


def encode_cursor(position: Position | None) -> str:
    if position is None:
        return ""
    key, doc_id = position
    raw = len(key).to_bytes(4, "big") + key + doc_id.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Position | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        n = int.from_bytes(raw[:4], "big")
        key, doc_id = raw[4 : 4 + n], raw[4 + n :].decode()
        if len(key) != n or not doc_id:
            raise ValueError
    except ValueError:
        raise QueryError(
            f"Invalid pagination cursor {cursor!r}: pass the continueCursor of the previous "
            "page, or None for the first page"
        ) from None
    return key, doc_id


def _end_after(key: bytes) -> bytes:
    """The smallest byte string above every key that equals ``key``."""
    return key + b"\x00"


class Query:
    """A query over one table. Chainable; nothing runs until a terminal call."""

    __slots__ = ("_filters", "_index_name", "_order", "_range_fn", "_state", "_system", "_table")

    def __init__(self, state: TxState, table: str, *, system: bool = False) -> None:
        self._state = state
        self._table = table
        self._system = system
        self._index_name = BY_CREATION_TIME
        self._range_fn: Callable[[IndexRangeBuilder], Any] | None = None
        self._order = "asc"
        self._filters: list[Evaluator] = []

    def _copy(self) -> Query:
        q = Query(self._state, self._table, system=self._system)
        q._index_name, q._range_fn = self._index_name, self._range_fn
        q._order, q._filters = self._order, list(self._filters)
        return q

    # -- building ------------------------------------------------------------
    def with_index(
        self, index_name: str, range_fn: Callable[[IndexRangeBuilder], Any] | None = None
    ) -> Query:
        """Read through an index, optionally restricted to a range of it."""
        q = self._copy()
        q._index_name, q._range_fn = index_name, range_fn
        return q

    def full_table_scan(self) -> Query:
        return self._copy()

    def with_search_index(self, index_name: str, search_fn: Any = None) -> Query:
        raise QueryError(
            f"with_search_index({index_name!r}): full-text search is not available in this "
            "version of Basalt yet"
        )

    def order(self, order: str) -> Query:
        if order not in ("asc", "desc"):
            raise QueryError(f'order must be "asc" or "desc", got {order!r}')
        q = self._copy()
        q._order = order
        return q

    def filter(self, predicate: Callable[[FilterBuilder], Any]) -> Query:
        q = self._copy()
        q._filters.append(compile_filter(predicate))
        return q

    # -- planning ------------------------------------------------------------
    def _plan(self) -> tuple[TableInfo, IndexInfo, bytes, bytes | None, bytes] | None:
        """The table, index, key range ``[start, end)`` and the range's ``eq`` prefix."""
        state = self._state
        if self._table.startswith("_") and not self._system:
            raise QueryError(
                f"Table {self._table!r} is a system table: read it with ctx.db.system.query"
            )
        table = state.tx.catalog.table_by_name(self._table)
        if table is None:
            state.read_set.add_missing_table(self._table)
            return None
        index = state.tx.catalog.index(table.number, self._index_name)
        if index is None:
            names = [i.name for i in state.tx.catalog.indexes_of(table.number)]
            raise QueryError(
                f"Index {self._table}.{self._index_name} not found. "
                f"Indexes of {self._table!r}: {', '.join(sorted(names))}"
            )
        if self._range_fn is None:
            return table, index, b"", None, b""
        builder = IndexRangeBuilder(
            index.name, index.fields, float_fields(state.schema, self._table)
        )
        result = self._range_fn(builder)
        if result is not builder and result is not None:
            raise QueryError(
                f"the range function of with_index({self._index_name!r}) must return q "
                "(chain q.eq(...).gt(...))"
            )
        start, end = builder.key_range()
        return table, index, start, end, builder.prefix_key()

    async def _scan(
        self,
        *,
        want: int | None,
        after: Position | None = None,
        stop_at: Position | None = None,
        max_rows: int | None = None,
    ) -> tuple[list[Document], Position | None, bool]:
        """Read up to ``want`` matching documents. Returns them, the position
        of the last row read, and whether the range was exhausted."""
        plan = self._plan()
        if plan is None:
            return [], after, True
        _, index, start, end, prefix = plan
        state = self._state
        reverse = self._order == "desc"
        filters = self._filters
        results: list[Document] = []
        last: Position | None = after
        done = True
        rows = 0
        if want == 0:
            done = False
        else:
            async for key, doc in state.tx.scan(index, start, end, reverse=reverse, after=after):
                state.count_read()
                position = (key, doc["_id"])
                if stop_at is not None and (position < stop_at if reverse else position > stop_at):
                    break
                last = position
                rows += 1
                if all(f(doc) for f in filters):
                    results.append(doc)
                    if want is not None and len(results) >= want:
                        done = False
                        break
                if max_rows is not None and rows >= max_rows:
                    done = False
                    break
        self._record(index, prefix, start, end, reverse, after, last, done)
        return results, last, done

    def _record(
        self,
        index: IndexInfo,
        prefix: bytes,
        start: bytes,
        end: bytes | None,
        reverse: bool,
        after: Position | None,
        last: Position | None,
        done: bool,
    ) -> None:
        if not reverse:
            lo = max(start, after[0]) if after else start
            hi = end if done or last is None else _end_after(last[0])
        else:
            hi = _end_after(after[0]) if after else end
            if hi is not None and end is not None:
                hi = min(hi, end)
            lo = start if done or last is None else last[0]
        self._state.read_set.add_range(index.id, lo, hi, prefix)

    # -- terminal operations -------------------------------------------------
    async def take(self, n: int) -> list[Document]:
        if (type(n) is float and n.is_integer()) or type(n) is Int64:
            n = int(n)
        if type(n) is not int or n < 0:
            raise QueryError(f"take() needs a non-negative whole number, got {n!r}")
        docs, _, _ = await self._scan(want=n)
        return docs

    async def first(self) -> Document | None:
        docs, _, _ = await self._scan(want=1)
        return docs[0] if docs else None

    async def unique(self) -> Document | None:
        docs, _, _ = await self._scan(want=2)
        if len(docs) > 1:
            raise QueryError(
                f"unique() query on {self._table!r} returned more than one result: "
                f"{docs[0]['_id']}, {docs[1]['_id']} …"
            )
        return docs[0] if docs else None

    async def collect(self) -> list[Document]:
        docs, _, _ = await self._scan(want=None)
        return docs

    async def paginate(self, pagination_opts: dict[str, Any]) -> dict[str, Any]:
        """One page: ``{"page": [...], "isDone": bool, "continueCursor": str}``.

        ``pagination_opts`` is Convex's ``{"numItems": n, "cursor": str | None}``,
        optionally with ``endCursor`` (return exactly up to that cursor, so a
        reactive page keeps its boundaries) and ``maximumRowsRead``.
        """
        if not isinstance(pagination_opts, dict):
            raise QueryError(
                f'paginate() takes {{"numItems": n, "cursor": None | str}}, got {pagination_opts!r}'
            )
        num = pagination_opts.get("numItems")
        if (type(num) is float and num.is_integer()) or type(num) is Int64:
            num = int(num)
        if type(num) is not int or num < 0:
            raise QueryError(f"paginationOpts.numItems must be a whole number ≥ 0, got {num!r}")
        after = decode_cursor(pagination_opts.get("cursor"))
        end_cursor = pagination_opts.get("endCursor")
        stop_at = decode_cursor(end_cursor) if end_cursor else None
        max_rows = pagination_opts.get("maximumRowsRead")
        docs, last, done = await self._scan(
            want=None if stop_at is not None else num,
            after=after,
            stop_at=stop_at,
            max_rows=int(max_rows) if max_rows else None,
        )
        if stop_at is not None:
            last, done = stop_at, False
        return {"page": docs, "isDone": done, "continueCursor": encode_cursor(last)}

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Document]:
        plan = self._plan()
        if plan is None:
            return
        _, index, start, end, prefix = plan
        state = self._state
        reverse = self._order == "desc"
        last: Position | None = None
        done = False
        try:
            async for key, doc in state.tx.scan(index, start, end, reverse=reverse):
                state.count_read()
                last = (key, doc["_id"])
                if all(f(doc) for f in self._filters):
                    yield doc
            done = True
        finally:
            self._record(index, prefix, start, end, reverse, None, last, done)
