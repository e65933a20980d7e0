"""The storage contract runs on both engines in every test run: the ``engine``
fixture is parametrized over SQLite and PostgreSQL (which fails under CI and is
skipped with the reason elsewhere when PostgreSQL is unreachable)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from basalt.storage.base import Persistence
from basalt.testing.engines import BACKENDS, Backend, drop_test_databases, engine_for_tests

OpenEngine = Callable[..., Coroutine[Any, Any, Persistence]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.param
    return value


@pytest.fixture
async def open_engine(backend: Backend, tmp_path: Path) -> AsyncIterator[OpenEngine]:
    """Open engines on this test's databases (the same name: the same database,
    as two processes would see it); all are closed and dropped at the end."""
    opened: list[Persistence] = []

    async def open_(name: str = "db") -> Persistence:
        engine = engine_for_tests(tmp_path, name, backend=backend)
        await engine.open()
        opened.append(engine)
        return engine

    try:
        yield open_
    finally:
        for engine in opened:
            await engine.close()
        if backend == "postgres":
            await drop_test_databases(tmp_path)


@pytest.fixture
async def engine(open_engine: OpenEngine) -> Persistence:
    return await open_engine()
