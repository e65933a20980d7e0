"""The app's tables. Every write is checked against these validators."""

from basalt import define_schema, define_table, v

schema = define_schema(
    {
        "messages": define_table(
            {"author": v.string(), "body": v.string(), "likes": v.optional(v.float64())}
        ).index("by_author", ["author"]),
    }
)
