"""Requests and responses of HTTP actions.

A handler gets a :class:`Request` and returns a :class:`Response` (a complete
body, or :meth:`Response.json`) or a :class:`StreamingResponse` (a body sent
chunk by chunk as an iterator produces it, e.g. Server-Sent Events). Header
names are case-insensitive (:class:`Headers`); query parameters are in
``request.query_params`` (:class:`QueryParams`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from basalt.errors import BasaltError

from .loops import relay

#: ``await request.body()`` refuses bodies over this many bytes (Convex's limit).
MAX_BODY_BYTES = 20 << 20

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_EMPTY_STATUSES = (204, 205, 304)


class RequestBodyTooLarge(BasaltError):
    """The request body is over the limit; the client gets 413."""

    code = "PayloadTooLarge"
    http_status = 413


class Headers(MutableMapping[str, str]):
    """HTTP headers: case-insensitive names, repeatable (``append``, ``get_all``).

    ``headers["x"]`` joins repeated values with ``", "``, as ``fetch`` does.
    """

    __slots__ = ("_items",)

    def __init__(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
    ) -> None:
        self._items: list[tuple[str, str]] = []
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        for name, value in pairs:
            self.append(name, value)

    def append(self, name: str, value: str) -> None:
        """Add a value, keeping those already there (``Set-Cookie``, ``Vary``)."""
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid value for HTTP header {name!r}: {value!r}")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"HTTP header {name!r} must be Latin-1 text (percent-encode it), got {value!r}"
            ) from None
        self._items.append((name.lower(), value.strip()))

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def items_list(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair in order, names lower-cased."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        self.pop(name, None)
        self.append(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if not any(k == key for k, _ in self._items):
            raise KeyError(name)
        self._items = [(k, v) for k, v in self._items if k != key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        return len({k for k, _ in self._items})

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class QueryParams(Mapping[str, str]):
    """The query string: ``params["q"]`` is the first value, ``get_all`` every one."""

    __slots__ = ("_items",)

    def __init__(self, query_string: str = "") -> None:
        self._items = parse_qsl(query_string, keep_blank_values=True)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def __getitem__(self, name: str) -> str:
        for key, value in self._items:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        return len({k for k, _ in self._items})


async def _single(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


class Request:
    """An HTTP request as a handler sees it.

    ``url`` is the full URL; ``path`` its decoded path. The body is read once:
    ``await body()`` (``text()``, ``json()`` decode it) or, chunk by chunk,
    ``async for chunk in request.stream()``.
    """

    def __init__(
        self,
        method: str,
        url: str,
        *,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str | AsyncIterable[bytes] = b"",
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.method = method.upper()
        self.url = url
        parts = urlsplit(url)
        self.path = unquote(parts.path) or "/"
        self.query_params = QueryParams(parts.query)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.max_body_bytes = max_body_bytes
        if isinstance(body, str):
            body = body.encode()
        self._body: bytes | None = body if isinstance(body, bytes) else None
        self._source: AsyncIterable[bytes] | None = None if isinstance(body, bytes) else body
        self._streamed = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"

    def read_body_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the streamed body on ``loop`` (the server's, where it arrives),
        whichever loop the handler runs on."""
        if self._source is not None and not self._streamed:
            self._source = relay(self._source, loop)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives (unless ``body()`` already read it)."""
        if self._body is not None:
            async for chunk in _single(self._body):
                yield chunk
            return
        if self._streamed or self._source is None:
            raise RuntimeError("the request body was already read by request.stream()")
        self._streamed = True
        async for chunk in self._source:
            yield chunk

    async def body(self) -> bytes:
        """The whole body; over ``max_body_bytes`` raises :class:`RequestBodyTooLarge`."""
        if self._body is None:
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise RequestBodyTooLarge(
                        f"the request body is over {self.max_body_bytes} bytes"
                    )
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (bad bytes become U+FFFD, as in ``fetch``)."""
        return (await self.body()).decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not JSON)."""
        return json.loads(await self.body())


HeadersInit = Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None


class Response:
    """A complete HTTP response; a ``str`` body defaults to ``text/plain``."""

    def __init__(
        self,
        body: bytes | str | None = None,
        *,
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> None:
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"status must be an int from 200 to 599, got {status!r}")
        self.status = status
        self.headers = Headers(headers.items_list() if isinstance(headers, Headers) else headers)
        if content_type is not None:
            self.headers["content-type"] = content_type
        elif isinstance(body, str) and "content-type" not in self.headers:
            self.headers["content-type"] = "text/plain; charset=utf-8"
        if isinstance(body, str):
            body = body.encode()
        elif body is not None and not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(
                f"Response body must be bytes or str, got {type(body).__name__} "
                "(use Response.json(data) for JSON, StreamingResponse for an iterator)"
            )
        self.body = bytes(body or b"")
        if self.body and status in _EMPTY_STATUSES:
            raise ValueError(f"a {status} response cannot have a body")

    @classmethod
    def json(cls, data: Any, *, status: int = 200, headers: HeadersInit = None) -> Response:
        """``data`` as a JSON response (``application/json``)."""
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return cls(text, status=status, headers=headers, content_type="application/json")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status}>"


def _to_bytes(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(
        f"a StreamingResponse yielded {type(chunk).__name__}; chunks must be str or bytes"
    )


class StreamingResponse(Response):
    """A response whose body is sent chunk by chunk as ``content`` produces it.

    ``content`` is an async iterable (typically an ``async def`` generator) or
    an iterable of ``str``/``bytes``; each chunk goes to the client as soon as
    it is yielded (Server-Sent Events: yield ``"data: ...\\n\\n"`` and set
    ``content_type="text/event-stream"``). If the client goes away the
    generator is closed (``finally`` blocks run). It can be sent once.
    """

    def __init__(
        self,
        content: AsyncIterable[str | bytes] | Iterable[str | bytes],
        *,
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> None:
        if isinstance(content, str | bytes) or not isinstance(content, AsyncIterable | Iterable):
            raise TypeError(
                "StreamingResponse content must be an (async) iterator of str or bytes, "
                f"got {type(content).__name__} (use Response for a complete body)"
            )
        super().__init__(None, status=status, headers=headers, content_type=content_type)
        self.content = content

    def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """The body's chunks as bytes (of ``content`` as it is now); closing the
        generator closes an async ``content``."""
        return _iter_bytes(self.content)


async def _iter_bytes(
    content: AsyncIterable[str | bytes] | Iterable[str | bytes],
) -> AsyncGenerator[bytes, None]:
    if not isinstance(content, AsyncIterable):
        for chunk in content:
            yield _to_bytes(chunk)
        return
    iterator = aiter(content)
    try:
        async for chunk in iterator:
            yield _to_bytes(chunk)
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
