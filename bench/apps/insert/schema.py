"""Schema of the insert benchmark: one table with one index."""

from basalt import define_schema, define_table, v

schema = define_schema(
    {
        "messages": define_table({"author": v.string(), "body": v.string()}).index(
            "by_author", ["author"]
        ),
    }
)
