"""The ASGI application of the site origin: the app's HTTP actions.

Convex serves HTTP actions on a separate origin (``*.convex.site``); Basalt
serves them on the site port (default: the API port + 1). Each request is
routed by the app's ``http.py`` router (read per request, so ``basalt dev``
reloads apply), run by :func:`~basalt.runtime.http_actions.run_http_action`
and sent back; a :class:`~basalt.runtime.http_messages.StreamingResponse` is
sent chunk by chunk as it is produced, and closed if the client goes away.

The request body streams from the client while the handler reads it; once the
handler has returned its response, what it did not read is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from basalt.errors import Unauthenticated
from basalt.runtime import Runtime
from basalt.runtime.http_actions import StreamFailed, run_http_action
from basalt.runtime.http_messages import (
    MAX_BODY_BYTES,
    Headers,
    Request,
    Response,
    StreamingResponse,
)
from basalt.runtime.http_router import HttpRouter
from basalt.runtime.outcome import request_id

from .asgi import Receive, Scope, Send, run_lifespan
from .auth import Authenticator
from .body_budget import BodyBudget, BodyLease

log = logging.getLogger("basalt.server")


class _Body:
    """The request body from ASGI ``receive``, and the client's disconnect.

    What arrives is reserved in the server's body budget (``lease``, see
    :mod:`.body_budget`), up to the most a handler's ``await request.body()``
    may hold.
    """

    def __init__(self, receive: Receive, lease: BodyLease) -> None:
        self._receive = receive
        self._lease = lease
        self.complete = False
        self.disconnected = False
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        lease = self._lease
        received = 0
        while not self.complete:
            if self.closed:
                raise RuntimeError(
                    "the request body can only be read until the HTTP action returns its response"
                )
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.complete = self.disconnected = True
                raise ConnectionResetError("the client went away before sending the whole body")
            self.complete = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > lease.held and lease.held < MAX_BODY_BYTES:
                    await lease.reserve(min(received, MAX_BODY_BYTES))
                yield chunk

    async def wait_disconnect(self) -> None:
        """Return when the client goes away (reading and dropping any unread body)."""
        self.closed = True
        while not self.disconnected:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True


def _url(scope: Scope) -> str:
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if not host and scope.get("server"):
        name, port = scope["server"]
        host = f"{name}:{port}" if port else str(name)
    path = scope.get("root_path", "") + scope["path"]
    raw = scope.get("raw_path")
    target = raw.decode("latin-1") if raw else path
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host or 'localhost'}{target}" + (
        f"?{query}" if query else ""
    )


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message, status=status, headers=headers)


class SiteApp:
    """Serves the HTTP actions of ``runtime.app`` (its ``http.py`` router).

    With an ``authenticator``, a request's ``Authorization: Bearer <JWT>`` that
    verifies becomes the identity of ``ctx.auth``; any other value (an API key
    of the app's own, a bad token) leaves the identity None and is the
    handler's to read in ``request.headers``.

    ``dev`` (``basalt dev``): a failed HTTP action answers with the whole error;
    otherwise (``basalt serve``) with ``[Request ID: …] Server Error`` only.
    """

    def __init__(
        self,
        runtime: Runtime,
        authenticator: Authenticator | None = None,
        *,
        dev: bool = False,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.runtime = runtime
        self.authenticator = authenticator
        #: bytes of request bodies held at once (shared with the API port's app)
        self.body_budget = body_budget or BodyBudget()
        #: a development server: a failed HTTP action's response tells the whole
        #: error; otherwise only a request id (see basalt.runtime.outcome)
        self.dev = dev
        self._started_here = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async def startup() -> None:
            if not self.runtime._started:
                await self.runtime.start()
                self._started_here = True

        async def shutdown() -> None:
            if self._started_here:
                await self.runtime.stop()

        await run_lifespan(receive, send, startup, shutdown)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        lease = self.body_budget.lease()
        body = _Body(receive, lease)
        try:
            await self._serve(scope, method, headers, body, send)
        finally:
            lease.release()

    async def _serve(
        self, scope: Scope, method: str, headers: Headers, body: _Body, send: Send
    ) -> None:
        try:
            request = Request(method, _url(scope), headers=headers, body=body.chunks())
            response = await self._respond(request)
        except Exception as exc:  # one request must never take the server down
            rid = request_id()
            log.error(
                "internal error serving %s %s [Request ID: %s]",
                method,
                scope["path"],
                rid,
                exc_info=exc,
            )
            response = Response.json(
                {"code": "InternalServerError", "message": f"[Request ID: {rid}] Server Error"},
                status=500,
            )
        if isinstance(response, StreamingResponse):
            await self._send_stream(send, response, body, head=method == "HEAD")
        else:
            await _send_whole(send, response)

    async def _respond(self, request: Request) -> Response:
        router = self.runtime.app.http
        path, method = request.path, request.method
        if router is None:
            return _text(404, f"No HTTP route for {method} {path}: the app has no http.py router")
        if not isinstance(router, HttpRouter):
            return _text(
                500, f"http.py must define `http = HttpRouter()`, got {type(router).__name__}"
            )
        route = router.lookup(path, method)
        if route is None:
            allowed = router.allowed_methods(path)
            if allowed:
                return _text(
                    405,
                    f"Method {method} is not allowed for {path}; allowed: {', '.join(allowed)}",
                    {"allow": ", ".join(allowed)},
                )
            return _text(404, f"No HTTP route for {method} {path}")
        identity = await self._identity(request)
        response = await run_http_action(
            self.runtime,
            route.handler,
            request,
            label=route.label,
            identity=identity,
            dev=self.dev,
        )
        if route.on_response is not None:
            route.on_response(request, response)
        return response

    async def _identity(self, request: Request) -> dict[str, Any] | None:
        if self.authenticator is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return await self.authenticator.verify_user_token(token.strip())
        except Unauthenticated:
            return None

    async def _send_stream(
        self, send: Send, response: StreamingResponse, body: _Body, *, head: bool
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _encode(response.headers.items_list()),
            }
        )
        if head:
            await send({"type": "http.response.body", "body": b""})
            return

        async def pump() -> None:
            async for chunk in response.iter_bytes():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})

        pumping = asyncio.create_task(pump())
        watching = asyncio.create_task(body.wait_disconnect())
        try:
            await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if body.disconnected or pumping.cancelled():
            return
        problem = pumping.exception()
        if problem is not None:
            if not isinstance(problem, StreamFailed):  # the action's errors are logged already
                log.error("internal error streaming a response", exc_info=problem)
            # Leaving the response incomplete makes the server close the
            # connection, so the client sees a cut stream rather than an end.
            return
        await send({"type": "http.response.body", "body": b""})


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _send_whole(send: Send, response: Response) -> None:
    headers = [(k, v) for k, v in response.headers.items_list() if k != "content-length"]
    if response.status not in (204, 304):
        headers.append(("content-length", str(len(response.body))))
    await send(
        {"type": "http.response.start", "status": response.status, "headers": _encode(headers)}
    )
    await send({"type": "http.response.body", "body": response.body})
