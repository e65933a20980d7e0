"""The time budget of queries and mutations: code that holds the event loop too
long is stopped with a clear error, its writes are undone, and the loop serves
others again; a loop held (below the budget) is reported with the function's name."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from basalt import mutation, query
from basalt.errors import LimitExceeded
from basalt.runtime import Limits
from basalt.runtime.determinism import BlockingCallNotAllowed

from .conftest import MakeRuntime


@query
async def spin(ctx: Any) -> int:
    n = 0
    while True:  # never gives the loop back
        n += 1


@mutation
async def write_then_spin(ctx: Any) -> None:
    await ctx.db.insert("notes", {"body": "half-done"})
    while True:
        pass


@query
async def swallow(ctx: Any) -> str:
    try:
        while True:
            pass
    except BaseException:  # what app code must not do; the run still fails
        return "swallowed"


@query
async def catches_exception(ctx: Any) -> str:
    try:
        while True:
            pass
    except Exception:
        return "caught"


@query
async def many_short_steps(ctx: Any) -> None:
    """Gives the loop back often, but adds up to more than the budget."""
    while True:
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


@query
async def count_notes(ctx: Any) -> int:
    return len(await ctx.db.query("notes").collect())


@mutation
async def naps(ctx: Any) -> None:
    time.sleep(0.01)


@query
async def busy_for(ctx: Any, seconds: float) -> float:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


MODULES = {
    "limits": {
        "spin": spin,
        "write_then_spin": write_then_spin,
        "swallow": swallow,
        "catches_exception": catches_exception,
        "many_short_steps": many_short_steps,
        "count_notes": count_notes,
        "naps": naps,
        "busy_for": busy_for,
    }
}


async def test_a_query_that_never_returns_is_stopped(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=0.2))
    others_ran = asyncio.Event()

    async def other() -> None:
        others_ran.set()

    other_task = asyncio.create_task(other())  # waits for the loop the query holds
    with pytest.raises(LimitExceeded, match=r"limits:spin timed out.* at most 0.2 s") as info:
        await rt.query("limits:spin", {})
    assert info.value.code == "FunctionTimeout"
    await other_task
    assert others_ran.is_set()
    assert await rt.query("limits:count_notes", {}) == 0  # the runtime serves on


async def test_a_stopped_mutation_leaves_no_writes(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=0.2))
    with pytest.raises(LimitExceeded, match="timed out"):
        await rt.mutation("limits:write_then_spin", {})
    assert await rt.query("limits:count_notes", {}) == 0


async def test_app_code_cannot_swallow_the_time_limit(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=0.2))
    with pytest.raises(LimitExceeded, match="timed out"):
        await rt.query("limits:catches_exception", {})
    with pytest.raises(LimitExceeded, match="timed out"):
        await rt.query("limits:swallow", {})


async def test_the_budget_adds_up_over_the_steps_of_a_run(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=0.2))
    with pytest.raises(LimitExceeded, match="timed out"):
        await rt.query("limits:many_short_steps", {})


async def test_runs_within_the_budget_and_no_limit(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=5.0))
    assert await rt.query("limits:busy_for", {"seconds": 0.05}) == 0.05
    unlimited = await make_runtime(MODULES, limits=Limits(max_seconds=None), db="other.sqlite3")
    assert await unlimited.query("limits:busy_for", {"seconds": 0.05}) == 0.05


async def test_time_sleep_is_refused_in_mutations(make_runtime: MakeRuntime) -> None:
    rt = await make_runtime(MODULES)
    refused = r"time.sleep\(\) is not allowed in a mutation"
    with pytest.raises(BlockingCallNotAllowed, match=refused):
        await rt.mutation("limits:naps", {})


async def test_a_held_loop_is_reported_with_the_function(
    make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = await make_runtime(MODULES, limits=Limits(max_seconds=30.0))
    with caplog.at_level(logging.WARNING, logger="basalt.runtime"):
        assert await rt.query("limits:busy_for", {"seconds": 1.5}) == 1.5
    warnings = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert warnings, "no warning about the blocked loop"
    assert "limits:busy_for has blocked the server's event loop" in warnings[0]
    assert "test_time_limits.py" in warnings[0]  # where it was when sampled
