"""Convex values: the value model, its JSON encodings, index keys and document ids.

Standard library only. See :mod:`basalt.values.model` for how Convex values map
onto Python objects.
"""

from .ids import decode_id, encode_id, is_valid_id, new_id, new_internal_id, table_number_of
from .int64 import Int64
from .keys import (
    MISSING,
    Missing,
    compare,
    decode_key,
    encode_key,
    encode_value,
    prefix_successor,
)
from .model import (
    MAX_ARRAY_LENGTH,
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_SIZE,
    MAX_FIELD_NAME_LENGTH,
    MAX_OBJECT_FIELDS,
    MAX_VALUE_DEPTH,
    MAX_VALUE_SIZE,
    SYSTEM_FIELDS,
    JSONValue,
    Value,
    check_document_fields,
    check_value,
    deep_copy,
    type_name,
)
from .wire import (
    dumps,
    dumps_stored,
    from_convex_json,
    loads,
    loads_stored,
    to_clean_json,
    to_convex_json,
)

__all__ = [
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_DEPTH",
    "MAX_DOCUMENT_SIZE",
    "MAX_FIELD_NAME_LENGTH",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_SIZE",
    "MISSING",
    "SYSTEM_FIELDS",
    "Int64",
    "JSONValue",
    "Missing",
    "Value",
    "check_document_fields",
    "check_value",
    "compare",
    "decode_id",
    "decode_key",
    "deep_copy",
    "dumps",
    "dumps_stored",
    "encode_id",
    "encode_key",
    "encode_value",
    "from_convex_json",
    "is_valid_id",
    "loads",
    "loads_stored",
    "new_id",
    "new_internal_id",
    "prefix_successor",
    "table_number_of",
    "to_clean_json",
    "to_convex_json",
    "type_name",
]
