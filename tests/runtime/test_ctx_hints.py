"""Reaching for a ``ctx`` feature this kind of function does not have fails
with an AttributeError that says what to use instead, in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from basalt import action, mutation, query, v
from basalt.runtime import App
from basalt.testing import BasaltTest


@query(args={"what": v.string()})
async def in_query(ctx: Any, what: str) -> Any:
    if what == "scheduler":
        return ctx.scheduler
    if what == "run_query":
        return await ctx.run_query("hints:in_query", {"what": "x"})
    if what == "insert":
        return await ctx.db.insert("notes", {"body": "x"})
    if what == "store":
        return await ctx.storage.store(b"x")
    return ctx.no_such_thing


@mutation(args={"what": v.string()})
async def in_mutation(ctx: Any, what: str) -> Any:
    if what == "run_query":
        return await ctx.run_query("hints:in_query", {"what": "x"})
    if what == "run_action":
        return await ctx.run_action("hints:in_action", {"what": "x"})
    return await ctx.storage.store(b"x")


@action(args={"what": v.string()})
async def in_action(ctx: Any, what: str) -> Any:
    return await ctx.db.get("x")


@action(args={"what": v.string()})
def in_def_action(ctx: Any, what: str) -> Any:
    return ctx.db.get("x")


MODULES = {
    "hints": {
        "in_query": in_query,
        "in_mutation": in_mutation,
        "in_action": in_action,
        "in_def_action": in_def_action,
    }
}


@pytest.mark.parametrize(
    ("kind", "path", "what", "told"),
    [
        ("query", "hints:in_query", "scheduler",
         "'QueryCtx' object has no attribute 'scheduler': queries only read: schedule functions "
         "from a mutation or an action"),
        ("query", "hints:in_query", "run_query",
         "'QueryCtx' object has no attribute 'run_query': queries read with ctx.db"),
        ("query", "hints:in_query", "insert",
         "'DatabaseReader' object has no attribute 'insert': queries are read-only: write in a "
         "mutation"),
        ("query", "hints:in_query", "store",
         "'StorageReader' object has no attribute 'store': ctx.storage.store is available in "
         "actions only"),
        ("mutation", "hints:in_mutation", "run_query",
         "'MutationCtx' object has no attribute 'run_query': mutations read with ctx.db"),
        ("mutation", "hints:in_mutation", "run_action",
         "'MutationCtx' object has no attribute 'run_action': a mutation cannot run an action"),
        ("mutation", "hints:in_mutation", "store",
         "'StorageWriter' object has no attribute 'store': ctx.storage.store is available in "
         "actions only; a mutation can give a client an upload URL"),
        ("action", "hints:in_action", "db",
         "'ActionCtx' object has no attribute 'db': actions have no ctx.db: read with "
         "ctx.run_query and write with ctx.run_mutation"),
        ("action", "hints:in_def_action", "db",
         "'SyncActionCtx' object has no attribute 'db': actions have no ctx.db"),
    ],
)  # fmt: skip
async def test_the_wrong_ctx_feature_says_what_to_use(
    tmp_path: Path, kind: str, path: str, what: str, told: str
) -> None:
    async with BasaltTest(App.from_modules(MODULES), data_dir=tmp_path) as t:
        outcome = await t.runtime.call(path, {"what": what}, admin=True)
    error = outcome.error
    assert isinstance(error, AttributeError), error
    assert str(error).startswith(told), str(error)
    assert "\n" not in str(error)
    assert error.name == what  # Python's own "did you mean" still has what it needs


async def test_other_missing_attributes_keep_pythons_message(tmp_path: Path) -> None:
    async with BasaltTest(App.from_modules(MODULES), data_dir=tmp_path) as t:
        outcome = await t.runtime.call("hints:in_query", {"what": "other"}, admin=True)
    assert str(outcome.error) == "'QueryCtx' object has no attribute 'no_such_thing'"
