"""Basalt: a self-hosted, Python-native reactive backend that speaks Convex.

This module is the facade for app code::

    from basalt import define_schema, define_table, v, query, mutation, action, ConvexError

``Int64(n)`` marks an int that clients receive as an int64 (a plain ``int``
reaches them as a number): see :mod:`basalt.values.int64`.
"""

from basalt._version import __version__
from basalt.errors import ConvexError
from basalt.runtime.db import UNSET
from basalt.runtime.functions import (
    action,
    http_action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from basalt.runtime.http_messages import Request, Response, StreamingResponse
from basalt.runtime.http_router import HttpRouter, cors_router
from basalt.runtime.pagination import pagination_opts_validator
from basalt.scheduler.crons import cron_jobs
from basalt.schema import define_schema, define_table, v
from basalt.values.int64 import Int64

__all__ = [
    "UNSET",
    "ConvexError",
    "HttpRouter",
    "Int64",
    "Request",
    "Response",
    "StreamingResponse",
    "__version__",
    "action",
    "cors_router",
    "cron_jobs",
    "define_schema",
    "define_table",
    "http_action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "pagination_opts_validator",
    "query",
    "v",
]
