"""Running an HTTP action: its ``ctx``, its response, and what happens on errors.

An HTTP action runs like an action (an :class:`~basalt.runtime.context.ActionCtx`:
``ctx.run_query``/``run_mutation``/``run_action``, no transaction of its own)
with the request as its one argument. What it prints goes to the server's
output prefixed with its route (``[POST /echo] hello``), also while a
streaming response is being produced.

Errors never escape :func:`run_http_action`: a handler that raises gets a 500
response ``{"code", "message"}`` (plus ``"data"`` for a ``ConvexError``), and a
handler that returns something other than a response a 500 saying so; both
are logged on the ``basalt.http`` logger with the route and the request id
(a ``ConvexError`` in one line at INFO level; a failure that repeats more than
10 times a minute in a summary).
On a production server the response says no more than Convex's
``{"code": "InternalServerError", "message": "[Request ID: …] Server Error"}``
(a ConvexError adds its data); a development server (``dev``) tells the whole
error. An error while a streaming response is produced is logged the same way
and ends the stream with :class:`StreamFailed` (the status was already sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

from basalt.errors import BasaltError, ConvexError, ServerBusy
from basalt.values.wire import to_clean_json

from . import logs
from .action_workers import Lease
from .functions import Function
from .http_messages import Request, RequestBodyTooLarge, Response, StreamingResponse
from .log_limit import RepeatLimiter, escape_controls, log_repeats
from .loops import relay
from .outcome import Failure, error_message, one_line

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("basalt.http")
#: Failures of one route with one error type: 10 a minute in full, then a summary.
_REPEATS = RepeatLimiter(partial(log_repeats, log))


class StreamFailed(Exception):
    """A streaming response's iterator raised; the response cannot be completed."""


async def run_http_action(
    runtime: Runtime,
    function: Function,
    request: Request,
    *,
    label: str | None = None,
    identity: dict[str, Any] | None = None,
    dev: bool = False,
) -> Response:
    """Run ``function`` (an HTTP action) on ``request`` and return its response.

    ``label`` names the action in logs (the router passes ``"POST /echo"``);
    ``identity`` is what ``ctx.auth.get_user_identity()`` returns; ``dev``: a
    development server (errors are told in full, and logged as one line). The
    handler runs on the action loop (:mod:`~basalt.runtime.action_workers`),
    which also makes a streaming response's chunks; the request body is read
    on the server's loop, where it arrives.
    """
    label = label or function.path or function.__name__
    server = asyncio.get_running_loop()
    request.read_body_on(server)
    lease = runtime.actions.lease()
    streaming = False
    try:
        response = await lease.run(
            lambda: _respond(runtime, function, request, label, identity, dev)
        )
        if isinstance(response, StreamingResponse):
            response.content = _released_after(relay(response.iter_bytes(), lease.loop), lease)
            streaming = True
        return response
    finally:
        if not streaming:
            lease.close()


async def _respond(
    runtime: Runtime,
    function: Function,
    request: Request,
    label: str,
    identity: dict[str, Any] | None,
    dev: bool,
) -> Response:
    """The handler's response (on the action loop); errors become responses."""
    lines: list[str] = []
    ctx = runtime.action_ctx(identity, lines)
    function_log = logs.FunctionLog(label, lines)
    token = logs.current.set(function_log)
    try:
        result = await function.handler(ctx, request)
    except (RequestBodyTooLarge, ServerBusy) as exc:
        return Response.json({"code": exc.code, "message": exc.message}, status=exc.http_status)
    except Exception as exc:
        return failure_response(label, exc, dev=dev)
    finally:
        logs.current.reset(token)
        logs.finish(function_log)
    if not isinstance(result, Response):
        problem = TypeError(
            f"HTTP action {label} returned {type(result).__name__}, not a Response: return "
            "Response(body), Response.json(data) or StreamingResponse(iterator)"
        )
        return failure_response(label, problem, dev=dev)
    if isinstance(result, StreamingResponse):
        result.content = _logged_stream(result.iter_bytes(), label, lines)
    return result


async def _released_after(chunks: AsyncIterator[bytes], lease: Lease) -> AsyncIterator[bytes]:
    """``chunks``, then the worker goes back to the pool (also if the client left)."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        try:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        finally:
            lease.close()


def failure_response(label: str, exc: BaseException, *, dev: bool = False) -> Response:
    """The 500 response of a failed HTTP action (and its log record)."""
    failure = Failure(exc)
    # A ConvexError is the app's answer: one line at INFO; repeats are summarised.
    convex = isinstance(exc, ConvexError)
    level = logging.INFO if convex else logging.ERROR
    if log.isEnabledFor(level) and _REPEATS.admit((label, type(exc).__name__), level):
        if dev:
            log.log(level, "✖ HTTP action %s", escape_controls(one_line(failure, label)))
        else:
            log.log(
                level,
                "HTTP action %s failed\n%s",
                label,
                escape_controls(failure.message(full=True)),
                exc_info=None if convex else exc,
            )
    code = "InternalServerError"
    if isinstance(exc, BasaltError) and (dev or isinstance(exc, ConvexError)):
        code = exc.code
    body: dict[str, Any] = {"code": code, "message": failure.message(full=dev)}
    if isinstance(exc, ConvexError):
        try:
            body["data"] = to_clean_json(exc.data)
        except BasaltError:
            body["data"] = repr(exc.data)
    return Response.json(body, status=500)


async def _logged_stream(
    chunks: AsyncGenerator[bytes, None], label: str, lines: list[str]
) -> AsyncIterator[bytes]:
    """The response's chunks, produced with the action's log context; an error
    is logged with the route and ends the stream with :class:`StreamFailed`."""
    try:
        while True:
            function_log = logs.FunctionLog(label, lines)
            token = logs.current.set(function_log)
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except Exception as exc:
                log.error(
                    "HTTP action %s failed while streaming its response\n%s",
                    label,
                    error_message(exc),  # the status was sent: only the server log is told
                    exc_info=exc,
                )
                raise StreamFailed(f"HTTP action {label} failed while streaming") from exc
            finally:
                logs.current.reset(token)
                logs.finish(function_log)
                lines.clear()  # nobody reads them back; printed lines went to the output
            yield chunk
    finally:
        await chunks.aclose()
