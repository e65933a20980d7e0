"""Index range expressions for ``with_index(name, lambda q: ...)``.

As in Convex: zero or more ``eq`` on a prefix of the index fields, in order,
then optionally a lower bound (``gt``/``gte``) and/or an upper bound
(``lt``/``lte``) on the next field. The result is a byte range of encoded keys.
"""

from __future__ import annotations

from typing import Any

from basalt.errors import BasaltError
from basalt.values.int64 import Int64
from basalt.values.keys import encode_key, prefix_successor


class IndexRangeError(BasaltError):
    code = "InvalidIndexRange"


class IndexRangeBuilder:
    """The ``q`` handed to an index range function."""

    __slots__ = (
        "_coerce", "_fields", "_index_name", "_lower", "_prefix", "_range_field", "_upper",
    )  # fmt: skip

    def __init__(
        self, index_name: str, fields: tuple[str, ...], coerce: dict[str, bool] | None = None
    ) -> None:
        self._index_name = index_name
        self._fields = (*fields, "_creationTime")
        self._prefix: list[Any] = []
        self._lower: tuple[Any, bool] | None = None  # (value, inclusive)
        self._upper: tuple[Any, bool] | None = None
        self._range_field: str | None = None
        self._coerce = coerce or {}

    def _value(self, field: str, value: Any) -> Any:
        # A Python int compared against a float64 field means the number.
        if (type(value) is int or type(value) is Int64) and self._coerce.get(field):
            return float(value)
        return value

    def _expect(self, field: str, op: str) -> None:
        position = len(self._prefix)
        if self._range_field is not None:
            raise IndexRangeError(
                f"index {self._index_name!r}: q.eq({field!r}) must come before any range "
                "(gt/gte/lt/lte)"
            )
        if position >= len(self._fields):
            raise IndexRangeError(
                f"index {self._index_name!r} has fields {list(self._fields)}; "
                f"q.{op}({field!r}) goes past the last one"
            )
        if self._fields[position] != field:
            raise IndexRangeError(
                f"index {self._index_name!r} has fields {list(self._fields)}: "
                f"q.{op}({field!r}) must name {self._fields[position]!r} here "
                "(compare fields in index order)"
            )

    def eq(self, field: str, value: Any) -> IndexRangeBuilder:
        self._expect(field, "eq")
        self._prefix.append(self._value(field, value))
        return self

    def _bound(self, field: str, value: Any, op: str) -> IndexRangeBuilder:
        if self._range_field is None:
            self._expect(field, op)
            self._range_field = field
        elif field != self._range_field:
            raise IndexRangeError(
                f"index {self._index_name!r}: range bounds must all be on "
                f"{self._range_field!r}, got q.{op}({field!r})"
            )
        bound = (self._value(field, value), op in ("gte", "lte"))
        if op in ("gt", "gte"):
            if self._lower is not None:
                raise IndexRangeError(
                    f"index {self._index_name!r}: only one lower bound on {field!r} is allowed"
                )
            if self._upper is not None:
                raise IndexRangeError(
                    f"index {self._index_name!r}: give the lower bound (gt/gte) before the "
                    "upper bound (lt/lte)"
                )
            self._lower = bound
        else:
            if self._upper is not None:
                raise IndexRangeError(
                    f"index {self._index_name!r}: only one upper bound on {field!r} is allowed"
                )
            self._upper = bound
        return self

    def gt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, value, "gt")

    def gte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, value, "gte")

    def lt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, value, "lt")

    def lte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._bound(field, value, "lte")

    def prefix_key(self) -> bytes:
        """The encoded ``eq`` values: every key in :meth:`key_range` starts with it."""
        return encode_key(self._prefix)

    def key_range(self) -> tuple[bytes, bytes | None]:
        """The ``[start, end)`` byte range this expression selects."""
        prefix = encode_key(self._prefix)
        if self._lower is None:
            start = prefix
        else:
            value, inclusive = self._lower
            key = encode_key([*self._prefix, value])
            start = key if inclusive else prefix_successor(key)
        if self._upper is None:
            end = prefix_successor(prefix) if self._prefix else None
        else:
            value, inclusive = self._upper
            key = encode_key([*self._prefix, value])
            end = prefix_successor(key) if inclusive else key
        return start, end
