"""Index range scans, shared by the engines.

A scan reads ``index_entries`` joined with ``documents`` for keys in
``[start, end)`` in key order (then document id order), a page at a time; each
page continues strictly after the last ``(key, doc_id)`` of the previous one.
Only the placeholder syntax and the way a page is fetched differ per engine.
"""

from __future__ import annotations

from typing import Any

ScanQueries = dict[tuple[bool, bool, bool], str]

_SELECT = (
    "SELECT e.key, e.doc_id, d.value FROM index_entries e JOIN documents d ON d.id = e.doc_id "
)


def _scan_sql(p: str, reverse: bool, bounded: bool, after: bool) -> str:
    where = [f"e.index_id = {p}", f"e.key >= {p}"]
    if bounded:
        where.append(f"e.key < {p}")
    if after:
        # A row comparison over consecutive primary-key columns: an index condition.
        op = "<" if reverse else ">"
        where.append(f"(e.key, e.doc_id) {op} ({p}, {p})")
    order = "e.key DESC, e.doc_id DESC" if reverse else "e.key, e.doc_id"
    return f"{_SELECT}WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {p}"


def scan_queries(placeholder: str) -> ScanQueries:
    """The page query for every (reverse, bounded, continuing) combination."""
    flags = (False, True)
    return {(r, b, a): _scan_sql(placeholder, r, b, a) for r in flags for b in flags for a in flags}


class ScanPages:
    """The SQL and parameters of each page of one scan.

    Rows are ``(key, doc_id, value)``; :meth:`after_page` gives the next page's
    query, or None when the page was short (the range is exhausted).
    """

    __slots__ = ("_base", "_batch", "_bounded", "_queries", "_reverse", "first")

    def __init__(
        self,
        queries: ScanQueries,
        index_id: int,
        start: bytes,
        end: bytes | None,
        *,
        reverse: bool,
        after: tuple[bytes, str] | None,
        batch_size: int,
    ) -> None:
        self._queries = queries
        self._reverse = reverse
        self._bounded = end is not None
        self._batch = batch_size
        self._base: tuple[Any, ...] = (index_id, start, end) if self._bounded else (index_id, start)
        if after is None:
            sql = queries[(reverse, self._bounded, False)]
            self.first: tuple[str, tuple[Any, ...]] = (sql, (*self._base, batch_size))
        else:
            self.first = self._continue(after[0], after[1])

    def _continue(self, key: bytes, doc_id: str) -> tuple[str, tuple[Any, ...]]:
        sql = self._queries[(self._reverse, self._bounded, True)]
        return sql, (*self._base, key, doc_id, self._batch)

    def after_page(self, rows: list[Any]) -> tuple[str, tuple[Any, ...]] | None:
        if len(rows) < self._batch:
            return None
        last_key, last_id, _ = rows[-1]
        return self._continue(last_key, last_id)
