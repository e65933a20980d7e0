"""The blob store contract, run on both backends (local disk, S3 via moto)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from basalt.files import (
    BlobNotFound,
    BlobStore,
    DigestMismatch,
    InvalidBlobKey,
    LocalBlobStore,
    UploadTooLarge,
)

from .conftest import Backend

MiB = 1 << 20


def new_key() -> str:
    return str(uuid.uuid4())


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    async with await store.read(key, start, end) as reader:
        return b"".join([chunk async for chunk in reader])


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 1, 11 * MiB + 3])
async def test_put_read_roundtrip(blob_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    key = new_key()
    assert not await blob_store.exists(key)
    blob = await blob_store.put(key, chunks_of(data))
    assert (blob.key, blob.size, blob.sha256) == (key, size, hashlib.sha256(data).digest())
    assert await blob_store.exists(key)
    assert await read_all(blob_store, key) == data
    if size:
        assert (
            await read_all(blob_store, key, size // 3, size // 3 + 1000)
            == data[size // 3 : size // 3 + 1000]
        )
        assert await read_all(blob_store, key, size - 1) == data[-1:]
    assert await read_all(blob_store, key, size, size) == b""
    await blob_store.delete(key)
    assert not await blob_store.exists(key)
    await blob_store.delete(key)  # deleting twice is fine


async def test_missing_blob(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await blob_store.read(new_key())
    with pytest.raises(BlobNotFound):
        await blob_store.read(new_key(), 0, 0)


async def test_expected_digest(blob_store: BlobStore, backend: Backend) -> None:
    data = os.urandom(9 * MiB)  # more than one S3 part
    ok = new_key()
    await blob_store.put(ok, chunks_of(data), expected_sha256=hashlib.sha256(data).digest())
    bad = new_key()
    with pytest.raises(DigestMismatch):
        await blob_store.put(bad, chunks_of(data), expected_sha256=bytes(32))
    assert not await blob_store.exists(bad)
    assert [name for name in backend.contents() if ok not in name] == []


async def test_size_limit(blob_store: BlobStore, backend: Backend) -> None:
    key = new_key()
    with pytest.raises(UploadTooLarge):
        await blob_store.put(key, chunks_of(os.urandom(10 * MiB)), max_size=9 * MiB)
    assert backend.contents() == []
    exact = await blob_store.put(key, chunks_of(b"x" * 1000), max_size=1000)
    assert exact.size == 1000


@pytest.mark.parametrize("fail_after", [0, 2 * MiB, 17 * MiB])
async def test_failing_source_leaves_nothing(
    blob_store: BlobStore, backend: Backend, fail_after: int
) -> None:
    async def source() -> AsyncIterator[bytes]:
        sent = 0
        while sent < fail_after:
            yield os.urandom(MiB)
            sent += MiB
        raise ConnectionResetError("client went away")

    key = new_key()
    with pytest.raises(ConnectionResetError):
        await blob_store.put(key, source())
    assert not await blob_store.exists(key)
    assert backend.contents() == []


async def test_cancelled_put_leaves_nothing(blob_store: BlobStore, backend: Backend) -> None:
    started = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield os.urandom(MiB)
        started.set()
        await asyncio.sleep(3600)
        yield b""

    key = new_key()
    task = asyncio.create_task(blob_store.put(key, source()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.contents() == []


async def test_keys_are_validated(blob_store: BlobStore) -> None:
    for key in [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "",
        "00000000-0000-0000-0000-00000000000G",
        "00000000-0000-0000-0000-000000000000/x",
        "00000000-0000-0000-0000-000000000000\x00",
        "A0000000-0000-0000-0000-000000000000",
        "00000000000000000000000000000000",
        " 00000000-0000-0000-0000-000000000000",
    ]:
        with pytest.raises(InvalidBlobKey):
            await blob_store.put(key, chunks_of(b"x"))
        with pytest.raises(InvalidBlobKey):
            await blob_store.read(key)
        with pytest.raises(InvalidBlobKey):
            await blob_store.exists(key)
        with pytest.raises(InvalidBlobKey):
            await blob_store.delete(key)


async def test_reader_closes_early(blob_store: BlobStore) -> None:
    key = new_key()
    await blob_store.put(key, chunks_of(os.urandom(5 * MiB)))
    reader = await blob_store.read(key)
    first = await reader.__anext__()
    assert first
    await reader.aclose()
    await reader.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await reader.__anext__()


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_s3_object_names_use_the_prefix(blob_store: BlobStore, backend: Backend) -> None:
    key = new_key()
    await blob_store.put(key, chunks_of(b"named"))
    assert backend.contents() == [f"app/files/{key}"]


async def test_local_layout_and_stale_temp_files(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "blobs")
    store = LocalBlobStore(root)
    await store.open()
    key = new_key()
    await store.put(key, chunks_of(b"on disk"))
    assert (store.root / key[:2] / key).read_bytes() == b"on disk"
    stale = store.root / ".tmp" / "left-over.part"
    fresh = store.root / ".tmp" / "in-progress.part"
    stale.write_bytes(b"crash")
    fresh.write_bytes(b"busy")
    os.utime(stale, (0, 0))
    await store.close()
    await store.open()  # reopening removes .part files older than a day only
    assert not stale.exists() and fresh.exists()
    await store.close()


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_s3_missing_bucket_is_reported_at_open(backend: Backend, moto_url: str) -> None:
    from basalt.files import FileStorageError
    from basalt.files.s3 import S3BlobStore

    from .conftest import S3_CREDENTIALS

    store = S3BlobStore("no-such-bucket", endpoint_url=moto_url, **S3_CREDENTIALS)
    with pytest.raises(FileStorageError, match="no-such-bucket") as caught:
        await store.open()
    assert caught.value.code == "BlobStoreUnavailable"
    await store.close()


async def test_keys_lists_the_complete_blobs_older_than_asked(blob_store: BlobStore) -> None:
    stored = {new_key() for _ in range(3)}
    for key in stored:
        await blob_store.put(key, chunks_of(b"data"))
    assert {key async for key in blob_store.keys(-60)} >= stored
    assert stored.isdisjoint({key async for key in blob_store.keys(3600)})  # too young
    for key in stored:
        await blob_store.delete(key)
    assert stored.isdisjoint({key async for key in blob_store.keys(-60)})
