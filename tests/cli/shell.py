"""Running command lines as a user types them: through ``bash``, with a
``basalt`` command on the PATH that runs this checkout.

Used by the tests of ``basalt init``'s hint and of the commands the README
and the examples' READMEs give.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from basalt.server.config import SERVER_FILE


def basalt_on_path(bin_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``basalt`` and ``python`` commands first on its PATH, as
    an activated ``.venv`` has them.

    ``python`` is this interpreter; ``basalt`` runs this checkout's ``basalt``
    with it, and a ``basalt dev`` or ``basalt serve`` it starts listens on a
    free port (``--port 0``, its URL in ``<data>/server.json``) instead of
    3210, so that tests can run side by side.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    shims = {
        "basalt": 'case "$1" in dev|serve) set -- "$@" --port 0;; esac\n'
        f'exec {python} -m basalt.cli.main "$@"\n',
        "python": f'exec {python} "$@"\n',
    }
    for name, body in shims.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}


def fake_venv(root: Path, env: dict[str, str]) -> None:
    """``root/.venv/bin/activate``, as ``make install`` makes it, putting
    ``basalt`` (see :func:`basalt_on_path`) on the PATH."""
    bin_dir = root / ".venv" / "bin"
    path = basalt_on_path(bin_dir, env)["PATH"]
    (bin_dir / "activate").write_text(f"PATH={shlex.quote(path)}\nexport PATH\n")


class ShellServer:
    """A command line that ends in a running ``basalt dev`` or ``serve``
    whose data folder is ``data``."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], data: Path) -> None:
        self.command, self.cwd, self.env, self.data = command, cwd, env, data
        self.log = cwd / f"shell-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.server_pid = 0

    def start(self) -> ShellServer:
        """Run the command line and wait until the server answers."""
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "-c", self.command],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = _wait_until(self._ready, 30.0, f"`{self.command}` to serve from {self.data}")
        return self

    def _ready(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"`{self.command}` exited:\n{self.output()}")
        try:
            info = json.loads((self.data / SERVER_FILE).read_text())
            url, self.server_pid = str(info["url"]), int(info["pid"])
            return url if httpx.get(url + "/health", timeout=2.0).status_code == 200 else None
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the whole command line, then wait until the server has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                message = f"`{self.command}` ignored SIGTERM:\n{self.output()}"
                raise AssertionError(message) from None
        if self.server_pid:
            _wait_until(lambda: not _alive(self.server_pid), 15.0, "the server to exit")


def _wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
