"""examples/celstate/run_pipeline.py as its README runs it: the backend with
`basalt dev` in the example's folder, then the script from the repository's
root (here a copy of it), against the server that command started (the
script's `CONVEX_URL`), on the backend ``BASALT_TEST_BACKEND`` selects."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from convex.http_client import ConvexHttpClient

from basalt.testing.engines import drop_test_databases_sync, server_env

from ..cli.shell import ShellServer, basalt_on_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "celstate"
README = (EXAMPLE / "README.md").read_text()
BACKEND, JOB = re.findall(r"```sh\n(.*?)```", README, re.S)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's root holding the example (as committed)."""
    shutil.copytree(
        EXAMPLE,
        tmp_path / "examples" / "celstate",
        ignore=shutil.ignore_patterns(".basalt", "jobs", "__pycache__"),
    )
    return tmp_path


@pytest.fixture
def shell_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASALT_", "CONVEX_"))}
    try:
        yield basalt_on_path(tmp_path / "bin", {**env, **server_env(tmp_path, "celstate")})
    finally:
        drop_test_databases_sync(tmp_path)


def run_job(checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", JOB], cwd=checkout, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_script_runs_a_job_end_to_end(checkout: Path, shell_env: dict[str, str]) -> None:
    example = checkout / "examples" / "celstate"
    server = ShellServer(BACKEND, checkout, shell_env, example / ".basalt")
    try:
        server.start()
        result = run_job(checkout, {**shell_env, "CONVEX_URL": server.url})
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr

        # Local artifacts, in Celstate's layout.
        [folder] = (example / "jobs").iterdir()
        local = json.loads((folder / "job.json").read_text())
        assert (local["status"], local["prompt"], local["name"]) == (
            "completed",
            "a red gem",
            "gem",
        )
        for relative in ("studio/white.png", "studio/black.png", "outputs/gem.png",
                         "outputs/gem_mask.png", "outputs/gem_debug.png",
                         "trace/trace.json"):  # fmt: skip
            assert (folder / relative).is_file(), relative

        # The public view the script printed: URLs serving the local bytes.
        view = json.loads(result.stdout)
        assert (view["jobId"], view["status"], view["error"]) == (folder.name, "completed", None)
        assert "internalAssetType" not in view
        assets = view["component"]["assets"]
        assert set(assets) == {"gem.png", "gem_mask.png"}
        for filename, url in assets.items():
            served = requests.get(url, timeout=10)
            assert served.headers["Content-Type"] == "image/png"
            assert sha256(served.content) == sha256((folder / "outputs" / filename).read_bytes())

        # The backend's record (as an admin) and the internal files, stored too.
        admin = ConvexHttpClient(server.url)
        admin.set_admin_auth((example / ".basalt" / "admin_key").read_text().strip())
        record = admin.query("jobs:getInternal", {"jobId": folder.name})
        assert (record["status"], record["internalAssetType"]) == ("completed", "sprite")
        for filename, sub in (("gem_debug.png", "outputs"), ("trace.json", "trace")):
            url = admin.query("assets:urlOf", {"jobId": folder.name, "filename": filename})
            served = requests.get(url, timeout=10).content
            assert sha256(served) == sha256((folder / sub / filename).read_bytes())
    finally:
        server.stop()


def test_the_script_fails_the_job_when_the_backend_is_unreachable(
    checkout: Path, shell_env: dict[str, str]
) -> None:
    # Nothing listens on port 9.
    result = run_job(checkout, {**shell_env, "CONVEX_URL": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert result.stderr.startswith("error: the job could not be created at http://127.0.0.1:9")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
