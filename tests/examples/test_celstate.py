"""The Celstate seed system's verification plan, against a running `basalt serve`.

Celstate's Python pipeline persists jobs and their image assets through the
official `convex` client; its plan (phase 6) asks that the job record exists
with matching fields, that assets uploaded resolve to URLs whose bytes hash
like the local files, that the public component maps file names to URLs and
never shows the internal asset type, that `error` and `retryAfter` behave like
the JobStore, that local artifacts stay on disk, and that a job whose outputs
cannot be persisted fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from convex.http_client import ConvexHttpClient

from basalt.testing.engines import drop_test_databases_sync, server_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "celstate"

_spec = importlib.util.spec_from_file_location(
    "_celstate_test_harness", ROOT / "tests" / "server" / "harness.py"
)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

sys.path.insert(0, str(EXAMPLE))
from pipeline.convex_sync import ConvexSync, SyncError  # noqa: E402
from pipeline.job_store import JobStore  # noqa: E402
from pipeline.orchestrator import Orchestrator  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``basalt serve`` of the example, on the backend ``BASALT_TEST_BACKEND``
    selects (with PostgreSQL, a schema of its own, dropped at the end)."""
    data = tmp_path_factory.mktemp("celstate-data")
    process = harness.BasaltProcess(EXAMPLE / "functions", data, env=server_env(data))
    try:
        process.start()
        yield process
    finally:
        try:
            process.stop()
        finally:
            drop_test_databases_sync(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_job_runs_and_its_outputs_are_persisted(server: Any, tmp_path: Path) -> None:
    sync = ConvexSync(server.url)
    store = JobStore(tmp_path, sync)
    job = store.create_job(
        "a red gem", name="gem", style_context="pixel", render_size_hint=32, type="sprite"
    )
    Orchestrator(store).run(job)

    # 1. The job record exists with matching fields (read as an admin: it is internal).
    admin = ConvexHttpClient(server.url)
    admin.set_admin_auth(server.admin_key)
    record = admin.query("jobs:getInternal", {"jobId": job["id"]})
    assert record["status"] == "completed" and record["progressStage"] == "done"
    assert record["prompt"] == "a red gem" and record["styleContext"] == "pixel"
    assert record["internalAssetType"] == "sprite" and record["renderSizeHint"] == 32.0
    assert record["component"]["name"] == "gem"

    # 2. The public view: URLs instead of placeholders, nothing internal.
    public = sync.public_job(job["id"])
    assert "internalAssetType" not in public and "sprite" not in str(public)
    assets = public["component"]["assets"]
    assert set(assets) == {"gem.png", "gem_mask.png"}  # debug image and trace stay internal
    outputs = store.folder(job["id"]) / "outputs"
    for filename, url in assets.items():
        assert url.startswith(server.url + "/api/storage/")
        served = requests.get(url, timeout=10)
        assert served.status_code == 200
        assert served.headers["Content-Type"] == "image/png"
        assert sha256(served.content) == sha256((outputs / filename).read_bytes())

    # 3. Local artifacts are still there for the studio and debugging.
    folder = store.folder(job["id"])
    for relative in ("job.json", "studio/white.png", "studio/black.png",
                     "outputs/gem.png", "outputs/gem_mask.png", "outputs/gem_debug.png",
                     "trace/trace.json"):  # fmt: skip
        assert (folder / relative).is_file(), relative


def test_error_and_retry_after_are_shown_as_the_job_store_has_them(
    server: Any, tmp_path: Path
) -> None:
    sync = ConvexSync(server.url)
    store = JobStore(tmp_path, sync)
    job = store.create_job("busy", name="busy")
    job.update(status="rate_limited", error="upstream busy", retry_after=30)
    store.save_job(job)
    public = sync.public_job(job["id"])
    assert public == {
        "jobId": job["id"],
        "status": "rate_limited",
        "retryAfter": 30.0,
        "error": "upstream busy",
        "component": None,
    }
    # Clearing them in the JobStore clears them in Convex too.
    job.update(status="queued", error=None, retry_after=None)
    store.save_job(job)
    public = sync.public_job(job["id"])
    assert public["error"] is None and public["retryAfter"] is None


def test_a_reupload_replaces_the_role_and_frees_the_old_file(server: Any, tmp_path: Path) -> None:
    sync = ConvexSync(server.url)
    store = JobStore(tmp_path, sync)
    job = store.create_job("swap", name="swap")
    path = store.folder(job["id"]) / "outputs" / "swap.png"
    path.write_bytes(b"\x89PNG first")
    first = sync.upload_asset(job["id"], path, "output", "image/png")
    old_url = sync.client.query("assets:urlOf", {"jobId": job["id"], "filename": "swap.png"})
    path.write_bytes(b"\x89PNG second version")
    second = sync.upload_asset(job["id"], path, "output", "image/png")
    assert first != second
    new_url = sync.client.query("assets:urlOf", {"jobId": job["id"], "filename": "swap.png"})
    assert requests.get(new_url, timeout=10).content == b"\x89PNG second version"
    assert requests.get(old_url, timeout=10).status_code == 404


def test_a_job_whose_outputs_cannot_be_persisted_fails(server: Any, tmp_path: Path) -> None:
    sync = ConvexSync(server.url)
    store = JobStore(tmp_path, sync)
    job = store.create_job("doomed", name="doomed")

    class BrokenUploads(ConvexSync):
        def upload_asset(self, job_id: str, path: Path, role: str, content_type: str) -> str:
            # The upload URL is used twice: the second POST is refused (single-use token).
            url = self._mutation("assets:generateUploadUrl", {})
            requests.post(url, data=b"x", timeout=10).raise_for_status()
            response = requests.post(url, data=path.read_bytes(), timeout=10)
            if response.status_code != 200:
                raise SyncError(f"uploading {path.name} failed: HTTP {response.status_code}")
            return "unreachable"

    store.sync = BrokenUploads(server.url)
    with pytest.raises(SyncError, match=r"uploading doomed\.png failed"):
        Orchestrator(store).run(job)
    assert job["status"] == "failed" and "doomed.png" in job["error"]
    public = sync.public_job(job["id"])
    assert public["status"] == "failed" and "doomed.png" in public["error"]


def test_strict_failure_when_the_backend_is_gone(tmp_path: Path) -> None:
    # Nothing listens on this port: the very first persist fails, and so does the job.
    sync = ConvexSync("http://127.0.0.1:9", timeout=2)  # nothing listens on port 9
    store = JobStore(tmp_path, sync)
    with pytest.raises(SyncError):
        store.create_job("offline", name="offline")
