"""Bringing the database in line with the app's schema when the app loads.

Added indexes are created and backfilled, removed ones dropped, an index whose
fields changed is rebuilt; documents are never deleted. If existing documents
violate the new schema, nothing changes and the error names a violating
document.
"""

from __future__ import annotations

import json

from basalt.errors import SchemaValidationError
from basalt.schema import SchemaDefinition
from basalt.storage.base import BY_CREATION_TIME, Persistence, WriteTransaction
from basalt.values.ids import table_number_of

SCHEMA_META_KEY = "schema"


def schema_text(schema: SchemaDefinition | None) -> str:
    return "" if schema is None else json.dumps(schema.to_json(), sort_keys=True)


async def apply_schema(storage: Persistence, schema: SchemaDefinition | None) -> bool:
    """Apply ``schema``; returns True if anything was changed."""
    new_text = schema_text(schema)
    old_text = await storage.get_meta(SCHEMA_META_KEY) or ""
    if new_text == old_text:
        return False
    old = SchemaDefinition.from_json(json.loads(old_text)) if old_text else None
    async with storage.write() as tx:
        if schema is not None:
            for name, definition in schema.tables.items():
                table = await tx.ensure_table(name)
                old_def = old.tables.get(name) if old is not None else None
                if old_def is None or old_def.validator.to_json() != definition.validator.to_json():
                    await _check_documents(tx, schema, name, table.number)
                declared = {i.name: tuple(i.fields) for i in definition.indexes}
                for index in list(tx.catalog.indexes_of(table.number)):
                    if index.name == BY_CREATION_TIME:
                        continue
                    if declared.get(index.name) != index.fields:
                        await tx.drop_index(index)
                for index_name, fields in declared.items():
                    if tx.catalog.index(table.number, index_name) is None:
                        await tx.add_index(table, index_name, fields)
        else:
            for table in tx.catalog.tables():
                if table.name.startswith("_"):
                    continue  # system tables keep the indexes Basalt gave them
                for index in list(tx.catalog.indexes_of(table.number)):
                    if index.name != BY_CREATION_TIME:
                        await tx.drop_index(index)
        await tx.set_meta(SCHEMA_META_KEY, new_text)
        await tx.commit()
    return True


async def _check_documents(
    tx: WriteTransaction, schema: SchemaDefinition, table: str, number: int
) -> None:
    catalog = tx.catalog
    index = catalog.index(number, BY_CREATION_TIME)
    assert index is not None

    def id_table(doc_id: str) -> str | None:
        n = table_number_of(doc_id)
        info = catalog.table_by_number(n) if n is not None else None
        return None if info is None else info.name

    async for _, doc in tx.scan(index, b"", None):
        mismatch = schema.document_mismatch(table, doc, id_table=id_table)
        if mismatch is not None:
            raise SchemaValidationError(
                f"Schema validation failed: document {doc['_id']} in table {table!r} does not "
                f"match the new schema, so the schema was not applied: {mismatch}"
            )
