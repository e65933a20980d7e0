"""The ``v`` namespace (``v.string()``, ``v.object({...})``, ...) and function args."""

from __future__ import annotations

from collections.abc import Mapping

from basalt.errors import SchemaDefinitionError
from basalt.schema.base import Validator
from basalt.schema.compound import (
    ArrayValidator,
    ObjectValidator,
    OptionalValidator,
    RecordValidator,
    UnionValidator,
)
from basalt.schema.scalars import (
    _ANY,
    _BOOLEAN,
    _BYTES,
    _FLOAT64,
    _INT64,
    _NULL,
    _STRING,
    AnyValidator,
    BooleanValidator,
    BytesValidator,
    Float64Validator,
    IdValidator,
    Int64Validator,
    LiteralValidator,
    NullValidator,
    StringValidator,
)

__all__ = ["as_object_validator", "v"]


class _V:
    """The ``v`` namespace: ``v.string()``, ``v.object({...})``, ..."""

    __slots__ = ()

    def null(self) -> NullValidator:
        return _NULL

    def number(self) -> Float64Validator:
        """A float64; an ``int`` is accepted and returned as ``float``."""
        return _FLOAT64

    float64 = number

    def int64(self) -> Int64Validator:
        return _INT64

    def boolean(self) -> BooleanValidator:
        return _BOOLEAN

    def string(self) -> StringValidator:
        return _STRING

    def bytes(self) -> BytesValidator:
        return _BYTES

    def any(self) -> AnyValidator:
        return _ANY

    def id(self, table_name: str) -> IdValidator:
        return IdValidator(table_name)

    def array(self, item: Validator) -> ArrayValidator:
        return ArrayValidator(item)

    def object(self, fields: Mapping[str, Validator]) -> ObjectValidator:
        return ObjectValidator(fields)

    def record(self, keys: Validator, values: Validator) -> RecordValidator:
        return RecordValidator(keys, values)

    def union(self, *members: Validator) -> UnionValidator:
        return UnionValidator(*members)

    def literal(self, value: str | bool | int | float) -> LiteralValidator:
        return LiteralValidator(value)

    def optional(self, inner: Validator) -> OptionalValidator:
        return OptionalValidator(inner)

    def nullable(self, inner: Validator) -> UnionValidator:
        """``v.union(inner, v.null())``."""
        return UnionValidator(inner, self.null())

    def __repr__(self) -> str:
        return "v"


v = _V()


def as_object_validator(args: Mapping[str, Validator] | Validator | None) -> ObjectValidator | None:
    """A function's ``args``: ``None`` (unchecked), a dict of validators or v.object()."""
    if args is None or isinstance(args, ObjectValidator):
        return args
    if isinstance(args, Validator):
        raise SchemaDefinitionError(
            f"args must be a dict of validators or v.object({{...}}), got {args!r}"
        )
    if isinstance(args, Mapping):
        return ObjectValidator(args)
    raise SchemaDefinitionError(
        f"args must be a dict of validators or v.object({{...}}), got {args!r}"
    )
