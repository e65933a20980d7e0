from basalt import define_schema, define_table, v

schema = define_schema(
    {
        "jobAssets": define_table(
            {
                "jobId": v.string(),
                "role": v.string(),
                "storageId": v.id("_storage"),
                "contentType": v.string(),
                "bytes": v.float64(),
            }
        ).index("by_job", ["jobId"]),
    }
)
