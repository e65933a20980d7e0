"""Validators of single values: the scalars, ``v.id(table)`` and ``v.literal(x)``."""

from __future__ import annotations

import base64
import math
import re
import struct
from typing import Any, ClassVar

from basalt.errors import SchemaDefinitionError
from basalt.schema.base import INT64_MAX, INT64_MIN, IdTable, Validator, _Mismatch, _quote
from basalt.values.ids import is_valid_id
from basalt.values.int64 import Int64, int64

__all__ = [
    "MAX_TABLE_NAME_LENGTH",
    "SYSTEM_TABLES",
    "TABLE_NAME_RE",
    "AnyValidator",
    "BooleanValidator",
    "BytesValidator",
    "Float64Validator",
    "IdValidator",
    "Int64Validator",
    "LiteralValidator",
    "NullValidator",
    "StringValidator",
    "check_table_name",
]

SYSTEM_TABLES = frozenset(("_storage", "_scheduled_functions"))
TABLE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_TABLE_NAME_LENGTH = 64
_NONE_TYPE = type(None)


class _Scalar(Validator):
    __slots__ = ()
    _source: ClassVar[str]

    def __init__(self) -> None:
        self._init((self.kind,))

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind}

    def __repr__(self) -> str:
        return self._source


class NullValidator(_Scalar):
    __slots__ = ()
    kind = "null"
    _source = "v.null()"
    _types = frozenset((_NONE_TYPE,))
    _fast = _NONE_TYPE

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if value is None:
            return value
        raise _Mismatch(self, value)


class Float64Validator(_Scalar):
    """``v.float64()`` / ``v.number()``; a Python ``int`` is returned as ``float``."""

    __slots__ = ()
    kind = "number"
    _source = "v.float64()"
    _types = frozenset((float, int, Int64))
    _fast = float

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        t = type(value)
        if t is float:
            return value
        if (t is int or t is Int64) and INT64_MIN <= value <= INT64_MAX:
            return float(value)
        raise _Mismatch(self, value)


class Int64Validator(_Scalar):
    """``v.int64()``; a plain ``int`` is returned as an ``Int64``, so that it is
    stored, and sent to clients, as an int64."""

    __slots__ = ()
    kind = "bigint"
    _source = "v.int64()"
    _types = frozenset((int, Int64))
    _fast = Int64

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        t = type(value)
        if t is Int64:
            return value
        if t is int and INT64_MIN <= value <= INT64_MAX:
            return int64(value)
        raise _Mismatch(self, value, _float_for_int64(self, value) if t is float else None)


def _float_for_int64(validator: Validator, value: float) -> str | None:
    """Why a whole float such as ``3.0`` is not an int64, and how to send one:
    a JSON number, and a Python ``int`` the official client sends, are float64."""
    if not (math.isfinite(value) and value.is_integer() and INT64_MIN <= value <= INT64_MAX):
        return None
    n = int(value)
    encoded = base64.b64encode(struct.pack("<q", n)).decode("ascii")
    return (
        f"expected {validator!r}, got float64 {value!r} (JSON numbers, and ints the official "
        f"Python client sends, are float64): send an int64 as ConvexInt64({n}) from Python, "
        f'{n}n (a BigInt) from JavaScript or {{"$integer": "{encoded}"}} in JSON; in a '
        "function, use a Python int"
    )


class BooleanValidator(_Scalar):
    __slots__ = ()
    kind = "boolean"
    _source = "v.boolean()"
    _types = frozenset((bool,))
    _fast = bool

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is bool:
            return value
        raise _Mismatch(self, value)


class StringValidator(_Scalar):
    __slots__ = ()
    kind = "string"
    _source = "v.string()"
    _types = frozenset((str,))
    _fast = str

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is str:
            return value
        raise _Mismatch(self, value)


class BytesValidator(_Scalar):
    __slots__ = ()
    kind = "bytes"
    _source = "v.bytes()"
    _types = frozenset((bytes,))
    _fast = bytes

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is bytes:
            return value
        raise _Mismatch(self, value)


class AnyValidator(_Scalar):
    __slots__ = ()
    kind = "any"
    _source = "v.any()"

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        return value


# One shared instance of each scalar validator: what ``v.string()`` etc. return.
_NULL, _FLOAT64, _INT64 = NullValidator(), Float64Validator(), Int64Validator()
_BOOLEAN, _STRING, _BYTES, _ANY = (
    BooleanValidator(),
    StringValidator(),
    BytesValidator(),
    AnyValidator(),
)
_SCALARS: dict[str, Validator] = {
    s.kind: s for s in (_NULL, _FLOAT64, _INT64, _BOOLEAN, _STRING, _BYTES, _ANY)
}


