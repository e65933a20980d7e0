"""Tests of the value model: check_value, check_document_fields, type_name, deep_copy.

Also home of the hypothesis strategies the other value tests import.
"""

from __future__ import annotations

import enum
import math
import struct
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basalt.errors import InvalidValue
from basalt.values import (
    MAX_ARRAY_LENGTH,
    MAX_DOCUMENT_DEPTH,
    MAX_FIELD_NAME_LENGTH,
    MAX_OBJECT_FIELDS,
    MAX_VALUE_DEPTH,
    Int64,
    check_document_fields,
    check_value,
    deep_copy,
    type_name,
)

# --------------------------------------------------------------------------- strategies

NAN_BITS = [
    0x7FF8000000000000,
    0xFFF8000000000000,
    0x7FF0000000000001,
    0xFFFFFFFFFFFFFFFF,
    0x7FF8DEADBEEF0001,
]


def float_from_bits(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def float_bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


special_floats = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, 1.7976931348623157e308, 1e20, 0.1]
    + [float_from_bits(b) for b in NAN_BITS]
)
floats = st.floats() | special_floats | st.integers(0, 2**64 - 1).map(float_from_bits)
int64s = (st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 0, -1, 1])).map(
    Int64
)
field_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6
).filter(lambda s: not s.startswith("$"))
strings = st.text(max_size=12) | st.sampled_from(
    ["", "\x00", "a\x00b", "\x00\x00", "\uffff", "\U0010ffff", '"$bytes"', "$x", "NaN"]
)
scalars = (
    st.none()
    | st.booleans()
    | int64s
    | floats
    | strings
    | st.binary(max_size=12)
    | st.sampled_from([b"", b"\x00", b"\x00\xff", b"\xff"])
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(field_names, children, max_size=4)


convex_values = st.recursive(scalars, containers, max_leaves=12)


def same(a: Any, b: Any) -> bool:
    """Exact equality of Convex values: types must match, floats compare by bits."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return float_bits(a) == float_bits(b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# --------------------------------------------------------------------------- check_value


@settings(max_examples=300, deadline=None)
@given(convex_values)
def test_generated_values_are_valid(value: Any) -> None:
    assert check_value(value) >= 1


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, 1),
        (True, 1),
        (3, 9),
        (3.5, 9),
        ("", 2),
        ("abc", 5),
        ("é", 4),
        (b"xyz", 5),
        ([], 2),
        ([1, None], 12),
        ({}, 2),
        ({"body": "hello world", "n": 3}, 2 + (4 + 1 + 13) + (1 + 1 + 9)),
    ],
)
def test_sizes(value: Any, size: int) -> None:
    assert check_value(value) == size


def test_bool_is_not_int64() -> None:
    assert type_name(True) == "boolean"
    assert check_value(True) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"author": {"tags": [1, 2, 3, {"$x": 1}]}},
            'Invalid value at .author.tags[3]: field name "$x" must not start with "$"',
        ),
        ({"a": [2**70]}, f"Invalid value at .a[0]: int {2**70} is out of the int64 range"),
        ([-(2**63) - 1], f"Invalid value at [0]: int {-(2**63) - 1} is out of the int64 range"),
        ({"t": (1, 2)}, "Invalid value at .t: type tuple is not a Convex value (use a list)"),
        ({"s": {1}}, "Invalid value at .s: type set is not a Convex value (use a list)"),
        (object(), "Invalid value: type object is not a Convex value"),
        (
            {"a b": {"x": bytearray(b"1")}},
            'Invalid value at ["a b"].x: type bytearray is not a Convex value (use bytes)',
        ),
        ({5: 1}, "Invalid value: field name 5 (int) must be a string"),
        (
            {"é": 1},
            'Invalid value: field name "\\xe9" must contain only printable ASCII characters',
        ),
        ({"a\x7f": 1}, 'field name "a\\x7f" must contain only printable ASCII characters'),
        ({"a\n": 1}, "must contain only printable ASCII characters"),
        ({"x" * 1025: 1}, "is 1025 characters long, more than the limit of 1024"),
        ({"s": "\ud800"}, "Invalid value at .s: string contains a lone surrogate"),
        (list(range(MAX_ARRAY_LENGTH + 1)), "array has 8193 elements, more than the limit"),
        ({f"f{i}": i for i in range(MAX_OBJECT_FIELDS + 1)}, "object has 1025 fields"),
    ],
)
def test_rejections_name_the_path(value: Any, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        check_value(value)
    assert message in str(info.value)
    assert info.value.code == "InvalidValue"


def test_what_is_used_in_the_message() -> None:
    with pytest.raises(InvalidValue, match=r"^Invalid arguments at \.x: "):
        check_value({"x": ()}, what="arguments")


def test_field_names_allowed() -> None:
    name = "x" * MAX_FIELD_NAME_LENGTH
    check_value({"": 1, " ": 2, "_private": 3, "a$": 4, "~!@#": 5, name: 6})


class Color(enum.IntEnum):
    RED = 1


class Name(enum.StrEnum):
    A = "a"


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (Color.RED, "a subclass of int"),
        (Name.A, "a subclass of str"),
        (OrderedDict(a=1), "a subclass of dict"),
    ],
)
def test_subclasses_are_rejected(value: Any, hint: str) -> None:
    with pytest.raises(InvalidValue, match=hint):
        check_value(value)


def nest(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


def test_depth_limits() -> None:
    check_value(nest(MAX_VALUE_DEPTH))
    with pytest.raises(InvalidValue, match="nested more than 64 levels deep"):
        check_value(nest(MAX_VALUE_DEPTH + 1))
    check_value(nest(MAX_DOCUMENT_DEPTH), max_depth=MAX_DOCUMENT_DEPTH)
    with pytest.raises(InvalidValue, match="nested more than 16 levels deep"):
        check_value(nest(MAX_DOCUMENT_DEPTH + 1), max_depth=MAX_DOCUMENT_DEPTH)


def test_self_referencing_value_is_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidValue, match="nested more than"):
        check_value(loop)


def test_max_size() -> None:
    assert check_value("x" * 98, max_size=100) == 100
    with pytest.raises(InvalidValue, match="101 bytes, is more than the limit of 100"):
        check_value("x" * 99, max_size=100)
    check_value("x" * 200, max_size=None)


def test_good_name_cache_does_not_admit_subclasses() -> None:
    check_value({"cached": 1})
    with pytest.raises(InvalidValue, match="must be a string"):
        check_value({Name.A: 1, "cached": 1} | {type("S", (str,), {})("cached"): 2})


# --------------------------------------------------------------------------- documents


def test_check_document_fields() -> None:
    check_document_fields({"a": 1, "b_": 2})
    check_document_fields({"_id": "x", "_creationTime": 1.0, "a": 1}, allow_system_fields=True)
    with pytest.raises(InvalidValue, match='field "_id" is a system field'):
        check_document_fields({"_id": "x"})
    with pytest.raises(InvalidValue, match='field "_secret" is reserved'):
        check_document_fields({"_secret": 1}, allow_system_fields=True)
    with pytest.raises(InvalidValue, match='field "_" is reserved'):
        check_document_fields({"_": 1})


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (False, "boolean"),
        (1, "int64"),
        (1.0, "float64"),
        ("", "string"),
        (b"", "bytes"),
        ([], "array"),
        ({}, "object"),
        ((), "tuple"),
    ],
)
def test_type_name(value: Any, name: str) -> None:
    assert type_name(value) == name


@settings(max_examples=200, deadline=None)
@given(convex_values)
def test_deep_copy_is_equal_and_independent(value: Any) -> None:
    copy = deep_copy(value)
    assert same(copy, value)
    if type(value) in (list, dict):
        assert copy is not value


def test_deep_copy_copies_nested_containers() -> None:
    value: Any = {"a": [1, {"b": [2]}], "c": "s"}
    copy = deep_copy(value)
    copy["a"][1]["b"].append(3)
    assert value == {"a": [1, {"b": [2]}], "c": "s"}
    assert copy["c"] is value["c"]


def test_package_exports() -> None:
    import basalt.values as values

    assert len(set(values.__all__)) == len(values.__all__)
    for name in values.__all__:
        assert hasattr(values, name), name
