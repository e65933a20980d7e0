"""Comparing the stored schema with a newly pushed one.

:func:`diff_schemas` says which indexes to build or drop and which tables'
existing documents must be re-checked before the new schema can take effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from basalt.schema.definitions import AnyIndex, SchemaDefinition, TableDefinition

__all__ = ["IndexChange", "SchemaDiff", "diff_schemas"]


class IndexChange(NamedTuple):
    """An index added or removed: unpacks as ``(table, definition)``."""

    table: str
    definition: AnyIndex

    @property
    def kind(self) -> str:
        """``"index"`` (database), ``"search"`` or ``"vector"``."""
        return self.definition.kind


@dataclass
class SchemaDiff:
    """What changes between two schemas. Lists are sorted by table name, then
    indexes in declaration order (database, search, vector).

    An index whose definition changed (fields, filter fields, dimensions, kind)
    appears as removed and added.
    """

    added_tables: list[str] = field(default_factory=list)
    removed_tables: list[str] = field(default_factory=list)
    added_indexes: list[IndexChange] = field(default_factory=list)
    removed_indexes: list[IndexChange] = field(default_factory=list)
    changed_validators: list[str] = field(default_factory=list)
    """Tables in both schemas whose document validator differs (structurally)."""
    tables_to_recheck: list[str] = field(default_factory=list)
    """Tables whose existing documents must be validated before the new schema takes
    effect: none if the new schema does not validate; every new table if the old one
    did not (or there was none); otherwise changed and newly declared tables."""

    def __bool__(self) -> bool:
        return bool(
            self.added_tables
            or self.removed_tables
            or self.added_indexes
            or self.removed_indexes
            or self.changed_validators
        )


def _indexes(table: TableDefinition | None) -> dict[str, AnyIndex]:
    return {} if table is None else {index.name: index for index in table.all_indexes()}


def diff_schemas(old: SchemaDefinition | None, new: SchemaDefinition | None) -> SchemaDiff:
    """The changes from ``old`` to ``new`` (``None``: no schema)."""
    old_tables = dict(old.tables) if old is not None else {}
    new_tables = dict(new.tables) if new is not None else {}
    diff = SchemaDiff(
        added_tables=sorted(set(new_tables) - set(old_tables)),
        removed_tables=sorted(set(old_tables) - set(new_tables)),
    )
    for name in sorted(set(old_tables) | set(new_tables)):
        before, after = old_tables.get(name), new_tables.get(name)
        old_indexes, new_indexes = _indexes(before), _indexes(after)
        diff.removed_indexes.extend(
            IndexChange(name, index)
            for index_name, index in old_indexes.items()
            if new_indexes.get(index_name) != index
        )
        diff.added_indexes.extend(
            IndexChange(name, index)
            for index_name, index in new_indexes.items()
            if old_indexes.get(index_name) != index
        )
        if before is not None and after is not None and before.validator != after.validator:
            diff.changed_validators.append(name)
    if new is not None and new.schema_validation:
        if old is None or not old.schema_validation:
            diff.tables_to_recheck.extend(sorted(new_tables))
        else:
            diff.tables_to_recheck.extend(sorted({*diff.changed_validators, *diff.added_tables}))
    return diff
