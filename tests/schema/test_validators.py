"""The ``v`` validators: what they accept, reject, coerce, and how they serialize."""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basalt.errors import (
    ArgumentValidationError,
    SchemaDefinitionError,
    ValidationError,
)
from basalt.schema import (
    ObjectValidator,
    Validator,
    as_object_validator,
    v,
    validator_from_json,
)
from basalt.values import Int64
from basalt.values.ids import is_valid_id
from basalt.values.wire import from_convex_json

# --------------------------------------------------------------------------- ids

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def make_id(table_number: int, seed: int = 0) -> str:
    """An id in the documented Convex format (VInt ‖ 16 bytes ‖ fletcher16, base32)."""
    head = bytearray()
    n = table_number
    while True:
        byte = n & 0x7F
        n >>= 7
        head.append(byte | (0x80 if n else 0))
        if not n:
            break
    data = bytes(head) + seed.to_bytes(16, "big")
    c0 = c1 = 0
    for byte in data:
        c0 = (c0 + byte) % 256
        c1 = (c1 + c0) % 256
    data += bytes((c0, c1))
    length = -(-len(data) * 8 // 5)
    number = int.from_bytes(data, "big") << (length * 5 - len(data) * 8)
    return "".join(_ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(length)))


USER_ID = make_id(1, 1)
MESSAGE_ID = make_id(2, 2)
STORAGE_ID = make_id(3, 3)
TABLES = {USER_ID: "users", MESSAGE_ID: "messages", STORAGE_ID: "_storage"}
IDS = {table: doc_id for doc_id, table in TABLES.items()}


def test_make_id_produces_valid_ids() -> None:
    assert is_valid_id(USER_ID) and is_valid_id(MESSAGE_ID) and is_valid_id(make_id(300))


