"""Fixtures of the file-storage tests.

- ``moto_url``: a real S3-compatible server (moto in server mode) in a
  subprocess on 127.0.0.1, one per test session. If moto is not installed the
  S3 tests are skipped outside CI and fail under CI (``CI`` set).
- ``blob_store``: an opened blob store, once per backend (local disk, S3).
- ``served``: a runtime with a :class:`FileService` over that store, and
  the file routes served by a real uvicorn on 127.0.0.1 (composed here the way
  the server's app routes ``/api/storage/*``), on the database
  ``BASALT_TEST_BACKEND`` selects (dropped at the end).
- ``server_env`` (from ``tests/conftest.py``): what a ``basalt serve``
  subprocess needs in its environment to use that database too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from basalt.files import BlobStore, LocalBlobStore
from basalt.runtime import App, ManualClock, Runtime
from basalt.runtime.files import FileService
from basalt.runtime.services import Services
from basalt.server.asgi import Receive, Request, Scope, Send, cors_headers, error_response
from basalt.server.files_routes import FileRoutes
from basalt.testing.engines import (
    drop_test_databases,
    engine_for_tests,
)

from . import app as files_app_module

S3_CREDENTIALS = {
    "access_key_id": "basalt-test",
    "secret_access_key": "basalt-test-secret",
    "region": "us-east-1",
}
BACKENDS = ["local", "s3"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto S3 server running in a subprocess."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        reason = (
            "moto[server] and boto3 are not installed "
            "(pip install 'basalt-backend[s3]' 'moto[server]')"
        )
        if os.environ.get("CI"):
            pytest.fail(f"S3 tests cannot run in CI: {reason}")
        pytest.skip(reason)
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(url + "/moto-api/", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            if attempt == 2:
                raise AssertionError(f"moto did not start:\n{log_path.read_text()}")
            continue
        break
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(url: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=S3_CREDENTIALS["access_key_id"],
        aws_secret_access_key=S3_CREDENTIALS["secret_access_key"],
        region_name=S3_CREDENTIALS["region"],
    )


@dataclass
class Backend:
    """How to make stores of one kind, and how to list what they hold."""

    kind: str
    make: Callable[..., BlobStore]
    #: every object or file in the store, temporary ones included
    contents: Callable[[], list[str]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        root = tmp_path / "blobs"

        def local_contents() -> list[str]:
            if not root.exists():
                return []
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

        yield Backend("local", lambda **kw: LocalBlobStore(root, **kw), local_contents)
        return
    url = request.getfixturevalue("moto_url")
    from basalt.files.s3 import S3BlobStore

    bucket = f"basalt-{uuid.uuid4().hex[:16]}"
    client = s3_client(url)
    client.create_bucket(Bucket=bucket)

    def s3_contents() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted([o["Key"] for o in listed] + [f"upload:{u['Key']}" for u in uploads])

    def make(**kw: Any) -> BlobStore:
        return S3BlobStore(bucket, prefix="app/files", endpoint_url=url, **S3_CREDENTIALS, **kw)

    try:
        yield Backend("s3", make, s3_contents)
    finally:
        client.close()


@pytest.fixture
async def blob_store(backend: Backend) -> AsyncIterator[BlobStore]:
    store = backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handling (the test runner owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StorageApp:
    """``/api/storage/*`` served the way the deployment's app routes it."""

    def __init__(self, routes: FileRoutes) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request = Request(scope, receive)
        if request.path.startswith("/api/storage/"):
            response = await self.routes.handle(request)
        else:
            response = error_response(404, "NotFound", "no route")
        await response.send(send, cors_headers(request))


@dataclass
class Served:
    """A running deployment with file storage."""

    url: str
    runtime: Runtime
    files: FileService
    backend: Backend
    clock: ManualClock

    async def mutation(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return await self.runtime.mutation(f"files:{name}", args or {})

    async def query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return await self.runtime.query(f"files:{name}", args or {})

    async def action(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return await self.runtime.action(f"files:{name}", args or {})


MakeServed = Callable[..., Awaitable[Served]]


@pytest.fixture
async def served(backend: Backend, tmp_path: Path) -> AsyncIterator[MakeServed]:
    """``await served()``: a runtime + file service + uvicorn. Calling it again
    after ``await s.stop()``-style teardown (``restart``) reopens the same data.
    ``blobs``: a store of the test's own instead of the backend's."""
    running: list[tuple[QuietServer, asyncio.Task[None], Runtime, socket.socket]] = []

    async def stop_all() -> None:
        while running:
            server, task, runtime, sock = running.pop()
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            await runtime.stop()  # stops the file service too
            sock.close()

    async def make(
        *,
        clock: ManualClock | None = None,
        restart: bool = False,
        blobs: BlobStore | None = None,
        **service_kw: Any,
    ) -> Served:
        if restart:
            await stop_all()
        clock = clock or ManualClock()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        files = FileService(blobs or backend.make(), origin=url, **service_kw)
        runtime = Runtime(
            App.from_modules({"files": files_app_module, "schema": files_app_module.schema_module}),
            engine_for_tests(tmp_path, "db"),
            clock=clock,
            services=Services(files=files),
        )
        await runtime.start()  # starts the file service too
        server = QuietServer(
            uvicorn.Config(
                StorageApp(FileRoutes(files)),
                lifespan="off",
                log_level="warning",
                access_log=False,
                ws="none",
                http="httptools",
                timeout_graceful_shutdown=5,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task, runtime, sock))
        deadline = time.monotonic() + 15
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.005)
        return Served(url, runtime, files, backend, clock)

    try:
        yield make
    finally:
        try:
            await stop_all()
        finally:
            await drop_test_databases(tmp_path)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client
