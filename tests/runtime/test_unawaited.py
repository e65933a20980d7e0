"""A write a mutation forgets to await did nothing: the mutation fails, names
the call, and leaves no trace (instead of succeeding without the write)."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest

from basalt import mutation, query
from basalt.runtime import App
from basalt.runtime.transaction import WriteNotAwaited
from basalt.testing import BasaltTest


@mutation
async def forgets_insert(ctx: Any) -> str:
    await ctx.db.insert("notes", {"body": "kept?"})
    ctx.db.insert("notes", {"body": "forgotten"})
    return "done"


@mutation
async def forgets_patch_and_schedule(ctx: Any) -> None:
    note = await ctx.db.insert("notes", {"body": "a"})
    ctx.db.patch(note, {"body": "b"})
    ctx.scheduler.run_after(0, "notes:forgets_insert", {})


@mutation
async def awaits_everything(ctx: Any) -> int:
    ids = await asyncio.gather(*(ctx.db.insert("notes", {"body": str(i)}) for i in range(5)))
    pending = ctx.db.insert("notes", {"body": "later"})
    await pending
    await ctx.db.patch(ids[0], {"body": "patched"})
    await ctx.scheduler.run_after(3600, "notes:forgets_insert", {})
    return len(ids)


@query
async def count(ctx: Any) -> int:
    return len(await ctx.db.query("notes").collect())


APP = App.from_modules(
    {
        "notes": {
            "forgets_insert": forgets_insert,
            "forgets_patch_and_schedule": forgets_patch_and_schedule,
            "awaits_everything": awaits_everything,
            "count": count,
        }
    }
)


async def test_a_forgotten_await_fails_the_mutation(tmp_path: Path) -> None:
    async with BasaltTest(APP, data_dir=tmp_path) as t:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no "never awaited" warning on top
            with pytest.raises(
                WriteNotAwaited,
                match=r"notes:forgets_insert called ctx\.db\.insert\(\.\.\.\) without `await`",
            ):
                await t.mutation("notes:forgets_insert", {})
            with pytest.raises(
                WriteNotAwaited,
                match=r"ctx\.db\.patch\(\.\.\.\), ctx\.scheduler\.run_after\(\.\.\.\) without",
            ):
                await t.mutation("notes:forgets_patch_and_schedule", {})
        assert await t.query("notes:count", {}) == 0  # nothing of either was written


async def test_writes_awaited_in_any_way_are_fine(tmp_path: Path) -> None:
    async with BasaltTest(APP, data_dir=tmp_path) as t:
        assert await t.mutation("notes:awaits_everything", {}) == 5
        assert await t.query("notes:count", {}) == 6
