"""One data folder, several processes: the data folder's lock.

On SQLite a second ``basalt serve`` on a data folder is refused before it
touches anything of the first, and ``basalt run`` / ``export`` / ``import``
never write around a live server (its subscribers would not see those writes).
On PostgreSQL servers may share a data folder, as they share the database.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from basalt.testing.engines import selected_backend

from .conftest import Databases, basalt, harness

ON_POSTGRES = selected_backend() == "postgres"

#: Prints how many messages ``messages:list`` returns, at every value the
#: official Python client's subscription yields.
SUBSCRIBER = """
import json, sys
from convex import ConvexClient

for value in ConvexClient(sys.argv[1]).subscribe("messages:list", {}):
    print(json.dumps(len(value)), flush=True)
"""


class Subscriber:
    """The official ``ConvexClient`` subscribed to ``messages:list``, in a child
    process (its blocking ``next()`` holds the GIL)."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Read values until one has ``count`` messages; fail after ``timeout`` s."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[int] = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
            if seen[-1] == count:
                return
        raise AssertionError(f"the subscription never showed {count} messages (saw {seen})")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def subscriber() -> Iterator[Callable[[str], Subscriber]]:
    made: list[Subscriber] = []

    def make(url: str) -> Subscriber:
        made.append(Subscriber(url))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


def send(where: list[str], env: dict[str, str], body: str) -> subprocess.CompletedProcess[str]:
    return basalt(
        "run", "messages:send", json.dumps({"author": "ada", "body": body}), *where, env=env
    )


@pytest.mark.skipif(ON_POSTGRES, reason="servers on PostgreSQL may share a data folder")
def test_a_second_server_on_a_sqlite_data_folder_is_refused(
    project: Path,
    basalt_process: Callable[..., Any],
    databases: Databases,
    subscriber: Callable[[str], Subscriber],
) -> None:
    app, data = project / "functions", project / ".basalt"
    where = ["--app", str(app), "--data", str(data)]
    # `basalt run` calls the server with its key, from where the server has it.
    env = databases.env(data, BASALT_ADMIN_KEY=harness.ADMIN_KEY)
    first = basalt_process(app, data).start()
    marker = data / "server.json"
    before = (marker.read_bytes(), marker.stat().st_mtime_ns)
    sub = subscriber(first.url)
    sub.wait_for(0)

    for command in ("serve", "dev"):
        second = basalt(command, *where, "--port", "0", env=env, timeout=30)
        assert second.returncode != 0
        message = second.stderr
        assert f"the data folder {data} is in use by basalt serve" in message, message
        assert f"pid {first.pid}" in message and first.url in message
        assert "--data" in message and "Traceback" not in message
    # Nothing of the first was touched: its marker, its service, its subscribers.
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before
    result = send(where, env, "through the live server")
    assert result.returncode == 0, result.stderr
    sub.wait_for(1)
    assert first.client().query("messages:list", {})[0]["body"] == "through the live server"


@pytest.mark.skipif(not ON_POSTGRES, reason="only servers on PostgreSQL share a data folder")
def test_servers_on_postgresql_may_share_a_data_folder(
    project: Path,
    basalt_process: Callable[..., Any],
    databases: Databases,
    subscriber: Callable[[str], Subscriber],
) -> None:
    app, data = project / "functions", project / ".basalt"
    where = ["--app", str(app), "--data", str(data)]
    # `basalt run` calls the server with its key, from where the server has it.
    env = databases.env(data, BASALT_ADMIN_KEY=harness.ADMIN_KEY)
    first = basalt_process(app, data).start()
    marker = data / "server.json"
    before = (marker.read_bytes(), marker.stat().st_mtime_ns)
    sub = subscriber(first.url)
    sub.wait_for(0)

    second = basalt_process(app, data).launch()
    second.wait_for_output("Basalt serving")
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before  # first's marker kept
    assert second.stop() == 0
    assert (marker.read_bytes(), marker.stat().st_mtime_ns) == before  # and not removed
    result = send(where, env, "through the first server")
    assert result.returncode == 0, result.stderr
    sub.wait_for(1)


def test_nothing_writes_around_a_server_that_left_no_marker(
    project: Path,
    basalt_process: Callable[..., Any],
    databases: Databases,
    subscriber: Callable[[str], Subscriber],
    tmp_path: Path,
) -> None:
    """``server.json`` gone (deleted by hand, or not yet written): the lock
    still says a server uses the folder."""
    app, data = project / "functions", project / ".basalt"
    where = ["--app", str(app), "--data", str(data)]
    env = databases.env(data)
    first = basalt_process(app, data).start()
    sub = subscriber(first.url)
    sub.wait_for(0)
    (data / "server.json").unlink()

    result = send(where, env, "in process")
    if ON_POSTGRES:
        # In process beside PostgreSQL servers is safe: its commit reaches them.
        assert result.returncode == 0, result.stderr
        sub.wait_for(1)
    else:
        assert result.returncode != 0
        assert f"in use by basalt serve (pid {first.pid})" in result.stderr, result.stderr
        assert "--url" in result.stderr
        assert first.client().query("messages:list", {}) == []
    snapshot = tmp_path / "snapshot.zip"
    export = basalt("export", "--data", str(data), "-o", str(snapshot), env=env)
    assert export.returncode != 0
    assert f"pid {first.pid}" in export.stderr and "--force" in export.stderr
    assert not snapshot.exists()

    # kill -9 leaves no lock behind: the folder is free again.
    first.kill9()
    result = send(where, env, "after the server")
    assert result.returncode == 0, result.stderr
    again = basalt_process(app, data).start()
    assert again.pid != first.pid and os.path.exists(data / "server.json")
