"""define_table / define_schema: definition-time checks, document validation, JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from basalt.errors import SchemaDefinitionError, SchemaValidationError
from basalt.schema import (
    IndexDefinition,
    ObjectValidator,
    SchemaDefinition,
    SearchIndexDefinition,
    TableDefinition,
    Validator,
    VectorIndexDefinition,
    define_schema,
    define_table,
    v,
)

from .test_validators import make_id, validators

CHANNEL_ID = make_id(1, 7)
MESSAGE_ID = make_id(2, 8)
TABLES = {CHANNEL_ID: "channels", MESSAGE_ID: "messages"}


def messages_schema(**flags: Any) -> SchemaDefinition:
    return define_schema(
        {
            "channels": define_table({"name": v.string()}),
            "messages": define_table(
                {
                    "channel": v.id("channels"),
                    "body": v.string(),
                    "n": v.float64(),
                    "author": v.optional(v.object({"name": v.string(), "age": v.float64()})),
                }
            ).index("by_channel", ["channel", "author.name"]),
        },
        **flags,
    )


# --------------------------------------------------------------------------- tables


def test_define_table_forms() -> None:
    assert define_table({"a": v.string()}).validator == v.object({"a": v.string()})
    union = v.union(v.object({"k": v.literal("a")}), v.object({"k": v.literal("b")}))
    assert define_table(union).validator is union
    assert define_table(v.any()).validator == v.any()
    for bad in (
        v.string(),
        v.union(),
        v.union(v.object({}), v.null()),
        v.optional(v.object({})),
        v.array(v.object({})),
        "x",
        None,
    ):
        with pytest.raises(SchemaDefinitionError):
            define_table(bad)  # type: ignore[arg-type]
    with pytest.raises(SchemaDefinitionError, match="reserved for system fields"):
        define_table({"_id": v.string()})
    with pytest.raises(SchemaDefinitionError, match="forget the parentheses"):
        define_table({"name": v.string})  # type: ignore[dict-item]


def test_indexes_chain_and_are_recorded() -> None:
    table = define_table(
        {"a": v.string(), "b": v.object({"c": v.float64()}), "e": v.array(v.float64())}
    )
    assert table.index("by_a", ["a"]) is table
    table.index("by_a_c", ("a", "b.c"))
    table.search_index("search_a", search_field="a", filter_fields=["b.c"])
    table.vector_index("vec_e", vector_field="e", dimensions=3)
    assert table.indexes == [
        IndexDefinition("by_a", ("a",)),
        IndexDefinition("by_a_c", ("a", "b.c")),
    ]
    assert table.search_indexes == [SearchIndexDefinition("search_a", "a", ("b.c",))]
    assert table.vector_indexes == [VectorIndexDefinition("vec_e", "e", 3, ())]
    assert [i.kind for i in table.all_indexes()] == ["index", "index", "search", "vector"]


INDEX_ERRORS: list[tuple[str, Any, str]] = [
    ("by_id", ["a"], "reserved"),
    ("by_creation_time", ["a"], "reserved"),
    ("_private", ["a"], "starting with '_'"),
    ("1st", ["a"], "invalid"),
    ("by-a", ["a"], "invalid"),
    ("x" * 65, ["a"], "invalid"),
    ("by_none", [], "at least one field"),
    ("by_a_a", ["a", "a"], "listed twice"),
    ("by_time", ["a", "_creationTime"], "implicitly the last field"),
    ("by_doc", ["_id"], "implicitly indexed by id"),
    ("by_sys", ["_other"], "reserved for system fields"),
    ("by_dot", ["a..b"], "segment"),
    ("by_dollar", ["$a"], "segment"),
    ("by_many", [f"f{i}" for i in range(17)], "limit of 16"),
    ("by_str", "a", "list of field names"),
    ("by_num", [1], "must be strings"),
]


@pytest.mark.parametrize(("name", "fields", "message"), INDEX_ERRORS)
def test_index_errors(name: str, fields: Any, message: str) -> None:
    with pytest.raises(SchemaDefinitionError, match=message):
        define_table({"a": v.string()}).index(name, fields)


def test_index_names_are_unique_across_kinds() -> None:
    table = define_table({"a": v.string()}).index("idx", ["a"])
    with pytest.raises(SchemaDefinitionError, match="used twice"):
        table.search_index("idx", search_field="a")
    with pytest.raises(SchemaDefinitionError, match="used twice"):
        table.vector_index("idx", vector_field="a", dimensions=4)


def test_index_count_limits() -> None:
    table = define_table(v.any())
    for i in range(32):
        table.index(f"i{i}", [f"f{i}"])
    with pytest.raises(SchemaDefinitionError, match="at most 32"):
        table.index("one_more", ["x"])
    for i in range(4):
        table.search_index(f"s{i}", search_field="x")
    with pytest.raises(SchemaDefinitionError, match="at most 4 search"):
        table.search_index("s4", search_field="x")


@pytest.mark.parametrize("dimensions", [1, 4097, 0, True, 3.0, "8"])
def test_vector_dimensions(dimensions: Any) -> None:
    with pytest.raises(SchemaDefinitionError, match="dimensions"):
        define_table(v.any()).vector_index("v", vector_field="e", dimensions=dimensions)
    define_table(v.any()).vector_index("v", vector_field="e", dimensions=2)
    define_table(v.any()).vector_index("v", vector_field="e", dimensions=4096)


def test_search_index_filter_errors() -> None:
    with pytest.raises(SchemaDefinitionError, match="listed twice"):
        define_table(v.any()).search_index("s", search_field="a", filter_fields=["b", "b"])
    with pytest.raises(SchemaDefinitionError, match="segment"):
        define_table(v.any()).search_index("s", search_field="a b")


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("_users", "reserved for system tables"),
        ("1users", "invalid"),
        ("us-ers", "invalid"),
        ("u" * 65, "too long"),
        ("", "invalid"),
    ],
)
def test_table_name_errors(name: str, message: str) -> None:
    with pytest.raises(SchemaDefinitionError, match=message):
        define_schema({name: define_table(v.any())})


def test_schema_definition_errors() -> None:
    with pytest.raises(SchemaDefinitionError, match=r"wrap it in define_table"):
        define_schema({"users": {"name": v.string()}})  # type: ignore[dict-item]
    with pytest.raises(SchemaDefinitionError, match=r"wrap it in define_table"):
        define_schema({"users": v.object({})})  # type: ignore[dict-item]
    with pytest.raises(SchemaDefinitionError, match="schema_validation"):
        define_schema({}, schema_validation="yes")  # type: ignore[arg-type]
    with pytest.raises(SchemaDefinitionError):
        define_schema([("users", define_table(v.any()))])  # type: ignore[arg-type]
    assert define_schema({"u" * 64: define_table(v.any())}).tables


def test_validate_document_success_and_coercion() -> None:
    schema = messages_schema()
    doc = {"channel": CHANNEL_ID, "body": "hello", "n": 3.0}
    assert schema.validate_document("messages", doc, id_table=TABLES.get) is doc
    stored = {
        "_id": MESSAGE_ID,
        "_creationTime": 1.5,
        "channel": CHANNEL_ID,
        "body": "b",
        "n": 3,
        "author": {"name": "x", "age": 40},
    }
    result = schema.validate_document("messages", stored, document_id=MESSAGE_ID)
    assert result == {**stored, "n": 3.0, "author": {"name": "x", "age": 40.0}}
    assert type(result["n"]) is float and type(stored["n"]) is int
    assert result["_id"] == MESSAGE_ID and result["_creationTime"] == 1.5


def test_validate_document_errors() -> None:
    schema = messages_schema()
    with pytest.raises(SchemaValidationError) as info:
        schema.validate_document("messages", {"channel": CHANNEL_ID, "body": 5.0, "n": 1.0})
    assert info.value.message == (
        'Failed to insert or update a document in table "messages" because it does not '
        "match the schema: Value does not match validator at .body: expected v.string(), "
        "got float64 5.0"
    )
    with pytest.raises(
        SchemaValidationError,
        match=(
            f'document with id "{MESSAGE_ID}" in table "messages".*at .author.age: '
            'expected v.float64\\(\\), got string "x"'
        ),
    ):
        schema.validate_document(
            "messages",
            {
                "channel": CHANNEL_ID,
                "body": "b",
                "n": 1.0,
                "author": {"name": "a", "age": "x"},
            },
            document_id=MESSAGE_ID,
        )
    with pytest.raises(SchemaValidationError, match='an id of table "messages"'):
        schema.validate_document(
            "messages", {"channel": MESSAGE_ID, "body": "b", "n": 1.0}, id_table=TABLES.get
        )
    with pytest.raises(SchemaValidationError, match='unexpected field "_other"'):
        schema.validate_document("channels", {"name": "c", "_other": 1})
    with pytest.raises(SchemaValidationError, match='the required field "name" is missing'):
        schema.validate_document("channels", {"_id": CHANNEL_ID})


def test_undeclared_tables() -> None:
    with pytest.raises(
        SchemaValidationError,
        match=(
            r'Table "users" is not declared in the schema; add it to schema.py '
            r"\(declared tables: channels, messages\)"
        ),
    ):
        messages_schema().validate_document("users", {"a": 1})
    doc = {"a": 1}
    assert messages_schema(strict_table_name_types=False).validate_document("users", doc) is doc
    assert messages_schema().validate_document("_storage", doc) is doc


def test_schema_validation_off_returns_document_unchanged() -> None:
    doc = {"body": 1}
    assert messages_schema(schema_validation=False).validate_document("messages", doc) is doc
    assert messages_schema(schema_validation=False).validate_document("nope", doc) is doc


def test_union_table_documents() -> None:
    schema = define_schema(
        {
            "events": define_table(
                v.union(
                    v.object({"kind": v.literal("click"), "x": v.float64()}),
                    v.object({"kind": v.literal("key"), "key": v.string()}),
                )
            )
        }
    )
    doc = {"_id": MESSAGE_ID, "_creationTime": 1.0, "kind": "click", "x": 1}
    assert schema.validate_document("events", doc)["x"] == 1.0
    with pytest.raises(SchemaValidationError, match=r"at \.key: expected v\.string"):
        schema.validate_document("events", {"_id": MESSAGE_ID, "kind": "key", "key": 1})
    with pytest.raises(SchemaValidationError, match=r"expected v\.union"):
        schema.validate_document("events", {"kind": "scroll"})


# --------------------------------------------------------------------------- JSON


def test_schema_json_round_trip() -> None:
    schema = messages_schema(schema_validation=False)
    schema.tables["messages"].search_index(
        "search_body", search_field="body", filter_fields=["channel"]
    )
    schema.tables["messages"].vector_index("by_vec", vector_field="v", dimensions=8)
    text = json.dumps(schema.to_json())
    again = SchemaDefinition.from_json(json.loads(text))
    assert again == schema and json.dumps(again.to_json()) == text
    assert again.schema_validation is False and again.strict_table_name_types is True
    table = json.loads(text)["tables"][1]
    assert table["tableName"] == "messages"
    assert table["indexes"] == [
        {"indexDescriptor": "by_channel", "fields": ["channel", "author.name"]}
    ]
    assert table["searchIndexes"] == [
        {"indexDescriptor": "search_body", "searchField": "body", "filterFields": ["channel"]}
    ]
    assert table["vectorIndexes"] == [
        {"indexDescriptor": "by_vec", "vectorField": "v", "dimensions": 8, "filterFields": []}
    ]


def test_schema_json_is_independent_of_table_order() -> None:
    a = define_schema({"a": define_table(v.any()), "b": define_table({"x": v.string()})})
    b = define_schema({"b": define_table({"x": v.string()}), "a": define_table(v.any())})
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    assert a == b


def test_schema_from_json_errors() -> None:
    good = messages_schema().to_json()
    broken: list[Any] = [
        {},
        {"tables": 1},
        {"tables": [{"tableName": "_x", "documentType": {"type": "any"}}]},
        {"tables": [{"tableName": "t", "documentType": {"type": "string"}}]},
        {
            "tables": [
                {"tableName": "t", "indexes": [{"indexDescriptor": "by_id", "fields": ["a"]}]}
            ]
        },
        {"tables": [good["tables"][0], good["tables"][0]]},
    ]
    for obj in broken:
        with pytest.raises(SchemaDefinitionError, match="invalid schema JSON"):
            SchemaDefinition.from_json(obj)


def test_reprs() -> None:
    table = define_table({"a": v.string()}).index("by_a", ["a"])
    assert repr(table) == 'define_table(v.object({"a": v.string()})).index("by_a", ["a"])'
    assert isinstance(table, TableDefinition)
    assert repr(define_schema({"t": table})).startswith('define_schema({"t": define_table(')


_field_names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-zA-Z0-9_]{0,8}", fullmatch=True),
        st.dictionaries(_field_names, validators, max_size=3),
        max_size=3,
    ),
    st.booleans(),
    st.booleans(),
)
def test_random_schemas_round_trip(
    tables: dict[str, dict[str, Validator]], schema_validation: bool, strict: bool
) -> None:
    schema = define_schema(
        {
            name: define_table(fields).index("by_all", list(fields) or ["x"])
            for name, fields in tables.items()
        },
        schema_validation=schema_validation,
        strict_table_name_types=strict,
    )
    text = json.dumps(schema.to_json())
    again = SchemaDefinition.from_json(json.loads(text))
    assert again == schema and json.dumps(again.to_json()) == text
    for name in tables:
        assert isinstance(again.tables[name].validator, ObjectValidator)
