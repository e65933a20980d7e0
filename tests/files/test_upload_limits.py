"""What an upload may take, decided before its body is read: one upload per
upload URL at a time, a bounded number at once per process, never the last
free space of the blob store's disk (checked again as the bytes arrive)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from basalt.errors import BasaltError
from basalt.files import LocalBlobStore

from .conftest import MakeServed
from .raw import PATIENCE, Answer, RawUpload

MiB = 1 << 20


async def first_answer(uploads: list[RawUpload]) -> tuple[int, Answer]:
    """The index and answer of the upload answered first; fails if none is
    answered within PATIENCE seconds (no upload has sent its whole body)."""
    pending = {asyncio.ensure_future(u.answer(timeout=PATIENCE)): i for i, u in enumerate(uploads)}
    done, others = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    for task in others:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    task = min(done, key=pending.__getitem__)
    return pending[task], task.result()


async def test_a_second_use_of_an_upload_url_is_refused_before_its_body_is_read(
    served: MakeServed,
) -> None:
    """Two uploads to one URL at once: one is refused at once, having sent
    one byte of its 200 MiB; the other goes on and stores its file."""
    s = await served()
    url = await s.mutation("generate_upload_url")
    size = 200 * MiB
    uploads = [await RawUpload(url, size).start() for _ in range(2)]
    try:
        for upload in uploads:
            await upload.send(b"x")
        refused_index, refused = await first_answer(uploads)
        assert refused.status == 403
        assert refused.json()["code"] == "UploadTokenInUse"
        assert "in use by an upload under way" in refused.json()["message"]

        winner = uploads[1 - refused_index]
        data = os.urandom(2 * MiB)
        await winner.send(data)
        await winner.send(b"y" * (size - 1 - len(data)))
        answer = await winner.answer()
        assert answer.status == 200, answer.body
        [file] = await s.query("all_files")
        assert file["_id"] == answer.json()["storageId"] and file["size"] == size
    finally:
        for upload in uploads:
            await upload.close()
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        spent = await http.post(url, content=b"z")
    assert spent.status_code == 403 and spent.json()["code"] == "UploadTokenUsed"


async def test_uploads_at_once_are_bounded(served: MakeServed) -> None:
    """With room for 2 uploads at once, one of 3 is refused at once with 503
    (without reading its body); the others complete, and then there is room."""
    s = await served(max_concurrent_uploads=2)
    size = 4 * MiB
    uploads = [
        await RawUpload(await s.mutation("generate_upload_url"), size).start() for _ in range(3)
    ]
    try:
        for upload in uploads:
            await upload.send(b"x")
        refused_index, refused = await first_answer(uploads)
        assert refused.status == 503
        assert refused.json()["code"] == "TooManyUploads"
        assert refused.headers["retry-after"] == "1"
        for i, upload in enumerate(uploads):
            if i != refused_index:
                await upload.send(b"y" * (size - 1))
                assert (await upload.answer()).status == 200
    finally:
        for upload in uploads:
            await upload.close()
    assert len(await s.query("all_files")) == 2
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        again = await http.post(await s.mutation("generate_upload_url"), content=b"room now")
    assert again.status_code == 200


async def test_uploads_keep_the_minimum_free_disk(served: MakeServed) -> None:
    """A local blob store refuses an upload that would leave less than the
    minimum free (at once, from its Content-Length), and so does
    ctx.storage.store; object storage has no such bound."""
    s = await served(min_free_bytes=1 << 62)
    url = await s.mutation("generate_upload_url")
    if s.backend.kind == "local":
        upload = await RawUpload(url, 10 * MiB).start()
        try:
            refused = await upload.answer()  # no byte of the body was sent
        finally:
            await upload.close()
        assert refused.status == 507
        assert refused.json() == {
            "code": "InsufficientStorage",
            "message": "the server is short of disk space and stores no more files for now",
        }
        with pytest.raises(BasaltError) as info:
            await s.action("store_text", {"text": "from an action"})
        assert info.value.code == "InsufficientStorage"
        assert await s.query("all_files") == [] and s.backend.contents() == []
    else:
        async with httpx.AsyncClient(timeout=PATIENCE) as http:
            assert (await http.post(url, content=b"to the bucket")).status_code == 200
        assert isinstance(await s.action("store_text", {"text": "too"}), str)


class SmallDisk(LocalBlobStore):
    """A blob folder on a disk of ``capacity`` bytes (a quota): what it holds,
    temporary files included, is what is used."""

    def __init__(self, root: Path, capacity: int) -> None:
        super().__init__(root, fsync=False)
        self.capacity = capacity

    async def free_bytes(self) -> int:
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return self.capacity - used


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_a_body_of_unknown_length_is_stopped_once_the_disk_is_short(
    served: MakeServed, tmp_path: Path
) -> None:
    minimum = 64 * MiB
    disk = SmallDisk(tmp_path / "small", capacity=minimum + 2 * MiB)
    s = await served(blobs=disk, min_free_bytes=minimum)

    declared = await RawUpload(await s.mutation("generate_upload_url"), 3 * MiB).start()
    try:
        assert (await declared.answer()).status == 507  # refused from its Content-Length
    finally:
        await declared.close()

    chunked = await RawUpload(await s.mutation("generate_upload_url"), None).start()

    async def send_forever() -> None:
        block = os.urandom(MiB)
        try:
            for _ in range(200):
                await chunked.send(block)
        except ConnectionError:
            pass  # the server answered and closed

    sender = asyncio.ensure_future(send_forever())
    try:
        answer = await chunked.answer()
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await chunked.close()
    assert answer.status == 507 and answer.json()["code"] == "InsufficientStorage"

    async def left_behind() -> list[Path]:
        return [p for p in disk.root.rglob("*") if p.is_file()]

    deadline = asyncio.get_running_loop().time() + PATIENCE
    while await left_behind():  # the partial blob is removed
        assert asyncio.get_running_loop().time() < deadline, await left_behind()
        await asyncio.sleep(0.01)
    assert await s.query("all_files") == []
    async with httpx.AsyncClient(timeout=PATIENCE) as http:  # what fits is still taken
        small = await http.post(await s.mutation("generate_upload_url"), content=b"fits")
    assert small.status_code == 200
