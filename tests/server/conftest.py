"""End-to-end fixtures: a real ``basalt serve`` subprocess and real HTTP clients.

One server (session scope) serves the app in ``apps/basic`` for the HTTP API
tests; tests that need their own servers (durability, admin key) start them
with :class:`BasaltProcess`. Every test keeps to its own data (a unique tag),
so the tests do not depend on their order. Servers keep their data on the
backend ``BASALT_TEST_BACKEND`` selects (see :mod:`.harness`); PostgreSQL
schemas are dropped once the servers on them have stopped.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from convex.http_client import ConvexHttpClient

from .harness import APPS, BasaltProcess, stop_all


@pytest.fixture
def basalt_process() -> Iterator[Callable[..., BasaltProcess]]:
    """A factory of servers that are all stopped at the end of the test."""
    started: list[BasaltProcess] = []

    def make(app: Path, data: Path, **kw: Any) -> BasaltProcess:
        process = BasaltProcess(app, data, **kw)
        started.append(process)
        return process

    try:
        yield make
    finally:
        stop_all(started)


@pytest.fixture
def basic_app(tmp_path: Path) -> Path:
    """A private copy of the test app (servers write bytecode next to it)."""
    target = tmp_path / "app"
    shutil.copytree(APPS / "basic", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasaltProcess]:
    """The shared server of the HTTP API tests."""
    root = tmp_path_factory.mktemp("server")
    app = root / "app"
    shutil.copytree(APPS / "basic", app, ignore=shutil.ignore_patterns("__pycache__"))
    process = BasaltProcess(app, root / "data")
    try:
        yield process.start()
    finally:
        stop_all([process])


@pytest.fixture
def client(server: BasaltProcess) -> ConvexHttpClient:
    return server.client()


@pytest.fixture
def admin_client(server: BasaltProcess) -> ConvexHttpClient:
    return server.client(admin=True)


@pytest.fixture
def http(server: BasaltProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as h:
        yield h


@pytest.fixture
def tag() -> str:
    """A tag no other test uses."""
    return f"t-{uuid.uuid4().hex}"
