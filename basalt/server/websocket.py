"""The sync WebSocket (``/api/sync`` and ``/api/<client version>/sync``).

One reader task feeds frames to a :class:`~basalt.sync.SyncSession` (a
client that has not sent ``Connect`` within :data:`CONNECT_TIMEOUT` seconds
gets a ``FatalError``: a silent connection holds a slot for nothing); one
writer task sends what the session queues, and a JSON ``Ping`` after 15 s with
nothing sent (the npm client cannot see WebSocket-level pings). A malformed
message, or one that would take the connection over its limits (queries,
see :class:`~basalt.sync.SessionLimits`), gets a ``FatalError`` and ends that
connection only.

What waits to be sent is bounded per connection and per server (see
:mod:`.sync_queue`): a client that does not read is disconnected — its tasks
are cancelled, its socket dropped and its subscriptions removed at once,
without waiting for it — and reconnects to resubscribe. So is a client that
takes more than :data:`SEND_TIMEOUT` seconds to accept one frame (a frame the
socket holds for a client that never reads is not counted in the queues: this
bounds how long it is held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from basalt.runtime.outcome import request_id
from basalt.sync import ProtocolError, SessionLimits, SyncHub, SyncSession
from basalt.sync import messages as m
from basalt.sync.hub import MAX_TOTAL_RESULT_BYTES
from basalt.sync.session import TokenVerifier

from .asgi import Receive, Scope, Send
from .config import ConfigError
from .sync_queue import (
    MAX_QUEUED_BYTES,
    MAX_TOTAL_QUEUED_BYTES,
    SendBudget,
    SendQueue,
    message_text,
)

log = logging.getLogger("basalt.server")

#: Seconds without sending anything after which a JSON Ping goes out.
PING_INTERVAL = 15.0
#: Largest client frame accepted, in bytes (function arguments are limited to 16 MiB).
MAX_FRAME_BYTES = (16 << 20) + 64 * 1024
#: Seconds one frame may take to leave before the client is considered gone.
SEND_TIMEOUT = 60.0
#: Seconds a new connection has to send its ``Connect`` message.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class SyncLimits:
    """The limits of a server's sync connections (defaults: the module constants).

    ``basalt serve`` reads five of them from the environment
    (:meth:`from_env`): ``BASALT_SYNC_MAX_QUERIES`` (queries one connection may
    subscribe to), ``BASALT_SYNC_CONNECTION_RESULTS_MB`` (MiB of query results
    one connection may hold), ``BASALT_SYNC_RESULTS_MB`` (MiB of query results
    the server holds for all of them), ``BASALT_SYNC_QUEUE_MB`` (MiB of
    unread messages all connections together may hold) and
    ``BASALT_HEADER_TIMEOUT`` (seconds a client has to send its request head
    and, on a WebSocket, its ``Connect`` message).
    """

    session: SessionLimits = field(default_factory=SessionLimits)
    #: bytes of query results the server's subscriptions hold (see basalt.sync.hub)
    total_result_bytes: int = MAX_TOTAL_RESULT_BYTES
    #: bytes queued for one connection (see :mod:`.sync_queue`)
    queued_bytes: int = MAX_QUEUED_BYTES
    #: bytes queued for all the connections of the server
    total_queued_bytes: int = MAX_TOTAL_QUEUED_BYTES
    #: seconds one frame may take to leave before the client is dropped
    send_timeout: float = SEND_TIMEOUT
    #: seconds a new connection has to send ``Connect`` before it is closed
    connect_timeout: float = CONNECT_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SyncLimits:
        env = os.environ if environ is None else environ
        limits = cls()
        queries = _positive_int(env, "BASALT_SYNC_MAX_QUERIES")
        if queries is not None:
            limits = replace(limits, session=replace(limits.session, max_queries=queries))
        results_mb = _positive_int(env, "BASALT_SYNC_CONNECTION_RESULTS_MB")
        if results_mb is not None:
            session = replace(limits.session, max_result_bytes=results_mb << 20)
            limits = replace(limits, session=session)
        total_mb = _positive_int(env, "BASALT_SYNC_RESULTS_MB")
        if total_mb is not None:
            limits = replace(limits, total_result_bytes=total_mb << 20)
        queue_mb = _positive_int(env, "BASALT_SYNC_QUEUE_MB")
        if queue_mb is not None:
            limits = replace(limits, total_queued_bytes=queue_mb << 20)
        connect = env.get("BASALT_HEADER_TIMEOUT", "").strip()
        if connect:  # checked where the HTTP limits read it (basalt.server.connections)
            with contextlib.suppress(ValueError):
                limits = replace(limits, connect_timeout=max(float(connect), 0.1))
        return limits


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {text!r}")
    return value


def oversize(frame: str | bytes) -> int | None:
    """The frame's size in bytes if it is over :data:`MAX_FRAME_BYTES`, else None
    (text is measured in UTF-8 bytes, not characters)."""
    size = len(frame)
    if isinstance(frame, str) and size * 4 > MAX_FRAME_BYTES:
        size = len(frame.encode("utf-8", "surrogatepass"))
    return size if size > MAX_FRAME_BYTES else None


async def serve_sync(
    scope: Scope,
    receive: Receive,
    send: Send,
    hub: SyncHub,
    verifier: TokenVerifier,
    *,
    limits: SyncLimits | None = None,
    budget: SendBudget | None = None,
) -> None:
    """Run one sync connection until either side closes it (or it overflows).

    ``budget`` is the server's, shared by all its connections (None: this
    connection is bounded by ``limits`` alone).
    """
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    limits = limits or SyncLimits()
    conn = SendQueue(budget, limits.queued_bytes)
    session = SyncSession(hub, verifier, conn.send, conn.close, limits.session)
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_read(conn, session, receive, limits.connect_timeout))
    writer = loop.create_task(_write(conn, send, limits.send_timeout))
    overflow = loop.create_task(conn.overflowed.wait())
    try:
        await asyncio.wait({reader, writer, overflow}, return_when=asyncio.FIRST_COMPLETED)
        if not conn.overflowed.is_set() and reader.done():
            conn.close()  # the client left or broke the protocol: flush and close
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), timeout=limits.send_timeout)
        if conn.overflowed.is_set():
            log.info(
                "disconnecting a sync client that does not read its messages: %s",
                conn.overflow_reason,
            )
        if conn.overflowed.is_set() or not _flushed(writer):
            # Not flushed (the client stopped reading): drop the socket, and
            # with it what the server still holds for the client.
            for task in (reader, writer):
                task.cancel()
            _abort(send)
    finally:
        session.close()
        conn.detach()
        tasks: list[asyncio.Task[Any]] = [reader, writer, overflow]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _flushed(writer: asyncio.Task[bool]) -> bool:
    """Whether the writer sent everything and the close frame."""
    if not writer.done() or writer.cancelled() or writer.exception() is not None:
        return False
    return writer.result()


def _abort(send: Send) -> None:
    """Drop the connection now, discarding what the client has not read.

    A closed ASGI app makes the server close the socket gracefully, which waits
    until the client has read everything buffered — for ever, for a client that
    stopped reading. uvicorn's protocol object (behind ``send``) exposes its
    transport, whose ``abort()`` drops the socket at once.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()


