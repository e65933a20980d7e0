"""Blob keys, the URL uuids of files, and the keys derived from the server secret.

A stored file has three names:

- its **document id** in ``_storage`` (what ``storageId`` is), built from a
  16-byte internal id;
- its **blob key**: the same 16 bytes written as a UUID
  (``3f2a…-…``). It never changes, so blobs stay findable whatever happens to
  the server secret;
- its **URL uuid** (``/api/storage/<uuid>``): the 16 bytes passed through a
  keyed permutation (:class:`UrlKeyCodec`). Knowing a storage id therefore does
  not give the file's URL (only ``get_url`` does, as in Convex), and the server
  turns a URL back into the document id without any lookup table or index.

Every text that names a key is checked against :data:`UUID_PATTERN` (canonical
lowercase UUID form, nothing else) before use; that check is what makes path
traversal (``../``, encoded slashes, absolute paths, NUL bytes) impossible.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Final

from .base import InvalidBlobKey

#: The only form a blob key or URL uuid may take.
UUID_PATTERN: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_ROUNDS = 4


def is_uuid_text(text: object) -> bool:
    """Whether ``text`` is a UUID in canonical lowercase form (36 characters)."""
    return type(text) is str and UUID_PATTERN.fullmatch(text) is not None


def check_key(key: object) -> str:
    """``key`` if it is a valid blob key; raises :class:`InvalidBlobKey` otherwise."""
    if not is_uuid_text(key):
        shown = repr(key)[:80]
        raise InvalidBlobKey(f"invalid blob key {shown}: a blob key is a lowercase UUID")
    assert isinstance(key, str)
    return key


def blob_key(internal_id: bytes) -> str:
    """The blob key of the file whose document has this internal id."""
    return str(uuid.UUID(bytes=internal_id))


def internal_id_of_key(key: str) -> bytes:
    """The internal id a blob key was made from (the inverse of :func:`blob_key`)."""
    return uuid.UUID(check_key(key)).bytes


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the server secret (so the
    token key and the URL key are independent)."""
    if len(secret) < 16:
        raise ValueError("the file-storage secret must be at least 16 bytes")
    return hmac.new(secret, b"basalt/files/" + purpose.encode(), hashlib.sha256).digest()


class UrlKeyCodec:
    """A keyed permutation of 16-byte values, written as UUID text.

    A 4-round Feistel network over two 8-byte halves whose round function is
    HMAC-SHA256 (truncated to 8 bytes) under a key derived from the server
    secret. With a pseudorandom round function, four rounds give a strong
    pseudorandom permutation (Luby-Rackoff), so URL uuids reveal nothing about
    the document ids and cannot be forged without the secret. Changing the
    secret changes every URL (old URLs stop working; ``get_url`` gives new ones).
    """

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "url-uuid/v1")

    def _round(self, i: int, half: bytes) -> int:
        mac = hmac.new(self._key, bytes((i,)) + half, hashlib.sha256).digest()
        return int.from_bytes(mac[:8], "big")

    def encode(self, internal_id: bytes) -> str:
        """The URL uuid of a file's internal id."""
        if len(internal_id) != 16:
            raise ValueError("an internal id is 16 bytes")
        left, right = internal_id[:8], internal_id[8:]
        for i in range(_ROUNDS):
            mixed = int.from_bytes(left, "big") ^ self._round(i, right)
            left, right = right, mixed.to_bytes(8, "big")
        return str(uuid.UUID(bytes=left + right))

    def decode(self, text: str) -> bytes | None:
        """The internal id behind a URL uuid, or None if ``text`` is not a
        canonical UUID. (Every UUID decodes to *some* id; whether a file has it
        is for the caller to check.)"""
        if not is_uuid_text(text):
            return None
        data = uuid.UUID(text).bytes
        left, right = data[:8], data[8:]
        for i in reversed(range(_ROUNDS)):
            mixed = int.from_bytes(right, "big") ^ self._round(i, left)
            left, right = mixed.to_bytes(8, "big"), left
        return left + right
