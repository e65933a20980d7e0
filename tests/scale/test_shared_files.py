"""Two ``basalt serve`` processes on one PostgreSQL schema and one S3-compatible
bucket: a file uploaded through one is served, byte for byte, by the other,
its single-use upload token is spent for both, and a delete through one is
seen by the other."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.files.conftest import S3_CREDENTIALS, moto_url, s3_client

from .conftest import harness

__all__ = ["moto_url"]  # the session's moto server, a fixture of tests/files

STEP = 15.0


@pytest.fixture
def s3_env(moto_url: str) -> Iterator[dict[str, str]]:
    """The S3 settings of a fresh bucket on the moto server."""
    bucket = f"shared-{uuid.uuid4().hex[:16]}"
    client = s3_client(moto_url)
    client.create_bucket(Bucket=bucket)
    try:
        yield {
            "BASALT_S3_BUCKET": bucket,
            "BASALT_S3_ENDPOINT_URL": moto_url,
            "BASALT_S3_PREFIX": "deployment",
            "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["secret_access_key"],
            "AWS_DEFAULT_REGION": S3_CREDENTIALS["region"],
        }
    finally:
        client.close()


def test_a_file_uploaded_through_one_process_is_served_by_another(
    tmp_path: Path,
    failover_app: Path,
    pg_env: dict[str, str],
    s3_env: dict[str, str],
) -> None:
    app = failover_app
    servers = [
        harness.BasaltProcess(app, tmp_path / f"data{i}", env={**pg_env, **s3_env})
        for i in range(2)
    ]
    try:
        a, b = (server.start() for server in servers)
        body = os.urandom(300_000)
        upload = a.client().mutation("files:upload_url", {})
        response = httpx.post(upload, content=body, headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        storage_id = response.json()["storageId"]

        # B knows the file (the _storage row is in the shared database) ...
        meta = b.client().query("files:metadata", {"id": storage_id})
        assert meta["size"] == len(body)
        assert meta["sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
        url = b.client().query("files:url", {"id": storage_id})
        assert url.startswith(b.url)
        # ... and serves its bytes (the blob is in the shared bucket).
        served = httpx.get(url, timeout=STEP)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert hashlib.sha256(served.content).digest() == hashlib.sha256(body).digest()

        # The upload token was spent through A: B refuses it too.
        again = httpx.post(
            upload.replace(a.url, b.url), content=b"x", headers={"Content-Type": "text/plain"}
        )
        assert again.status_code >= 400, again.text

        # Deleted through B: gone from A.
        b.client().mutation("files:delete", {"id": storage_id})
        assert a.client().query("files:url", {"id": storage_id}) is None
        assert httpx.get(url.replace(b.url, a.url), timeout=STEP).status_code == 404
    finally:
        for server in servers:
            server.stop()
