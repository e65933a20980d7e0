"""Fixtures of the CLI tests: ``basalt`` run as a real subprocess.

The server harness is shared with ``tests/server`` (loaded by path, so it does
not depend on how the test folders are packaged). Every command and server of a
test keeps a data folder's data in that folder's test database on the backend
``BASALT_TEST_BACKEND`` selects (see ``harness.database_env``); the
``databases`` fixture hands out their environments and engines and drops the
PostgreSQL schemas at the end of the test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from basalt.storage.base import Persistence
from basalt.testing.engines import drop_test_databases_sync

_HARNESS = Path(__file__).resolve().parents[1] / "server" / "harness.py"
_spec = importlib.util.spec_from_file_location("_basalt_cli_test_harness", _HARNESS)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

BasaltProcess = harness.BasaltProcess
wait_until = harness.wait_until


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Basalt settings of the machine running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
    env.update(extra)
    return env


def basalt(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``basalt ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "basalt.cli.main", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Databases:
    """The data folders whose test databases a test uses, to drop at its end."""

    def __init__(self) -> None:
        self.folders: dict[Path, None] = {}

    def env(self, data: Path, **extra: str) -> dict[str, str]:
        """The environment of a ``basalt`` command on data folder ``data``: no
        Basalt settings of the machine, and the folder's test database."""
        self.folders[data] = None
        return clean_env(**{**harness.database_env(data), **extra})

    def engine(self, data: Path) -> Persistence:
        """The engine (not yet opened) of data folder ``data``'s test database."""
        self.folders[data] = None
        return harness.data_engine(data)

    def create(self, data: Path) -> None:
        """Make data folder ``data``'s database (empty), as the first ``basalt
        serve`` on it does: ``basalt run`` and ``export`` need one."""

        async def open_and_close() -> None:
            engine = self.engine(data)
            await engine.open()
            await engine.close()

        asyncio.run(open_and_close())

    def drop(self) -> None:
        for data in self.folders:
            harness.drop_database(data)


@pytest.fixture(autouse=True)
def databases(tmp_path: Path) -> Iterator[Databases]:
    """The test databases of data folders (see :class:`Databases`), dropped at
    the end of the test (after ``basalt_process`` has stopped its servers),
    with those of every data folder directly in ``tmp_path`` (which tests open
    with ``harness.data_engine``)."""
    used = Databases()
    try:
        yield used
    finally:
        try:
            used.drop()
        finally:
            drop_test_databases_sync(tmp_path)


@pytest.fixture
def basalt_process(databases: Databases) -> Iterator[Callable[..., Any]]:
    """A factory of ``basalt serve|dev`` processes, all stopped after the test
    (their data folders' databases are dropped then)."""
    started: list[Any] = []

    def make(app: Path, data: Path, **kw: Any) -> Any:
        process = BasaltProcess(app, data, **kw)
        started.append(process)
        return process

    try:
        yield make
    finally:
        harness.stop_all(started)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by ``basalt init``: the app in ``functions/``."""
    root = tmp_path / "proj"
    result = basalt("init", str(root))
    assert result.returncode == 0, result.stderr
    return root
