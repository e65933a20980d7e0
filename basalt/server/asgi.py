"""A small ASGI toolkit: requests, JSON responses and a router by exact path.

The HTTP API is on the hot path of every call, so it is a thin layer directly
over ASGI rather than a framework.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from .body_budget import BodyLease, declared_length

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Requests bodies above this many bytes are refused (16 MiB of arguments plus the envelope).
MAX_BODY_BYTES = (16 << 20) + 2000


class BodyTooLarge(Exception):
    pass


class Request:
    """One HTTP request: method, path, headers (lower-cased), query and body."""

    __slots__ = ("_query", "headers", "lease", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, lease: BodyLease | None = None) -> None:
        self.scope = scope
        #: this request's share of the server's body budget (None: unbounded)
        self.lease = lease
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        return self._query

    def query_param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    async def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The whole body, refused (:class:`BodyTooLarge`) past ``limit`` bytes —
        before reading any of it when ``Content-Length`` says so. The bytes are
        reserved in the server's body budget as they arrive (see
        :mod:`.body_budget`)."""
        declared = declared_length(self.headers)
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
        lease = self.lease
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body over {limit} bytes")
            if lease is not None and size > lease.held:
                await lease.reserve(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class Response:
    """A complete response."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body.encode() if isinstance(body, str) else body
        self.status = status
        self.headers = list(headers or [])
        if content_type is not None:
            self.headers.append(("content-type", content_type))

    async def send(self, send: Send, extra_headers: list[tuple[str, str]] | None = None) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        if extra_headers:
            headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers)
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(data: Any, status: int = 200) -> Response:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(text, status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    """A failure outside any function, in the Convex shape ``{code, message}``."""
    return json_response({"code": code, "message": message}, status)


def cors_headers(request: Request) -> list[tuple[str, str]]:
    """Mirror the caller's origin and requested headers, as Convex does."""
    origin = request.headers.get("origin")
    if not origin:
        return []
    headers = [
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("vary", "origin"),
    ]
    if request.method == "OPTIONS":
        requested = request.headers.get("access-control-request-headers")
        headers.append(("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"))
        if requested:
            headers.append(("access-control-allow-headers", requested))
        headers.append(("access-control-max-age", "86400"))
    return headers


async def run_lifespan(
    receive: Receive,
    send: Send,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    """Answer the ASGI lifespan protocol with ``startup`` and ``shutdown``."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except BaseException as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
