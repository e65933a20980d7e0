"""Running ``basalt serve`` / ``basalt dev`` as a subprocess for end-to-end tests.

Shared by ``tests/server``, ``tests/cli`` and ``tests/scale`` (the latter two
load this file by path).

A data folder's database is on the backend ``BASALT_TEST_BACKEND`` selects:
``DATA/basalt.sqlite3`` for SQLite, as ``basalt serve`` makes by default; for
PostgreSQL a schema named after the data folder (:func:`database_env`), so that
every process on one data folder (a server and its restart, ``basalt export``)
shares it. Drop it with :func:`drop_database` once they have stopped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from convex.http_client import ConvexHttpClient

from basalt.server.config import SQLITE_FILE
from basalt.storage.base import Persistence
from basalt.testing.engines import (
    drop_test_databases_sync,
    engine_for_tests,
    selected_backend,
    server_env,
)

APPS = Path(__file__).parent / "apps"
ADMIN_KEY = "test-admin-key|" + uuid.uuid4().hex


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def database_env(data: Path) -> dict[str, str]:
    """What a ``basalt`` process on data folder ``data`` needs in its environment
    to use that folder's test database: nothing for SQLite (the file is in the
    folder), ``BASALT_DATABASE_URL`` and ``BASALT_DATABASE_SCHEMA`` for PostgreSQL."""
    return server_env(data.parent, data.name)


def data_engine(data: Path) -> Persistence:
    """The storage engine (not yet opened) of data folder ``data``'s test
    database, for the test process itself: the one ``basalt serve --data DATA``
    uses with :func:`database_env`."""
    if selected_backend() == "sqlite":
        from basalt.storage.sqlite import SqliteEngine

        return SqliteEngine(data / SQLITE_FILE)
    return engine_for_tests(data.parent, data.name, backend="postgres")


def drop_database(data: Path) -> None:
    """Drop data folder ``data``'s PostgreSQL test database, if it has one (its
    processes must have stopped; SQLite files go with the temporary folder)."""
    if selected_backend() == "postgres":
        drop_test_databases_sync(data.parent, data.name)


def port_outside_ephemeral_range() -> int:
    """A free loopback port that the kernel never hands out as a client's source port.

    A test that restarts a server on the same port needs one: while nothing
    listens, a client reconnecting to a port inside the ephemeral range can be
    given that very port as its source port (a TCP self-connect) and hold it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            # The site origin listens on port + 1.
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no free port below the ephemeral range")


class BasaltProcess:
    """``basalt serve|dev --app APP --data DATA --port P`` in a subprocess.

    By default the server picks a free port (``--port 0``) and records its URL
    in ``DATA/server.json``; everything it prints goes to a log file (see
    :meth:`output`). Its database is the data folder's test database
    (:func:`database_env`) unless ``env`` names one with ``BASALT_DATABASE_URL``;
    :attr:`database` then says which folder's database to drop after the test.
    """

    def __init__(
        self,
        app: Path,
        data: Path,
        *,
        admin_key: str | None = ADMIN_KEY,
        command: str = "serve",
        env: dict[str, str] | None = None,
        port: int = 0,
        open_files: int | None = None,
    ) -> None:
        self.app, self.data, self.command = app, data, command
        #: the process's limit of open files (soft and hard), if not inherited
        self.open_files = open_files
        self.port = port
        self.admin_key = admin_key
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "BASALT_ADMIN_KEY",
                "BASALT_DATABASE_URL",
                "BASALT_DATABASE_SCHEMA",
                "BASALT_DURABILITY",
            )
        }
        if admin_key is not None:
            self.env["BASALT_ADMIN_KEY"] = admin_key
        #: the data folder whose PostgreSQL test database this process uses
        #: (None: SQLite, or a database given in ``env``)
        self.database: Path | None = None
        if "BASALT_DATABASE_URL" not in (env or {}):
            self.env.update(database_env(data))
            if "BASALT_DATABASE_URL" in self.env:
                self.database = data
        self.env.update(env or {})
        self.log_path = data.parent / f"{data.name}-{command}-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> BasaltProcess:
        """Start the process and wait until it serves."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> BasaltProcess:
        """Start the process without waiting for it."""
        cmd = [sys.executable, "-m", "basalt.cli.main", self.command]
        cmd += ["--app", str(self.app), "--data", str(self.data), "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=None if self.open_files is None else self._limit_open_files,
            )
        return self

    def _limit_open_files(self) -> None:
        import resource

        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def wait_ready(self, timeout: float = 30.0) -> BasaltProcess:
        """Wait until the server has written its marker and answers ``/health``."""
        self.url = wait_until(self._ready_url, timeout, f"{self.command} to answer /health")
        return self

    def _ready_url(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"basalt {self.command} exited with {self.proc.returncode}:\n{self.output()}"
            )
        try:
            info = json.loads((self.data / "server.json").read_text())
        except (OSError, ValueError):
            return None
        if info.get("pid") != self.proc.pid:
            return None
        try:
            response = httpx.get(info["url"] + "/health", timeout=2.0)
        except httpx.HTTPError:
            return None
        return str(info["url"]) if response.status_code == 200 else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 15.0, *, start: int = 0) -> str:
        """Wait until ``text`` appears in the output after offset ``start``."""
        return str(
            wait_until(
                lambda: text in self.output()[start:] and self.output(),
                timeout,
                f"{text!r} in the output of basalt {self.command}",
            )
        )

    def client(self, *, admin: bool = False) -> ConvexHttpClient:
        client = ConvexHttpClient(self.url)
        if admin:
            assert self.admin_key is not None
            client.set_admin_auth(self.admin_key)
        return client

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM); kill if that takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"basalt {self.command} ignored SIGTERM:\n{self.output()}"
            ) from None

    def kill9(self) -> None:
        """Kill the server the hard way (SIGKILL): no shutdown code runs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)


def stop_all(processes: list[BasaltProcess]) -> None:
    """Stop every process (the others too when one fails to stop), then drop
    the test databases they used."""
    failures: list[Exception] = []
    for process in processes:
        try:
            process.stop()
        except Exception as exc:
            failures.append(exc)
    try:
        for data in dict.fromkeys(p.database for p in processes if p.database is not None):
            drop_database(data)
    finally:
        if failures:
            raise failures[0]
