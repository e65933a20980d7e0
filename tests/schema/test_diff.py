"""diff_schemas: which indexes to build/drop and which tables to re-check."""

from __future__ import annotations

from basalt.schema import (
    IndexChange,
    IndexDefinition,
    SchemaDefinition,
    define_schema,
    define_table,
    diff_schemas,
    v,
)


def base_schema(**flags: bool) -> SchemaDefinition:
    return define_schema(
        {
            "users": define_table({"name": v.string(), "age": v.float64()})
            .index("by_name", ["name"])
            .search_index("search_name", search_field="name"),
            "posts": define_table({"author": v.id("users"), "text": v.string()}).index(
                "by_author", ["author"]
            ),
        },
        **flags,
    )


def names(changes: list[IndexChange]) -> list[tuple[str, str, str]]:
    return [(c.table, c.definition.name, c.kind) for c in changes]


def test_identical_schemas_have_no_diff() -> None:
    diff = diff_schemas(base_schema(), base_schema())
    assert not diff
    assert diff.tables_to_recheck == [] and diff.added_indexes == []


def test_from_nothing_everything_is_added() -> None:
    diff = diff_schemas(None, base_schema())
    assert diff.added_tables == ["posts", "users"]
    assert names(diff.added_indexes) == [
        ("posts", "by_author", "index"),
        ("users", "by_name", "index"),
        ("users", "search_name", "search"),
    ]
    assert diff.removed_indexes == [] and diff.changed_validators == []
    assert diff.tables_to_recheck == ["posts", "users"]


def test_to_nothing_everything_is_removed() -> None:
    diff = diff_schemas(base_schema(), None)
    assert diff.removed_tables == ["posts", "users"]
    assert len(diff.removed_indexes) == 3 and diff.tables_to_recheck == []
    assert not diff_schemas(None, None)


def test_changed_index_is_removed_and_added() -> None:
    new = define_schema(
        {
            "users": define_table({"name": v.string(), "age": v.float64()})
            .index("by_name", ["name", "age"])
            .vector_index("by_embedding", vector_field="e", dimensions=4),
            "posts": define_table({"author": v.id("users"), "text": v.string()}).index(
                "by_author", ["author"]
            ),
        }
    )
    diff = diff_schemas(base_schema(), new)
    assert names(diff.removed_indexes) == [
        ("users", "by_name", "index"),
        ("users", "search_name", "search"),
    ]
    assert names(diff.added_indexes) == [
        ("users", "by_name", "index"),
        ("users", "by_embedding", "vector"),
    ]
    table, definition = diff.added_indexes[0]
    assert (table, definition) == ("users", IndexDefinition("by_name", ("name", "age")))
    assert diff.changed_validators == [] and diff.tables_to_recheck == []


def test_index_kind_change_with_same_name() -> None:
    old = define_schema({"t": define_table(v.any()).index("x", ["a"])})
    new = define_schema({"t": define_table(v.any()).search_index("x", search_field="a")})
    diff = diff_schemas(old, new)
    assert names(diff.removed_indexes) == [("t", "x", "index")]
    assert names(diff.added_indexes) == [("t", "x", "search")]


def test_changed_validators() -> None:
    new = define_schema(
        {
            "users": define_table(
                {"age": v.float64(), "name": v.string(), "email": v.optional(v.string())}
            )
            .index("by_name", ["name"])
            .search_index("search_name", search_field="name"),
            "posts": define_table({"text": v.string(), "author": v.id("users")}).index(
                "by_author", ["author"]
            ),
            "likes": define_table({"post": v.id("posts")}),
        }
    )
    diff = diff_schemas(base_schema(), new)
    assert diff.changed_validators == ["users"]  # field order alone is not a change
    assert diff.added_tables == ["likes"]
    assert diff.tables_to_recheck == ["likes", "users"]
    assert diff.added_indexes == [] and diff.removed_indexes == []


def test_recheck_follows_the_schema_validation_flag() -> None:
    assert diff_schemas(base_schema(schema_validation=False), base_schema()).tables_to_recheck == [
        "posts",
        "users",
    ]
    assert diff_schemas(base_schema(), base_schema(schema_validation=False)).tables_to_recheck == []


def test_removed_table() -> None:
    new = define_schema({"users": base_schema().tables["users"]})
    diff = diff_schemas(base_schema(), new)
    assert diff.removed_tables == ["posts"]
    assert names(diff.removed_indexes) == [("posts", "by_author", "index")]
    assert diff.changed_validators == [] and diff.tables_to_recheck == []
