"""Tables of the fail-over test app."""

from basalt import define_schema, define_table, v

schema = define_schema(
    {
        "notes": define_table({"tag": v.string(), "body": v.string(), "pos": v.float64()}).index(
            "by_tag", ["tag", "pos"]
        ),
        # One row per run of a scheduled job: exactly-once is counted here.
        "runs": define_table({"batch": v.string(), "n": v.float64()}).index(
            "by_batch", ["batch", "n"]
        ),
        # One row per start of a slow action, with the process that ran it.
        "starts": define_table({"batch": v.string(), "k": v.float64(), "pid": v.float64()}).index(
            "by_batch", ["batch", "k"]
        ),
    }
)
