"""The validator of Convex's ``paginationOpts`` argument."""

from __future__ import annotations

from basalt.schema import v

#: Use as ``args={"paginationOpts": pagination_opts_validator}`` for a function
#: that calls ``.paginate(pagination_opts)``.
pagination_opts_validator = v.object(
    {
        "numItems": v.number(),
        "cursor": v.union(v.string(), v.null()),
        "endCursor": v.optional(v.union(v.string(), v.null())),
        "id": v.optional(v.number()),
        "maximumRowsRead": v.optional(v.number()),
        "maximumBytesRead": v.optional(v.number()),
    }
)
