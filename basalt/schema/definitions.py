"""Schemas: :func:`define_schema`, :func:`define_table` and index definitions.

::

    schema = define_schema({
        "messages": define_table({"channel": v.id("channels"), "body": v.string()})
            .index("by_channel", ["channel"])
            .search_index("search_body", search_field="body", filter_fields=["channel"]),
    })

Everything is checked when the schema is defined; mistakes raise
:class:`~basalt.errors.SchemaDefinitionError` saying how to fix them.
:meth:`SchemaDefinition.validate_document` is what the storage layer calls on
every insert/replace/patch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Self

from basalt.errors import SchemaDefinitionError, SchemaValidationError
from basalt.schema.base import IdTable, Validator, _Check, _Mismatch
from basalt.schema.compound import ObjectValidator, UnionValidator
from basalt.schema.json_form import validator_from_json
from basalt.schema.scalars import AnyValidator, check_table_name

__all__ = [
    "IndexDefinition",
    "SchemaDefinition",
    "SearchIndexDefinition",
    "TableDefinition",
    "VectorIndexDefinition",
    "define_schema",
    "define_table",
]

MAX_INDEXES_PER_TABLE = 32
MAX_SEARCH_INDEXES_PER_TABLE = 4
MAX_VECTOR_INDEXES_PER_TABLE = 4
MAX_INDEX_FIELDS = 16
MAX_FILTER_FIELDS = 16
MIN_VECTOR_DIMENSIONS = 2
MAX_VECTOR_DIMENSIONS = 4096
MAX_NAME_LENGTH = 64
RESERVED_INDEX_NAMES = frozenset(("by_id", "by_creation_time"))

_INDEX_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_FIELD_SEGMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class IndexDefinition:
    """A database index. ``_creationTime`` is appended implicitly by the storage layer."""

    name: str
    fields: tuple[str, ...]
    kind: ClassVar[str] = "index"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))

    def to_json(self) -> dict[str, Any]:
        return {"indexDescriptor": self.name, "fields": list(self.fields)}


@dataclass(frozen=True)
class SearchIndexDefinition:
    """A full-text search index over one string field."""

    name: str
    search_field: str
    filter_fields: tuple[str, ...] = ()
    kind: ClassVar[str] = "search"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filter_fields", tuple(self.filter_fields))

    def to_json(self) -> dict[str, Any]:
        return {
            "indexDescriptor": self.name,
            "searchField": self.search_field,
            "filterFields": list(self.filter_fields),
        }


@dataclass(frozen=True)
class VectorIndexDefinition:
    """A vector index over one ``v.array(v.float64())`` field."""

    name: str
    vector_field: str
    dimensions: int
    filter_fields: tuple[str, ...] = ()
    kind: ClassVar[str] = "vector"

    def __post_init__(self) -> None:
        object.__setattr__(self, "filter_fields", tuple(self.filter_fields))

    def to_json(self) -> dict[str, Any]:
        return {
            "indexDescriptor": self.name,
            "vectorField": self.vector_field,
            "dimensions": self.dimensions,
            "filterFields": list(self.filter_fields),
        }


AnyIndex = IndexDefinition | SearchIndexDefinition | VectorIndexDefinition


def _check_field_path(path: Any, what: str, *, database_index: bool = False) -> str:
    if not isinstance(path, str):
        raise SchemaDefinitionError(f"{what}: field paths must be strings, got {path!r}")
    if path == "_creationTime" and database_index:
        raise SchemaDefinitionError(
            f"{what}: remove '_creationTime'; it is implicitly the last field of every index"
        )
    if path == "_id" and database_index:
        raise SchemaDefinitionError(
            f"{what}: remove '_id'; documents are implicitly indexed by id (use db.get(id))"
        )
    segments = path.split(".")
    for segment in segments:
        if not _FIELD_SEGMENT_RE.match(segment) or len(segment) > MAX_NAME_LENGTH:
            raise SchemaDefinitionError(
                f"{what}: field path {path!r} is invalid: each dot-separated segment must "
                f"be a letter or '_' followed by letters, digits or '_' "
                f"(at most {MAX_NAME_LENGTH} characters)"
            )
    if segments[0].startswith("_"):
        raise SchemaDefinitionError(
            f"{what}: field path {path!r} is invalid: top-level names starting with '_' are "
            "reserved for system fields"
        )
    return path


def _check_field_list(
    fields: Any, what: str, *, limit: int, database_index: bool = False, allow_empty: bool = False
) -> tuple[str, ...]:
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise SchemaDefinitionError(
            f'{what}: expected a list of field names such as ["author"], got {fields!r}'
        )
    checked = tuple(_check_field_path(f, what, database_index=database_index) for f in fields)
    if not checked and not allow_empty:
        raise SchemaDefinitionError(f"{what}: list at least one field")
    seen: set[str] = set()
    for field in checked:
        if field in seen:
            raise SchemaDefinitionError(f"{what}: field {field!r} is listed twice")
        seen.add(field)
    if len(checked) > limit:
        raise SchemaDefinitionError(
            f"{what}: {len(checked)} fields is more than the limit of {limit}"
        )
    return checked


def _q(obj: Any) -> str:
    """Source text of a str or list of str, double-quoted like the validators' repr."""
    return json.dumps(obj, ensure_ascii=False)


