"""One-line hints for the ``ctx`` feature a kind of function does not have.

``ctx.run_query`` in a mutation, ``ctx.db`` in an action, ``ctx.db.insert`` in
a query: the ``ctx`` objects and their parts answer an attribute they lack with
an ``AttributeError`` that says what to use instead. The hint is looked up in
``__getattr__``, which Python calls only for an attribute that does not exist,
so the attributes that do exist cost nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


def no_attribute(obj: object, name: str, hints: Mapping[str, str]) -> AttributeError:
    """The ``AttributeError`` for ``obj.name``, with the hint for ``name`` if any
    (``name``/``obj`` are set, so Python's own "did you mean" still works)."""
    text = f"{type(obj).__name__!r} object has no attribute {name!r}"
    hint = hints.get(name)
    return AttributeError(f"{text}: {hint}" if hint else text, name=name, obj=obj)


_HELPER: Final = "share code between functions as a plain async helper that takes ctx"

QUERY_CTX: Final = {
    "scheduler": "queries only read: schedule functions from a mutation or an action "
    "(ctx.scheduler.run_after)",
    "run_query": f"queries read with ctx.db (ctx.run_query is for actions; {_HELPER})",
    "run_mutation": "queries are read-only: write in a mutation (ctx.run_mutation is for actions)",
    "run_action": "queries cannot start actions: schedule one from a mutation "
    "(ctx.scheduler.run_after) or run it from an action",
}

MUTATION_CTX: Final = {
    "run_query": f"mutations read with ctx.db (ctx.run_query is for actions; {_HELPER})",
    "run_mutation": "a mutation is one transaction: write with ctx.db (ctx.run_mutation is "
    f"for actions; {_HELPER})",
    "run_action": "a mutation cannot run an action (its transaction could not be undone): "
    "schedule it with `await ctx.scheduler.run_after(0, fn, args)`, which runs it once "
    "the mutation commits",
}

ACTION_CTX: Final = {
    "db": "actions have no ctx.db: read with ctx.run_query and write with ctx.run_mutation "
    "(each runs a query or mutation in a transaction of its own)",
}

_WRITE_IN_MUTATION: Final = "queries are read-only: write in a mutation"
DATABASE_READER: Final = {
    "insert": _WRITE_IN_MUTATION,
    "patch": _WRITE_IN_MUTATION,
    "replace": _WRITE_IN_MUTATION,
    "delete": _WRITE_IN_MUTATION,
}

STORAGE_READER: Final = {
    "generate_upload_url": "queries are read-only: generate upload URLs in a mutation or an action",
    "delete": "queries are read-only: delete files in a mutation or an action",
    "store": "ctx.storage.store is available in actions only",
    "get": "ctx.storage.get is available in actions only; a query has get_url and get_metadata",
}
STORAGE_WRITER: Final = {
    "store": "ctx.storage.store is available in actions only; a mutation can give a client "
    "an upload URL (generate_upload_url)",
    "get": "ctx.storage.get is available in actions only; a mutation has get_url and get_metadata",
}
