"""Tests of the JSON encodings: convex_encoded_json, clean json and the storage codec."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings

from basalt.errors import InvalidValue
from basalt.values import (
    Int64,
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
        (Int64(-5), {"$integer": "+/////////8="}),
        (Int64(7), {"$integer": "BwAAAAAAAAA="}),
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
        ({"n": [Int64(1), 1.0]}, {"n": [{"$integer": "AQAAAAAAAAA="}, 1.0]}),
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
    assert from_convex_json(to_convex_json(Int64(2**63 - 1))) == 2**63 - 1
    assert from_convex_json(to_convex_json(Int64(-(2**63)))) == -(2**63)
    with pytest.raises(
        InvalidValue,
        match=r"^Invalid value at \.a\[1\]: int 9223372036854775808 "
        "is out of the int64 range$",
    ):
        to_convex_json({"a": [0, 2**63]})


# --------------------------------------------------------------------------- int and Int64


def test_a_plain_int_crosses_as_a_float64_number() -> None:
    """As the official Python client sends an int: a number written as a float
    (its HTTP client refuses a bare JSON integer), which JavaScript reads as a
    number, not a BigInt."""
    assert to_convex_json(3) == 3.0
    assert type(to_convex_json(3)) is float
    assert dumps({"count": 3, "list": [0, -7]}) == '{"count":3.0,"list":[0.0,-7.0]}'
    assert dumps(2**53) == "9007199254740992.0"
    assert dumps(-(2**53)) == "-9007199254740992.0"
    assert dumps(True) == "true"  # a bool is not an int here
    received = loads(dumps({"n": 3}))
    assert received == {"n": 3.0}
    assert type(received["n"]) is float


def test_an_int64_crosses_as_an_int64() -> None:
    assert dumps(Int64(3)) == '{"$integer":"AwAAAAAAAAA="}'
    received = loads(dumps({"n": Int64(3)}))
    assert type(received["n"]) is Int64
    assert received == {"n": 3}


@pytest.mark.parametrize("n", [2**53 + 1, -(2**53) - 1, 2**62])
def test_an_int_beyond_2_to_the_53_is_refused_with_its_path(n: int) -> None:
    with pytest.raises(InvalidValue) as info:
        to_convex_json({"rows": [{"total": n}]})
    message = str(info.value)
    assert message.startswith(f"Invalid value at .rows[0].total: int {n} is beyond ±2**53")
    assert f"Int64({n})" in message and "v.int64()" in message
    assert dumps(Int64(n)) == dumps(from_convex_json(to_convex_json(Int64(n))))


def test_int64_type() -> None:
    n = Int64(5)
    assert n == 5 and hash(n) == hash(5) and isinstance(n, int)
    assert repr(n) == "Int64(5)"
    assert str(n) == "5" and f"{n}" == "5" and f"{n:03d}" == "005"
    assert type(n + 1) is int  # arithmetic gives a plain int
    assert Int64(3.0) == 3 and Int64("-12") == -12
    with pytest.raises(InvalidValue, match=r"Int64\(3\.5\): an int64 must be a whole number"):
        Int64(3.5)
    with pytest.raises(InvalidValue, match="out of the int64 range"):
        Int64(2**63)


def test_stored_ints_read_back_as_int64() -> None:
    stored = loads_stored(dumps_stored({"n": 5, "m": Int64(6), "f": 5.0, "b": b"x"}))
    assert stored == {"n": 5, "m": 6, "f": 5.0, "b": b"x"}
    assert type(stored["n"]) is Int64 and type(stored["m"]) is Int64
    assert type(stored["f"]) is float


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
    assert type(inner) is Int64


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
        "i": Int64(-5),
        "n": 3,
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
        "n": 3.0,
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
