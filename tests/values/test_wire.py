"""Tests of the JSON encodings: convex_encoded_json, clean json and the storage codec."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings

from basalt.errors import InvalidValue
from basalt.values import (
    check_value,
    dumps,
    dumps_stored,
    from_convex_json,
    loads,
    loads_stored,
    to_clean_json,
    to_convex_json,
)
from basalt.values.wire import parse_json

from .test_model import NAN_BITS, convex_values, float_bits, float_from_bits, same

# --------------------------------------------------------------------------- convex_encoded_json


@settings(max_examples=400, deadline=None)
@given(convex_values)
def test_wire_round_trip(value: Any) -> None:
    assert same(loads(dumps(value)), value)
    assert same(from_convex_json(to_convex_json(value)), value)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (-5, {"$integer": "+/////////8="}),
        (7, {"$integer": "BwAAAAAAAAA="}),
        (-0.0, {"$float": "AAAAAAAAAIA="}),
        (math.nan, {"$float": "AAAAAAAA+H8="}),
        (math.inf, {"$float": "AAAAAAAA8H8="}),
        (-math.inf, {"$float": "AAAAAAAA8P8="}),
        (b"\x00\x01hi", {"$bytes": "AAFoaQ=="}),
        (2.5, 2.5),
        (0.0, 0.0),
        (None, None),
        (True, True),
        ("s", "s"),
        ({"n": [1, 1.0]}, {"n": [{"$integer": "AQAAAAAAAAA="}, 1.0]}),
    ],
)
def test_exact_wire_forms(value: Any, wire: Any) -> None:
    encoded = to_convex_json(value)
    assert encoded == wire
    assert type(encoded) is type(wire)
    assert same(from_convex_json(wire), value)


def test_floats_are_dumped_with_a_point_or_exponent() -> None:
    assert dumps(2.0) == "2.0"
    assert dumps(1e20) == "1e+20"
    assert dumps({"a": [3.0, -0.0]}) == '{"a":[3.0,{"$float":"AAAAAAAAAIA="}]}'
    assert dumps("é") == '"é"'


def test_int64_bounds() -> None:
    assert from_convex_json(to_convex_json(2**63 - 1)) == 2**63 - 1
    assert from_convex_json(to_convex_json(-(2**63))) == -(2**63)
    with pytest.raises(
        InvalidValue,
        match=r"^Invalid value at \.a\[1\]: int 9223372036854775808 "
        "is out of the int64 range$",
    ):
        to_convex_json({"a": [0, 2**63]})


def test_bare_json_integers_are_float64() -> None:
    value: Any = loads('{"by": 5, "list": [1, -0, 10000000000000000000000]}')
    assert value == {"by": 5.0, "list": [1.0, 0.0, 1e22]}
    assert all(type(x) is float for x in value["list"])
    assert type(value["by"]) is float
    assert type(from_convex_json(3)) is float
    assert from_convex_json(True) is True


def test_loads_accepts_bytes() -> None:
    assert loads(b'{"a":"\xc3\xa9"}') == {"a": "é"}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"$set": []}, 'Invalid value: field name "$set" must not start with "$"'),
        ({"a": [{"$map": []}]}, 'Invalid value at .a[0]: field name "$map" must not start'),
        ({"x": {"$integer": "AQ==", "y": 1}}, 'Invalid value at .x: field name "$integer"'),
        (
            {"x": {"$float": "AAAAAAAA8D8="}},
            "Invalid value at .x: $float is only for NaN, Infinity, -Infinity and -0.0, not 1.0",
        ),
        ({"x": {"$float": "AAAAAAAAAAA="}}, "$float is only for NaN"),
        ({"x": {"$integer": "AQAAAAAAAA=="}}, "$integer must encode 8 bytes, not 7"),
        ({"x": {"$float": "AQAAAAAAAAAA"}}, "$float must encode 8 bytes, not 9"),
        ({"x": {"$integer": 5}}, "$integer must hold a base64 string, not int"),
        ({"x": {"$bytes": "not base64!"}}, "$bytes holds invalid base64"),
        ({"x": {"$bytes": "AAE"}}, "$bytes holds invalid base64"),
        ({"x": {"$bytes": None}}, "$bytes must hold a base64 string, not NoneType"),
    ],
)
def test_from_convex_json_rejections(obj: Any, message: str) -> None:
    with pytest.raises(InvalidValue) as info:
        from_convex_json(obj)
    assert message in str(info.value)


def test_bytes_of_any_length() -> None:
    assert from_convex_json({"$bytes": ""}) == b""
    assert from_convex_json({"$bytes": "AAE="}) == b"\x00\x01"


def test_from_convex_json_nesting_limit() -> None:
    deep: Any = {"$integer": "AQAAAAAAAAA="}  # a scalar: does not count as a level
    for _ in range(65):
        deep = [deep]
    with pytest.raises(InvalidValue, match="nested more than 64 levels deep"):
        from_convex_json(deep)
    decoded = from_convex_json(deep[0])
    check_value(decoded)
    inner: Any = decoded
    for _ in range(64):
        inner = inner[0]
    assert inner == 1
    assert type(inner) is int


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "Invalid JSON: Expecting property name"),
        ('{"a": NaN}', "Invalid JSON: NaN is not valid JSON"),
        ("[Infinity]", "Invalid JSON: Infinity is not valid JSON"),
        (b"\xff", "Invalid JSON"),
        ("[1] x", "Invalid JSON: Extra data"),
    ],
)
def test_loads_rejects_bad_json(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        loads(text)


def test_to_convex_json_rejects_non_values() -> None:
    with pytest.raises(InvalidValue, match=r"^Invalid value at \.a: type tuple is not a Convex"):
        to_convex_json({"a": (1,)})
    with pytest.raises(InvalidValue, match=r"field name 1 \(int\) must be a string"):
        dumps({1: 2})


# --------------------------------------------------------------------------- clean json


def test_clean_json() -> None:
    value = {
        "i": -5,
        "f": 1.5,
        "z": -0.0,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "b": b"\x00\x01hi",
        "l": [True, None, "s"],
    }
    clean: Any = to_clean_json(value)
    assert clean == {
        "i": "-5",
        "f": 1.5,
        "z": -0.0,
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
        "b": "AAFoaQ==",
        "l": [True, None, "s"],
    }
    assert math.copysign(1.0, clean["z"]) == -1.0
    json.dumps(clean, allow_nan=False)


# --------------------------------------------------------------------------- storage codec


@settings(max_examples=400, deadline=None)
@given(convex_values)
def test_storage_round_trip(value: Any) -> None:
    text = dumps_stored(value)
    assert same(loads_stored(text), value)


@pytest.mark.parametrize("bits", NAN_BITS)
def test_storage_keeps_nan_bits(bits: int) -> None:
    value = {"x": [float_from_bits(bits)]}
    loaded: Any = loads_stored(dumps_stored(value))
    assert float_bits(loaded["x"][0]) == bits


def test_storage_forms() -> None:
    assert dumps_stored({"i": 5, "f": 5.0, "z": -0.0}) == '{"i":5,"f":5.0,"z":-0.0}'
    assert dumps_stored([math.nan, math.inf, -math.inf]) == "[NaN,Infinity,-Infinity]"
    assert dumps_stored({"b": b"\x00"}) == '{"b":{"$bytes":"AA=="}}'
    assert dumps_stored("é") == '"é"'


def test_storage_strings_that_look_like_wrappers() -> None:
    for value in ['"$bytes"', {"a": '{"$bytes":"AA=="}'}, ["$float", "NaN", "$bytes"]]:
        assert same(loads_stored(dumps_stored(value)), value)


def test_storage_extreme_floats() -> None:
    for x in [5e-324, -5e-324, 1.7976931348623157e308, 0.1, 1e16, 123456789.123456789]:
        loaded: Any = loads_stored(dumps_stored(x))
        assert float_bits(loaded) == float_bits(x)
    assert loads_stored(dumps_stored(2**63 - 1)) == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"x": 1e400}', r"Invalid value at \.x: a number is outside the float64 range"),
        ("[-1e999]", r"Invalid value at \[0\]: a number is outside the float64 range"),
        ("9" * 400, "a number is outside the float64 range"),
    ],
)
def test_numbers_beyond_float64_are_refused(text: str, message: str) -> None:
    """JSON reads 1e400 as infinity; only {"$float": ...} may spell it."""
    with pytest.raises(InvalidValue, match=message):
        loads(text)


def test_parse_json_reads_every_number_as_float64() -> None:
    assert parse_json('{"a": 5, "b": [1.5, -0]}') == {"a": 5.0, "b": [1.5, -0.0]}
    assert type(parse_json("5")) is float
    with pytest.raises(InvalidValue, match="NaN is not valid JSON"):
        parse_json("[NaN]")
