"""Validators: the ``v`` namespace (``v.string()``, ``v.object({...})``, ...).

A validator is an immutable object describing a set of Convex values. Call
:meth:`Validator.validate` to check a value; it returns the value (possibly
coerced, see below) or raises a :class:`~basalt.errors.ValidationError` (or the
subclass passed as ``error``) whose message names the path of the mismatch::

    Value does not match validator at .author.age: expected v.float64(), got string "x"

Coercion (a Python convenience): ``v.number()``/``v.float64()`` -- and a float
``v.literal`` -- accept a Python ``int`` (never a ``bool``) in the int64 range and
return it as a ``float``; ``v.int64()`` and an int ``v.literal`` return a plain
``int`` as an :class:`~basalt.values.int64.Int64`, which clients receive as an
int64 (a plain ``int`` reaches them as a number). Nothing else is coerced;
``v.int64()`` rejects floats, even ``5.0``. When nothing was coerced, ``validate``
returns the very object it was given; containers are copied (shallowly, once)
only when an element was coerced.

Values are checked by exact type, like :mod:`basalt.values.model`: a ``str``
subclass is not a string, a ``bool`` is neither an int64 nor a float64, and
``Int64`` is the one ``int`` subclass accepted.

``to_json()`` gives the Convex validator JSON and :func:`validator_from_json` reads
it back; ``repr()`` gives source text (``v.object({"a": v.string()})``).

This module is the public face of the validators; the code lives in
:mod:`~basalt.schema.base` (the :class:`Validator` base class and error messages),
:mod:`~basalt.schema.scalars` (scalars, ``v.id``, ``v.literal``),
:mod:`~basalt.schema.compound` (``v.optional``, ``v.array``, ``v.object``,
``v.record``, ``v.union``), :mod:`~basalt.schema.namespace` (``v``) and
:mod:`~basalt.schema.json_form` (:func:`validator_from_json`).
"""

from basalt.schema.base import INT64_MAX as INT64_MAX
from basalt.schema.base import INT64_MIN as INT64_MIN
from basalt.schema.base import IdTable, Validator
from basalt.schema.base import describe_value as describe_value
from basalt.schema.base import field_segment as field_segment
from basalt.schema.compound import SYSTEM_FIELDS as SYSTEM_FIELDS
from basalt.schema.compound import (
    ArrayValidator,
    ObjectValidator,
    OptionalValidator,
    RecordValidator,
    UnionValidator,
)
from basalt.schema.json_form import validator_from_json
from basalt.schema.namespace import as_object_validator, v
from basalt.schema.scalars import MAX_TABLE_NAME_LENGTH as MAX_TABLE_NAME_LENGTH
from basalt.schema.scalars import SYSTEM_TABLES as SYSTEM_TABLES
from basalt.schema.scalars import TABLE_NAME_RE as TABLE_NAME_RE
from basalt.schema.scalars import (
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
from basalt.schema.scalars import check_table_name as check_table_name

__all__ = [
    "AnyValidator",
    "ArrayValidator",
    "BooleanValidator",
    "BytesValidator",
    "Float64Validator",
    "IdTable",
    "IdValidator",
    "Int64Validator",
    "LiteralValidator",
    "NullValidator",
    "ObjectValidator",
    "OptionalValidator",
    "RecordValidator",
    "StringValidator",
    "UnionValidator",
    "Validator",
    "as_object_validator",
    "v",
    "validator_from_json",
]
