"""examples/quickstart/README.md as a new user follows it: its command, from
(a copy of) the repository's root, then its Python client call and
`basalt run` against the server that command started."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from basalt.testing.engines import drop_test_databases_sync, server_env

from ..cli.shell import ShellServer, basalt_on_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart"
README = (EXAMPLE / "README.md").read_text()


def test_the_quickstart_readme_runs_as_written(tmp_path: Path) -> None:
    [command] = re.findall(r"```sh\n(.*?)```", README, re.S)
    [client_call] = re.findall(r"```python\n(.*?)```", README, re.S)
    example = tmp_path / "examples" / "quickstart"
    shutil.copytree(EXAMPLE, example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASALT_")}
    env = basalt_on_path(tmp_path / "bin", {**env, **server_env(tmp_path, "quickstart")})
    server = ShellServer(command, tmp_path, env, example / ".basalt")
    try:
        server.start()
        assert "http://127.0.0.1:3210" in client_call
        script = client_call.replace("http://127.0.0.1:3210", server.url)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["1.0", "['hello']", "EMPTY"]

        [run] = re.findall(r"`(basalt run [^`]+)` in `examples/quickstart/`", README)
        listed = subprocess.run(
            ["bash", "-c", run], cwd=example, env=env, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        [message] = json.loads(listed.stdout)
        assert (message["body"], message["likes"]) == ("hello", 1.0)
    finally:
        try:
            server.stop()
        finally:
            drop_test_databases_sync(tmp_path)
