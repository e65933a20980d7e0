"""Fixtures of the CLI tests: ``basalt`` run as a real subprocess.

The server harness is shared with ``tests/server`` (loaded by path, so it does
not depend on how the test folders are packaged).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def basalt_process() -> Iterator[Callable[..., Any]]:
    """A factory of ``basalt serve|dev`` processes, all stopped after the test."""
    started: list[Any] = []

    def make(app: Path, data: Path, **kw: Any) -> Any:
        process = BasaltProcess(app, data, **kw)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by ``basalt init``: the app in ``functions/``."""
    root = tmp_path / "proj"
    result = basalt("init", str(root))
    assert result.returncode == 0, result.stderr
    return root
