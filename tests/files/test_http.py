"""File storage end to end over real HTTP, on both blob backends: upload URL →
POST → storageId → get_url → GET, tokens, ranges, digests, limits, deletion."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from basalt.errors import ConvexError
from basalt.runtime import ManualClock
from basalt.runtime.files import (
    UPLOAD_TOKENS_TABLE,
    StorageArgumentError,
    StorageIdNotFound,
)
from basalt.runtime.query import Query
from basalt.runtime.transaction import TxState

from .conftest import MakeServed, Served

MiB = 1 << 20


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def upload(
    s: Served, http: httpx.AsyncClient, data: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    url = await s.mutation("generate_upload_url")
    return await http.post(url, content=data, headers=headers or {})


async def stored(s: Served, http: httpx.AsyncClient, data: bytes, **headers: str) -> str:
    response = await upload(s, http, data, headers)
    assert response.status_code == 200, response.text
    storage_id = response.json()["storageId"]
    assert isinstance(storage_id, str)
    return storage_id


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def blobs(s: Served) -> list[str]:
    return s.backend.contents()


@pytest.mark.parametrize("size", [0, 1, 100_000, 9 * MiB + 7])
async def test_upload_then_download_gives_identical_bytes(
    served: MakeServed, http: httpx.AsyncClient, size: int
) -> None:
    s = await served()
    data = os.urandom(size)
    url = await s.mutation("generate_upload_url")
    assert url.startswith(f"{s.url}/api/storage/upload?token=")
    response = await http.post(url, content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["storageId"]
    storage_id = response.json()["storageId"]

    file_url = await s.query("get_url", {"id": storage_id})
    assert file_url.startswith(f"{s.url}/api/storage/")
    assert storage_id not in file_url  # the URL names the blob's uuid, not the id
    got = await http.get(file_url)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-length"] == str(size)
    assert got.headers["digest"] == f"sha-256={sha256_b64(data)}"
    assert got.headers["cache-control"] == "private, max-age=2592000"
    assert got.headers["accept-ranges"] == "bytes"


async def test_metadata_and_system_document(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    data = b"hello, files"
    storage_id = await stored(s, http, data, **{"content-type": "text/plain"})
    meta = await s.query("get_metadata", {"id": storage_id})
    assert meta == {
        "storageId": storage_id,
        "sha256": sha256_b64(data),
        "size": float(len(data)),
        "contentType": "text/plain",
    }
    doc = await s.query("system_get", {"id": storage_id})
    assert set(doc) == {"_id", "_creationTime", "sha256", "size", "contentType"}
    assert doc["_id"] == storage_id and type(doc["size"]) is float
    assert [d["_id"] for d in await s.query("all_files")] == [storage_id]
    # without a Content-Type the field is absent and the download is octet-stream
    plain = await stored(s, http, b"raw")
    assert "contentType" not in await s.query("system_get", {"id": plain})
    assert (await s.query("get_metadata", {"id": plain}))["contentType"] is None
    got = await http.get(await s.query("get_url", {"id": plain}))
    assert got.headers["content-type"] == "application/octet-stream"
    # ids of _storage validate as v.id("_storage") in app tables
    asset = await s.mutation("save_asset", {"file": storage_id, "role": "output"})
    assert asset


async def test_get_url_is_in_the_query_read_set(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    storage_id = await stored(s, http, b"x")
    outcome = await s.runtime.call("files:get_url", {"id": storage_id}, admin=True)
    assert outcome.read_set is not None and storage_id in outcome.read_set.ids


async def test_delete_in_a_mutation(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    storage_id = await stored(s, http, b"to be deleted")
    url = await s.query("get_url", {"id": storage_id})
    assert len(blobs(s)) == 1

    with pytest.raises(ConvexError):
        await s.mutation("delete_then_fail", {"id": storage_id})
    assert (await http.get(url)).status_code == 200  # a failed mutation deletes nothing

    await s.mutation("delete", {"id": storage_id})
    assert (await http.get(url)).status_code == 404
    assert await s.query("get_url", {"id": storage_id}) is None
    assert await s.query("get_metadata", {"id": storage_id}) is None
    assert await s.action("read", {"id": storage_id}) is None

    async def blob_gone() -> bool:
        return blobs(s) == []

    await wait_for(blob_gone, "the blob to be deleted after the commit")
    with pytest.raises(StorageIdNotFound):
        await s.mutation("delete", {"id": storage_id})


async def test_actions_store_get_and_delete(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    text_id = await s.action("store_text", {"text": "from an action", "content_type": "text/x"})
    assert await s.action("read", {"id": text_id}) == b"from an action"
    parts = [os.urandom(300_000) for _ in range(5)]
    stream_id = await s.action("store_stream", {"parts": parts})
    assert await s.action("read", {"id": stream_id}) == b"".join(parts)
    info = await s.action("action_info", {"id": stream_id})
    assert info["metadata"]["size"] == 1_500_000.0
    assert info["metadata"]["contentType"] == "application/x-parts"
    assert info["upload_url"].startswith(f"{s.url}/api/storage/upload?token=")
    got = await http.get(info["url"])
    assert got.content == b"".join(parts)

    await s.action("action_delete", {"id": text_id})
    assert await s.action("read", {"id": text_id}) is None
    assert len(blobs(s)) == 1


async def test_range_requests(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    data = bytes(range(256)) * 40  # 10240 bytes
    url = await s.query("get_url", {"id": await stored(s, http, data)})

    async def get(value: str) -> httpx.Response:
        return await http.get(url, headers={"range": value})

    for header, start, end in [
        ("bytes=10-19", 10, 20),
        ("bytes=10000-", 10000, 10240),
        ("bytes=-5", 10235, 10240),
        ("bytes=0-0", 0, 1),
        ("bytes=10230-99999", 10230, 10240),
        ("bytes=-99999", 0, 10240),
    ]:
        got = await get(header)
        assert got.status_code == 206, header
        assert got.content == data[start:end], header
        assert got.headers["content-range"] == f"bytes {start}-{end - 1}/10240"
        assert got.headers["content-length"] == str(end - start)
    for header in ["bytes=10240-", "bytes=99999-100000", "bytes=-0"]:
        got = await get(header)
        assert got.status_code == 416, header
        assert got.headers["content-range"] == "bytes */10240"
    for header in ["bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=9-3"]:
        got = await get(header)
        assert got.status_code == 200, header
        assert got.content == data
    head = await http.head(url, headers={"range": "bytes=100-199"})
    assert head.status_code == 206 and head.headers["content-length"] == "100"
    assert head.content == b""


@pytest.mark.parametrize("header", ["digest", "content-digest"])
async def test_digest_header(served: MakeServed, http: httpx.AsyncClient, header: str) -> None:
    s = await served()
    data = os.urandom(50_000)

    def announce(digest: bytes) -> dict[str, str]:
        text = base64.b64encode(digest).decode()
        return {header: f"sha-256=:{text}:" if header == "content-digest" else f"sha-256={text}"}

    good = await upload(s, http, data, announce(hashlib.sha256(data).digest()))
    assert good.status_code == 200
    assert len(blobs(s)) == 1
    bad = await upload(s, http, data, announce(hashlib.sha256(b"other").digest()))
    assert bad.status_code == 400
    assert bad.json()["code"] == "DigestMismatch"
    malformed = await upload(s, http, data, {header: "sha-256=not base64!"})
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "BadDigestHeader"
    assert len(await s.query("all_files")) == 1
    assert len(blobs(s)) == 1


async def test_oversize_upload_is_refused(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served(max_upload_bytes=10_000)
    url = await s.mutation("generate_upload_url")
    declared = await http.post(url, content=b"x" * 10_001)
    assert declared.status_code == 413
    assert declared.json()["code"] == "PayloadTooLarge"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(20):
            yield b"y" * 1000

    streamed = await http.post(url, content=chunked())
    assert streamed.status_code == 413
    assert await s.query("all_files") == [] and blobs(s) == []
    # a refused upload does not spend the token
    assert (await http.post(url, content=b"z" * 10_000)).status_code == 200


async def test_interrupted_upload_leaves_nothing(served: MakeServed) -> None:
    s = await served()
    url = httpx.URL(await s.mutation("generate_upload_url"))
    _reader, writer = await asyncio.open_connection(url.host, url.port)
    target = url.raw_path.decode()
    writer.write(
        f"POST {target} HTTP/1.1\r\nHost: {url.host}\r\nContent-Length: {40 * MiB}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    writer.write(os.urandom(20 * MiB))  # more than one S3 part: a multipart upload is open
    await writer.drain()

    async def upload_under_way() -> bool:
        return bool(blobs(s))  # a .part file, or an open multipart upload

    await wait_for(upload_under_way, "the server to start storing the body")
    writer.close()
    await writer.wait_closed()

    async def nothing_left() -> bool:
        return blobs(s) == []

    await wait_for(nothing_left, "the partial upload to be discarded")
    assert await s.query("all_files") == []
    async with httpx.AsyncClient() as http:  # the token was not spent
        response = await http.post(str(url), content=b"complete")
    assert response.status_code == 200


async def test_token_expires(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    url = await s.mutation("generate_upload_url")
    s.clock.advance(3599)
    assert (await http.post(url, content=b"in time")).status_code == 200
    late = await s.mutation("generate_upload_url")
    s.clock.advance(3600)
    response = await http.post(late, content=b"too late")
    assert response.status_code == 403
    assert response.json()["code"] == "UploadTokenExpired"
    assert len(await s.query("all_files")) == 1


async def test_token_is_single_use_across_restarts(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    clock = ManualClock()
    s = await served(clock=clock)
    url = await s.mutation("generate_upload_url")
    first = await http.post(url, content=b"first")
    assert first.status_code == 200
    again = await http.post(url, content=b"second")
    assert again.status_code == 403 and again.json()["code"] == "UploadTokenUsed"
    unused = await s.mutation("generate_upload_url")
    file_url = await s.query("get_url", {"id": first.json()["storageId"]})

    s2 = await served(clock=clock, restart=True)
    reused = url.replace(s.url, s2.url)
    after = await http.post(reused, content=b"third")
    assert after.status_code == 403 and after.json()["code"] == "UploadTokenUsed"
    # the secret survived the restart: old tokens are genuine, old URLs still work
    assert (await http.post(unused.replace(s.url, s2.url), content=b"ok")).status_code == 200
    assert (await http.get(file_url.replace(s.url, s2.url))).content == b"first"
    assert len(await s2.query("all_files")) == 2


async def test_concurrent_uploads_with_one_token(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    url = await s.mutation("generate_upload_url")
    responses = await asyncio.gather(*(http.post(url, content=os.urandom(1000)) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] + [403] * 7
    assert len(await s.query("all_files")) == 1

    async def one_blob() -> bool:
        return len(blobs(s)) == 1

    await wait_for(one_blob, "the refused uploads' blobs to be removed")


async def test_bad_tokens(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    url = await s.mutation("generate_upload_url")
    token = url.rsplit("=", 1)[1]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for bad, code in [
        (flipped, "InvalidUploadToken"),
        ("x" * 55, "InvalidUploadToken"),
        ("short", "InvalidUploadToken"),
        (token + "A", "InvalidUploadToken"),
    ]:
        response = await http.post(f"{s.url}/api/storage/upload?token={bad}", content=b"data")
        assert response.status_code == 403, bad
        assert response.json()["code"] == code
    missing = await http.post(f"{s.url}/api/storage/upload", content=b"data")
    assert missing.status_code == 400 and missing.json()["code"] == "MissingUploadToken"
    wrong_method = await http.get(url)
    assert wrong_method.status_code == 405
    other_secret = await served(restart=True, secret=b"another deployment's secret")
    response = await http.post(url.replace(s.url, other_secret.url), content=b"data")
    assert response.status_code == 403 and response.json()["code"] == "InvalidUploadToken"
    assert await other_secret.query("all_files") == []


async def test_ids_of_other_tables_are_refused(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served()
    await stored(s, http, b"a file")
    note = await s.mutation("add_note")
    for call in (s.query("get_url", {"id": note}), s.query("get_metadata", {"id": note})):
        with pytest.raises(StorageArgumentError, match="'notes', not of '_storage'"):
            await call
    with pytest.raises(StorageArgumentError):
        await s.mutation("delete", {"id": note})
    with pytest.raises(StorageArgumentError):
        await s.action("read", {"id": note})
    for junk in ["not-an-id", 42, None, "../../etc/passwd"]:
        with pytest.raises(StorageArgumentError, match="is not a storage id"):
            await s.query("get_url", {"id": junk})


TRAVERSALS = [
    "/api/storage/../../etc/passwd",
    "/api/storage/..%2F..%2Fetc%2Fpasswd",
    "/api/storage/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/storage//etc/passwd",
    "/api/storage/%2Fetc%2Fpasswd",
    "/api/storage/..\\..\\etc\\passwd",
    "/api/storage/.tmp",
    "/api/storage/00000000-0000-0000-0000-000000000000%00",
    "/api/storage/00000000-0000-0000-0000-000000000000/../x",
    "/api/storage/00000000-0000-0000-0000-000000000000",
    "/api/storage/",
]


async def test_traversal_in_download_paths_is_refused(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    file_url = await s.query("get_url", {"id": await stored(s, http, b"secret")})
    name = file_url.rsplit("/", 1)[1]
    host, port = s.url.removeprefix("http://").split(":")
    for path in [*TRAVERSALS, f"/api/storage/../storage/{name}", f"/api/storage/{name}/"]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), (path, answer[:200])
        assert b"root:" not in answer and b"secret" not in answer


async def test_uppercase_or_foreign_uuid_is_not_found(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    url = await s.query("get_url", {"id": await stored(s, http, b"data")})
    assert (await http.get(url)).status_code == 200
    name = url.rsplit("/", 1)[1]
    assert (await http.get(url.replace(name, name.upper()))).status_code == 404
    tweaked = name[:-1] + ("0" if name[-1] != "0" else "1")
    assert (await http.get(url.replace(name, tweaked))).status_code == 404
    assert (await http.post(url, content=b"x")).status_code == 405


async def test_spent_tokens_are_pruned_once_expired(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    old = await s.mutation("generate_upload_url")
    assert (await http.post(old, content=b"one")).status_code == 200
    assert await s.files.prune_spent_tokens() == 0  # not expired yet: kept
    s.clock.advance(1800)
    recent = await s.mutation("generate_upload_url")
    assert (await http.post(recent, content=b"two")).status_code == 200
    s.clock.advance(1801)  # the first token has expired, the second has not
    assert await s.files.prune_spent_tokens() == 1
    assert (await http.post(old, content=b"x")).json()["code"] == "UploadTokenExpired"
    assert (await http.post(recent, content=b"x")).json()["code"] == "UploadTokenUsed"
    assert len(await s.query("all_files")) == 2


async def test_uploads_forget_expired_spent_tokens_by_themselves(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served()
    old = await s.mutation("generate_upload_url")
    assert (await http.post(old, content=b"one")).status_code == 200
    s.clock.advance(3601)  # the first token has expired
    recent = await s.mutation("generate_upload_url")
    assert (await http.post(recent, content=b"two")).status_code == 200
    # The second upload prunes the first token's record in the background.
    for _ in range(200):
        if await spent_token_records(s) == 1:
            break
        await asyncio.sleep(0.01)
    assert await spent_token_records(s) == 1
    assert (await http.post(old, content=b"x")).json()["code"] == "UploadTokenExpired"
    assert (await http.post(recent, content=b"x")).json()["code"] == "UploadTokenUsed"


async def spent_token_records(s: Any) -> int:
    async def count(state: TxState) -> int:
        if state.tx.catalog.table_by_name(UPLOAD_TOKENS_TABLE) is None:
            return 0
        return len(await Query(state, UPLOAD_TOKENS_TABLE, system=True).collect())

    n: int = await s.files.read(count)
    return n


async def test_orphan_blobs_are_swept_and_named_ones_kept(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served(orphan_min_age_s=0)
    named = await stored(s, http, b"named")
    orphan = str(uuid.uuid4())  # as a crash after storing the bytes would leave
    await s.files.blobs.put(orphan, chunks_of(b"orphan"))
    young = await s.files.sweep_orphans(older_than_s=3600)
    assert young == 0 and await s.files.blobs.exists(orphan)
    assert await s.files.sweep_orphans() == 1
    assert not await s.files.blobs.exists(orphan)
    assert (await http.get(await s.query("get_url", {"id": named}))).content == b"named"


async def test_a_restart_sweeps_orphan_blobs(served: MakeServed, http: httpx.AsyncClient) -> None:
    s = await served(orphan_min_age_s=0)
    named = await stored(s, http, b"named")
    orphan = str(uuid.uuid4())
    await s.files.blobs.put(orphan, chunks_of(b"orphan"))
    s = await served(restart=True, orphan_min_age_s=0)

    async def swept() -> bool:
        return not await s.files.blobs.exists(orphan)

    await wait_for(swept, "the orphan blob to be swept at start")
    assert (await http.get(await s.query("get_url", {"id": named}))).content == b"named"


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_uploads_sweep_orphan_blobs_once_a_day(
    served: MakeServed, http: httpx.AsyncClient
) -> None:
    s = await served(orphan_min_age_s=0)
    orphan = str(uuid.uuid4())
    await s.files.blobs.put(orphan, chunks_of(b"orphan"))
    await stored(s, http, b"today")
    await asyncio.sleep(0.1)
    assert await s.files.blobs.exists(orphan)  # swept at start, before it existed
    s.clock.advance(86_401)
    await stored(s, http, b"tomorrow")

    async def swept() -> bool:
        return not await s.files.blobs.exists(orphan)

    await wait_for(swept, "an upload a day later to sweep the orphan blob")


async def test_range_positions_of_any_length(served: MakeServed, http: httpx.AsyncClient) -> None:
    """Range numbers too long for Python's int() (over 4,300 digits) are read
    as beyond the file, never a server error."""
    s = await served()
    data = os.urandom(1000)
    url = await s.query("get_url", {"id": await stored(s, http, data)})
    huge = "9" * 5000
    beyond = await http.get(url, headers={"range": f"bytes={huge}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == "bytes */1000"
    beyond_both = await http.get(url, headers={"range": f"bytes={huge}-{huge}9"})
    assert beyond_both.status_code == 416
    to_the_end = await http.get(url, headers={"range": f"bytes=10-{huge}"})
    assert to_the_end.status_code == 206 and to_the_end.content == data[10:]
    whole = await http.get(url, headers={"range": f"bytes=-{huge}"})
    assert whole.status_code == 206 and whole.content == data


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("text/html", False),
        ("text/html; charset=utf-8", False),
        ("TEXT/HTML", False),
        ("application/xhtml+xml", False),
        ("image/svg+xml", False),
        ("text/xml", False),
        ("application/xml", False),
        ("text/javascript", False),
        ("application/x-unknown-thing", False),
        (None, False),
        ("image/png", True),
        ("image/jpeg", True),
        ("application/pdf", True),
        ("text/plain; charset=utf-8", True),
        ("video/mp4", True),
    ],
)
async def test_active_content_is_sandboxed(
    served: MakeServed, http: httpx.AsyncClient, content_type: str | None, inline: bool
) -> None:
    """A stored file is served from the API origin: every download is
    sandboxed (no script runs, whatever a browser makes of the bytes); one of a
    type a browser could run script from is an attachment, images, PDFs, text
    are shown inline."""
    s = await served()
    headers = {"content-type": content_type} if content_type else {}
    page = b"<html><script>fetch('/api/query')</script></html>"
    url = await s.query("get_url", {"id": await stored(s, http, page, **headers)})
    for got in (await http.get(url), await http.get(url, headers={"range": "bytes=0-5"})):
        assert got.status_code in (200, 206)
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "sandbox"
        if inline:
            assert "content-disposition" not in got.headers
        else:
            assert got.headers["content-disposition"] == "attachment"
