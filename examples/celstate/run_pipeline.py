"""Run one Celstate job end to end against a running Basalt.

Start the backend first (``cd examples/celstate && basalt dev``), then::

    python examples/celstate/run_pipeline.py "a red gem" --name gem

The job goes through Celstate's whole path, through the official ``convex``
Python client (``ConvexHttpClient``): the job record is created and updated
(``jobs:upsert``) as the job moves on; its images are drawn into
``jobs/<job id>/`` beside this script; every output (image, mask, debug image,
trace) is uploaded (``assets:generateUploadUrl``, then a POST of its bytes,
which answers the ``storageId``), recorded (``assets:save``) and downloaded
back to check that its sha256 is the local file's. Finally the public view
(``jobs:getPublic``) is read and checked: the job completed, no internal field
is shown, and its component maps each public file name to a URL that serves
the local file's bytes. The view is printed as JSON.

Failure is strict: if anything cannot be persisted or does not check out, the
job is marked failed (locally, and in the backend if it still answers), the
error is printed and the exit status is 1.

``--url`` (default: ``$CONVEX_URL``, else ``http://127.0.0.1:3210``) names the
backend; job folders go in ``ROOT/jobs/`` (``--root``, default: beside this
script).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests
from pipeline.convex_sync import ConvexSync, SyncError
from pipeline.job_store import JobStore
from pipeline.orchestrator import Orchestrator

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "http://127.0.0.1:3210"
#: the files the public view shows (debug images and traces stay internal)
PUBLIC_FILES = ("{name}.png", "{name}_mask.png")


class CheckFailed(Exception):
    """The public view of a finished job is not what Celstate's contract says."""


def check_public_view(view: Any, job: dict[str, Any], outputs: Path) -> None:
    """The public view shows the completed job, nothing internal, and URLs
    that serve exactly the local output files."""
    if not isinstance(view, dict) or view.get("status") != "completed":
        raise CheckFailed(f"jobs:getPublic does not show the job completed: {view!r}")
    if "internalAssetType" in view or job["type"] in json.dumps(view):
        raise CheckFailed("jobs:getPublic shows the internal asset type")
    assets = (view.get("component") or {}).get("assets") or {}
    expected = {pattern.format(name=job["name"]) for pattern in PUBLIC_FILES}
    if set(assets) != expected:
        raise CheckFailed(f"public assets are {sorted(assets)}, expected {sorted(expected)}")
    for filename, url in assets.items():
        if not isinstance(url, str):
            raise CheckFailed(f"{filename} has no URL in the public view")
        served = requests.get(url, timeout=30)
        if served.status_code != 200:
            raise CheckFailed(f"{filename}: GET {url} answered {served.status_code}")
        local = (outputs / filename).read_bytes()
        if hashlib.sha256(served.content).digest() != hashlib.sha256(local).digest():
            raise CheckFailed(f"{filename}: the served bytes differ from the local file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one Celstate job end to end.")
    parser.add_argument("prompt", help="what to generate")
    parser.add_argument("--name", default="asset", help="the component's name (%(default)s)")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels (%(default)s)")
    parser.add_argument(
        "--url",
        default=os.environ.get("CONVEX_URL") or DEFAULT_URL,
        help="the backend ($CONVEX_URL, else %(default)s)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=HERE,
        help="job folders go in ROOT/jobs/ (default: beside this script)",
    )
    args = parser.parse_args(argv)

    store = JobStore(args.root, ConvexSync(args.url))
    try:
        job = store.create_job(args.prompt, name=args.name, render_size_hint=args.size)
    except SyncError as exc:
        print(f"error: the job could not be created at {args.url}: {exc}", file=sys.stderr)
        return 1
    folder = store.folder(job["id"])
    print(f"job {job['id']}: running, files in {folder}", file=sys.stderr)
    try:
        Orchestrator(store).run(job)
        view = store.sync.public_job(job["id"])
        check_public_view(view, job, folder / "outputs")
    except (SyncError, CheckFailed) as exc:
        store.fail_job(job, str(exc))  # locally, and in the backend if it still answers
        print(f"error: job {job['id']} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(view, indent=2))
    print(f"job {job['id']}: completed; outputs uploaded and verified", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
