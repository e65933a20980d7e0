"""The in-memory catalog of tables and indexes shared by the engines.

A write transaction that changes the catalog works on a copy
(:meth:`MemoryCatalog.copy`) and the engine swaps it in at commit, so a rolled
back transaction leaves no phantom table or index behind.
"""

from __future__ import annotations

from .base import BY_CREATION_TIME, IndexInfo, TableInfo

#: User tables are numbered from here (their ids are 32 characters long).
FIRST_USER_TABLE_NUMBER = 10001
#: System tables (``_storage``, ``_scheduled_functions`` …) are numbered from here.
FIRST_SYSTEM_TABLE_NUMBER = 500


class MemoryCatalog:
    """Tables and indexes by name and number."""

    __slots__ = ("_by_name", "_by_number", "_index_by_name", "_indexes")

    def __init__(self) -> None:
        self._by_name: dict[str, TableInfo] = {}
        self._by_number: dict[int, TableInfo] = {}
        self._indexes: dict[int, list[IndexInfo]] = {}
        self._index_by_name: dict[tuple[int, str], IndexInfo] = {}

    def copy(self) -> MemoryCatalog:
        other = MemoryCatalog()
        other._by_name = dict(self._by_name)
        other._by_number = dict(self._by_number)
        other._indexes = {k: list(v) for k, v in self._indexes.items()}
        other._index_by_name = dict(self._index_by_name)
        return other

    # -- reading -------------------------------------------------------------
    def table_by_name(self, name: str) -> TableInfo | None:
        return self._by_name.get(name)

    def table_by_number(self, number: int) -> TableInfo | None:
        return self._by_number.get(number)

    def tables(self) -> list[TableInfo]:
        return sorted(self._by_number.values(), key=lambda t: t.number)

    def indexes_of(self, table_number: int) -> list[IndexInfo]:
        return self._indexes.get(table_number, [])

    def index(self, table_number: int, name: str) -> IndexInfo | None:
        return self._index_by_name.get((table_number, name))

    def by_creation_time(self, table_number: int) -> IndexInfo:
        found = self._index_by_name.get((table_number, BY_CREATION_TIME))
        assert found is not None, f"table {table_number} has no {BY_CREATION_TIME} index"
        return found

    def next_table_number(self, system: bool) -> int:
        if system:
            used = [n for n in self._by_number if n < FIRST_USER_TABLE_NUMBER]
            return max(used, default=FIRST_SYSTEM_TABLE_NUMBER - 1) + 1
        used = [n for n in self._by_number if n >= FIRST_USER_TABLE_NUMBER]
        return max(used, default=FIRST_USER_TABLE_NUMBER - 1) + 1

    def next_index_id(self) -> int:
        return max((i.id for i in self._index_by_name.values()), default=0) + 1

    # -- changing ------------------------------------------------------------
    def add_table(self, table: TableInfo) -> None:
        self._by_name[table.name] = table
        self._by_number[table.number] = table

    def add_index(self, index: IndexInfo) -> None:
        self.remove_index(index)
        self._indexes.setdefault(index.table_number, []).append(index)
        self._index_by_name[(index.table_number, index.name)] = index

    def remove_index(self, index: IndexInfo) -> None:
        old = self._index_by_name.pop((index.table_number, index.name), None)
        if old is not None:
            self._indexes[index.table_number] = [
                i for i in self._indexes[index.table_number] if i.name != index.name
            ]
