"""Reading validators back from their Convex JSON form (``Validator.to_json()``)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from typing import Any

from basalt.errors import SchemaDefinitionError
from basalt.schema.base import Validator
from basalt.schema.compound import (
    ArrayValidator,
    ObjectValidator,
    OptionalValidator,
    RecordValidator,
    UnionValidator,
)
from basalt.schema.scalars import _SCALARS, IdValidator, LiteralValidator

__all__ = ["validator_from_json"]


def _literal_from_json(obj: Any) -> str | bool | int | float:
    t = type(obj)
    if t in (str, bool, float):
        return obj  # type: ignore[no-any-return]
    if t is int:  # a JSON number is a float64 in Convex
        return float(obj)
    if t is dict and len(obj) == 1:
        ((tag, text),) = obj.items()
        if tag in ("$integer", "$float") and isinstance(text, str):
            raw = base64.b64decode(text, validate=True)
            if len(raw) == 8:
                return struct.unpack("<q" if tag == "$integer" else "<d", raw)[0]  # type: ignore[no-any-return]
    raise SchemaDefinitionError(f"invalid literal value in validator JSON: {obj!r}")


def _field_from_json(obj: Any, where: str) -> tuple[Validator, bool]:
    if not isinstance(obj, dict) or "fieldType" not in obj:
        raise SchemaDefinitionError(
            f"invalid validator JSON at {where}: expected "
            f'{{"fieldType": ..., "optional": ...}}, got {obj!r}'
        )
    optional = obj.get("optional", False)
    if type(optional) is not bool:
        raise SchemaDefinitionError(
            f"invalid validator JSON at {where}: 'optional' must be a boolean, got {optional!r}"
        )
    return _from_json(obj["fieldType"], where), optional


def _from_json(obj: Any, where: str) -> Validator:
    kind = obj.get("type") if isinstance(obj, dict) else None
    try:
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "id":
            return IdValidator(obj["tableName"])
        if kind == "literal":
            return LiteralValidator(_literal_from_json(obj["value"]))
        if kind == "array":
            return ArrayValidator(_from_json(obj["value"], where + "[]"))
        if kind == "object":
            fields: dict[str, Validator] = {}
            for name, field in obj["value"].items():
                inner, optional = _field_from_json(field, f"{where}.{name}")
                fields[name] = OptionalValidator(inner) if optional else inner
            return ObjectValidator(fields)
        if kind == "record":
            values, optional = _field_from_json(obj["values"], where + "{}")
            if optional:
                raise SchemaDefinitionError("record values cannot be optional")
            return RecordValidator(_from_json(obj["keys"], where + "{keys}"), values)
        if kind == "union":
            return UnionValidator(
                *(_from_json(m, f"{where}|{i}") for i, m in enumerate(_as_list(obj["value"])))
            )
    except SchemaDefinitionError as exc:
        if exc.message.startswith("invalid validator JSON"):
            raise
        raise SchemaDefinitionError(
            f"invalid validator JSON at {where or '(root)'}: {exc.message}"
        ) from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SchemaDefinitionError(
            f"invalid validator JSON at {where or '(root)'}: {type(exc).__name__} {exc} in {obj!r}"
        ) from None
    raise SchemaDefinitionError(
        f"invalid validator JSON at {where or '(root)'}: unknown type in {obj!r}"
    )


def _as_list(obj: Any) -> Iterable[Any]:
    if not isinstance(obj, list):
        raise TypeError("expected a list")
    return obj


def validator_from_json(obj: Any) -> Validator:
    """The validator whose :meth:`~Validator.to_json` is ``obj``.

    Raises :class:`SchemaDefinitionError` if ``obj`` is not valid validator JSON.
    """
    return _from_json(obj, "")
