"""Tables of the HTTP API test app."""

from basalt import define_schema, define_table, v

schema = define_schema(
    {
        # Notes belong to a tag; every test uses its own unique tag.
        "notes": define_table({"tag": v.string(), "body": v.string(), "pos": v.float64()}).index(
            "by_tag", ["tag", "pos"]
        ),
        # Any value under a tag, for round trips through storage and size limits.
        "blobs": define_table({"tag": v.string(), "value": v.any()}).index("by_tag", ["tag"]),
    }
)
