"""``Int64``: the Python ``int`` that crosses to clients as a Convex int64.

A plain ``int`` a function returns crosses to clients as a *number* (float64),
as the official Python client sends an ``int`` the other way: ``len(rows)``
arrives as ``3.0`` in Python and ``3`` in JavaScript, where arithmetic and
``JSON.stringify`` work. An int64 (``ConvexInt64`` in Python, a ``BigInt`` in
JavaScript) is sent only for an ``Int64``, which Basalt produces wherever a
value *is* an int64: an int64 a client sent, an int stored in a document, a
value a ``v.int64()`` validator accepted. App code makes one with
``Int64(n)``.

``Int64`` is an ``int`` in every other respect: ``Int64(5) == 5``, it hashes
like ``5``, and arithmetic on it gives plain ``int`` (``Int64(5) + 1`` is the
number ``6``: use ``Int64(...)`` again, or a ``v.int64()`` validator, to send a
result as an int64).
"""

from __future__ import annotations

from typing import Final, SupportsIndex

from basalt.errors import InvalidValue

__all__ = ["INT64_MAX", "INT64_MIN", "MAX_SAFE_INTEGER", "Int64", "int64"]

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
#: The largest magnitude up to which every integer is exactly a float64 (2**53).
MAX_SAFE_INTEGER: Final = 1 << 53


class Int64(int):
    """A Convex int64: an ``int`` in ``[-2**63, 2**63 - 1]`` that clients
    receive as an int64 (see the module docstring).

    ``Int64(x)`` takes what ``int(x)`` takes, except that a float must be a
    whole number; a value outside the int64 range raises ``InvalidValue``.
    """

    __slots__ = ()

    def __new__(cls, value: str | bytes | float | SupportsIndex = 0, /) -> Int64:
        if type(value) is float and not value.is_integer():
            raise InvalidValue(f"Int64({value!r}): an int64 must be a whole number")
        n = int.__new__(cls, value)
        if not INT64_MIN <= n <= INT64_MAX:
            raise InvalidValue(f"Int64({int(n)}): out of the int64 range [-2**63, 2**63 - 1]")
        return n

    def __repr__(self) -> str:
        return f"Int64({int.__repr__(self)})"

    # str() and format() show the number, as for an int.
    __str__ = int.__repr__


def int64(value: int) -> Int64:
    """``Int64(value)`` for an ``int`` already known to be in range (no check):
    for decoders of stored and wire values."""
    return int.__new__(Int64, value)
