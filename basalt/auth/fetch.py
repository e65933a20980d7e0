"""Getting JSON documents (JWKS, OpenID discovery) from URLs, files and
``data:`` URLs, with a per-URL cache.

The cache keeps each document for ``ttl`` seconds. A caller can ask for a
fresh copy (``refresh=True``, used when a token names a key id the cached key
set lacks), but no URL is fetched more often than once every ``min_interval``
seconds, so a stream of tokens with made-up key ids cannot turn the server into
a request amplifier. When a refetch fails, the previous copy keeps serving.

Blocking I/O (``urllib``, file reads) runs in a worker thread
(:func:`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basalt._version import __version__

log = logging.getLogger("basalt.auth")

#: Documents larger than this are refused (a key set is a few KiB).
MAX_DOCUMENT_BYTES = 1 << 20


class FetchError(Exception):
    """A document could not be fetched or is not what it should be."""


def parse_data_url(url: str) -> bytes:
    """The bytes a ``data:`` URL carries (``data:[<media type>][;base64],<data>``)."""
    if not url.startswith("data:"):
        raise FetchError("not a data: URL")
    header, sep, payload = url[len("data:") :].partition(",")
    if not sep:
        raise FetchError("a data: URL needs a comma between its media type and its data")
    if header.split(";")[-1].strip().lower() == "base64":
        text = urllib.parse.unquote(payload)
        text = "".join(text.split())
        text += "=" * (-len(text) % 4)
        try:
            if "-" in text or "_" in text:
                return base64.urlsafe_b64decode(text)
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FetchError(f"its base64 data does not decode ({exc})") from None
    return urllib.parse.unquote_to_bytes(payload)


def url_to_path(url: str) -> Path:
    """The local path of a ``file:`` URL (``file:///etc/jwks.json``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"file URL {url!r} names a remote host ({parts.netloc!r})")
    return Path(urllib.request.url2pathname(parts.path))


def parse_json_object(data: bytes, where: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object, or :class:`FetchError` naming ``where``."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FetchError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise FetchError(f"{where} is not a JSON object")
    return document


def check_jwks(document: dict[str, Any], where: str) -> dict[str, Any]:
    """``document`` if it is a JSON Web Key Set (``{"keys": [{...}, ...]}``)."""
    keys = document.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise FetchError(
            f'{where} is not a JSON Web Key Set: it needs a "keys" array of JSON objects'
        )
    return document


def _user_agent() -> str:
    return f"basalt/{__version__}"


def _read_url(url: str, timeout: float) -> bytes:
    """GET ``url`` (blocking; runs in a worker thread)."""
    request = urllib.request.Request(
        url,
        headers={"Accept": "application/json", "User-Agent": _user_agent()},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"GET {url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise FetchError(f"GET {url} failed: {reason}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"{path} is larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


def load_document(location: str, timeout: float = 10.0) -> dict[str, Any]:
    """Read the JSON object at ``location`` (blocking): an ``http(s)`` URL, a
    ``file:`` URL, a ``data:`` URL or a local path."""
    if location.startswith(("http://", "https://")):
        return parse_json_object(_read_url(location, timeout), f"the document at {location}")
    if location.startswith("data:"):
        return parse_json_object(parse_data_url(location), "the data: URL")
    path = url_to_path(location) if location.startswith("file:") else Path(location)
    return parse_json_object(_read_file(path), str(path))


@dataclass(slots=True)
class _Entry:
    document: dict[str, Any] | None = None
    fetched_at: float = float("-inf")
    attempted_at: float = float("-inf")
    error: FetchError | None = None


class DocumentCache:
    """JSON documents by location, fetched off the event loop and cached.

    ``ttl``: how long a document is served without refetching.
    ``min_interval``: the least time between two fetches of one location.
    ``timeout``: seconds a network fetch may take.
    ``clock``: a monotonic clock in seconds (tests pass a manual one).
    ``fetches``: how many fetches were started (for tests and diagnostics).

    Concurrent callers of one location share a single fetch. The locks are
    asyncio locks: use one cache from one event loop.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        min_interval: float = 5.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.min_interval = min_interval
        self.timeout = timeout
        self.clock = clock
        self.fetches = 0
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(
        self,
        location: str,
        *,
        refresh: bool = False,
        check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The document at ``location``.

        ``refresh``: fetch again, unless the last fetch was less than
        ``min_interval`` seconds ago. ``check`` validates each freshly fetched
        document (raising :class:`FetchError`); a document it refuses is not cached.
        """
        lock = self._locks.get(location)
        entry = self._entries.get(location)
        busy = lock is not None and lock.locked()  # a fetch is under way: wait for it
        if entry is not None and not busy and self._usable(entry, refresh):
            return self._answer(entry)
        if lock is None:
            lock = self._locks[location] = asyncio.Lock()
        async with lock:
            entry = self._entries.setdefault(location, _Entry())
            # Another task may have fetched it while this one waited for the lock.
            if self._usable(entry, refresh):
                return self._answer(entry)
            previous_attempt = entry.attempted_at
            entry.attempted_at = self.clock()
            self.fetches += 1
            try:
                document = await asyncio.to_thread(load_document, location, self.timeout)
                if check is not None:
                    document = check(document, _describe(location))
            except FetchError as exc:
                entry.error = exc
                if entry.document is not None:
                    log.warning("%s; still using the copy fetched before", exc)
                return self._answer(entry)
            except BaseException:  # cancelled, or a bug: as if it had not been tried
                entry.attempted_at = previous_attempt
                raise
            entry.document, entry.error = document, None
            entry.fetched_at = entry.attempted_at
            return document

    def _usable(self, entry: _Entry, refresh: bool) -> bool:
        """Whether ``entry`` answers without a new fetch."""
        now = self.clock()
        if now - entry.attempted_at < self.min_interval:
            return True  # fetched (or tried) moments ago: never more often than that
        if refresh or entry.document is None:
            return False
        return now - entry.fetched_at < self.ttl

    @staticmethod
    def _answer(entry: _Entry) -> dict[str, Any]:
        if entry.document is not None:
            return entry.document
        raise entry.error or FetchError("not fetched yet")

    def invalidate(self, location: str | None = None) -> None:
        """Forget the cached copy of ``location`` (of everything: ``None``)."""
        if location is None:
            self._entries.clear()
        else:
            self._entries.pop(location, None)


def _describe(location: str) -> str:
    if location.startswith("data:"):
        return "the data: URL"
    return f"the document at {location}"
