"""Tests of the order-preserving key encoding and compare()."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basalt.errors import InvalidValue
from basalt.values import (
    MISSING,
    Int64,
    Missing,
    compare,
    decode_key,
    encode_key,
    encode_value,
    prefix_successor,
)

from .test_model import convex_values, float_bits, float_from_bits, same

# --------------------------------------------------------------------------- a reference order

_RANK = {
    Missing: 0,
    type(None): 1,
    int: 2,
    Int64: 2,
    float: 3,
    bool: 4,
    str: 5,
    bytes: 6,
    list: 7,
    dict: 8,
}


def total_order(x: float) -> int:
    """IEEE-754 totalOrder as a signed integer."""
    bits = float_bits(x)
    return -(bits & ~(1 << 63)) - 1 if bits >> 63 else bits


def ref(value: Any) -> tuple[Any, ...]:
    """A Python tuple that sorts like ``value`` in the Convex order (written independently)."""
    t = type(value)
    rank = _RANK[t]
    if t is float:
        return (rank, total_order(value))
    if t is str:
        return (rank, value.encode("utf-8"))
    if t is list:
        return (rank, tuple(ref(v) for v in value))
    if t is dict:
        pairs = sorted((k.encode("utf-8"), ref(v)) for k, v in value.items())
        return (rank, tuple(pairs))
    if value is None or value is MISSING:
        return (rank,)
    return (rank, value)


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def ref_cmp(a: Any, b: Any) -> int:
    ra, rb = ref(a), ref(b)
    return (ra > rb) - (ra < rb)


key_parts = convex_values | st.just(MISSING)
small_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([-0.0, 0.0, 1.0, math.nan]),
    st.sampled_from(["", "a", "a\x00", "b"]),
    st.sampled_from([b"", b"\x00", b"a"]),
)
similar_values = st.recursive(
    small_values,
    lambda c: (
        st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["", "a", "b"]), c, max_size=3)
    ),
    max_leaves=6,
)


# --------------------------------------------------------------------------- properties


@settings(max_examples=500, deadline=None)
@given(convex_values, convex_values)
def test_encoding_preserves_order(a: Any, b: Any) -> None:
    expected = ref_cmp(a, b)
    assert compare(a, b) == expected
    ea, eb = encode_value(a), encode_value(b)
    assert sign((ea > eb) - (ea < eb)) == expected
    assert (ea == eb) == same(a, b)


@settings(max_examples=500, deadline=None)
@given(similar_values, similar_values)
def test_order_of_similar_values(a: Any, b: Any) -> None:
    """Values built from few parts collide often, so equal and prefix cases get exercised."""
    expected = ref_cmp(a, b)
    assert compare(a, b) == expected
    ea, eb = encode_value(a), encode_value(b)
    assert (ea > eb) - (ea < eb) == expected
    assert (ea == eb) == same(a, b) == (expected == 0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(key_parts | similar_values, max_size=4),
    st.lists(key_parts | similar_values, max_size=4),
)
def test_key_tuples_preserve_order(a: list[Any], b: list[Any]) -> None:
    ra, rb = tuple(ref(x) for x in a), tuple(ref(x) for x in b)
    ka, kb = encode_key(a), encode_key(b)
    assert (ka > kb) - (ka < kb) == (ra > rb) - (ra < rb)


@settings(max_examples=300, deadline=None)
@given(st.lists(key_parts, max_size=5))
def test_decode_key_inverts_encode_key(parts: list[Any]) -> None:
    decoded = decode_key(encode_key(parts))
    assert len(decoded) == len(parts)
    for got, want in zip(decoded, parts, strict=True):
        assert got is want if want is MISSING else same(got, want)
    assert encode_key(tuple(parts)) == encode_key(parts)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(key_parts | similar_values, max_size=3),
    st.lists(key_parts | similar_values, max_size=3),
    st.lists(key_parts | similar_values, max_size=3),
)
def test_prefix_successor_bounds_exactly_the_keys_with_the_prefix(
    prefix: list[Any], rest: list[Any], other: list[Any]
) -> None:
    p = encode_key(prefix)
    successor = prefix_successor(p)
    assert p <= encode_key(prefix + rest) < successor
    k = encode_key(other)
    assert (p <= k < successor) == k.startswith(p)


@settings(max_examples=300, deadline=None)
@given(convex_values)
def test_tags_are_low_bytes(value: Any) -> None:
    assert 0x01 <= encode_value(value)[0] <= 0x0F


# --------------------------------------------------------------------------- examples


def test_cross_type_order() -> None:
    ladder = [
        MISSING,
        None,
        -(2**63),
        0,
        2**63 - 1,
        -math.inf,
        0.0,
        math.inf,
        False,
        True,
        "",
        "a",
        b"",
        b"a",
        [],
        [None],
        {},
        {"a": None},
    ]
    keys = [encode_value(v) for v in ladder]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    for i, a in enumerate(ladder):
        for j, b in enumerate(ladder):
            assert compare(a, b) == sign(i - j)


def test_an_int_and_an_int64_are_the_same_key() -> None:
    """Inside Basalt every int is an int64: Int64 only changes what clients receive."""
    for n in (-(2**63), -1, 0, 5, 2**63 - 1):
        assert encode_value(n) == encode_value(Int64(n))
        assert compare(n, Int64(n)) == 0 and compare(Int64(n), n) == 0
    assert compare(Int64(1), 2) == -1 and compare(2, Int64(1)) == 1
    assert compare(Int64(1), 0.5) == -1  # int64 sorts below float64, as for an int
    assert type(decode_key(encode_key([5]))[0]) is Int64


def test_float_total_order() -> None:
    ladder = [
        float_from_bits(0xFFF8000000000000),
        -math.inf,
        -1e308,
        -1.0,
        -5e-324,
        -0.0,
        0.0,
        5e-324,
        1.0,
        1e308,
        math.inf,
        math.nan,
        float_from_bits(0x7FFFFFFFFFFFFFFF),
    ]
    keys = [encode_value(v) for v in ladder]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert compare(-0.0, 0.0) == -1
    assert compare(math.nan, math.nan) == 0
    assert compare(float_from_bits(0xFFF8000000000000), math.nan) == -1


def test_strings_sort_by_utf8() -> None:
    ladder = [
        "",
        "\x00",
        "\x00\x00",
        "\x01",
        "a",
        "a\x00",
        "ab",
        "\x7f",
        "é",
        "\uffff",
        "\U0001f600",
    ]
    assert [encode_value(s) for s in ladder] == sorted(encode_value(s) for s in ladder)
    assert sorted(ladder, key=lambda s: s.encode()) == ladder


def test_objects_compare_by_sorted_pairs() -> None:
    assert compare({"b": 1, "a": 2}, {"a": 2, "b": 1}) == 0
    assert encode_value({"b": 1, "a": 2}) == encode_value({"a": 2, "b": 1})
    assert compare({"a": 1}, {"b": 0}) == -1
    assert compare({"a": 1}, {"a": 1, "b": 0}) == -1
    assert compare({"a": 2}, {"a": 1, "b": 0}) == 1
    assert compare({}, {"": None}) == -1
    assert encode_key([{}, 1]) < encode_key([{"": None}])


def test_arrays_shorter_first() -> None:
    assert compare([1], [1, None]) == -1
    assert encode_key([[1], MISSING]) < encode_key([[1, None]])
    assert compare([2], [1, 5]) == 1


def test_known_encodings() -> None:
    assert encode_value(MISSING) == b"\x01"
    assert encode_value(None) == b"\x02"
    assert encode_value(0) == b"\x03\x80" + bytes(7)
    assert encode_value(-1) == b"\x03\x7f" + b"\xff" * 7
    assert encode_value(0.0) == b"\x04\x80" + bytes(7)
    assert encode_value(-0.0) == b"\x04\x7f" + b"\xff" * 7
    assert encode_value(False) == b"\x05"
    assert encode_value(True) == b"\x06"
    assert encode_value("a\x00") == b"\x07a\x00\xff\x00\x00"
    assert encode_value(b"\x00") == b"\x08\x00\xff\x00\x00"
    assert encode_value([None]) == b"\x09\x02\x00"
    assert encode_value({"k": True}) == b"\x0a\x07k\x00\x00\x06\x00"
    assert encode_key([MISSING, 1.5]) == b"\x01" + encode_value(1.5)
    assert encode_key([]) == b""


def test_missing_is_a_singleton() -> None:
    assert repr(MISSING) == "MISSING"
    assert Missing() is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",
        b"\x10",
        b"\x03\x00",
        b"\x07abc",
        b"\x07a\x00",
        b"\x07a\x00\x01",
        b"\x09\x02",
        b"\x0a\x02\x00",
        b"\x09\x01\x00",
        b"\x07\xff\x00\x00",
        b"\x0a\x07k\x00\x00",
    ],
)
def test_decode_key_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidValue, match=r"^Invalid key"):
        decode_key(data)


def test_encoding_rejects_non_values() -> None:
    with pytest.raises(InvalidValue, match="field name 1 must be a string"):
        encode_value({1: 2, "a": 3})
    with pytest.raises(InvalidValue, match="type tuple is not a Convex value"):
        encode_key([(1, 2)])
    with pytest.raises(InvalidValue, match="out of the int64 range"):
        encode_value(2**63)
    with pytest.raises(InvalidValue, match="lone surrogate"):
        encode_key(["ok", {"a": "\udc80"}])
    with pytest.raises(InvalidValue, match="type tuple is not a Convex value"):
        compare((1,), (2,))
    with pytest.raises(InvalidValue, match="type set is not a Convex value"):
        compare(1, {1})


@settings(max_examples=300)
@given(st.lists(convex_values | st.just(MISSING), max_size=5))
def test_key_prefixes_are_the_keys_of_the_value_prefixes(values: list[Any]) -> None:
    from basalt.values.keys import key_prefixes

    key = encode_key(values)
    assert key_prefixes(key) == [encode_key(values[:i]) for i in range(len(values) + 1)]