async def _read(
    conn: SendQueue, session: SyncSession, receive: Receive, connect_timeout: float
) -> None:
    deadline = asyncio.get_running_loop().time() + connect_timeout
    while not conn.closing:
        if session.session_id is None:  # not connected yet: it has until the deadline
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                conn.send(
                    m.fatal_error(f"no Connect message within {connect_timeout:g} s of connecting")
                )
                return
        else:
            message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = message.get("bytes") or b""
        size = oversize(text)
        if size is not None:
            conn.send(
                m.fatal_error(f"a message of {size} bytes is over the limit of {MAX_FRAME_BYTES}")
            )
            return
        try:
            await session.handle(text)
        except ProtocolError as exc:
            conn.send(m.fatal_error(exc.message))
            conn.close()
            return
        except Exception:  # one client's failure stays its own
            rid = request_id()
            log.exception("sync message handling failed [Request ID: %s]", rid)
            conn.send(m.fatal_error(f"internal error [Request ID: {rid}]"))
            conn.close()
            return


async def _write(conn: SendQueue, send: Send, send_timeout: float) -> bool:
    """Send what the session queues until it closes; False: the client went
    away or stopped reading (took more than ``send_timeout`` s for a frame)."""
    queue = conn.queue
    try:
        while True:
            if queue.empty():
                try:
                    async with asyncio.timeout(PING_INTERVAL):
                        text = await queue.get()
                except TimeoutError:
                    text = message_text(m.PING)
                else:
                    if text is not None:
                        conn.taken(text)
            else:
                text = queue.get_nowait()
                if text is not None:
                    conn.taken(text)
            if text is None:
                break
            async with asyncio.timeout(send_timeout):
                await send({"type": "websocket.send", "text": text})
        async with asyncio.timeout(send_timeout):
            await send({"type": "websocket.close", "code": 1000})
    except (OSError, RuntimeError, TimeoutError) as exc:
        # The client went away (or stopped reading) while we were writing to it.
        log.debug("sync connection closed while sending: %r", exc)
        conn.closing = True
        return False
    return True
