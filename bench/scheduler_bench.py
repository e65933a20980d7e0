#!/usr/bin/env python
"""Scheduler throughput: scheduled mutations executed per second, against the
same mutations called directly, measured in the same run.

Rows (each a fresh SQLite database in a temporary folder; rounds interleaved,
medians reported):

1. ``direct``: ``await runtime.mutation("bench:add", {"n": i})`` N times in a
   loop, one after another: the baseline (the scheduler also runs mutation jobs
   one after another).
2. ``scheduled, run_due``: N jobs ``run_after(0, "bench:add", ...)`` are
   scheduled first (in mutations of 1,000), then timed: one
   ``scheduler.run_due()`` executes them all. Each job is the same mutation
   plus the scheduler's work: reading the due page, a pre-check read, and the
   job's ``success`` record written in the mutation's own transaction.
3. ``scheduled, push loop``: the background loop on the real clock; timed from
   the commit of the mutations that schedule the N jobs (due now) until the
   last one has succeeded. The loop is woken by the commits, never by a timer.

The ratio of each scheduled row to the direct row is printed; it is the number
to compare across runs and machines. At the end every job is checked to be
``success`` and every ``add`` to have been applied exactly once.

Usage::

    .venv/bin/python bench/scheduler_bench.py [--jobs 2000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from basalt import internal_mutation
from basalt.runtime import App, Clock, Runtime
from basalt.runtime.services import Services
from basalt.scheduler import Scheduler
from basalt.storage.sqlite import SqliteEngine

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_TMP_ROOT = BENCH_DIR / ".tmp"
BATCH = 1000


@internal_mutation
async def add(ctx: Any, n: int) -> None:
    await ctx.db.insert("items", {"n": n, "body": "a scheduled mutation's document"})


BENCH_APP = {"add": add}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def open_runtime(path: Path, *, background: bool) -> tuple[Runtime, Scheduler]:
    scheduler = Scheduler(background=background)
    app = App.from_modules({"bench": BENCH_APP})
    runtime = Runtime(
        app, SqliteEngine(path), clock=Clock(), services=Services(scheduler=scheduler)
    )
    await runtime.start()
    await scheduler.start(runtime)
    return runtime, scheduler


async def close(runtime: Runtime, scheduler: Scheduler) -> None:
    await scheduler.stop()
    await runtime.stop()


async def schedule_all(runtime: Runtime, jobs: int) -> None:
    for start in range(0, jobs, BATCH):

        async def schedule(ctx: Any, start: int = start) -> None:
            for i in range(start, min(start + BATCH, jobs)):
                await ctx.scheduler.run_after(0, "bench:add", {"n": i})

        await runtime.run_handler(schedule)


async def check(runtime: Runtime, jobs: int) -> None:
    """Every job succeeded and every add was applied exactly once."""

    async def read(ctx: Any) -> list[Any]:
        states = [j["state"]["kind"] async for j in ctx.db.system.query("_scheduled_functions")]
        ns = [d["n"] async for d in ctx.db.query("items")]
        return [states, ns]

    states, ns = await runtime.run_handler(read)
    if states != ["success"] * jobs or sorted(ns) != list(range(jobs)):
        raise SystemExit(
            f"check failed: {len(states)} jobs ({set(states)}), {len(ns)} documents, "
            f"{len(set(ns))} distinct"
        )


async def direct(path: Path, jobs: int) -> float:
    runtime, scheduler = await open_runtime(path, background=False)
    try:
        started = time.perf_counter()
        for i in range(jobs):
            await runtime.mutation("bench:add", {"n": i})
        elapsed = time.perf_counter() - started
    finally:
        await close(runtime, scheduler)
    return jobs / elapsed


async def run_due(path: Path, jobs: int) -> float:
    runtime, scheduler = await open_runtime(path, background=False)
    try:
        await schedule_all(runtime, jobs)
        started = time.perf_counter()
        ran = await scheduler.run_due(limit=jobs)
        elapsed = time.perf_counter() - started
        if ran != jobs:
            raise SystemExit(f"run_due ran {ran} jobs, expected {jobs}")
        await check(runtime, jobs)
    finally:
        await close(runtime, scheduler)
    return jobs / elapsed


async def push_loop(path: Path, jobs: int) -> float:
    runtime, scheduler = await open_runtime(path, background=True)
    try:
        # Scheduled in one transaction so the clock starts at one commit.
        async def schedule(ctx: Any) -> None:
            for i in range(jobs):
                await ctx.scheduler.run_after(0, "bench:add", {"n": i})

        await runtime.run_handler(schedule)
        started = time.perf_counter()
        while scheduler.stats.succeeded < jobs:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        await check(runtime, jobs)
    finally:
        await close(runtime, scheduler)
    return jobs / elapsed


ROWS: dict[str, Callable[[Path, int], Awaitable[float]]] = {
    "direct": direct,
    "scheduled, run_due": run_due,
    "scheduled, push loop": push_loop,
}


async def main_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {name: [] for name in ROWS}
    ratios: dict[str, list[float]] = {name: [] for name in ROWS if name != "direct"}
    for round_ in range(args.rounds):
        baseline = 0.0
        for name, row in ROWS.items():
            path = tmp / f"r{round_}-{name.replace(' ', '').replace(',', '-')}.sqlite3"
            rate = await row(path, args.jobs)
            rates[name].append(rate)
            if name == "direct":
                baseline = rate
            else:
                ratios[name].append(rate / baseline)
            say(f"  round {round_ + 1}: {name:<22} {rate:9,.0f} /s")
    return {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "rates": {name: statistics.median(values) for name, values in rates.items()},
        "ratios": {name: statistics.median(values) for name, values in ratios.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--tmp-root", type=Path, default=DEFAULT_TMP_ROOT)
    args = parser.parse_args()
    args.tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="scheduler-bench-", dir=args.tmp_root))
    say(f"scheduler bench: {args.jobs} jobs, {args.rounds} rounds, in {tmp}")
    try:
        result = asyncio.run(main_async(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rates, ratios = result["rates"], result["ratios"]
    print(f"scheduled mutations executed per second ({args.jobs} jobs, median of {args.rounds})")
    print(f"  {'direct mutations (baseline)':<32} {rates['direct']:9,.0f} /s")
    for name, ratio in ratios.items():
        print(f"  {name:<32} {rates[name]:9,.0f} /s   ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
