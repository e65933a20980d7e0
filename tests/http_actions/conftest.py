"""Fixtures of the HTTP action tests: the site ASGI app served by a real uvicorn
on 127.0.0.1, over a real runtime on the database ``BASALT_TEST_BACKEND``
selects (a temporary SQLite file, or a PostgreSQL schema dropped at the end).

``site`` serves in the test's own event loop, so handlers and tests can share
``asyncio.Event`` objects; ``threaded_site`` serves from a thread (its own
loop) for the synchronous httpx client. ``server_env`` comes from
``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import uvicorn

from basalt.runtime import App, Runtime
from basalt.server.auth import Authenticator
from basalt.server.site import SiteApp
from basalt.testing.engines import drop_test_databases, drop_test_databases_sync, engine_for_tests


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handling (the test runner owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: SiteApp, http: str, lifespan: Literal["on", "off"]) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
        ws="none",
        http=http,
        timeout_graceful_shutdown=5,
    )


def _socket() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Site:
    url: str
    runtime: Runtime
    app: SiteApp


MakeSite = Callable[..., Awaitable[Site]]
_counter = itertools.count()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[MakeSite]:
    """``await site({"http": {"http": router}, "notes": {...}})``: a served app
    (``dev=True``: as ``basalt dev`` serves it, failures told in full)."""
    running: list[tuple[QuietServer, asyncio.Task[None], Runtime, socket.socket]] = []

    async def make(
        modules: dict[str, Any],
        *,
        authenticator: Authenticator | None = None,
        http: str = "httptools",
        dev: bool = False,
    ) -> Site:
        runtime = Runtime(
            App.from_modules(modules), engine_for_tests(tmp_path, f"db{next(_counter)}")
        )
        await runtime.start()
        app = SiteApp(runtime, authenticator, dev=dev)
        sock, url = _socket()
        server = QuietServer(_config(app, http, "off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task, runtime, sock))
        deadline = time.monotonic() + 15
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.005)
        return Site(url, runtime, app)

    try:
        yield make
    finally:
        try:
            for server, task, runtime, sock in running:
                server.should_exit = True
                await asyncio.wait_for(task, 15)
                await runtime.stop()
                sock.close()
        finally:
            await drop_test_databases(tmp_path)


@pytest.fixture
def threaded_site(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], str]]:
    """``threaded_site(modules)`` → URL of an app served by uvicorn in a thread."""
    running: list[tuple[QuietServer, threading.Thread, socket.socket]] = []

    def make(modules: dict[str, Any]) -> str:
        runtime = Runtime(
            App.from_modules(modules), engine_for_tests(tmp_path, f"db{next(_counter)}")
        )
        sock, url = _socket()
        server = QuietServer(_config(SiteApp(runtime), "httptools", "on"))
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="site", daemon=True
        )
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)
        return url

    try:
        yield make
    finally:
        for server, thread, sock in running:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()
        drop_test_databases_sync(tmp_path)
