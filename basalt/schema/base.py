"""The validator base class and what every validator shares.

:class:`Validator` (immutable, hashable, structurally comparable), the
:class:`_Mismatch` raised by ``_check`` and turned into a ``ValidationError``
message, the helpers that describe values and paths in those messages, and the
argument checks used by validator constructors. The concrete validators are in
:mod:`basalt.schema.scalars` and :mod:`basalt.schema.compound`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

from basalt.errors import SchemaDefinitionError, ValidationError
from basalt.values.int64 import Int64
from basalt.values.model import type_name

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "IdTable",
    "Validator",
    "describe_value",
    "field_segment",
]

IdTable = Callable[[str], str | None]
"""Maps a document id to the name of the table it belongs to (``None``: unknown)."""

_Check = Callable[[Any, IdTable | None], Any]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _NoFast:
    """A type no value has: disables the inline ``type(x) is fast`` shortcut."""


class _Mismatch(Exception):
    """Raised by ``_check``; containers append their path segment while it unwinds."""

    def __init__(self, expected: Validator, value: Any, reason: str | None = None) -> None:
        self.expected = expected
        self.value = value
        self.reason = reason
        self.segments: list[str] = []

    def describe(self, path: str = "") -> str:
        where = path + "".join(reversed(self.segments))
        head = (
            f"Value does not match validator at {where}"
            if where
            else "Value does not match validator"
        )
        if self.reason is not None:
            return f"{head}: {self.reason}"
        return f"{head}: expected {_short(self.expected)}, got {describe_value(self.value)}"


def _quote(text: str, limit: int = 60) -> str:
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def _short(validator: Validator, limit: int = 200) -> str:
    text = repr(validator)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_value(value: Any) -> str:
    """A short description of ``value`` for error messages: ``string "x"``, ``null``."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return f"boolean {value}"
    if t is int or t is Int64:
        if INT64_MIN <= value <= INT64_MAX:
            return f"int64 {value}"
        return f"integer {value} (outside the int64 range)"
    if t is float:
        return f"float64 {value!r}"
    if t is str:
        return f"string {_quote(value)}"
    if t is bytes:
        return f"bytes of length {len(value)}"
    if t is list:
        return f"array of length {len(value)}"
    if t is dict:
        if not value:
            return "empty object"
        names = ", ".join(_quote(str(k), 30) for k in list(value)[:8])
        return f"object with fields {names}" + (", ..." if len(value) > 8 else "")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{type_name(value)} {shown} (not a Convex value)"


def field_segment(name: str) -> str:
    """The path segment of an object field: ``.name`` or ``["odd name"]``."""
    return "." + name if _IDENT_RE.match(name) else f"[{_quote(name, 10**9)}]"


def _forgot_parens_hint(given: Any) -> str:
    hints = {
        str: "v.string()",
        int: "v.int64() or v.float64()",
        float: "v.float64()",
        bool: "v.boolean()",
        bytes: "v.bytes()",
        list: "v.array(...)",
        dict: "v.object({...})",
        type(None): "v.null()",
    }
    if isinstance(given, type) and given in hints:
        return f"; use {hints[given]}"
    if isinstance(given, dict):
        return "; wrap nested fields in v.object({...})"
    if callable(given):
        return "; did you forget the parentheses?"
    return ""


def _require_validator(given: Any, what: str) -> Validator:
    if isinstance(given, Validator):
        return given
    raise SchemaDefinitionError(
        f"{what}: expected a validator such as v.string(), got {given!r}"
        + _forgot_parens_hint(given)
    )


def _require_required(given: Any, what: str) -> Validator:
    validator = _require_validator(given, what)
    if validator.is_optional:
        raise SchemaDefinitionError(
            f"{what}: v.optional(...) is only allowed as an object field; got {validator!r}"
        )
    return validator


class Validator:
    """Base class of all validators. Immutable, hashable, structurally comparable."""

    __slots__ = ("_key",)
    kind: ClassVar[str]
    """The Convex JSON ``type`` ("string", "number", "object", ...)."""
    is_optional: ClassVar[bool] = False
    # Exact types this validator may accept (None: any type), used by unions to skip
    # members cheaply; and a type whose values are always accepted unchanged.
    _types: ClassVar[frozenset[type] | None] = None
    _fast: ClassVar[type] = _NoFast
    _key: tuple[Any, ...]

    def _init(self, key: tuple[Any, ...], **attrs: Any) -> None:
        object.__setattr__(self, "_key", key)
        for name, value in attrs.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def validate(
        self,
        value: Any,
        path: str = "",
        *,
        id_table: IdTable | None = None,
        error: type[ValidationError] = ValidationError,
    ) -> Any:
        """Return ``value`` (ints coerced to float where a float64 is expected) or
        raise ``error`` naming ``path`` plus the path inside ``value``.

        ``id_table(id)`` gives the table an id belongs to; when given, ``v.id(t)``
        also checks that ids belong to table ``t``.
        """
        try:
            return self._check(value, id_table)
        except _Mismatch as mismatch:
            raise error(mismatch.describe(path)) from None

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        raise NotImplementedError

    def _document_checker(self) -> _Check:
        """A ``_check`` for the top of a stored document: system fields are allowed."""
        return self._check

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Validator) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), self._args())

    def __copy__(self) -> Validator:
        return self

    def __deepcopy__(self, memo: Any) -> Validator:
        return self
