"""File storage through ``basalt serve`` and the official Python client, the way
the Celstate pipeline uses it: ``assets:generateUploadUrl`` → POST the bytes →
``{"storageId"}`` → ``assets:save`` → URLs from ``get_url`` → identical bytes.
Run on both blob backends (local disk; S3 selected by environment variables),
with a ``kill -9`` of the server in the middle."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ..server.harness import BasaltProcess
from .conftest import S3_CREDENTIALS, s3_client

APP = Path(__file__).parent / "apps" / "assets"


@pytest.fixture
def processes(server_env: dict[str, str]) -> Iterator[Callable[..., BasaltProcess]]:
    """``processes(app, data, env)``: a ``basalt serve`` on the test's database
    (stopped at the end, before the database is dropped)."""
    started: list[BasaltProcess] = []

    def make(app: Path, data: Path, env: dict[str, str]) -> BasaltProcess:
        process = BasaltProcess(app, data, env={**server_env, **env})
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(params=["local", "s3"])
def blob_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "local":
        return {}
    url = request.getfixturevalue("moto_url")
    bucket = f"served-{uuid.uuid4().hex[:16]}"
    client = s3_client(url)
    client.create_bucket(Bucket=bucket)
    client.close()
    return {
        "BASALT_S3_BUCKET": bucket,
        "BASALT_S3_ENDPOINT_URL": url,
        "BASALT_S3_PREFIX": "deployment",
        "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["secret_access_key"],
        "AWS_DEFAULT_REGION": S3_CREDENTIALS["region"],
    }


def test_pipeline_upload_through_basalt_serve(
    processes: Callable[..., BasaltProcess],
    blob_env: dict[str, str],
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    server = processes(app, tmp_path / "data", blob_env).start()
    client = server.client()
    upload_url = client.mutation("assets:generateUploadUrl")
    assert upload_url.startswith(f"{server.url}/api/storage/upload?token=")
    png = os.urandom(300_000)
    with httpx.Client(timeout=30) as http:
        response = http.post(upload_url, content=png, headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        storage_id = response.json()["storageId"]
        client.mutation(
            "assets:save",
            {
                "jobId": "job-1",
                "role": "output",
                "storageId": storage_id,
                "contentType": "image/png",
                "bytes": float(len(png)),
            },
        )
        [asset] = client.query("assets:list", {"jobId": "job-1"})
        digest = base64.b64encode(hashlib.sha256(png).digest()).decode()
        assert asset["sha256"] == digest
        got = http.get(asset["url"])
        assert got.status_code == 200 and got.content == png
        assert got.headers["content-type"] == "image/png"

        server.kill9()
        restarted = processes(app, tmp_path / "data", blob_env).start()
        moved = asset["url"].replace(server.url, restarted.url)
        assert http.get(moved).content == png
        reused = http.post(upload_url.replace(server.url, restarted.url), content=b"again")
        assert reused.status_code == 403
        assert reused.json()["code"] == "UploadTokenUsed"
        restarted.client().mutation("assets:remove", {"storageId": storage_id})
        assert http.get(moved).status_code == 404


def test_the_upload_limit_is_configured_in_mib(
    processes: Callable[..., BasaltProcess], tmp_path: Path
) -> None:
    """``BASALT_MAX_UPLOAD_MB`` sets the largest file a ``basalt serve`` stores."""
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    server = processes(app, tmp_path / "data", {"BASALT_MAX_UPLOAD_MB": "1"}).start()
    client = server.client()
    with httpx.Client(timeout=30) as http:
        url = client.mutation("assets:generateUploadUrl")
        over = http.post(url, content=b"x" * ((1 << 20) + 1))
        assert over.status_code == 413
        assert over.json() == {
            "code": "PayloadTooLarge",
            "message": "the file is larger than the limit of 1048576 bytes",
        }
        assert http.post(url, content=b"x" * (1 << 20)).status_code == 200
