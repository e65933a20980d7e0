"""Upload tokens: signed, expiring, single-use.

``generate_upload_url()`` hands out ``…/api/storage/upload?token=<token>``. The
token is self-contained and needs no storage to check its signature and expiry:

    token = base64url( version(1) ‖ token_id(16) ‖ expires_at_ms(8, big-endian) ‖ tag(16) )
    tag   = HMAC-SHA256(derive_key(secret, "upload-token/v1"), first 25 bytes)[:16]

(55 characters, no padding). ``token_id`` is a fresh internal document id.

**Single use is the caller's half of the contract.** A signature cannot be
"spent", so whoever accepts an upload must record ``token_id`` durably in the
same transaction that records the file, and refuse a token whose id is already
recorded. The runtime does this in the ``_upload_tokens`` system table, using
``token_id`` as the internal id of the record's document id: checking is a
point read, recording is an insert, and a second use, even after a restart or
on another server process, finds the record. Records are worth keeping only
until ``expires_at_ms``; after that the signature check refuses the token by
itself, so they can be pruned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from basalt.values.ids import new_internal_id

from .base import InvalidUploadToken
from .keys import derive_key

#: How long an upload URL stays valid by default (as in Convex: one hour).
DEFAULT_TTL_S: Final = 3600.0

_VERSION = 1
_BODY = 1 + 16 + 8
_TAG = 16
_TEXT_LENGTH = 55  # base64url of 41 bytes, unpadded
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]{55}")


@dataclass(frozen=True, slots=True)
class UploadToken:
    """A verified token: its single-use id and when it expires (ms since epoch)."""

    token_id: bytes
    expires_at_ms: int


def _system_now_ms() -> float:
    return time.time_ns() / 1_000_000


class UploadTokenSigner:
    """Issues and verifies upload tokens with a key derived from ``secret``.

    ``now_ms`` is the clock (milliseconds since the epoch); tests inject one.
    """

    __slots__ = ("_key", "now_ms", "ttl_s")

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        now_ms: Callable[[], float] = _system_now_ms,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._key = derive_key(secret, "upload-token/v1")
        self.ttl_s = ttl_s
        self.now_ms = now_ms

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_TAG]

    def issue(self) -> tuple[str, UploadToken]:
        """A new token: its text (for the URL) and what it stands for."""
        now = self.now_ms()
        token = UploadToken(new_internal_id(now, os.urandom), int(now + self.ttl_s * 1000))
        body = bytes((_VERSION,)) + token.token_id + token.expires_at_ms.to_bytes(8, "big")
        text = base64.urlsafe_b64encode(body + self._tag(body)).rstrip(b"=").decode("ascii")
        assert len(text) == _TEXT_LENGTH
        return text, token

    def verify(self, text: str) -> UploadToken:
        """The token ``text`` stands for, if it is genuine and not expired.

        Raises :class:`InvalidUploadToken` with code ``InvalidUploadToken``
        (malformed or forged) or ``UploadTokenExpired``. Whether it was already
        used is for the caller to check (see the module docstring).
        """
        if type(text) is not str or _TOKEN_TEXT.fullmatch(text) is None:
            raise InvalidUploadToken("the upload token is malformed")
        try:
            raw = base64.urlsafe_b64decode(text + "=")
        except (binascii.Error, ValueError):  # pragma: no cover - excluded by the pattern
            raise InvalidUploadToken("the upload token is malformed") from None
        body, tag = raw[:_BODY], raw[_BODY:]
        canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if canonical != text or raw[0] != _VERSION or not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidUploadToken("the upload token is not valid for this deployment")
        token = UploadToken(body[1:17], int.from_bytes(body[17:25], "big"))
        if self.now_ms() >= token.expires_at_ms:
            raise InvalidUploadToken(
                "the upload URL has expired: generate a new one with generate_upload_url()",
                code="UploadTokenExpired",
            )
        return token
