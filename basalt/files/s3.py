"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, …).

Install with ``pip install 'basalt-backend[s3]'``; boto3 is imported only when an
:class:`S3BlobStore` is opened.

**Why boto3 on threads.** The alternatives were aiobotocore (async, but pinned
to exact botocore versions, which makes it a frequent source of dependency
conflicts) and a hand-written SigV4 signer over an async HTTP client (small,
but every S3-compatible server differs a little in addressing, checksums and
error shapes, and the credential chain — env, profiles, SSO, instance roles —
would be ours to re-implement). boto3 gives the credential chain, retries and
years of compatibility fixes; its clients are thread-safe, and the cost of a
thread hop is nothing next to one network round trip per multi-megabyte part.
So every call runs on a small pool of the store's own threads.

**All or nothing.** A blob smaller than one part (8 MiB by default) is sent
with one ``PutObject`` once all of it has arrived and its digest is checked;
a larger one is a multipart upload, which S3 makes visible only at
``CompleteMultipartUpload`` — after the size limit and digest were checked —
and which is aborted on any error. Objects are ``<prefix><uuid>``; the store
checks every key before building an object name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

from .base import (
    READ_CHUNK,
    BlobNotFound,
    DigestMismatch,
    FileStorageError,
    MissingExtra,
    StoredBlob,
    UploadTooLarge,
)
from .keys import check_key, is_uuid_text

T = TypeVar("T")

#: The size of a multipart-upload part (S3's minimum is 5 MiB).
PART_SIZE = 8 << 20
_MISSING = ("NoSuchKey", "404", "NotFound")


def _import_boto3() -> tuple[Any, Any]:
    try:
        boto3 = importlib.import_module("boto3")
        config = importlib.import_module("botocore.config")
    except ImportError as exc:
        raise MissingExtra(
            "S3 blob storage needs boto3: install it with  pip install 'basalt-backend[s3]'"
        ) from exc
    return boto3, config


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


class _Multipart:
    """The state of one put: the running digest and, once the blob outgrew one
    part, the multipart upload's id and finished parts."""

    __slots__ = ("hasher", "name", "parts", "upload_id")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hasher = hashlib.sha256()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []


