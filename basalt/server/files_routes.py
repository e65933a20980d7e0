"""File storage over HTTP: ``POST /api/storage/upload?token=…`` and
``GET /api/storage/<uuid>`` (protocol.md §4.1).

Uploads stream the request body into the blob store (never the whole file in
memory), refuse a body over the size limit (at once when ``Content-Length``
says so, else as soon as the limit is passed), and check an optional
``Digest: sha-256=<base64>`` (or ``Content-Digest: sha-256=:<base64>:``)
before the file becomes visible. The answer is ``{"storageId": "<id>"}``.

Downloads stream the blob with ``Content-Type``, ``Content-Length``,
``Digest``, ``ETag``, ``Cache-Control: private, max-age=2592000`` and
``Accept-Ranges: bytes``; a single byte range gives 206 with
``Content-Range``, an unsatisfiable one 416; a header with several ranges is
ignored (the whole file, 200), as RFC 9110 allows. The path segment must be a
canonical lowercase UUID, anything else is a 404 without touching the store.

Files are served from the API origin, so a stored file must never run script
there: its content type is one media type in canonical form (refused with 400
``InvalidContentType`` at upload otherwise, see
:mod:`basalt.files.content_type`), every download carries
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``
(script never runs, and the page is in an opaque origin, whatever a browser
makes of the bytes), and a file whose type is not on :data:`INLINE_TYPES`
(HTML, SVG, XML, JavaScript, unknown types ...) also ``Content-Disposition:
attachment``, so that a browser opening it saves it.

An upload the server cannot take now is refused before its body is read: 403
``UploadTokenInUse`` while another upload with the same URL is under way, 503
``TooManyUploads`` (with ``Retry-After``) when the process receives as many as
it takes at once, 507 ``InsufficientStorage`` when the disk is short of space.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import AsyncGenerator

from basalt.errors import BadRequest, BasaltError
from basalt.files import (
    BlobNotFound,
    BlobReader,
    InvalidContentType,
    UploadInterrupted,
    UploadRefused,
    canonical_content_type,
    is_uuid_text,
    media_type,
)
from basalt.runtime.files import FileService, StoredFile

from .asgi import Receive, Request, Response, Send, error_response, json_response

log = logging.getLogger("basalt.server")

PREFIX = "/api/storage/"
UPLOAD_PATH = "/api/storage/upload"
CACHE_CONTROL = "private, max-age=2592000"
#: Media types a browser shows without running script, served inline. Every
#: other type (text/html, image/svg+xml, XML, JavaScript, unknown ones) is
#: served as an attachment in a sandbox (see the module docstring).
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/apng",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/json",
    }
)
#: Media type families a browser only plays.
INLINE_FAMILIES = ("audio/", "video/")
#: Seconds a client refused for too many uploads under way is asked to wait.
RETRY_AFTER_S = 1
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


class StreamingResponse(Response):
    """A response whose body comes from a blob reader, chunk by chunk. It stops
    reading as soon as the client goes away, and always closes the reader."""

    __slots__ = ("_length", "_reader", "_receive")

    def __init__(
        self,
        reader: BlobReader | None,
        length: int,
        status: int,
        headers: list[tuple[str, str]],
        receive: Receive,
    ) -> None:
        super().__init__(b"", status, headers)
        self._reader = reader
        self._length = length
        self._receive = receive

    async def send(self, send: Send, extra_headers: list[tuple[str, str]] | None = None) -> None:
        reader = self._reader
        try:
            pairs = [*self.headers, *(extra_headers or []), ("content-length", str(self._length))]
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            if reader is None:
                await send({"type": "http.response.body", "body": b""})
                return
            gone = asyncio.Event()
            watcher = asyncio.ensure_future(self._watch_disconnect(gone))
            try:
                async for chunk in reader:
                    if gone.is_set():
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        finally:
            if reader is not None:
                await reader.aclose()

    async def _watch_disconnect(self, gone: asyncio.Event) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        gone.set()


#: Digits beyond which a Range position is larger than any file (2^63 has 19):
#: longer numbers are not converted (Python refuses int() of over 4,300 digits).
_MAX_POSITION_DIGITS = 19


def _position(digits: str) -> int:
    """A Range byte position; one too long to be a file offset reads as 2^64."""
    return int(digits) if len(digits) <= _MAX_POSITION_DIGITS else 1 << 64


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The byte range ``[start, end)`` a ``Range`` header asks for.

    None: serve the whole file (no header, a malformed one, or several ranges);
    False: the range cannot be satisfied (416). Positions of any length are
    read: a first byte beyond the file is unsatisfiable, a last byte beyond it
    means the end of the file, a suffix longer than the file is the whole file.
    """
    if header is None or "," in header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = _position(last)
        return False if n == 0 or size == 0 else (max(0, size - n), size)
    start = _position(first)
    if last and _position(last) < start:
        return None
    if start >= size:
        return False
    end = size if not last else min(_position(last) + 1, size)
    return start, end