def check_table_name(name: Any, what: str = "table name") -> str:
    """Raise SchemaDefinitionError unless ``name`` is a legal user table name."""
    if not isinstance(name, str):
        raise SchemaDefinitionError(f"{what} must be a string, got {name!r}")
    if name.startswith("_"):
        raise SchemaDefinitionError(
            f"{what} {name!r} is invalid: names starting with '_' are reserved for system tables"
        )
    if not TABLE_NAME_RE.match(name):
        raise SchemaDefinitionError(
            f"{what} {name!r} is invalid: use a letter followed by letters, digits or '_'"
        )
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise SchemaDefinitionError(
            f"{what} {name!r} is too long ({len(name)} characters, at most {MAX_TABLE_NAME_LENGTH})"
        )
    return name


class IdValidator(Validator):
    """``v.id(table_name)``: a document id, of that table when the caller can tell."""

    __slots__ = ("table_name",)
    kind = "id"
    _types = frozenset((str,))
    table_name: str

    def __init__(self, table_name: str) -> None:
        if table_name not in SYSTEM_TABLES:
            check_table_name(table_name, "v.id() table name")
        self._init(("id", table_name), table_name=table_name)

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if not is_valid_id(value):
            if type(value) is str:
                raise _Mismatch(
                    self,
                    value,
                    f"expected {self!r}, got string "
                    f"{_quote(value)}, which is not a valid document id",
                )
            raise _Mismatch(self, value)
        if id_table is not None:
            table = id_table(value)
            if table != self.table_name:
                got = "an unknown table" if table is None else f"table {_quote(table)}"
                raise _Mismatch(
                    self, value, f"expected {self!r}, got an id of {got}: {_quote(value)}"
                )
        return value

    def to_json(self) -> dict[str, Any]:
        return {"type": "id", "tableName": self.table_name}

    def _args(self) -> tuple[Any, ...]:
        return (self.table_name,)

    def __repr__(self) -> str:
        return f"v.id({_quote(self.table_name, 10**9)})"


def _float_key(x: float) -> bytes:
    return b"nan" if math.isnan(x) else struct.pack("<d", x)


def _literal_to_json(x: str | bool | int | float) -> Any:
    if type(x) is int or type(x) is Int64:
        return {"$integer": base64.b64encode(struct.pack("<q", x)).decode("ascii")}
    if isinstance(x, float) and (not math.isfinite(x) or str(x) == "-0.0"):
        return {"$float": base64.b64encode(struct.pack("<d", x)).decode("ascii")}
    return x


class LiteralValidator(Validator):
    """``v.literal(x)``: exactly ``x`` (a str, bool, int64 or float).

    Types must match (``v.literal(1)`` does not accept ``True`` or ``1.0``), except
    that a float literal accepts an int of the same value and returns it as float.
    An int literal is an int64: it returns the value as an ``Int64``.
    A float literal distinguishes ``-0.0`` from ``0.0`` and matches NaN with NaN.
    """

    __slots__ = ("_nan", "_sign", "value")
    kind = "literal"
    value: str | bool | int | float
    _nan: bool
    _sign: float

    def __init__(self, value: str | bool | int | float) -> None:
        if type(value) is Int64:
            value = int(value)
        t = type(value)
        if t not in (str, bool, int, float):
            raise SchemaDefinitionError(
                f"v.literal() takes a str, bool, int or float, got {value!r}"
            )
        if t is int and not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            raise SchemaDefinitionError(f"v.literal({value}) is outside the int64 range")
        key = _float_key(value) if t is float else value  # type: ignore[arg-type]
        nan = t is float and math.isnan(value)  # type: ignore[arg-type]
        sign = math.copysign(1.0, value) if t is float else 1.0  # type: ignore[arg-type]
        self._init(("literal", t.__name__, key), value=value, _nan=nan, _sign=sign)

    @property
    def _types(self) -> frozenset[type]:  # type: ignore[override]
        t = type(self.value)
        if t is float:
            return frozenset((float, int, Int64))
        return frozenset((int, Int64)) if t is int else frozenset((t,))

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        literal = self.value
        t = type(literal)
        vt = type(value)
        if t is int:
            if (vt is int or vt is Int64) and value == literal:
                return value if vt is Int64 else int64(value)
        elif t is not float:
            if vt is t and value == literal:
                return value
        else:
            x = (
                float(value)
                if (vt is int or vt is Int64) and INT64_MIN <= value <= INT64_MAX
                else value
            )
            if type(x) is float:
                if x == literal and (literal != 0.0 or math.copysign(1.0, x) == self._sign):
                    return x
                if self._nan and x != x:
                    return x
        raise _Mismatch(self, value)

    def to_json(self) -> dict[str, Any]:
        return {"type": "literal", "value": _literal_to_json(self.value)}

    def _args(self) -> tuple[Any, ...]:
        return (self.value,)

    def __repr__(self) -> str:
        x = self.value
        if type(x) is str:
            return f"v.literal({_quote(x, 10**9)})"
        if type(x) is float and not math.isfinite(x):
            return f'v.literal(float("{x}"))'
        return f"v.literal({x!r})"
