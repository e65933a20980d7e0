"""Facts about a table's schema the query layer needs, derived once per schema."""

from __future__ import annotations

from typing import Any

from basalt.schema import SchemaDefinition


def _float_paths(validator_json: dict[str, Any], prefix: str, out: dict[str, bool]) -> None:
    kind = validator_json.get("type")
    if kind == "number":
        out[prefix] = True
    elif kind == "object":
        for name, spec in validator_json.get("value", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            _float_paths(spec["fieldType"], path, out)
    elif kind == "union":
        for member in validator_json.get("value", []):
            _float_paths(member, prefix, out)


_cache: dict[tuple[int, str], tuple[SchemaDefinition, dict[str, bool]]] = {}


def _float_fields_cached(schema: SchemaDefinition, table: str) -> dict[str, bool]:
    hit = _cache.get((id(schema), table))
    if hit is not None and hit[0] is schema:
        return hit[1]
    definition = schema.tables.get(table)
    out: dict[str, bool] = {"_creationTime": True}
    if definition is not None:
        _float_paths(definition.validator.to_json(), "", out)
    if len(_cache) > 1024:
        _cache.clear()
    _cache[(id(schema), table)] = (schema, out)
    return out


def float_fields(schema: SchemaDefinition | None, table: str) -> dict[str, bool]:
    """Field paths of ``table`` whose validator is ``v.float64()`` (or includes it),
    so that a Python ``int`` compared against them in an index range means the
    number. ``_creationTime`` is always a float."""
    if schema is None:
        return {"_creationTime": True}
    return _float_fields_cached(schema, table)
