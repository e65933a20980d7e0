"""``basalt run``'s output: its result alone on stdout (JSON), what the function
prints and logs on stderr, and a reader that stops early (``| head``) ends it
quietly — in process and through a running server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Databases, basalt, harness


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(harness.APPS / "leaky", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def check_output(where: list[str], env: dict[str, str]) -> None:
    result = basalt("run", "leak:chatty", '{"text": "hi"}', *where, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "hi"  # nothing but the result
    for line in (
        "[leak:chatty] printed hi",
        "[leak:chatty] [INFO] info hi",
        "[leak:chatty] [WARN] warn hi",
        "[leak:chatty] [ERROR] error hi",
    ):
        assert line in result.stderr, result.stderr


def check_closed_pipe(where: list[str], env: dict[str, str]) -> None:
    """``basalt run … | head -c 1`` with a result much larger than a pipe holds."""
    run = subprocess.Popen(
        [sys.executable, "-m", "basalt.cli.main", "run", "leak:big", '{"count": 8000}', *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    head = subprocess.run(["head", "-c", "1"], stdin=run.stdout, capture_output=True, timeout=60)
    assert run.stdout is not None
    run.stdout.close()  # only head reads it
    _, stderr = run.communicate(timeout=60)
    assert head.stdout == b"["
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text and "BrokenPipeError" not in text, text
    assert "[leak:big] making 8000 lines" in text  # the log line still went to stderr
    assert run.returncode == 0, text


def test_run_in_process(app: Path, tmp_path: Path, databases: Databases) -> None:
    data = tmp_path / "data"
    where = ["--app", str(app), "--data", str(data)]
    databases.create(data)
    check_output(where, databases.env(data))
    check_closed_pipe(where, databases.env(data))


def test_run_through_the_server(
    app: Path, tmp_path: Path, databases: Databases, basalt_process: Callable[..., Any]
) -> None:
    data = tmp_path / "data"
    basalt_process(app, data).start()
    empty = tmp_path / "empty"
    empty.mkdir()
    where = ["--app", str(empty), "--data", str(data)]  # only the server has the app
    env = databases.env(data, BASALT_ADMIN_KEY=harness.ADMIN_KEY)  # the server's key
    check_output(where, env)
    check_closed_pipe(where, env)
