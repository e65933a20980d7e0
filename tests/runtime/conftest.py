from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from basalt.runtime import App, Limits, ManualClock, Runtime
from basalt.schema import SchemaDefinition
from basalt.testing.engines import drop_test_databases, engine_for_tests, selected_backend

MakeRuntime = Callable[..., Any]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[MakeRuntime]:
    """Start runtimes on the backend ``BASALT_TEST_BACKEND`` selects (a temporary
    SQLite file, or a PostgreSQL schema of this test); runtimes given the same
    ``db`` share one database. All are stopped (and the schemas dropped) at the end."""
    started: list[Runtime] = []

    async def make(
        modules: dict[str, Any],
        schema: SchemaDefinition | None = None,
        *,
        limits: Limits | None = None,
        clock: ManualClock | None = None,
        db: str = "db.sqlite3",
    ) -> Runtime:
        app = App.from_modules(modules, schema=schema)
        runtime = Runtime(app, engine_for_tests(tmp_path, db), limits=limits, clock=clock)
        await runtime.start()
        started.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in started:
            await runtime.stop()
        if selected_backend() == "postgres":
            await drop_test_databases(tmp_path)
