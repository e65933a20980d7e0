"""Filter expressions for ``query(...).filter(...)``.

The filter function receives a builder ``q`` and returns an expression. Both
the Convex spelling and Python operators work::

    .filter(lambda q: q.and_(q.eq(q.field("status"), "open"), q.gt(q.field("n"), 3)))
    .filter(lambda q: (q.field("status") == "open") & (q["n"] > 3))

Comparisons use the Convex total order over values, except that an int and a
float compare as numbers (so ``q.field("n") == 3`` matches a stored ``3.0``).
A missing field compares as below ``null``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from basalt.errors import BasaltError
from basalt.storage.indexing import field_value
from basalt.values.int64 import Int64
from basalt.values.keys import MISSING, compare

Evaluator = Callable[[dict[str, Any]], Any]


class FilterError(BasaltError):
    code = "InvalidFilter"


def _numeric(value: Any) -> bool:
    t = type(value)
    return t is int or t is float or t is Int64


def _cmp(a: Any, b: Any) -> int:
    if _numeric(a) and _numeric(b) and type(a) is not type(b):
        return -1 if a < b else (1 if a > b else 0)
    return compare(a, b)


def _truthy(value: Any) -> bool:
    if type(value) is not bool:
        raise FilterError(
            f"a filter must evaluate to a boolean, got {value!r}; "
            "compare fields with q.eq(...), q.gt(...) and combine with q.and_/q.or_"
        )
    return value


class Expression:
    """A filter expression; evaluate with :meth:`evaluate`."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Evaluator) -> None:
        self._fn = fn

    def evaluate(self, document: dict[str, Any]) -> Any:
        return self._fn(document)

    # Python operators build expressions too.
    def __eq__(self, other: object) -> Expression:  # type: ignore[override]
        return _compare(self, other, lambda c: c == 0)

    def __ne__(self, other: object) -> Expression:  # type: ignore[override]
        return _compare(self, other, lambda c: c != 0)

    def __lt__(self, other: object) -> Expression:
        return _compare(self, other, lambda c: c < 0)

    def __le__(self, other: object) -> Expression:
        return _compare(self, other, lambda c: c <= 0)

    def __gt__(self, other: object) -> Expression:
        return _compare(self, other, lambda c: c > 0)

    def __ge__(self, other: object) -> Expression:
        return _compare(self, other, lambda c: c >= 0)

    def __and__(self, other: object) -> Expression:
        return FilterBuilder.and_(self, other)

    def __or__(self, other: object) -> Expression:
        return FilterBuilder.or_(self, other)

    def __invert__(self) -> Expression:
        return FilterBuilder.not_(self)

    def __add__(self, other: object) -> Expression:
        return FilterBuilder.add(self, other)

    def __sub__(self, other: object) -> Expression:
        return FilterBuilder.sub(self, other)

    def __mul__(self, other: object) -> Expression:
        return FilterBuilder.mul(self, other)

    def __truediv__(self, other: object) -> Expression:
        return FilterBuilder.div(self, other)

    def __mod__(self, other: object) -> Expression:
        return FilterBuilder.mod(self, other)

    def __neg__(self) -> Expression:
        return FilterBuilder.neg(self)

    def __bool__(self) -> bool:
        raise FilterError(
            "a filter expression has no truth value in Python: use & | ~ "
            "(or q.and_/q.or_/q.not_) instead of and/or/not"
        )

    __hash__ = None  # type: ignore[assignment]


def _lift(value: Any) -> Evaluator:
    if isinstance(value, Expression):
        return value._fn
    return lambda _doc: value


def _compare(a: Any, b: Any, test: Callable[[int], bool]) -> Expression:
    fa, fb = _lift(a), _lift(b)
    return Expression(lambda d: test(_cmp(fa(d), fb(d))))


def _arith(a: Any, b: Any, op: Callable[[Any, Any], Any], name: str) -> Expression:
    fa, fb = _lift(a), _lift(b)

    def run(d: dict[str, Any]) -> Any:
        x, y = fa(d), fb(d)
        if not (_numeric(x) and _numeric(y)):
            raise FilterError(f"q.{name} needs two numbers, got {x!r} and {y!r}")
        return op(x, y)

    return Expression(run)


class FilterBuilder:
    """The ``q`` handed to a filter function."""

    @staticmethod
    def field(path: str) -> Expression:
        """The value of a (dotted) field of the document; MISSING if absent."""
        if not isinstance(path, str):
            raise FilterError(f"q.field takes a field name, got {path!r}")
        return Expression(lambda d: field_value(d, path))

    def __getitem__(self, path: str) -> Expression:
        return self.field(path)

    @staticmethod
    def eq(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c == 0)

    @staticmethod
    def neq(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c != 0)

    @staticmethod
    def lt(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c < 0)

    @staticmethod
    def lte(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c <= 0)

    @staticmethod
    def gt(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c > 0)

    @staticmethod
    def gte(a: Any, b: Any) -> Expression:
        return _compare(a, b, lambda c: c >= 0)

    @staticmethod
    def and_(*exprs: Any) -> Expression:
        fns = [_lift(e) for e in exprs]
        return Expression(lambda d: all(_truthy(f(d)) for f in fns))

    @staticmethod
    def or_(*exprs: Any) -> Expression:
        fns = [_lift(e) for e in exprs]
        return Expression(lambda d: any(_truthy(f(d)) for f in fns))

    @staticmethod
    def not_(expr: Any) -> Expression:
        f = _lift(expr)
        return Expression(lambda d: not _truthy(f(d)))

    @staticmethod
    def add(a: Any, b: Any) -> Expression:
        return _arith(a, b, lambda x, y: x + y, "add")

    @staticmethod
    def sub(a: Any, b: Any) -> Expression:
        return _arith(a, b, lambda x, y: x - y, "sub")

    @staticmethod
    def mul(a: Any, b: Any) -> Expression:
        return _arith(a, b, lambda x, y: x * y, "mul")

    @staticmethod
    def div(a: Any, b: Any) -> Expression:
        return _arith(a, b, lambda x, y: x / y, "div")

    @staticmethod
    def mod(a: Any, b: Any) -> Expression:
        return _arith(a, b, lambda x, y: x % y, "mod")

    @staticmethod
    def neg(a: Any) -> Expression:
        f = _lift(a)
        return Expression(lambda d: -f(d))


def compile_filter(fn: Callable[[FilterBuilder], Any]) -> Evaluator:
    """Turn a user's filter function into a predicate over documents."""
    expr = fn(FilterBuilder())
    if not isinstance(expr, Expression):
        if type(expr) is bool:
            constant = expr
            return lambda _d: constant
        raise FilterError(
            f"the filter function must return an expression built from q, got {expr!r}"
        )
    inner = expr._fn
    return lambda d: _truthy(inner(d))


__all__ = ["MISSING", "Expression", "FilterBuilder", "FilterError", "compile_filter"]