class S3BlobStore:
    """A :class:`~basalt.files.base.BlobStore` in one bucket, under ``prefix``.

    Credentials not given here come from boto3's usual chain
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``,
    ``AWS_PROFILE``, instance roles, …). With a custom ``endpoint_url``,
    path-style addressing is the default, which every S3-compatible server
    supports.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        addressing_style: str | None = None,
        part_size: int = PART_SIZE,
        read_chunk: int = READ_CHUNK,
        threads: int = 8,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if part_size < 5 << 20:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum)")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._credentials = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "aws_session_token": session_token,
        }
        self.addressing_style = addressing_style or ("path" if endpoint_url else "auto")
        self.part_size = part_size
        self.read_chunk = read_chunk
        self._threads = threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._client: Any = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3BlobStore:
        """A store configured by ``BASALT_S3_BUCKET`` (required),
        ``BASALT_S3_PREFIX``, ``BASALT_S3_ENDPOINT_URL``, ``BASALT_S3_REGION``
        (else boto3's ``AWS_REGION`` / ``AWS_DEFAULT_REGION``) and
        ``BASALT_S3_ADDRESSING_STYLE`` (``path``, ``virtual`` or ``auto``)."""
        return cls(
            environ.get("BASALT_S3_BUCKET", ""),
            prefix=environ.get("BASALT_S3_PREFIX", ""),
            endpoint_url=environ.get("BASALT_S3_ENDPOINT_URL") or None,
            region=environ.get("BASALT_S3_REGION") or None,
            addressing_style=environ.get("BASALT_S3_ADDRESSING_STYLE") or None,
        )

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        if self._client is None:
            self._client = await self._run(self._make_client)
        try:
            await self._run(self._client.head_bucket, Bucket=self.bucket)
        except Exception as exc:
            raise FileStorageError(
                f"cannot use the S3 bucket {self.bucket!r}"
                f"{' at ' + self.endpoint_url if self.endpoint_url else ''}: {exc}",
                code="BlobStoreUnavailable",
            ) from exc

    def _make_client(self) -> Any:
        boto3, config = _import_boto3()
        session = boto3.session.Session(
            **{k: v for k, v in self._credentials.items() if v is not None}
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=config.Config(
                s3={"addressing_style": self.addressing_style},
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=max(10, self._threads),
                # Only what S3 requires: extra checksum headers trip some
                # S3-compatible servers; the sha-256 is checked by Basalt itself.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        executor, self._executor = self._executor, None
        if client is not None:
            client.close()
        if executor is not None:
            executor.shutdown(wait=True)

    def _submit(self, fn: Callable[..., T], *args: Any, **kw: Any) -> concurrent.futures.Future[T]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="basalt-s3"
            )
        return self._executor.submit(fn, *args, **kw)

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args, **kw))

    def _client_or_fail(self) -> Any:
        if self._client is None:
            raise FileStorageError(f"{self!r} is not open", code="BlobStoreUnavailable")
        return self._client

    def object_name(self, key: str) -> str:
        """The S3 object name of a blob (the key is validated first)."""
        return self.prefix + check_key(key)

    # -- writing -------------------------------------------------------------
    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        expected_sha256: bytes | None = None,
    ) -> StoredBlob:
        name = self.object_name(key)
        client = self._client_or_fail()
        upload = _Multipart(name)
        size = 0
        buffer = bytearray()
        pending: concurrent.futures.Future[Any] | None = None
        finishing: concurrent.futures.Future[Any] | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise UploadTooLarge(f"the file is larger than the limit of {max_size} bytes")
                buffer += chunk
                if len(buffer) >= self.part_size:
                    if pending is not None:
                        await asyncio.wrap_future(pending)
                    data, buffer = buffer, bytearray()
                    pending = self._submit(self._upload_part, upload, data)
            if pending is not None:
                await asyncio.wrap_future(pending)
            if upload.parts and buffer:
                pending = self._submit(self._upload_part, upload, buffer)
                await asyncio.wrap_future(pending)
            elif not upload.parts:
                upload.hasher.update(buffer)
            digest = upload.hasher.digest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise DigestMismatch(
                    "the uploaded bytes do not match the sha-256 digest sent with them"
                )
            if not upload.parts:
                finishing = self._submit(
                    client.put_object, Bucket=self.bucket, Key=name, Body=bytes(buffer)
                )
            else:
                finishing = self._submit(
                    client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload.upload_id,
                    MultipartUpload={"Parts": upload.parts},
                )
            await asyncio.wrap_future(finishing)
        except BaseException:
            cleanup = self._submit(self._discard, upload, pending, finishing)
            await asyncio.shield(asyncio.wrap_future(cleanup))
            raise
        return StoredBlob(key, size, digest)

    def _upload_part(self, upload: _Multipart, data: bytearray) -> None:
        """Send one part (on a pool thread; parts of one upload go one at a time)."""
        upload.hasher.update(data)
        client = self._client
        if upload.upload_id is None:
            started = client.create_multipart_upload(Bucket=self.bucket, Key=upload.name)
            upload.upload_id = str(started["UploadId"])
        number = len(upload.parts) + 1
        answer = client.upload_part(
            Bucket=self.bucket,
            Key=upload.name,
            UploadId=upload.upload_id,
            PartNumber=number,
            Body=bytes(data),
        )
        upload.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _discard(
        self,
        upload: _Multipart,
        pending: concurrent.futures.Future[Any] | None,
        finishing: concurrent.futures.Future[Any] | None,
    ) -> None:
        """Undo a failed put (on a pool thread, once the jobs still running end)."""
        concurrent.futures.wait([f for f in (pending, finishing) if f is not None])
        client = self._client
        if client is None:
            return
        if finishing is not None and not finishing.cancelled() and finishing.exception() is None:
            # it completed although the put as a whole failed (cancelled meanwhile)
            client.delete_object(Bucket=self.bucket, Key=upload.name)
        elif upload.upload_id is not None:
            try:
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload.name, UploadId=upload.upload_id
                )
            except Exception as exc:  # pragma: no cover - best effort; S3 lifecycle rules clean up
                if _error_code(exc) != "NoSuchUpload":
                    raise

    # -- reading -------------------------------------------------------------
    async def read(self, key: str, start: int = 0, end: int | None = None) -> _S3Reader:
        name = self.object_name(key)
        client = self._client_or_fail()
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range {start}..{end}")
        kw: dict[str, Any] = {}
        if end is not None and end == start:
            if not await self.exists(key):
                raise BlobNotFound(f"no blob {key}")
            return _S3Reader(self, None)
        if start > 0 or end is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await self._run(client.get_object, Bucket=self.bucket, Key=name, **kw)
        except Exception as exc:
            if _error_code(exc) in _MISSING:
                raise BlobNotFound(f"no blob {key}") from None
            raise
        return _S3Reader(self, answer["Body"])

    async def exists(self, key: str) -> bool:
        name = self.object_name(key)
        client = self._client_or_fail()
        try:
            await self._run(client.head_object, Bucket=self.bucket, Key=name)
        except Exception as exc:
            if _error_code(exc) in _MISSING:
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        name = self.object_name(key)
        await self._run(self._client_or_fail().delete_object, Bucket=self.bucket, Key=name)

    async def keys(self, older_than_s: float) -> AsyncIterator[str]:
        client = self._client_or_fail()
        cutoff = time.time() - older_than_s
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
            if token is not None:
                kw["ContinuationToken"] = token
            answer = await self._run(client.list_objects_v2, **kw)
            for item in answer.get("Contents", ()):
                key = item["Key"][len(self.prefix) :]
                if is_uuid_text(key) and item["LastModified"].timestamp() < cutoff:
                    yield key
            if not answer.get("IsTruncated"):
                return
            token = answer["NextContinuationToken"]

    async def free_bytes(self) -> None:
        """Object storage has no free-space bound the store knows of."""
        return None


class _S3Reader:
    """Reads an object's (ranged) body a chunk at a time."""

    __slots__ = ("_body", "_pending", "_store")

    def __init__(self, store: S3BlobStore, body: Any) -> None:
        self._store = store
        self._body = body
        self._pending: concurrent.futures.Future[bytes] | None = None

    def __aiter__(self) -> _S3Reader:
        return self

    async def __anext__(self) -> bytes:
        if self._body is None:
            raise StopAsyncIteration
        self._pending = self._store._submit(self._body.read, self._store.read_chunk)
        data = await asyncio.wrap_future(self._pending)
        self._pending = None
        if not data:
            await self.aclose()
            raise StopAsyncIteration
        return bytes(data)

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            if self._pending is not None:
                concurrent.futures.wait([self._pending])
            body.close()

    async def __aenter__(self) -> _S3Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