def _check_document_validator(validator: Validator) -> None:
    if isinstance(validator, AnyValidator):
        return
    if isinstance(validator, ObjectValidator):
        for name in validator.fields:
            if name.startswith("_"):
                raise SchemaDefinitionError(
                    f"field {name!r}: top-level field names starting with '_' are reserved "
                    "for system fields such as _id and _creationTime"
                )
        return
    if isinstance(validator, UnionValidator) and validator.members:
        for member in validator.members:
            _check_document_validator(member)
        return
    raise SchemaDefinitionError(
        "a table's documents must be described by a dict of field validators, "
        f"v.object({{...}}), a union of objects or v.any(); got {validator!r}"
    )


class TableDefinition:
    """A table: its document validator and its indexes. Build with :func:`define_table`."""

    __slots__ = ("_validator", "indexes", "search_indexes", "vector_indexes")

    def __init__(self, validator: Validator) -> None:
        if not isinstance(validator, Validator):
            raise SchemaDefinitionError(f"expected a validator, got {validator!r}")
        _check_document_validator(validator)
        self._validator = validator
        self.indexes: list[IndexDefinition] = []
        self.search_indexes: list[SearchIndexDefinition] = []
        self.vector_indexes: list[VectorIndexDefinition] = []

    @property
    def validator(self) -> Validator:
        """The validator of the user fields of each document (read-only)."""
        return self._validator

    def all_indexes(self) -> list[AnyIndex]:
        """Database, then search, then vector indexes, each in declaration order."""
        return [*self.indexes, *self.search_indexes, *self.vector_indexes]

    def _check_index_name(self, name: Any) -> str:
        if not isinstance(name, str):
            raise SchemaDefinitionError(f"index name must be a string, got {name!r}")
        if name in RESERVED_INDEX_NAMES:
            raise SchemaDefinitionError(
                f"index name {name!r} is reserved (by_id and by_creation_time exist "
                "implicitly on every table); choose another name"
            )
        if name.startswith("_"):
            raise SchemaDefinitionError(
                f"index name {name!r} is invalid: names starting with '_' are reserved"
            )
        if not _INDEX_NAME_RE.match(name) or len(name) > MAX_NAME_LENGTH:
            raise SchemaDefinitionError(
                f"index name {name!r} is invalid: use a letter followed by letters, digits "
                f"or '_' (at most {MAX_NAME_LENGTH} characters)"
            )
        if any(index.name == name for index in self.all_indexes()):
            raise SchemaDefinitionError(
                f"index name {name!r} is used twice in the same table; index names must be "
                "unique across database, search and vector indexes"
            )
        return name

    def index(self, name: str, fields: Sequence[str]) -> Self:
        """Add a database index on ``fields`` (dotted paths allowed); returns ``self``."""
        name = self._check_index_name(name)
        checked = _check_field_list(
            fields, f"index {name!r}", limit=MAX_INDEX_FIELDS, database_index=True
        )
        if len(self.indexes) >= MAX_INDEXES_PER_TABLE:
            raise SchemaDefinitionError(
                f"index {name!r}: a table can have at most {MAX_INDEXES_PER_TABLE} indexes"
            )
        self.indexes.append(IndexDefinition(name, checked))
        return self

    def search_index(
        self, name: str, *, search_field: str, filter_fields: Sequence[str] = ()
    ) -> Self:
        """Add a full-text search index on ``search_field``; returns ``self``."""
        name = self._check_index_name(name)
        what = f"search index {name!r}"
        field = _check_field_path(search_field, what)
        filters = _check_field_list(filter_fields, what, limit=MAX_FILTER_FIELDS, allow_empty=True)
        if len(self.search_indexes) >= MAX_SEARCH_INDEXES_PER_TABLE:
            raise SchemaDefinitionError(
                f"{what}: a table can have at most {MAX_SEARCH_INDEXES_PER_TABLE} search indexes"
            )
        self.search_indexes.append(SearchIndexDefinition(name, field, filters))
        return self

    def vector_index(
        self, name: str, *, vector_field: str, dimensions: int, filter_fields: Sequence[str] = ()
    ) -> Self:
        """Add a vector index on ``vector_field`` of ``dimensions`` floats; returns ``self``."""
        name = self._check_index_name(name)
        what = f"vector index {name!r}"
        field = _check_field_path(vector_field, what)
        if type(dimensions) is not int or not (
            MIN_VECTOR_DIMENSIONS <= dimensions <= MAX_VECTOR_DIMENSIONS
        ):
            raise SchemaDefinitionError(
                f"{what}: dimensions must be an integer from {MIN_VECTOR_DIMENSIONS} to "
                f"{MAX_VECTOR_DIMENSIONS}, got {dimensions!r}"
            )
        filters = _check_field_list(filter_fields, what, limit=MAX_FILTER_FIELDS, allow_empty=True)
        if len(self.vector_indexes) >= MAX_VECTOR_INDEXES_PER_TABLE:
            raise SchemaDefinitionError(
                f"{what}: a table can have at most {MAX_VECTOR_INDEXES_PER_TABLE} vector indexes"
            )
        self.vector_indexes.append(VectorIndexDefinition(name, field, dimensions, filters))
        return self

    def to_json(self, table_name: str) -> dict[str, Any]:
        return {
            "tableName": table_name,
            "indexes": [i.to_json() for i in self.indexes],
            "searchIndexes": [i.to_json() for i in self.search_indexes],
            "vectorIndexes": [i.to_json() for i in self.vector_indexes],
            "documentType": self._validator.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TableDefinition:
        table = cls(validator_from_json(obj.get("documentType", {"type": "any"})))
        for index in obj.get("indexes", ()):
            table.index(index["indexDescriptor"], index["fields"])
        for index in obj.get("searchIndexes", ()):
            table.search_index(
                index["indexDescriptor"],
                search_field=index["searchField"],
                filter_fields=index.get("filterFields", ()),
            )
        for index in obj.get("vectorIndexes", ()):
            table.vector_index(
                index["indexDescriptor"],
                vector_field=index["vectorField"],
                dimensions=index["dimensions"],
                filter_fields=index.get("filterFields", ()),
            )
        return table

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TableDefinition)
            and self._validator == other._validator
            and self.all_indexes() == other.all_indexes()
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (indexes can be added)

    def __repr__(self) -> str:
        text = f"define_table({self._validator!r})"
        for i in self.indexes:
            text += f".index({_q(i.name)}, {_q(list(i.fields))})"
        for s in self.search_indexes:
            text += (
                f".search_index({_q(s.name)}, search_field={_q(s.search_field)}, "
                f"filter_fields={_q(list(s.filter_fields))})"
            )
        for x in self.vector_indexes:
            text += (
                f".vector_index({_q(x.name)}, vector_field={_q(x.vector_field)}, "
                f"dimensions={x.dimensions}, filter_fields={_q(list(x.filter_fields))})"
            )
        return text


