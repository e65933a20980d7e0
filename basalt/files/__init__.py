"""File storage below the runtime: blob stores, upload tokens and file keys.

This package knows nothing about documents or HTTP (it imports only
:mod:`basalt.values` and :mod:`basalt.errors`); the runtime records files in
``_storage`` (:mod:`basalt.runtime.files`) and the server speaks HTTP
(:mod:`basalt.server.files_routes`).

Which blob store a server uses (:func:`blob_store_from_env`):

- ``BASALT_S3_BUCKET`` set: :class:`~basalt.files.s3.S3BlobStore` (needs
  ``basalt-backend[s3]``), configured by ``BASALT_S3_PREFIX``, ``BASALT_S3_ENDPOINT_URL``,
  ``BASALT_S3_REGION``, ``BASALT_S3_ADDRESSING_STYLE`` and the standard AWS
  credential variables;
- otherwise :class:`LocalBlobStore` in ``<data>/blobs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .base import (
    BlobNotFound,
    BlobReader,
    BlobStore,
    DigestMismatch,
    FileStorageError,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidContentType,
    InvalidUploadToken,
    MissingExtra,
    StoredBlob,
    TooManyUploads,
    UploadInterrupted,
    UploadRefused,
    UploadTooLarge,
)
from .content_type import MAX_CONTENT_TYPE_LENGTH, canonical_content_type, media_type
from .keys import UrlKeyCodec, blob_key, check_key, internal_id_of_key, is_uuid_text
from .local import LocalBlobStore
from .tokens import DEFAULT_TTL_S, UploadToken, UploadTokenSigner

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_CONTENT_TYPE_LENGTH",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "DigestMismatch",
    "FileStorageError",
    "InsufficientStorage",
    "InvalidBlobKey",
    "InvalidContentType",
    "InvalidUploadToken",
    "LocalBlobStore",
    "MissingExtra",
    "StoredBlob",
    "TooManyUploads",
    "UploadInterrupted",
    "UploadRefused",
    "UploadToken",
    "UploadTokenSigner",
    "UploadTooLarge",
    "UrlKeyCodec",
    "blob_key",
    "blob_store_from_env",
    "canonical_content_type",
    "check_key",
    "internal_id_of_key",
    "is_uuid_text",
    "media_type",
]


def blob_store_from_env(
    local_root: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> BlobStore:
    """The blob store the environment selects: S3 if ``BASALT_S3_BUCKET`` is
    set, else a :class:`LocalBlobStore` in ``local_root`` (not yet opened)."""
    env = os.environ if environ is None else environ
    if env.get("BASALT_S3_BUCKET"):
        from .s3 import S3BlobStore

        return S3BlobStore.from_env(env)
    return LocalBlobStore(Path(local_root))