def served_type(content_type: str | None) -> str:
    """The ``Content-Type`` a stored file is served with: its type in canonical
    form, or ``application/octet-stream`` for none, or for one stored before
    types were checked that is not exactly one media type."""
    if content_type:
        try:
            return canonical_content_type(content_type)
        except InvalidContentType:
            pass
    return "application/octet-stream"


def is_inline(content_type: str) -> bool:
    """Whether a file served with this canonical type may be shown inline."""
    media = media_type(content_type)
    return media in INLINE_TYPES or media.startswith(INLINE_FAMILIES)


def parse_digest(request: Request) -> bytes | None:
    """The SHA-256 a client announced for its upload, or None; raises
    :class:`BadRequest` if the header is malformed."""
    value: str | None = None
    for name, wrapped in (("digest", False), ("content-digest", True)):
        header = request.headers.get(name)
        if not header:
            continue
        for item in header.split(","):
            algorithm, _, encoded = item.strip().partition("=")
            if algorithm.strip().lower() != "sha-256":
                continue
            encoded = encoded.strip()
            if wrapped:
                if len(encoded) < 2 or encoded[0] != ":" or encoded[-1] != ":":
                    raise _bad_digest(name)
                encoded = encoded[1:-1]
            value = encoded
            break
        if value is not None:
            try:
                digest = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_digest(name) from None
            if len(digest) != 32:
                raise _bad_digest(name)
            return digest
    return None


def _bad_digest(name: str) -> BadRequest:
    return BadRequest(
        f"the {name} header is malformed: expected sha-256=<base64 of 32 bytes>",
        code="BadDigestHeader",
    )


async def _request_body(receive: Receive) -> AsyncGenerator[bytes, None]:
    """The request body as it arrives; a disconnect before its end is an error."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise UploadInterrupted("the client disconnected before the upload was complete")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class FileRoutes:
    """The file-storage routes of one deployment."""

    def __init__(self, files: FileService) -> None:
        self.files = files

    async def handle(self, request: Request) -> Response:
        """Answer a request whose path starts with ``/api/storage/``."""
        try:
            if request.path == UPLOAD_PATH:
                if request.method != "POST":
                    return error_response(405, "MethodNotAllowed", "uploads use POST")
                return await self.upload(request)
            if request.method not in ("GET", "HEAD"):
                return error_response(405, "MethodNotAllowed", "files are read with GET")
            return await self.download(request)
        except UploadRefused as exc:  # the server's state, not a failure: try later
            refused = error_response(exc.http_status, exc.code, exc.message)
            refused.headers.append(("retry-after", str(RETRY_AFTER_S)))
            return refused
        except BasaltError as exc:
            if exc.http_status >= 500:
                raise  # the server's failure: answered without its details (server/app.py)
            status = exc.http_status if exc.http_status >= 400 else 400
            return error_response(status, exc.code, exc.message)

    async def upload(self, request: Request) -> Response:
        token = request.query_param("token")
        if not token:
            return error_response(400, "MissingUploadToken", "the upload URL has no token")
        limit = self.files.max_upload_bytes
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > limit:
            return error_response(
                413, "PayloadTooLarge", f"the file is larger than the limit of {limit} bytes"
            )
        expected = parse_digest(request)
        body = _request_body(request.receive)
        try:
            storage_id = await self.files.upload(
                token,
                body,
                content_type=request.headers.get("content-type") or None,
                expected_sha256=expected,
                declared_size=declared,
            )
        finally:
            await body.aclose()
        return json_response({"storageId": storage_id})

    async def download(self, request: Request) -> Response:
        name = request.path[len(PREFIX) :]
        file = await self.files.lookup(name) if is_uuid_text(name) else None
        if file is None:
            return error_response(404, "NotFound", "no such file")
        etag = f'"{base64.b64decode(file.sha256).hex()}"'
        content_type = served_type(file.content_type)
        headers = [
            ("content-type", content_type),
            ("digest", f"sha-256={file.sha256}"),
            ("etag", etag),
            ("cache-control", CACHE_CONTROL),
            ("accept-ranges", "bytes"),
            ("x-content-type-options", "nosniff"),
            ("content-security-policy", "sandbox"),
        ]
        if not is_inline(content_type):
            headers.append(("content-disposition", "attachment"))
        wanted = parse_range(request.headers.get("range"), file.size)
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() != etag:
            wanted = None
        if wanted is False:
            refused = error_response(416, "RangeNotSatisfiable", "the range is outside the file")
            refused.headers.append(("content-range", f"bytes */{file.size}"))
            return refused
        status, start, end = 200, 0, file.size
        if isinstance(wanted, tuple):
            status, (start, end) = 206, wanted
            headers.append(("content-range", f"bytes {start}-{end - 1}/{file.size}"))
        reader = None if request.method == "HEAD" else await self._open(file, start, end)
        return StreamingResponse(reader, end - start, status, headers, request.receive)

    async def _open(self, file: StoredFile, start: int, end: int) -> BlobReader:
        try:
            return await self.files.open(file, start, end)
        except BlobNotFound:
            log.error("the blob of stored file %s is missing", file.storage_id)
            raise