def define_table(fields: Mapping[str, Validator] | Validator) -> TableDefinition:
    """A table whose documents have ``fields`` (a dict means ``v.object(fields)``).

    ``fields`` may also be a ``v.object``, a union of objects, or ``v.any()``.
    Top-level field names must not start with ``_`` (``_id`` and ``_creationTime``
    are added to every document by the system).
    """
    if isinstance(fields, Validator):
        return TableDefinition(fields)
    if isinstance(fields, Mapping):
        return TableDefinition(ObjectValidator(fields))
    raise SchemaDefinitionError(
        f"define_table() takes a dict of field validators (or v.object(...), a union of "
        f"objects, v.any()), got {fields!r}"
    )


class SchemaDefinition:
    """The schema of an app: its tables and two flags. Build with :func:`define_schema`.

    ``schema_validation``: check every written document against its table.
    ``strict_table_name_types``: writes to tables missing from the schema are errors;
    when False, such tables accept any document.
    """

    __slots__ = ("_checks", "schema_validation", "strict_table_name_types", "tables")

    def __init__(
        self,
        tables: Mapping[str, TableDefinition],
        *,
        schema_validation: bool = True,
        strict_table_name_types: bool = True,
    ) -> None:
        if not isinstance(tables, Mapping):
            raise SchemaDefinitionError(
                f"define_schema() takes a dict of table name -> define_table(...), got {tables!r}"
            )
        for flag, value in (
            ("schema_validation", schema_validation),
            ("strict_table_name_types", strict_table_name_types),
        ):
            if type(value) is not bool:
                raise SchemaDefinitionError(f"{flag} must be True or False, got {value!r}")
        for name, table in tables.items():
            check_table_name(name)
            if not isinstance(table, TableDefinition):
                hint = (
                    "; wrap it in define_table(...)"
                    if isinstance(table, Mapping | Validator)
                    else ""
                )
                raise SchemaDefinitionError(
                    f"table {name!r}: expected define_table(...), got {table!r}{hint}"
                )
        self.tables: Mapping[str, TableDefinition] = MappingProxyType(dict(tables))
        self.schema_validation = schema_validation
        self.strict_table_name_types = strict_table_name_types
        self._checks: dict[str, _Check] = {
            name: table.validator._document_checker() for name, table in self.tables.items()
        }

    def validate_document(
        self,
        table: str,
        document: dict[str, Any],
        *,
        document_id: str | None = None,
        id_table: IdTable | None = None,
    ) -> dict[str, Any]:
        """Check a document's user fields against its table; return it, maybe coerced.

        ``_id`` and ``_creationTime`` are not validated and are kept. Ids are checked
        to belong to the right table when ``id_table`` is given. Raises
        :class:`SchemaValidationError` naming the table, the id (when given) and the
        path of the mismatch. Documents of system tables (``_storage``, ...) pass.
        """
        if not self.schema_validation:
            return document
        check = self._checks.get(table)
        if check is None:
            if not self.strict_table_name_types or table.startswith("_"):
                return document
            declared = ", ".join(sorted(self.tables)) or "none"
            raise SchemaValidationError(
                f'Table "{table}" is not declared in the schema; add it to schema.py '
                f"(declared tables: {declared})"
            )
        try:
            return check(document, id_table)  # type: ignore[no-any-return]
        except _Mismatch as mismatch:
            which = f'document with id "{document_id}"' if document_id is not None else "a document"
            raise SchemaValidationError(
                f'Failed to insert or update {which} in table "{table}" because it does '
                f"not match the schema: {mismatch.describe()}"
            ) from None

    def document_mismatch(
        self, table: str, document: dict[str, Any], *, id_table: IdTable | None = None
    ) -> str | None:
        """Why a stored document of a declared ``table`` does not match it
        (``Value does not match validator at .x: …``), or None if it does."""
        check = self._checks.get(table)
        if not self.schema_validation or check is None:
            return None
        try:
            check(document, id_table)
        except _Mismatch as mismatch:
            return mismatch.describe()
        return None

    def to_json(self) -> dict[str, Any]:
        """The schema as JSON; tables sorted by name, so equal schemas give equal text."""
        return {
            "tables": [self.tables[name].to_json(name) for name in sorted(self.tables)],
            "schemaValidation": self.schema_validation,
            "strictTableNameTypes": self.strict_table_name_types,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SchemaDefinition:
        """The inverse of :meth:`to_json`; raises SchemaDefinitionError if malformed."""
        try:
            tables = {}
            for table in obj["tables"]:
                name = table["tableName"]
                if name in tables:
                    raise SchemaDefinitionError(f"table {name!r} appears twice")
                tables[name] = TableDefinition.from_json(table)
            return cls(
                tables,
                schema_validation=obj.get("schemaValidation", True),
                strict_table_name_types=obj.get("strictTableNameTypes", True),
            )
        except SchemaDefinitionError as exc:
            raise SchemaDefinitionError(f"invalid schema JSON: {exc.message}") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise SchemaDefinitionError(
                f"invalid schema JSON: {type(exc).__name__} {exc}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SchemaDefinition)
            and dict(self.tables) == dict(other.tables)
            and self.schema_validation == other.schema_validation
            and self.strict_table_name_types == other.strict_table_name_types
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        tables = ", ".join(f"{json.dumps(n)}: {t!r}" for n, t in self.tables.items())
        return (
            f"define_schema({{{tables}}}, schema_validation={self.schema_validation}, "
            f"strict_table_name_types={self.strict_table_name_types})"
        )


def define_schema(
    tables: Mapping[str, TableDefinition],
    *,
    schema_validation: bool = True,
    strict_table_name_types: bool = True,
) -> SchemaDefinition:
    """The app's schema: ``{"table_name": define_table(...), ...}``.

    Table names are a letter then letters, digits or ``_`` (at most 64 characters);
    names starting with ``_`` are reserved for system tables.
    """
    return SchemaDefinition(
        tables, schema_validation=schema_validation, strict_table_name_types=strict_table_name_types
    )
