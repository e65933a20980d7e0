"""The sync WebSocket (``/api/sync`` and ``/api/<client version>/sync``).

One reader task feeds frames to a :class:`~basalt.sync.SyncSession`; one
writer task sends what the session queues, and a JSON ``Ping`` after 15 s with
nothing sent (the npm client cannot see WebSocket-level pings). The queue is
bounded in messages and bytes: a client that does not read is disconnected —
its tasks are cancelled and its subscriptions dropped at once, without waiting
for it — and reconnects to resubscribe. A malformed message gets a
``FatalError`` and ends that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from basalt.runtime.outcome import request_id
from basalt.sync import ProtocolError, SyncHub, SyncSession
from basalt.sync import messages as m
from basalt.sync.session import TokenVerifier

from .asgi import Receive, Scope, Send

log = logging.getLogger("basalt.server")

#: Seconds without sending anything after which a JSON Ping goes out.
PING_INTERVAL = 15.0
#: Largest client frame accepted, in bytes (function arguments are limited to 16 MiB).
MAX_FRAME_BYTES = (16 << 20) + 64 * 1024
#: Most messages queued for one client before it is disconnected as too slow.
MAX_QUEUED_MESSAGES = 2_000
#: Most bytes queued for one client before it is disconnected as too slow.
MAX_QUEUED_BYTES = 64 << 20
#: Seconds one frame may take to leave before the client is considered gone.
SEND_TIMEOUT = 60.0


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def oversize(frame: str | bytes) -> int | None:
    """The frame's size in bytes if it is over :data:`MAX_FRAME_BYTES`, else None
    (text is measured in UTF-8 bytes, not characters)."""
    size = len(frame)
    if isinstance(frame, str) and size * 4 > MAX_FRAME_BYTES:
        size = len(frame.encode("utf-8", "surrogatepass"))
    return size if size > MAX_FRAME_BYTES else None


class _Connection:
    """The bounded queue between a session and the socket."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queued_bytes = 0
        self.closing = False
        self.overflowed = asyncio.Event()

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        text = _dumps(message)
        if (
            self.queue.qsize() >= MAX_QUEUED_MESSAGES
            or self.queued_bytes + len(text) > MAX_QUEUED_BYTES
        ):
            # The client is not reading: stop now (the server must not hold the
            # connection, its session and its queue until the client wakes up).
            self.closing = True
            self.overflowed.set()
            return
        self.queued_bytes += len(text)
        self.queue.put_nowait(text)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(None)


async def serve_sync(
    scope: Scope, receive: Receive, send: Send, hub: SyncHub, verifier: TokenVerifier
) -> None:
    """Run one sync connection until either side closes it (or it overflows)."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    conn = _Connection()
    session = SyncSession(hub, verifier, conn.send, conn.close)
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_read(conn, session, receive))
    writer = loop.create_task(_write(conn, send))
    overflow = loop.create_task(conn.overflowed.wait())
    try:
        await asyncio.wait({reader, writer, overflow}, return_when=asyncio.FIRST_COMPLETED)
        if conn.overflowed.is_set():
            log.info("disconnecting a sync client that does not read its messages")
            for task in (reader, writer):
                task.cancel()
            _abort(send)
        elif reader.done():
            conn.close()  # the client left or broke the protocol: flush and close
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), timeout=SEND_TIMEOUT)
    finally:
        session.close()
        tasks: list[asyncio.Task[Any]] = [reader, writer, overflow]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


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


async def _read(conn: _Connection, session: SyncSession, receive: Receive) -> None:
    while not conn.closing:
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


async def _write(conn: _Connection, send: Send) -> None:
    queue = conn.queue
    try:
        while True:
            if queue.empty():
                try:
                    async with asyncio.timeout(PING_INTERVAL):
                        text = await queue.get()
                except TimeoutError:
                    text = _dumps(m.PING)
                else:
                    if text is not None:
                        conn.queued_bytes -= len(text)
            else:
                text = queue.get_nowait()
                if text is not None:
                    conn.queued_bytes -= len(text)
            if text is None:
                break
            async with asyncio.timeout(SEND_TIMEOUT):
                await send({"type": "websocket.send", "text": text})
        async with asyncio.timeout(SEND_TIMEOUT):
            await send({"type": "websocket.close", "code": 1000})
    except (OSError, RuntimeError, TimeoutError) as exc:
        # The client went away (or stopped reading) while we were writing to it.
        log.debug("sync connection closed while sending: %r", exc)
        conn.closing = True
