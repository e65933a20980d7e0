"""``ctx.db``: reading and writing documents inside a query or mutation.

Documents are plain dicts with the wire's field names, system fields included
(``_id``, ``_creationTime``). A mutation's writes are visible to its own later
reads and become visible to everyone else atomically when it commits.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from basalt.errors import BasaltError, InvalidValue
from basalt.storage.base import Document, TableInfo
from basalt.values.ids import is_valid_id, new_id, table_number_of
from basalt.values.model import (
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_SIZE,
    check_document_fields,
    check_value,
)

from . import misuse
from .query import Query
from .transaction import TxState

SYSTEM_TABLES: Final = ("_storage", "_scheduled_functions")


class _Unset:
    """The marker for "remove this field" in :meth:`DatabaseWriter.patch`."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


#: Pass as a field's value to ``ctx.db.patch`` to remove the field (what
#: ``undefined`` does in Convex).
UNSET: Final = _Unset()


class DatabaseError(BasaltError):
    code = "InvalidDatabaseCall"


def _check_table_name(table: Any, what: str) -> str:
    if not isinstance(table, str) or not table:
        raise DatabaseError(f"{what}: the table name must be a non-empty string, got {table!r}")
    return table


class DatabaseReader:
    """``ctx.db`` in a query."""

    __slots__ = ("_state",)

    def __init__(self, state: TxState) -> None:
        self._state = state

    @property
    def system(self) -> SystemReader:
        """Read-only access to system tables (``_storage``, ``_scheduled_functions``)."""
        return SystemReader(self._state)

    def _table_of(self, doc_id: Any, what: str, *, system: bool = False) -> TableInfo | None:
        if not isinstance(doc_id, str) or not is_valid_id(doc_id):
            raise DatabaseError(
                f"Invalid argument `id` for `{what}`: {doc_id!r} is not a document id"
            )
        number = table_number_of(doc_id)
        assert number is not None
        table = self._state.tx.catalog.table_by_number(number)
        if table is not None and table.name.startswith("_") and not system:
            raise DatabaseError(
                f"`{what}` cannot read the system table {table.name!r}: use ctx.db.system.get"
            )
        return table

    async def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None if it does not exist."""
        return await self._get(doc_id, "db.get", system=False)

    async def _get(self, doc_id: str, what: str, *, system: bool) -> Document | None:
        state = self._state
        self._table_of(doc_id, what, system=system)
        state.read_set.ids.add(doc_id)
        doc = await state.tx.get(doc_id)
        state.count_read()
        return doc

    def query(self, table: str) -> Query:
        """A query over ``table`` (ordered by ``_creationTime`` unless ``with_index``)."""
        return Query(self._state, _check_table_name(table, "db.query"))

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """``doc_id`` if it is a valid id of a document in ``table``, else None."""
        _check_table_name(table, "db.normalize_id")
        if not isinstance(doc_id, str) or not is_valid_id(doc_id):
            return None
        info = self._state.tx.catalog.table_by_name(table)
        if info is None:
            return None
        return doc_id if table_number_of(doc_id) == info.number else None

    if not TYPE_CHECKING:  # a hint for writes in a query (type checkers see no __getattr__)

        def __getattr__(self, name: str) -> Any:
            raise misuse.no_attribute(self, name, misuse.DATABASE_READER)


class SystemReader:
    """``ctx.db.system``: read-only access to system tables such as ``_storage``."""

    __slots__ = ("_state",)

    def __init__(self, state: TxState) -> None:
        self._state = state

    async def get(self, doc_id: str) -> Document | None:
        return await DatabaseReader(self._state)._get(doc_id, "db.system.get", system=True)

    def query(self, table: str) -> Query:
        _check_table_name(table, "db.system.query")
        if table not in SYSTEM_TABLES:
            raise DatabaseError(
                f"db.system.query: {table!r} is not a system table "
                f"(system tables: {', '.join(SYSTEM_TABLES)})"
            )
        return Query(self._state, table, system=True)


class DatabaseWriter(DatabaseReader):
    """``ctx.db`` in a mutation."""

    __slots__ = ()

    def _prepare(self, table: str, value: Any, what: str, doc_id: str | None) -> tuple[Any, int]:
        if type(value) is not dict:
            raise DatabaseError(
                f"{what}: a document must be a dict of fields, got {type(value).__name__}"
            )
        check_document_fields(value, allow_system_fields=False)
        size = check_value(value, what=f"document in table {table!r}", max_depth=MAX_DOCUMENT_DEPTH)
        if size > MAX_DOCUMENT_SIZE:
            raise InvalidValue(
                f"{what}: the document is {size} bytes, over the limit of "
                f"{MAX_DOCUMENT_SIZE} bytes (1 MiB) for table {table!r}"
            )
        schema = self._state.schema
        if schema is not None and not table.startswith("_"):
            value = schema.validate_document(
                table, value, document_id=doc_id, id_table=self._id_table
            )
        return value, size

    def _id_table(self, doc_id: str) -> str | None:
        number = table_number_of(doc_id)
        if number is None:
            return None
        table = self._state.tx.catalog.table_by_number(number)
        return None if table is None else table.name

    def insert(self, table: str, value: dict[str, Any]) -> Coroutine[Any, Any, str]:
        """Insert a new document; returns (await it) its id."""
        return self._state.track("ctx.db.insert", self._insert(table, value))

    async def _insert(self, table: str, value: dict[str, Any]) -> str:
        state = self._state
        if type(table) is not str or not table:
            _check_table_name(table, "db.insert")
        if table[0] == "_" and not state.system:
            raise DatabaseError(f"db.insert: cannot write to the system table {table!r}")
        value, size = self._prepare(table, value, "db.insert", None)
        tx = state.writer
        info = tx.catalog.table_by_name(table)
        if info is None:
            info = await tx.ensure_table(table)
        now = state.creation_times.next()
        doc_id = new_id(info.number, now)
        doc = {"_id": doc_id, "_creationTime": now}
        doc.update(value)
        await tx.insert(info, doc)
        state.count_write(size)
        return doc_id

    async def _existing(self, doc_id: str, what: str) -> tuple[TableInfo, Document]:
        state = self._state
        table = self._table_of(doc_id, what, system=state.system)
        old = await state.tx.get(doc_id) if table is not None else None
        state.read_set.ids.add(doc_id)
        if table is None or old is None:
            raise DatabaseError(f"{what}: no document with id {doc_id!r} exists (deleted?)")
        return table, old

    def patch(self, doc_id: str, fields: dict[str, Any]) -> Coroutine[Any, Any, None]:
        """Shallow-merge ``fields`` into the document (``UNSET`` removes a field);
        await it."""
        return self._state.track("ctx.db.patch", self._patch(doc_id, fields))

    async def _patch(self, doc_id: str, fields: dict[str, Any]) -> None:
        if type(fields) is not dict:
            raise DatabaseError(f"db.patch: fields must be a dict, got {type(fields).__name__}")
        table, old = await self._existing(doc_id, "db.patch")
        new = dict(old)
        for name, value in fields.items():
            if name in ("_id", "_creationTime"):
                if value != old[name]:
                    raise DatabaseError(f"db.patch: the system field {name!r} cannot change")
                continue
            if value is UNSET:
                new.pop(name, None)
            else:
                new[name] = value
        await self._write(table, old, new, "db.patch")

    def replace(self, doc_id: str, value: dict[str, Any]) -> Coroutine[Any, Any, None]:
        """Replace the document's fields by ``value`` (system fields are kept);
        await it."""
        return self._state.track("ctx.db.replace", self._replace(doc_id, value))

    async def _replace(self, doc_id: str, value: dict[str, Any]) -> None:
        if type(value) is not dict:
            raise DatabaseError(f"db.replace: value must be a dict, got {type(value).__name__}")
        table, old = await self._existing(doc_id, "db.replace")
        new = {"_id": old["_id"], "_creationTime": old["_creationTime"]}
        for name, field_value in value.items():
            if name in ("_id", "_creationTime"):
                if field_value != old[name]:
                    raise DatabaseError(f"db.replace: the system field {name!r} cannot change")
                continue
            new[name] = field_value
        await self._write(table, old, new, "db.replace")

    async def _write(self, table: TableInfo, old: Document, new: Document, what: str) -> None:
        user = {k: v for k, v in new.items() if k != "_id" and k != "_creationTime"}
        checked, size = self._prepare(table.name, user, what, old["_id"])
        if checked is not user:
            new = {"_id": old["_id"], "_creationTime": old["_creationTime"], **checked}
        await self._state.writer.replace(table, old, new)
        self._state.count_write(size)

    def delete(self, doc_id: str) -> Coroutine[Any, Any, None]:
        """Delete the document; await it."""
        return self._state.track("ctx.db.delete", self._delete(doc_id))

    async def _delete(self, doc_id: str) -> None:
        table, old = await self._existing(doc_id, "db.delete")
        await self._state.writer.delete(table, old)
        self._state.count_write(0)