def mismatch(validator: Validator, value: Any, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        validator.validate(value, **kwargs)
    return info.value.message


# --------------------------------------------------------------------------- scalars

SCALAR_CASES = [
    (v.null(), [None], [0, False, "", [], {}]),
    (v.float64(), [0.0, -0.0, 1.5, math.inf, -math.inf], [True, "1", None, [1.0], b"1"]),
    (
        v.int64(),
        [Int64(0), Int64(-(2**63)), Int64(2**63 - 1), Int64(42)],
        [5.0, True, 2**63, -(2**63) - 1, "5"],
    ),
    (v.boolean(), [True, False], [0, 1, "true", None]),
    (v.string(), ["", "hello", "ünïcode"], [b"x", 1, None, ["a"]]),
    (v.bytes(), [b"", b"\x00\xff"], ["x", bytearray(b"x"), [1]]),
    (v.array(v.string()), [[], ["a", "b"]], [("a",), "ab", {"a": 1}, [1]]),
    (v.object({"a": v.string()}), [{"a": "x"}], [{}, {"a": 1}, {"a": "x", "b": 1}, []]),
    (
        v.record(v.string(), v.int64()),
        [{}, {"a": Int64(1), "b": Int64(2)}],
        [{"a": "1"}, {1: 1}, [1]],
    ),
    (v.union(v.string(), v.null()), ["x", None], [1, True, b"x"]),
    (v.literal("a"), ["a"], ["b", "A", 1]),
]


@pytest.mark.parametrize(
    ("validator", "good", "bad"), SCALAR_CASES, ids=[repr(c[0]) for c in SCALAR_CASES]
)
def test_accepts_and_rejects(validator: Validator, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        assert validator.validate(value) is value
    for value in bad:
        message = mismatch(validator, value, path=".field")
        assert message.startswith("Value does not match validator at .field"), message


def test_any_accepts_everything() -> None:
    for value in [None, 1, 1.0, "x", b"", [1, {"a": None}], {"$weird": 1}]:
        assert v.any().validate(value) is value


def test_number_is_float64() -> None:
    assert v.number() == v.float64()
    assert repr(v.number()) == "v.float64()"
    assert v.number().to_json() == {"type": "number"}


def test_message_shape() -> None:
    validator = v.object({"author": v.object({"age": v.float64()})})
    assert mismatch(validator, {"author": {"age": "x"}}) == (
        'Value does not match validator at .author.age: expected v.float64(), got string "x"'
    )
    assert mismatch(v.string(), 5) == (
        "Value does not match validator: expected v.string(), got int64 5"
    )
    assert "got float64 5.0" in mismatch(v.int64(), 5.0)
    assert "got boolean True" in mismatch(v.float64(), True)
    assert "got null" in mismatch(v.string(), None)
    assert "outside the int64 range" in mismatch(v.int64(), 2**70)
    assert "(not a Convex value)" in mismatch(v.array(v.any()), (1, 2))


def test_error_class_and_path_prefix() -> None:
    with pytest.raises(ArgumentValidationError, match=r"at \.args\.n\[1\]: expected v\.int64"):
        v.object({"n": v.array(v.int64())}).validate(
            {"n": [1, "2"]}, ".args", error=ArgumentValidationError
        )


def test_odd_field_names_are_quoted_in_paths() -> None:
    validator = v.object({"a b": v.object({"c": v.string()})})
    assert 'at ["a b"].c:' in mismatch(validator, {"a b": {"c": 1}})


# --------------------------------------------------------------------------- coercion


def test_float64_coerces_int() -> None:
    result = v.float64().validate(3)
    assert result == 3.0 and type(result) is float
    assert "got int64" not in mismatch(v.float64(), 2**64)  # out of the int64 range


def test_int64_never_coerces() -> None:
    assert "expected v.int64(), got float64 5.0 (" in mismatch(v.int64(), 5.0)
    assert mismatch(v.int64(), 5.5).endswith("expected v.int64(), got float64 5.5")


def test_a_whole_float_for_an_int64_says_how_to_send_an_int64() -> None:
    """A JSON number (and an int the official Python client sends) is a float64:
    the message says how each client spells an int64, and the JSON form it gives
    is the right one."""
    told = mismatch(v.object({"n": v.int64()}), {"n": 3.0})
    assert told.startswith(
        "Value does not match validator at .n: expected v.int64(), got float64 3.0"
    )
    assert "ConvexInt64(3)" in told and "3n (a BigInt)" in told
    spelled = re.search(r'(\{"\$integer": "[^"]+"\})', told)
    assert spelled, told
    decoded = from_convex_json(json.loads(spelled.group(1)))
    assert type(decoded) is Int64 and decoded == 3
    assert v.object({"n": v.int64()}).validate(
        from_convex_json({"n": json.loads(spelled.group(1))})
    )


def test_containers_are_copied_only_when_coerced() -> None:
    validator = v.object(
        {"xs": v.array(v.float64()), "name": v.string(), "tags": v.record(v.string(), v.number())}
    )
    exact = {"xs": [1.0, 2.0], "name": "n", "tags": {"a": 1.0}}
    assert validator.validate(exact) is exact
    loose: dict[str, Any] = {"xs": [1.0, 2], "name": "n", "tags": {"a": 1}}
    result = validator.validate(loose)
    assert result == {"xs": [1.0, 2.0], "name": "n", "tags": {"a": 1.0}}
    assert type(result["xs"][1]) is float and type(result["tags"]["a"]) is float
    assert loose == {"xs": [1.0, 2], "name": "n", "tags": {"a": 1}}  # input untouched
    assert type(loose["xs"][1]) is int and result["name"] is loose["name"]


def test_union_first_accepting_member_wins() -> None:
    assert type(v.union(v.int64(), v.float64()).validate(3)) is Int64
    assert type(v.union(v.float64(), v.int64()).validate(3)) is float


def test_int64_validators_make_a_plain_int_an_int64() -> None:
    """What a v.int64() validator accepts is an int64, which is what clients get."""
    for validator in (v.int64(), v.literal(7), v.union(v.literal(7), v.literal(8))):
        result = validator.validate(7)
        assert type(result) is Int64 and result == 7
    nested = v.object({"n": v.int64(), "l": v.array(v.int64())}).validate({"n": 1, "l": [2]})
    assert type(nested["n"]) is Int64 and type(nested["l"][0]) is Int64
    # v.float64() still takes either int as the number
    assert type(v.float64().validate(Int64(3))) is float
    assert type(v.literal(3.0).validate(Int64(3))) is float
    assert v.literal(Int64(7)) == v.literal(7)


# --------------------------------------------------------------------------- ids


def test_id() -> None:
    users = v.id("users")
    assert users.validate(USER_ID) is USER_ID
    assert users.validate(USER_ID, id_table=TABLES.get) is USER_ID
    assert "not a valid document id" in mismatch(users, "nope")
    assert 'expected v.id("users"), got int64 1' in mismatch(users, 1)
    assert 'got an id of table "messages"' in mismatch(users, MESSAGE_ID, id_table=TABLES.get)
    assert "an id of an unknown table" in mismatch(users, make_id(9), id_table=TABLES.get)


def test_id_table_names() -> None:
    assert v.id("_storage").table_name == "_storage"
    assert v.id("_scheduled_functions").to_json() == {
        "type": "id",
        "tableName": "_scheduled_functions",
    }
    for bad in ["_users", "", "1abc", "a-b", 5]:
        with pytest.raises(SchemaDefinitionError):
            v.id(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- objects


def test_object_fields() -> None:
    validator = v.object({"name": v.string(), "age": v.optional(v.float64())})
    assert validator.validate({"name": "a"}) == {"name": "a"}
    assert validator.validate({"name": "a", "age": 3}) == {"name": "a", "age": 3.0}
    message = mismatch(validator, {"age": 1.0})
    assert 'at .name: the required field "name" is missing (expected v.string())' in message
    assert "v.optional" in message
    message = mismatch(validator, {"name": "a", "agee": 1.0})
    assert 'at .agee: unexpected field "agee" (did you mean "age"?)' in message
    message = mismatch(validator, {"name": "a", "zzz": 1.0})
    assert 'allowed fields: "name", "age"' in message
    assert "expected v.object(" in mismatch(validator, "x")


def test_object_definition_errors() -> None:
    cases: list[tuple[Any, str]] = [
        ({"name": v.string}, r"field 'name': expected a validator .*forget the parentheses"),
        ({"name": str}, r"field 'name': .*use v\.string\(\)"),
        ({"inner": {"a": v.string()}}, r"wrap nested fields in v\.object"),
        ({"$x": v.string()}, r"must not start with '\$'"),
        ({1: v.string()}, r"must be a string"),
        ({"é": v.string()}, r"printable ASCII"),
    ]
    for fields, pattern in cases:
        with pytest.raises(SchemaDefinitionError, match=pattern):
            v.object(fields)
    with pytest.raises(SchemaDefinitionError):
        v.object(v.string())  # type: ignore[arg-type]


def test_optional_only_as_field() -> None:
    inner = v.optional(v.string())
    assert inner.is_optional and not v.string().is_optional
    assert inner.validate("x") == "x"
    assert inner.to_json() == {"type": "string"}
    for build in (
        lambda: v.array(inner),
        lambda: v.union(inner),
        lambda: v.optional(inner),
        lambda: v.record(v.string(), inner),
    ):
        with pytest.raises(SchemaDefinitionError, match="only allowed as an object field"):
            build()


# --------------------------------------------------------------------------- records


def test_record_keys() -> None:
    good: list[Validator] = [
        v.string(),
        v.id("users"),
        v.literal("a"),
        v.union(v.literal("a"), v.literal("b")),
        v.union(v.id("users"), v.string()),
    ]
    for keys in good:
        v.record(keys, v.any())
    bad: list[Validator] = [v.int64(), v.literal(1), v.union(v.string(), v.null()), v.any()]
    for keys in bad:
        with pytest.raises(SchemaDefinitionError, match="keys must be"):
            v.record(keys, v.any())


def test_record_checks_keys_and_values() -> None:
    validator = v.object({"votes": v.record(v.id("users"), v.int64())})
    assert validator.validate({"votes": {USER_ID: 1}}, id_table=TABLES.get)
    message = mismatch(validator, {"votes": {"bob": 1}})
    assert message.startswith('Value does not match validator at .votes: key "bob" does not')
    message = mismatch(validator, {"votes": {MESSAGE_ID: 1}}, id_table=TABLES.get)
    assert "key" in message and 'an id of table "messages"' in message
    message = mismatch(validator, {"votes": {USER_ID: 1.5}})
    assert f'.votes["{USER_ID}"]: expected v.int64()' in message
    assert "does not match" in mismatch(v.record(v.literal("a"), v.any()), {"b": 1})


# --------------------------------------------------------------------------- unions


def test_union_message_lists_members() -> None:
    validator = v.union(v.string(), v.float64())
    assert mismatch(validator, None).endswith("expected v.union(v.string(), v.float64()), got null")
    literals = v.union(v.literal("a"), v.literal("b"), v.literal(1))
    assert literals.validate("b") == "b" and literals.validate(1) == 1
    assert 'v.union(v.literal("a"), v.literal("b"), v.literal(1))' in mismatch(literals, "c")
    assert "got boolean True" in mismatch(literals, True)


def test_union_reports_the_plausible_member() -> None:
    nullable = v.nullable(v.object({"a": v.string()}))
    assert nullable == v.union(v.object({"a": v.string()}), v.null())
    assert "at .a: expected v.string()" in mismatch(nullable, {"a": 1})
    tagged = v.union(
        v.object({"kind": v.literal("a"), "x": v.string()}),
        v.object({"kind": v.literal("b"), "y": v.float64()}),
    )
    assert tagged.validate({"kind": "b", "y": 1}) == {"kind": "b", "y": 1.0}
    assert "at .y: expected v.float64()" in mismatch(tagged, {"kind": "b", "y": "s"})
    assert "expected v.union(" in mismatch(tagged, {"kind": "c"})


def test_empty_union_matches_nothing() -> None:
    assert "expected v.union()" in mismatch(v.union(), 1)


def test_union_with_any_behaves_like_any() -> None:
    odd = (1, 2)
    assert v.union(v.string(), v.any()).validate(odd) is odd
    assert v.union(v.string(), v.any()).validate(3) == 3


# --------------------------------------------------------------------------- literals


def test_literal_matching() -> None:
    assert v.literal(1).validate(1) == 1
    for bad in (True, 1.0, "1"):
        mismatch(v.literal(1), bad)
    assert v.literal(True).validate(True) is True
    mismatch(v.literal(True), 1)
    mismatch(v.literal(False), 0)
    result = v.literal(2.0).validate(2)
    assert result == 2.0 and type(result) is float
    mismatch(v.literal(2.0), True)
    assert math.isnan(v.literal(math.nan).validate(math.nan))
    mismatch(v.literal(-0.0), 0.0)
    mismatch(v.literal(0.0), -0.0)
    assert v.literal(0.0).validate(0) == 0.0
    assert "got int64 3" in mismatch(v.literal(2.0), 3)


def test_literal_definition_errors() -> None:
    for bad in (None, [1], b"x", 2**63, object()):
        with pytest.raises(SchemaDefinitionError):
            v.literal(bad)  # type: ignore[arg-type]


def test_literal_equality_is_typed() -> None:
    assert len({v.literal(1), v.literal(1.0), v.literal(True), v.literal("1")}) == 4
    assert v.literal(math.nan) == v.literal(math.nan)
    assert v.literal(0.0) != v.literal(-0.0)


# --------------------------------------------------------------------------- JSON & repr


def test_to_json_shapes() -> None:
    validator = v.object(
        {
            "id": v.id("users"),
            "n": v.optional(v.int64()),
            "tags": v.array(v.string()),
            "m": v.record(v.string(), v.boolean()),
            "u": v.union(v.literal("x"), v.literal(3), v.literal(2.5), v.null()),
            "b": v.bytes(),
            "a": v.any(),
        }
    )
    assert validator.to_json() == {
        "type": "object",
        "value": {
            "id": {"fieldType": {"type": "id", "tableName": "users"}, "optional": False},
            "n": {"fieldType": {"type": "bigint"}, "optional": True},
            "tags": {
                "fieldType": {"type": "array", "value": {"type": "string"}},
                "optional": False,
            },
            "m": {
                "fieldType": {
                    "type": "record",
                    "keys": {"type": "string"},
                    "values": {"fieldType": {"type": "boolean"}, "optional": False},
                },
                "optional": False,
            },
            "u": {
                "fieldType": {
                    "type": "union",
                    "value": [
                        {"type": "literal", "value": "x"},
                        {"type": "literal", "value": {"$integer": "AwAAAAAAAAA="}},
                        {"type": "literal", "value": 2.5},
                        {"type": "null"},
                    ],
                },
                "optional": False,
            },
            "b": {"fieldType": {"type": "bytes"}, "optional": False},
            "a": {"fieldType": {"type": "any"}, "optional": False},
        },
    }
    assert validator_from_json(validator.to_json()) == validator


def test_literal_json_special_floats() -> None:
    for x in (math.nan, math.inf, -math.inf, -0.0):
        encoded = v.literal(x).to_json()["value"]
        assert set(encoded) == {"$float"}
        assert validator_from_json(v.literal(x).to_json()) == v.literal(x)
    assert validator_from_json(
        {"type": "literal", "value": {"$integer": "AAAAAAAAAIA="}}
    ) == v.literal(-(2**63))
    # A plain JSON number is a float64 in Convex.
    assert validator_from_json({"type": "literal", "value": 3}) == v.literal(3.0)


def test_from_json_rejects_garbage() -> None:
    for bad in (
        None,
        {},
        {"type": "nope"},
        {"type": "id"},
        {"type": "array"},
        {"type": "object", "value": {"a": {"type": "string"}}},
        {"type": "object", "value": {"$a": {"fieldType": {"type": "string"}}}},
        {"type": "literal", "value": {"$integer": "AA=="}},
        {"type": "literal", "value": None},
        {"type": "union", "value": {"type": "null"}},
        {
            "type": "record",
            "keys": {"type": "string"},
            "values": {"fieldType": {"type": "string"}, "optional": True},
        },
    ):
        with pytest.raises(SchemaDefinitionError, match="invalid validator JSON"):
            validator_from_json(bad)


def test_repr_is_source() -> None:
    validator = v.object({"a": v.string(), "b": v.optional(v.float64())})
    assert repr(validator) == 'v.object({"a": v.string(), "b": v.optional(v.float64())})'
    assert repr(v.literal(math.inf)) == 'v.literal(float("inf"))'
    record = v.record(v.id("t"), v.array(v.bytes()))
    assert repr(record) == 'v.record(v.id("t"), v.array(v.bytes()))'


def test_equality_and_immutability() -> None:
    a = v.object({"x": v.string(), "y": v.int64()})
    b = v.object({"y": v.int64(), "x": v.string()})
    assert a == b and hash(a) == hash(b)
    assert v.union(v.string(), v.null()) != v.union(v.null(), v.string())
    assert v.optional(v.string()) != v.string()
    with pytest.raises(AttributeError):
        a.fields = {}
    with pytest.raises(TypeError):
        a.fields["z"] = v.string()  # type: ignore[index]
    assert copy.deepcopy(a) is a
    assert pickle.loads(pickle.dumps(a)) == a


def test_as_object_validator() -> None:
    assert as_object_validator(None) is None
    obj = v.object({"a": v.string()})
    assert as_object_validator(obj) is obj
    assert as_object_validator({"a": v.string()}) == obj
    assert as_object_validator({}) == v.object({})
    for bad in (v.string(), [v.string()], "a"):
        with pytest.raises(SchemaDefinitionError, match="args must be"):
            as_object_validator(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hypothesis

_names = st.from_regex(re.compile(r"[a-z][a-z0-9_]{0,5}"), fullmatch=True)
_literals = st.one_of(
    st.text(max_size=5), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats()
)
_leaves = st.one_of(
    st.sampled_from(
        [v.null(), v.float64(), v.int64(), v.boolean(), v.string(), v.bytes(), v.any()]
    ),
    st.sampled_from(["users", "messages", "_storage"]).map(v.id),
    _literals.map(v.literal),
)
_keys = st.one_of(
    st.just(v.string()),
    st.just(v.id("users")),
    st.text(max_size=4).map(v.literal),
    st.lists(st.text(max_size=4), min_size=1, max_size=3).map(
        lambda xs: v.union(*(v.literal(x) for x in xs))
    ),
)


def _extend(children: st.SearchStrategy[Validator]) -> st.SearchStrategy[Validator]:
    fields = st.dictionaries(_names, st.tuples(children, st.booleans()), max_size=4).map(
        lambda d: v.object({k: v.optional(c) if opt else c for k, (c, opt) in d.items()})
    )
    return st.one_of(
        children.map(v.array),
        fields,
        st.builds(v.record, _keys, children),
        st.lists(children, min_size=1, max_size=3).map(lambda ms: v.union(*ms)),
    )


validators = st.recursive(_leaves, _extend, max_leaves=8)

_ANY_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(allow_nan=False)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_names, c, max_size=3),
    max_leaves=5,
)


def values_of(validator: Validator) -> st.SearchStrategy[Any]:
    """Values ``validator`` accepts unchanged (no ints where floats are expected)."""
    kind = validator.kind
    if validator.is_optional:
        return values_of(validator.inner)  # type: ignore[attr-defined]
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "number": st.floats(allow_nan=False),
        "bigint": st.integers(-(2**63), 2**63 - 1),
        "boolean": st.booleans(),
        "string": st.text(max_size=5),
        "bytes": st.binary(max_size=5),
        "any": _ANY_VALUES,
    }
    if kind == "id":
        return st.just(IDS[validator.table_name])  # type: ignore[attr-defined]
    if kind in simple:
        return simple[kind]
    if kind == "literal":
        return st.just(validator.value)  # type: ignore[attr-defined]
    if kind == "array":
        return st.lists(values_of(validator.item), max_size=3)  # type: ignore[attr-defined]
    if kind == "union":
        return st.one_of(*(values_of(m) for m in validator.members))  # type: ignore[attr-defined]
    if kind == "record":
        return st.dictionaries(
            values_of(validator.keys),  # type: ignore[attr-defined]
            values_of(validator.values),
            max_size=3,
        )  # type: ignore[attr-defined]
    assert isinstance(validator, ObjectValidator)
    required = {k: values_of(f) for k, f in validator.fields.items() if not f.is_optional}
    optional = {k: values_of(f) for k, f in validator.fields.items() if f.is_optional}
    return st.fixed_dictionaries(required, optional=optional)


@settings(max_examples=150, deadline=None)
@given(validators)
def test_json_and_repr_round_trip(validator: Validator) -> None:
    text = json.dumps(validator.to_json())
    assert validator_from_json(json.loads(text)) == validator
    assert json.dumps(validator_from_json(json.loads(text)).to_json()) == text
    assert eval(repr(validator), {"v": v}) == validator


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), validators)
def test_generated_values_are_accepted_as_is(data: st.DataObject, validator: Validator) -> None:
    value = data.draw(values_of(validator))
    result = validator.validate(value, id_table=TABLES.get)
    # Equal, up to an int coerced to float by an earlier union member (3 == 3.0).
    assert result is value or result == value
    document = {"f": value}
    checked = v.object({"f": validator}).validate(document)
    assert checked is document if result is value else checked == {"f": result}
