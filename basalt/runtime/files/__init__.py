"""``ctx.storage`` and the file service behind it.

A stored file is a blob (in a :class:`~basalt.files.BlobStore`) plus a
document in the ``_storage`` system table holding exactly what users see:
``_id``, ``_creationTime``, ``sha256`` (base64), ``size`` (a float64, as in
Convex) and ``contentType`` (absent when unknown). The document id *is* the
storage id. Its 16-byte internal id is chosen before the upload starts and
names the blob too (:func:`basalt.files.blob_key`), so no hidden field or
index is needed; URLs carry a keyed permutation of it
(:class:`basalt.files.UrlKeyCodec`), so a storage id does not reveal its URL.

Uploads: check the token, and claim it for as long as the upload runs (a
concurrent second use is refused before its body is read), with the limits on
uploads under way and free disk → stream the bytes into the blob store
(invisible until complete and checked) → one system transaction that records the token as
spent (``_upload_tokens``, whose document id is built from the token id, so the
check is a point read and survives restarts) and inserts the ``_storage`` row.
If that transaction fails, the blob is deleted; a crash in between leaves an
orphaned blob that no document names, which is never served.

Deleting in a mutation removes the row in the mutation's transaction; the blob
goes once that commit is durable (the service listens to the engine's
commits), so a mutation that fails or rolls back loses no file. In an action,
the row goes in its own transaction and the blob right after.
"""

from .ctx import (
    STORAGE_TABLE,
    StorageActions,
    StorageArgumentError,
    StorageIdNotFound,
    StorageReader,
    StorageWriter,
)
from .service import (
    MAX_CONCURRENT_UPLOADS,
    MAX_UPLOAD_BYTES,
    MIN_FREE_BYTES,
    SECRET_META_KEY,
    UPLOAD_TOKENS_TABLE,
    FileService,
    RuntimeParts,
    StoredFile,
)

__all__ = [
    "MAX_CONCURRENT_UPLOADS",
    "MAX_UPLOAD_BYTES",
    "MIN_FREE_BYTES",
    "SECRET_META_KEY",
    "STORAGE_TABLE",
    "UPLOAD_TOKENS_TABLE",
    "FileService",
    "RuntimeParts",
    "StorageActions",
    "StorageArgumentError",
    "StorageIdNotFound",
    "StorageReader",
    "StorageWriter",
    "StoredFile",
]
