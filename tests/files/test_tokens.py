"""Upload tokens, URL uuids, blob keys and choosing a blob store."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from basalt.files import (
    InvalidUploadToken,
    LocalBlobStore,
    MissingExtra,
    UploadTokenSigner,
    UrlKeyCodec,
    blob_key,
    blob_store_from_env,
    check_key,
    is_uuid_text,
)

SECRET = b"0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000.0

    def __call__(self) -> float:
        return self.ms


def test_token_roundtrip_and_expiry() -> None:
    clock = Clock()
    signer = UploadTokenSigner(SECRET, ttl_s=3600, now_ms=clock)
    text, token = signer.issue()
    assert len(text) == 55 and text.isascii()
    assert token.expires_at_ms == clock.ms + 3_600_000
    assert signer.verify(text) == token
    clock.ms += 3_600_000 - 1
    assert signer.verify(text) == token
    clock.ms += 1
    with pytest.raises(InvalidUploadToken) as caught:
        signer.verify(text)
    assert caught.value.code == "UploadTokenExpired"


def test_tokens_are_unique() -> None:
    signer = UploadTokenSigner(SECRET)
    issued = [signer.issue() for _ in range(200)]
    assert len({text for text, _ in issued}) == 200
    assert len({token.token_id for _, token in issued}) == 200


def test_tampered_and_foreign_tokens_are_refused() -> None:
    signer = UploadTokenSigner(SECRET)
    text, _ = signer.issue()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(text)):
        other = alphabet[(alphabet.index(text[i]) + 1) % 64]
        with pytest.raises(InvalidUploadToken) as caught:
            signer.verify(text[:i] + other + text[i + 1 :])
        assert caught.value.code == "InvalidUploadToken"
    foreign = UploadTokenSigner(b"another secret of 32 bytes......")
    with pytest.raises(InvalidUploadToken):
        foreign.verify(text)
    for junk in ["", "x", text + "=", text[:-1], text + "A", " " + text[1:], "é" * 55]:
        with pytest.raises(InvalidUploadToken):
            signer.verify(junk)


def test_signer_arguments() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UploadTokenSigner(b"short")
    with pytest.raises(ValueError):
        UploadTokenSigner(SECRET, ttl_s=0)


@given(st.binary(min_size=16, max_size=16))
def test_url_codec_is_a_permutation(internal_id: bytes) -> None:
    codec = UrlKeyCodec(SECRET)
    text = codec.encode(internal_id)
    assert is_uuid_text(text)
    assert codec.decode(text) == internal_id
    assert text != blob_key(internal_id)
    assert UrlKeyCodec(b"a different secret, 32 bytes....").decode(text) != internal_id


def test_url_codec_refuses_non_canonical_text() -> None:
    codec = UrlKeyCodec(SECRET)
    text = codec.encode(bytes(16))
    for bad in [text.upper(), text.replace("-", ""), "{" + text + "}", text + "\n", "../" + text]:
        assert codec.decode(bad) is None


def test_blob_keys() -> None:
    internal = uuid.uuid4().bytes
    key = blob_key(internal)
    assert check_key(key) == key
    assert uuid.UUID(key).bytes == internal


def test_blob_store_from_env(tmp_path: object) -> None:
    local = blob_store_from_env("/srv/data/blobs", {})
    assert isinstance(local, LocalBlobStore) and str(local.root) == "/srv/data/blobs"
    s3 = blob_store_from_env(
        "/unused",
        {
            "BASALT_S3_BUCKET": "bucket",
            "BASALT_S3_PREFIX": "/deploy/files/",
            "BASALT_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "BASALT_S3_REGION": "eu-west-1",
        },
    )
    from basalt.files.s3 import S3BlobStore

    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "bucket",
        "deploy/files/",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert s3.addressing_style == "path"
    assert s3.object_name("00000000-0000-0000-0000-000000000000").startswith("deploy/files/")


async def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from basalt.files.s3 import S3BlobStore

    monkeypatch.setitem(sys.modules, "boto3", None)
    store = S3BlobStore("bucket", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(MissingExtra, match=r"basalt-backend\[s3\]") as caught:
        await store.open()
    assert isinstance(caught.value, ImportError)
    await store.close()


def test_importing_files_does_not_import_boto3() -> None:
    code = (
        "import sys, basalt.files, basalt.files.s3, basalt.runtime.files; "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'imported boto3'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
