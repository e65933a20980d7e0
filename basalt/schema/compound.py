"""Validators built from other validators: optional, array, object, record, union."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from basalt.errors import SchemaDefinitionError
from basalt.schema.base import (
    IdTable,
    Validator,
    _Check,
    _Mismatch,
    _quote,
    _require_required,
    _require_validator,
    _short,
    field_segment,
)
from basalt.schema.scalars import IdValidator, LiteralValidator, StringValidator
from basalt.values.int64 import Int64

__all__ = [
    "SYSTEM_FIELDS",
    "ArrayValidator",
    "ObjectValidator",
    "OptionalValidator",
    "RecordValidator",
    "UnionValidator",
]

SYSTEM_FIELDS = ("_id", "_creationTime")
_MISSING: Any = object()
_VALUE_TYPES = (type(None), bool, int, Int64, float, str, bytes, list, dict)


class OptionalValidator(Validator):
    """``v.optional(inner)``: as an object field, the field may be absent."""

    __slots__ = ("inner",)
    is_optional = True
    inner: Validator

    def __init__(self, inner: Validator) -> None:
        inner = _require_required(inner, "v.optional()")
        self._init(("optional", inner._key), inner=inner)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def _types(self) -> frozenset[type] | None:  # type: ignore[override]
        return self.inner._types

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        return self.inner._check(value, id_table)

    def to_json(self) -> dict[str, Any]:
        return self.inner.to_json()

    def _args(self) -> tuple[Any, ...]:
        return (self.inner,)

    def __repr__(self) -> str:
        return f"v.optional({self.inner!r})"


class ArrayValidator(Validator):
    __slots__ = ("_item_check", "_item_fast", "item")
    kind = "array"
    _types = frozenset((list,))
    item: Validator
    _item_check: _Check
    _item_fast: type

    def __init__(self, item: Validator) -> None:
        item = _require_required(item, "v.array() item")
        self._init(("array", item._key), item=item, _item_check=item._check, _item_fast=item._fast)

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is not list:
            raise _Mismatch(self, value)
        check = self._item_check
        fast = self._item_fast
        out = None
        for i, item in enumerate(value):
            if type(item) is fast:
                continue
            try:
                new = check(item, id_table)
            except _Mismatch as mismatch:
                mismatch.segments.append(f"[{i}]")
                raise
            if new is not item:
                if out is None:
                    out = value.copy()
                out[i] = new
        return value if out is None else out

    def to_json(self) -> dict[str, Any]:
        return {"type": "array", "value": self.item.to_json()}

    def _args(self) -> tuple[Any, ...]:
        return (self.item,)

    def __repr__(self) -> str:
        return f"v.array({self.item!r})"


class ObjectValidator(Validator):
    """``v.object({...})``: required fields present, optional ones maybe, no others."""

    __slots__ = ("_entries", "_n_fields", "_system", "fields")
    kind = "object"
    _types = frozenset((dict,))
    fields: Mapping[str, Validator]
    _entries: tuple[tuple[str, _Check, bool, type, str], ...]
    _n_fields: int
    _system: bool  # allows _id and _creationTime (the top of a stored document)

    def __init__(self, fields: Mapping[str, Validator]) -> None:
        if not isinstance(fields, Mapping) or isinstance(fields, Validator):
            raise SchemaDefinitionError(
                f"v.object() takes a dict of field validators, got {fields!r}"
            )
        for name, field in fields.items():
            if not isinstance(name, str):
                raise SchemaDefinitionError(f"field name {name!r} must be a string")
            if name.startswith("$"):
                raise SchemaDefinitionError(f"field {name!r}: names must not start with '$'")
            if not (name.isascii() and name.isprintable()):
                raise SchemaDefinitionError(
                    f"field {name!r}: names must contain only printable ASCII characters"
                )
            _require_validator(field, f"field {name!r}")
        frozen = dict(fields)
        entries = tuple(
            (name, field._check, field.is_optional, field._fast, field_segment(name))
            for name, field in frozen.items()
        )
        key = ("object", frozenset((n, f._key) for n, f in frozen.items()))
        self._init(
            key,
            fields=MappingProxyType(frozen),
            _entries=entries,
            _n_fields=len(entries),
            _system=False,
        )

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is not dict:
            raise _Mismatch(self, value)
        get = value.get
        missing = _MISSING
        out = None
        absent = 0
        for name, check, optional, fast, segment in self._entries:
            item = get(name, missing)
            if item is missing:
                if optional:
                    absent += 1
                    continue
                raise self._missing(value, name)
            if type(item) is fast:
                continue
            try:
                new = check(item, id_table)
            except _Mismatch as mismatch:
                mismatch.segments.append(segment)
                raise
            if new is not item:
                if out is None:
                    out = value.copy()
                out[name] = new
        extra = len(value) - self._n_fields + absent  # keys that are not declared fields
        if extra:
            if self._system:
                extra -= ("_id" in value) + ("_creationTime" in value)
            if extra:
                self._unexpected(value, self._system)
        return value if out is None else out

    def _document_checker(self) -> _Check:
        twin = object.__new__(ObjectValidator)
        twin._init(
            self._key,
            fields=self.fields,
            _entries=self._entries,
            _n_fields=self._n_fields,
            _system=True,
        )
        return twin._check

    def _missing(self, value: dict[Any, Any], name: str) -> _Mismatch:
        field = self.fields[name]
        mismatch = _Mismatch(
            self,
            value,
            f"the required field {_quote(name)} is missing "
            f"(expected {_short(field)}); wrap its validator in "
            "v.optional(...) if it may be absent",
        )
        mismatch.segments.append(field_segment(name))
        return mismatch

    def _unexpected(self, value: dict[Any, Any], system: bool) -> NoReturn:
        allowed = set(self.fields).union(SYSTEM_FIELDS if system else ())
        name = next(k for k in value if k not in allowed)
        shown = _quote(name) if isinstance(name, str) else repr(name)
        reason = f"unexpected field {shown}"
        close = difflib.get_close_matches(str(name), list(self.fields), n=1)
        if close:
            reason += f" (did you mean {_quote(close[0])}?)"
        elif self.fields:
            reason += " (allowed fields: " + ", ".join(_quote(f) for f in self.fields) + ")"
        else:
            reason += " (the validator allows no fields)"
        mismatch = _Mismatch(self, value, reason)
        if isinstance(name, str):
            mismatch.segments.append(field_segment(name))
        raise mismatch

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "object",
            "value": {
                name: {"fieldType": field.to_json(), "optional": field.is_optional}
                for name, field in self.fields.items()
            },
        }

    def _args(self) -> tuple[Any, ...]:
        return (dict(self.fields),)

    def __repr__(self) -> str:
        inner = ", ".join(f"{_quote(n, 10**9)}: {f!r}" for n, f in self.fields.items())
        return f"v.object({{{inner}}})"


def _is_record_key(validator: Validator) -> bool:
    if isinstance(validator, (StringValidator, IdValidator)):
        return True
    if isinstance(validator, LiteralValidator):
        return type(validator.value) is str
    if isinstance(validator, UnionValidator):
        return all(_is_record_key(m) for m in validator.members)
    return False


class RecordValidator(Validator):
    """``v.record(keys, values)``: an object whose every key and value match."""

    __slots__ = ("_key_check", "_key_fast", "_value_check", "_value_fast", "keys", "values")
    kind = "record"
    _types = frozenset((dict,))
    keys: Validator
    values: Validator
    _key_check: _Check
    _key_fast: type
    _value_check: _Check
    _value_fast: type

    def __init__(self, keys: Validator, values: Validator) -> None:
        keys = _require_required(keys, "v.record() keys")
        values = _require_required(values, "v.record() values")
        if not _is_record_key(keys):
            raise SchemaDefinitionError(
                f"v.record() keys must be v.string(), v.id(...), a string v.literal(...) "
                f"or a union of those; got {keys!r}"
            )
        self._init(
            ("record", keys._key, values._key),
            keys=keys,
            values=values,
            _key_check=keys._check,
            _key_fast=keys._fast,
            _value_check=values._check,
            _value_fast=values._fast,
        )

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        if type(value) is not dict:
            raise _Mismatch(self, value)
        key_check, key_fast = self._key_check, self._key_fast
        value_check, value_fast = self._value_check, self._value_fast
        out = None
        for key, item in value.items():
            if type(key) is not key_fast:
                try:
                    key_check(key, id_table)
                except _Mismatch as mismatch:
                    shown = _quote(key) if type(key) is str else repr(key)
                    detail = mismatch.reason or f"expected {_short(self.keys)}"
                    raise _Mismatch(self, value, f"key {shown} does not match: {detail}") from None
            if type(item) is value_fast:
                continue
            try:
                new = value_check(item, id_table)
            except _Mismatch as mismatch:
                mismatch.segments.append(field_segment(key))
                raise
            if new is not item:
                if out is None:
                    out = value.copy()
                out[key] = new
        return value if out is None else out

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "record",
            "keys": self.keys.to_json(),
            "values": {"fieldType": self.values.to_json(), "optional": False},
        }

    def _args(self) -> tuple[Any, ...]:
        return (self.keys, self.values)

    def __repr__(self) -> str:
        return f"v.record({self.keys!r}, {self.values!r})"


class UnionValidator(Validator):
    """``v.union(a, b, ...)``: the first member that accepts the value wins.

    Members are pre-sorted by the Python type they can accept, so a value is only
    tried against plausible members; a union of str/int/bool literals is a set lookup.
    """

    __slots__ = ("_doc_checks", "_fallback", "_member_types", "_plans", "members")
    kind = "union"
    members: tuple[Validator, ...]
    _plans: dict[type, tuple[_Check, ...] | frozenset[Any]]
    _fallback: tuple[_Check, ...]
    _doc_checks: tuple[_Check, ...]
    _member_types: frozenset[type] | None

    def __init__(self, *members: Validator) -> None:
        for i, member in enumerate(members):
            _require_required(member, f"v.union() member {i}")
        plans: dict[type, tuple[_Check, ...] | frozenset[Any]] = {}
        for t in _VALUE_TYPES:
            candidates = [m for m in members if m._types is None or t in m._types]
            if candidates and all(
                # (not for numbers: a float literal may turn an int into a float, an
                # int literal turns an int into an Int64)
                isinstance(m, LiteralValidator)
                and type(m.value) is t
                and t is not float
                and t is not int
                for m in candidates
            ):
                plans[t] = frozenset(m.value for m in candidates)  # type: ignore[attr-defined]
            else:
                plans[t] = tuple(m._check for m in candidates)
        accepted: set[type] | None = set()
        for m in members:
            if m._types is None or accepted is None:
                accepted = None
            else:
                accepted |= m._types
        self._init(
            ("union", tuple(m._key for m in members)),
            members=tuple(members),
            _plans=plans,
            _fallback=tuple(m._check for m in members if m._types is None),
            _doc_checks=tuple(m._document_checker() for m in members),
            _member_types=None if accepted is None else frozenset(accepted),
        )

    @property
    def _types(self) -> frozenset[type] | None:  # type: ignore[override]
        return self._member_types

    def _check(self, value: Any, id_table: IdTable | None) -> Any:
        plan = self._plans.get(type(value), self._fallback)
        if isinstance(plan, frozenset):
            if value in plan:
                return value
            raise _Mismatch(self, value)
        return self._first(plan, value, id_table)

    def _document_checker(self) -> _Check:
        return self._check_document

    def _check_document(self, value: Any, id_table: IdTable | None) -> Any:
        return self._first(self._doc_checks, value, id_table)

    def _first(self, checks: tuple[_Check, ...], value: Any, id_table: IdTable | None) -> Any:
        failures: list[_Mismatch] | None = None
        for check in checks:
            try:
                return check(value, id_table)
            except _Mismatch as mismatch:
                if failures is None:
                    failures = []
                failures.append(mismatch)
        raise self._best(value, failures or []) from None

    def _best(self, value: Any, failures: list[_Mismatch]) -> _Mismatch:
        """The one member failure worth reporting in detail, else "expected v.union(...)".

        A failure inside a member (or with a specific reason) is reported when it is
        the only one -- or, with several plausible members, the only one that did
        not fail on a literal (the usual discriminator field of a union of objects).
        """
        detailed = [m for m in failures if m.segments or m.reason is not None]
        if len(failures) > 1:
            detailed = [m for m in detailed if not isinstance(m.expected, LiteralValidator)]
        return detailed[0] if len(detailed) == 1 else _Mismatch(self, value)

    def to_json(self) -> dict[str, Any]:
        return {"type": "union", "value": [m.to_json() for m in self.members]}

    def _args(self) -> tuple[Any, ...]:
        return self.members

    def __repr__(self) -> str:
        return "v.union(" + ", ".join(repr(m) for m in self.members) + ")"
