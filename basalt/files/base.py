"""The blob store protocol and the errors of file storage.

A blob store keeps immutable byte strings under server-generated keys (UUID
text, see :mod:`basalt.files.keys`). It knows nothing about documents: the
runtime records each stored file in the ``_storage`` system table, and only
the runtime decides which keys exist for users.

Guarantees every implementation gives:

- :meth:`BlobStore.put` streams the bytes in, computes their SHA-256 and size
  on the way, and makes the blob visible only once it is complete (and, when
  an expected digest is given, only if it matches): a reader never sees half a
  file, and a failed or cancelled ``put`` leaves nothing behind.
- :meth:`BlobStore.read` opens the blob before returning (so a missing blob is
  reported before any byte is sent) and then yields chunks of the requested
  byte range; the reader must be closed (``aclose`` or ``async with``).
- every method validates its key strictly, so no key can name anything
  outside the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from basalt.errors import BasaltError

#: The default size of the chunks a reader yields.
READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """What :meth:`BlobStore.put` reports: the key, the size in bytes and the
    SHA-256 digest (raw 32 bytes) of the stored content."""

    key: str
    size: int
    sha256: bytes


class BlobReader(Protocol):
    """An open blob: an async iterator of byte chunks that must be closed."""

    def __aiter__(self) -> BlobReader: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None:
        """Release the file handle or connection (idempotent)."""
        ...

    async def __aenter__(self) -> BlobReader: ...

    async def __aexit__(self, *exc: object) -> None: ...


class BlobStore(Protocol):
    """Where file contents live (local disk, S3-compatible object storage)."""

    async def open(self) -> None:
        """Prepare the store (create folders, clients); called once before use."""
        ...

    async def close(self) -> None:
        """Release everything the store holds."""
        ...

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        max_size: int | None = None,
        expected_sha256: bytes | None = None,
    ) -> StoredBlob:
        """Store the bytes of ``chunks`` under ``key``, all or nothing.

        Raises :class:`UploadTooLarge` as soon as more than ``max_size`` bytes
        arrive, and :class:`DigestMismatch` if ``expected_sha256`` is given and
        differs; any error (including one raised by ``chunks`` itself, or a
        cancellation) leaves no blob and no temporary data behind.
        """
        ...

    async def read(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open the blob and return a reader of bytes ``[start, end)`` (``end``
        None: to the end). Raises :class:`BlobNotFound` if there is no such blob."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob (nothing happens if it does not exist)."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a complete blob is stored under ``key``."""
        ...

    def keys(self, older_than_s: float) -> AsyncIterator[str]:
        """The keys of the complete blobs stored more than ``older_than_s``
        seconds ago, in no particular order (for sweeping orphans)."""
        ...

    async def free_bytes(self) -> int | None:
        """Bytes still free where new blobs are written (None: no bound the
        store knows of, as for object storage)."""
        ...


# --------------------------------------------------------------------------- errors


class FileStorageError(BasaltError):
    """Base of the file-storage errors."""

    code = "FileStorageError"
    http_status = 500


class InvalidBlobKey(FileStorageError):
    """A key that is not a canonical lowercase UUID (never touches the store)."""

    code = "InvalidStorageKey"
    http_status = 400


class BlobNotFound(FileStorageError):
    code = "NotFound"
    http_status = 404


class UploadTooLarge(FileStorageError):
    code = "PayloadTooLarge"
    http_status = 413


class DigestMismatch(FileStorageError):
    """The uploaded bytes do not match the digest the client announced."""

    code = "DigestMismatch"
    http_status = 400


class UploadInterrupted(FileStorageError):
    """The client went away before the whole body arrived."""

    code = "UploadInterrupted"
    http_status = 400


class InvalidUploadToken(FileStorageError):
    """An upload token that is malformed, forged, expired, already used or in
    use by an upload under way (``code`` tells which)."""

    code = "InvalidUploadToken"
    http_status = 403


class InvalidContentType(FileStorageError):
    """A content type that is not exactly one media type (see
    :mod:`basalt.files.content_type`)."""

    code = "InvalidContentType"
    http_status = 400


class UploadRefused(FileStorageError):
    """An upload the server cannot take now (too many under way, or too little
    free disk): the client may try again later. Answered with its own status,
    not as a server failure."""

    code = "UploadRefused"
    http_status = 503


class TooManyUploads(UploadRefused):
    code = "TooManyUploads"
    http_status = 503


class InsufficientStorage(UploadRefused):
    code = "InsufficientStorage"
    http_status = 507


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra."""
