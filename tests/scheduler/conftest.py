"""Fixtures of the scheduler tests: a runtime with a :class:`Scheduler` over the
database ``BASALT_TEST_BACKEND`` selects (a temporary SQLite file, or a
PostgreSQL schema of the test, dropped at the end), usually on a ManualClock
(then jobs run when the test calls ``run_due``). ``server_env`` comes from
``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from basalt.runtime import App, Clock, ManualClock, Runtime
from basalt.runtime.services import Services
from basalt.scheduler import CronJobs, Scheduler
from basalt.testing.engines import drop_test_databases, engine_for_tests

from . import tasks

#: 2024-06-10 12:00:00 UTC, a Monday.
START_MS = 1_718_020_800_000.0


@dataclass
class Env:
    runtime: Runtime
    scheduler: Scheduler
    clock: Clock

    @property
    def manual(self) -> ManualClock:
        assert isinstance(self.clock, ManualClock)
        return self.clock

    async def jobs(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = await self.runtime.query("tasks:jobs")
        return docs

    async def job(self, job_id: str) -> dict[str, Any]:
        doc: dict[str, Any] | None = await self.runtime.query("tasks:job", {"id": job_id})
        assert doc is not None
        return doc

    async def count(self, name: str) -> int:
        n: int = await self.runtime.query("tasks:count", {"name": name})
        return n

    async def crash(self) -> None:
        """Drop the runtime the way a killed process would: storage closed, no
        scheduler shutdown (nothing is marked failed on the way out)."""
        await self.runtime.stop()


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture(autouse=True)
def _reset_tasks() -> None:
    tasks.GATES.clear()
    tasks.ENTERED.clear()


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[MakeEnv]:
    """Start a runtime + scheduler over database ``db`` of this test (runtimes
    given the same ``db`` share it); all are stopped at the end."""
    started: list[Env] = []

    async def make(
        *,
        clock: Clock | None = None,
        crons: CronJobs | None = None,
        background: bool | None = None,
        db: str = "db",
        **scheduler_options: Any,
    ) -> Env:
        app = App.from_modules({"tasks": tasks})
        app.crons = crons
        clock = clock if clock is not None else ManualClock(START_MS)
        scheduler = Scheduler(background=background, **scheduler_options)
        runtime = Runtime(
            app,
            engine_for_tests(tmp_path, db),
            clock=clock,
            services=Services(scheduler=scheduler),
        )
        await runtime.start()
        try:
            await scheduler.start(runtime)
        except BaseException:
            await runtime.stop()
            raise
        env = Env(runtime, scheduler, clock)
        started.append(env)
        return env

    try:
        yield make
    finally:
        try:
            for env in reversed(started):
                await env.scheduler.stop()
                await env.runtime.stop()
        finally:
            await drop_test_databases(tmp_path)
