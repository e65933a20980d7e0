"""The Convex value model in Python, its limits and its validation.

A Convex value is one of:

======================  ==========  =========================================
Python                  Convex      notes
======================  ==========  =========================================
``None``                null
``bool``                boolean     never an int64, although ``bool`` subclasses ``int``
``int``                 int64       must lie in ``[-2**63, 2**63 - 1]``; see below
``float``               float64     NaN, ±inf and -0.0 included
``str``                 string      must be encodable as UTF-8 (no lone surrogates)
``bytes``               bytes
``list``                array       tuples are not accepted
``dict`` with str keys  object      field names: printable ASCII, no leading ``$``
======================  ==========  =========================================

Only these exact types are accepted, plus :class:`~basalt.values.int64.Int64`
(the one ``int`` subclass): other subclasses (``IntEnum``, ``OrderedDict``, …)
are rejected, so every layer can dispatch on ``type(x) is …``. Document ids are
plain ``str``.

Inside Basalt (storage, index keys, validators) every ``int`` is an int64. Only
at the boundary to clients do the two kinds of int part: a plain ``int``
crosses as a float64 number (it must lie within ±2**53) and an ``Int64`` as an
int64 (see :mod:`basalt.values.int64` and :mod:`basalt.values.wire`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

from basalt.errors import InvalidValue

from .int64 import Int64

__all__ = [
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_DEPTH",
    "MAX_DOCUMENT_SIZE",
    "MAX_FIELD_NAME_LENGTH",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_SIZE",
    "SYSTEM_FIELDS",
    "JSONValue",
    "Value",
    "check_document_fields",
    "check_value",
    "deep_copy",
    "type_name",
]

Value: TypeAlias = bool | int | float | str | bytes | list["Value"] | dict[str, "Value"] | None
"""A Convex value (see the module docstring)."""

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
"""What ``json.dumps`` accepts and ``json.loads`` returns."""

#: Containers (arrays and objects) may nest at most this deep in any value.
MAX_VALUE_DEPTH = 64
#: Containers may nest at most this deep in a stored document (the document counts as 1).
MAX_DOCUMENT_DEPTH = 16
MAX_ARRAY_LENGTH = 8192
MAX_OBJECT_FIELDS = 1024
MAX_FIELD_NAME_LENGTH = 1024
MAX_DOCUMENT_SIZE = 1 << 20
MAX_VALUE_SIZE = 16 << 20

#: The top-level fields the system sets on every stored document.
SYSTEM_FIELDS = frozenset(("_id", "_creationTime"))

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors with a path


class _BadValue(Exception):
    """Raised inside the recursive walkers; collects the path while it unwinds.

    Nothing is allocated for the path on the success path: each container level
    appends its own segment (an ``int`` index or a ``str`` field name) only when
    the error passes through it, so ``path`` is innermost-first.
    """

    def __init__(self, reason: str, *, skip_key: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[int | str] = []
        #: Set when a field *name* is bad: the message names the key, so the path
        #: stops at the object holding it rather than at the key.
        self.skip_key = skip_key

    def add_key(self, key: object) -> None:
        """Record that the error passed through the field ``key`` of an object."""
        if self.skip_key:
            self.skip_key = False
        else:
            self.path.append(key if type(key) is str else repr(key))


def format_path(path: list[int | str]) -> str:
    """Render an innermost-first path as ``.author.tags[3]``."""
    out = []
    for part in reversed(path):
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part.isascii() and part.isidentifier():
            out.append(f".{part}")
        else:
            out.append(f"[{quote_text(part)}]")
    return "".join(out)


def quote_text(text: str) -> str:
    """A short double-quoted rendering of ``text`` for error messages."""
    if len(text) > 40:
        text = text[:37] + "..."
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _invalid(what: str, err: _BadValue) -> InvalidValue:
    where = format_path(err.path)
    return InvalidValue(
        f"Invalid {what} at {where}: {err.reason}" if where else f"Invalid {what}: {err.reason}"
    )


def bad_type_reason(value: object) -> str:
    """Why ``value`` (whose type is not one of the exact Convex types) is rejected."""
    t = type(value)
    name = t.__name__
    if t is tuple:
        return "type tuple is not a Convex value (use a list)"
    if t in (set, frozenset):
        return f"type {name} is not a Convex value (use a list)"
    for base, hint in (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (bytes, "bytes"),
        (list, "list"),
        (dict, "dict"),
    ):
        if isinstance(value, base):
            return f"type {name} (a subclass of {hint}) is not a Convex value; convert it to {hint}"
    if isinstance(value, (bytearray, memoryview)):
        return f"type {name} is not a Convex value (use bytes)"
    return f"type {name} is not a Convex value"


def field_name_reason(key: object) -> str | None:
    """Why ``key`` is not a legal object field name, or ``None`` when it is."""
    if type(key) is not str:
        return f"field name {key!r} ({type(key).__name__}) must be a string"
    if len(key) > MAX_FIELD_NAME_LENGTH:
        return (
            f"field name {quote_text(key)} is {len(key)} characters long, "
            f"more than the limit of {MAX_FIELD_NAME_LENGTH}"
        )
    if key.startswith("$"):
        return f'field name {quote_text(key)} must not start with "$"'
    if not (key.isascii() and key.isprintable()):
        return f"field name {quote_text(key)} must contain only printable ASCII characters"
    return None


# --------------------------------------------------------------------------- check_value

# Size estimate of scalars (bytes), keyed by exact type.
_SCALAR_SIZE: dict[type, int] = {type(None): 1, bool: 1, float: 9}


class _TooDeep(_BadValue):
    pass


# Field names already found legal (validity depends only on the string). Bounded, so
# a stream of distinct names cannot grow it without limit.
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_MAX = 4096


def _check_field_name(key: object) -> None:
    reason = field_name_reason(key)
    if reason is not None:
        raise _BadValue(reason, skip_key=True)
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(key)  # type: ignore[arg-type]


def _check(value: Any, depth: int, good_names: set[str] = _GOOD_NAMES) -> int:
    """Validate ``value`` (``depth`` more container levels allowed) and return its size."""
    t = type(value)
    size = _SCALAR_SIZE.get(t)
    if size is not None:
        return size
    if t is str:
        if value.isascii():
            return 2 + len(value)
        try:
            return 2 + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise _BadValue("string contains a lone surrogate and is not valid UTF-8") from None
    if t is int or t is Int64:
        if _INT64_MIN <= value <= _INT64_MAX:
            return 9
        raise _BadValue(f"int {value} is out of the int64 range")
    if t is dict:
        if depth <= 0:
            raise _TooDeep("")
        if len(value) > MAX_OBJECT_FIELDS:
            raise _BadValue(
                f"object has {len(value)} fields, more than the limit of {MAX_OBJECT_FIELDS}"
            )
        size = 2
        depth -= 1
        key: Any = None
        try:
            for key, item in value.items():
                if key not in good_names or type(key) is not str:
                    _check_field_name(key)
                it = type(item)
                if it is str and item.isascii():  # the common fields inline
                    size += len(key) + 3 + len(item)
                elif it is float:
                    size += len(key) + 10
                else:
                    size += len(key) + 1 + _check(item, depth)
        except _BadValue as err:
            err.add_key(key)
            raise
        return size
    if t is list:
        if depth <= 0:
            raise _TooDeep("")
        if len(value) > MAX_ARRAY_LENGTH:
            raise _BadValue(
                f"array has {len(value)} elements, more than the limit of {MAX_ARRAY_LENGTH}"
            )
        size = 2
        depth -= 1
        i = 0
        try:
            for item in value:
                size += _check(item, depth)
                i += 1
        except _BadValue as err:
            err.path.append(i)
            raise
        return size
    if t is bytes:
        return 2 + len(value)
    raise _BadValue(bad_type_reason(value))


def check_value(
    value: object,
    *,
    what: str = "value",
    max_depth: int = MAX_VALUE_DEPTH,
    max_size: int | None = MAX_VALUE_SIZE,
) -> int:
    """Check that ``value`` is a legal Convex value and return its size in bytes.

    The size is a deterministic estimate (null and booleans 1, numbers 9,
    strings and bytes 2 + encoded length, arrays 2 + their elements, objects
    2 + per field ``len(name) + 1 + size(value)``). ``max_depth`` bounds how
    deeply arrays and objects nest (a flat object has depth 1), and a value
    larger than ``max_size`` is rejected (``None``: no limit).

    Raises :class:`InvalidValue` naming the path of the offending part, e.g.
    ``Invalid value at .author.tags[3]: field name "$x" must not start with "$"``.
    """
    try:
        size = _check(value, max_depth)
    except _BadValue as err:
        if type(err) is _TooDeep:
            err.reason = f"value is nested more than {max_depth} levels deep"
        raise _invalid(what, err) from None
    except RecursionError:
        raise InvalidValue(f"Invalid {what}: value is nested too deeply") from None
    if max_size is not None and size > max_size:
        raise InvalidValue(
            f"Invalid {what}: its size, {size} bytes, is more than the limit of {max_size} bytes"
        )
    return size


def check_document_fields(doc: Mapping[str, object], *, allow_system_fields: bool = False) -> None:
    """Reject reserved top-level field names (those starting with ``_``) in a document.

    With ``allow_system_fields`` the system fields ``_id`` and ``_creationTime``
    are allowed; every other ``_`` name is always rejected. Field names are not
    otherwise checked here (that is :func:`check_value`'s job).
    """
    for key in doc:
        if (
            type(key) is str
            and key.startswith("_")
            and not (allow_system_fields and key in SYSTEM_FIELDS)
        ):
            if key in SYSTEM_FIELDS:
                raise InvalidValue(
                    f"Invalid document: field {quote_text(key)} is a system field and cannot be "
                    "set by the caller"
                )
            raise InvalidValue(
                f"Invalid document: field {quote_text(key)} is reserved: top-level field names "
                'starting with "_" are reserved for system fields'
            )


# --------------------------------------------------------------------------- helpers

_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "int64",
    Int64: "int64",
    float: "float64",
    str: "string",
    bytes: "bytes",
    list: "array",
    dict: "object",
}


def type_name(value: object) -> str:
    """The Convex type name of ``value`` ("null", "int64", "array", …).

    For something that is not a Convex value, the Python type name.
    """
    t = type(value)
    return _TYPE_NAMES.get(t) or t.__name__


def _copy_list(items: list[Any]) -> list[Any]:
    out = items.copy()
    for i, item in enumerate(out):
        t = type(item)
        if t is dict:
            out[i] = _copy_dict(item)
        elif t is list:
            out[i] = _copy_list(item)
    return out


def _copy_dict(d: dict[str, Any]) -> dict[str, Any]:
    out = d.copy()
    for key, item in d.items():
        t = type(item)
        if t is dict:
            out[key] = _copy_dict(item)
        elif t is list:
            out[key] = _copy_list(item)
    return out


def deep_copy(value: _T) -> _T:
    """Copy ``value``: arrays and objects are copied, scalars (immutable) are shared."""
    v: Any = value
    t = type(v)
    if t is dict:
        return _copy_dict(v)  # type: ignore[return-value]
    if t is list:
        return _copy_list(v)  # type: ignore[return-value]
    return value
